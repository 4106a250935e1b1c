"""Parameter dictionaries: the state-dict keys and shapes of the contract, and prefix helpers."""
import numpy as np


# --8<-- [start:variant]
def variant(cfg):
    """(activation, bias) of ``cfg``; a config object without these attributes describes GPT-2."""
    return getattr(cfg, "activation", "gelu_tanh"), getattr(cfg, "bias", True)


# The Llama-family fields and the values that keep GPT-2 (tinyref.GPTConfig's defaults)
LLAMA_FIELDS = {"positions": "learned", "rope_theta": 10000.0, "rope_style": "half", "norm": "layernorm",
                "gated_mlp": False, "n_kv_heads": None}


def family(cfg):
    """The Llama-family fields of ``cfg`` as a dict, GPT-2's value for each one it lacks; ``n_kv_heads``
    resolved (None -> n_heads)."""
    fields = {name: getattr(cfg, name, default) for name, default in LLAMA_FIELDS.items()}
    fields["n_kv_heads"] = fields["n_kv_heads"] or cfg.n_heads
    return fields
# --8<-- [end:variant]


def param_shapes(cfg):
    """Every state-dict key of the model described by ``cfg``, with its shape (tinygrad (out, in) layout)."""
    C, F, V, fam = cfg.d_model, cfg.d_ff, cfg.vocab_size, family(cfg)
    qkv = (cfg.n_heads + 2 * fam["n_kv_heads"]) * (C // cfg.n_heads)   # [q | k | v]: n_heads + 2 n_kv_heads heads
    shapes = {"wte.weight": (V, C)}
    if fam["positions"] == "learned":
        shapes["wpe.weight"] = (cfg.context_length, C)
    for i in range(cfg.n_layers):
        # each layer's weight shape; its bias, when it has one, is (weight.shape[0],)
        layers = {"ln_1": (C,), "attn.c_attn": (qkv, C), "attn.c_proj": (C, C), "ln_2": (C,), "mlp.c_fc": (F, C)}
        if fam["gated_mlp"]:
            layers["mlp.c_gate"] = (F, C)
        layers["mlp.c_proj"] = (C, F)
        shapes.update(layer_shapes(f"h.{i}.", layers, cfg))
    shapes.update(layer_shapes("", {"ln_f": (C,)}, cfg))
    if not cfg.tie_embeddings:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def layer_shapes(prefix, layers, cfg):
    """``<prefix><layer>.weight`` for each layer, and ``.bias`` of its output width unless ``cfg`` has no biases
    (an RMSNorm never has one)."""
    shapes = {}
    for name, weight in layers.items():
        shapes[f"{prefix}{name}.weight"] = weight
        is_rmsnorm = name.startswith("ln_") and family(cfg)["norm"] == "rmsnorm"
        if variant(cfg)[1] and not is_rmsnorm:
            shapes[f"{prefix}{name}.bias"] = weight[:1]
    return shapes


def init_params(cfg, rng, dtype=np.float64, scale=0.5):
    """Random parameters for testing: N(0, scale^2) weights and biases, LayerNorm gains near 1.

    Larger than GPT-2's 0.02 on purpose, so every term of the math carries weight in a test.
    """
    params = {}
    for key, shape in param_shapes(cfg).items():
        x = rng.standard_normal(shape) * scale
        if ".ln_" in "." + key and key.endswith(".weight"):
            x = 1.0 + x
        params[key] = x.astype(dtype)
    return params


def sub_params(params, prefix):
    """The entries of ``params`` under ``prefix``, with the prefix removed (a component's local names)."""
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def with_prefix(prefix, params):
    """The inverse of ``sub_params``."""
    return {prefix + k: v for k, v in params.items()}
