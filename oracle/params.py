"""Parameter dictionaries: the state-dict keys and shapes of the contract, and prefix helpers."""
import numpy as np


def param_shapes(cfg):
    """Every state-dict key of the model described by ``cfg``, with its shape (tinygrad (out, in) layout)."""
    C, F, V = cfg.d_model, cfg.d_ff, cfg.vocab_size
    shapes = {"wte.weight": (V, C), "wpe.weight": (cfg.context_length, C)}
    for i in range(cfg.n_layers):
        shapes.update({
            f"h.{i}.ln_1.weight": (C,), f"h.{i}.ln_1.bias": (C,),
            f"h.{i}.attn.c_attn.weight": (3 * C, C), f"h.{i}.attn.c_attn.bias": (3 * C,),
            f"h.{i}.attn.c_proj.weight": (C, C), f"h.{i}.attn.c_proj.bias": (C,),
            f"h.{i}.ln_2.weight": (C,), f"h.{i}.ln_2.bias": (C,),
            f"h.{i}.mlp.c_fc.weight": (F, C), f"h.{i}.mlp.c_fc.bias": (F,),
            f"h.{i}.mlp.c_proj.weight": (C, F), f"h.{i}.mlp.c_proj.bias": (C,),
        })
    shapes.update({"ln_f.weight": (C,), "ln_f.bias": (C,)})
    if not cfg.tie_embeddings:
        shapes["lm_head.weight"] = (V, C)
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
