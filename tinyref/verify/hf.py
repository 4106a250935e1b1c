"""Hugging Face GPT-2 and Llama <-> tinyref: config fields and state-dict layout, both ways.

The numbers are the same; three things about how they are stored differ:

- HF's GPT-2 computes its projections with ``Conv1D``, ``y = x @ W + b`` with ``W`` of shape
  ``(in, out)``; tinyref (tinygrad's ``nn.Linear``) computes ``y = x @ W.T + b`` with ``W`` of
  shape ``(out, in)``. The weights of ``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc`` and
  ``mlp.c_proj`` are transposed on the way; biases, LayerNorms and embeddings are not.
- ``GPT2LMHeadModel`` prefixes the body's keys with ``transformer.`` and lists ``lm_head.weight``
  even when it is the same tensor as ``wte.weight`` (tied, GPT-2's default); tinyref has no
  ``lm_head.weight`` when tied. ``save_pretrained`` files omit the tied head.
- Older HF files carry the causal-mask buffers ``h.{i}.attn.bias`` and ``h.{i}.attn.masked_bias``:
  not parameters, dropped.

HF's ``LlamaForCausalLM`` uses ``nn.Linear`` (nothing to transpose) under other names, with q, k
and v as three projections where tinyref has one ``c_attn`` (their rows stacked ``[q | k | v]``):
``LLAMA_MODULES`` is the table. Its RoPE is the "half" style (HF's conversion permutes Meta's q and
k rows for ``rotate_half``), so only ``rope_style="half"`` configs have a HF Llama form.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import oracle

from ..config import LLAMA, GPTConfig
from ..errors import CheckpointError, ConfigError
from .golden import read_safetensors, replacing_directory, write_safetensors

HF_PREFIX = "transformer."
CONV1D_WEIGHTS = ("c_attn.weight", "c_proj.weight", "c_fc.weight")   # (in, out) in HF, (out, in) in tinyref
MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")                    # not ".c_attn.bias": the dot matters
HF_WEIGHTS_FILE = "model.safetensors"
# HF activation_function -> GPTConfig.activation ("gelu_pytorch_tanh" is the same tanh GELU, fused in torch)
ACTIVATIONS_FROM_HF = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
ACTIVATIONS_TO_HF = {"gelu_tanh": "gelu_new", "gelu": "gelu"}
HF_LLAMA_ACTIVATIONS = {"silu": "silu", **ACTIVATIONS_FROM_HF}    # LlamaConfig.hidden_act -> GPTConfig.activation
ACTIVATIONS_TO_HF_LLAMA = {"silu": "silu", **ACTIVATIONS_TO_HF}       # GPTConfig.activation -> LlamaConfig.hidden_act

# --8<-- [start:llama_modules]
# tinyref's modules -> LlamaForCausalLM's ("{i}" is the block); a tuple is stacked by rows into one tinyref layer
LLAMA_MODULES = {"wte": "model.embed_tokens", "h.{i}": "model.layers.{i}", "h.{i}.ln_1": "model.layers.{i}.input_layernorm",
                 "h.{i}.attn": "model.layers.{i}.self_attn",
                 "h.{i}.attn.c_attn": ("model.layers.{i}.self_attn.q_proj", "model.layers.{i}.self_attn.k_proj",
                                       "model.layers.{i}.self_attn.v_proj"),
                 "h.{i}.attn.c_proj": "model.layers.{i}.self_attn.o_proj",
                 "h.{i}.ln_2": "model.layers.{i}.post_attention_layernorm", "h.{i}.mlp": "model.layers.{i}.mlp",
                 "h.{i}.mlp.c_gate": "model.layers.{i}.mlp.gate_proj", "h.{i}.mlp.c_fc": "model.layers.{i}.mlp.up_proj",
                 "h.{i}.mlp.c_proj": "model.layers.{i}.mlp.down_proj", "ln_f": "model.norm", "lm_head": "lm_head"}
# --8<-- [end:llama_modules]


# --8<-- [start:config]
def config_from_hf(hf: dict) -> GPTConfig:
    """A GPTConfig from a HF ``GPT2Config`` dict (``config.json``); refuses GPT-2 variants tinyref does not compute."""
    act = hf.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS_FROM_HF:
        raise ConfigError(f"activation_function={act!r}: tinyref computes the exact GELU ('gelu') and the tanh GELU only "
                          "('gelu_new', 'gelu_pytorch_tanh'); set it in config.json or convert a different model")
    for flag, wanted in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                         ("add_cross_attention", False)):
        if hf.get(flag, wanted) != wanted:
            raise ConfigError(f"{flag}={hf[flag]!r} is a GPT-2 variant tinyref does not compute (needs {wanted})")
    missing = [k for k in ("vocab_size", "n_positions", "n_embd", "n_head", "n_layer") if k not in hf]
    if missing:
        raise ConfigError(f"the HF GPT-2 config lacks {missing}; is it a GPT2Config (model_type 'gpt2')?")
    return GPTConfig(vocab_size=hf["vocab_size"], context_length=hf["n_positions"], d_model=hf["n_embd"],
                     n_heads=hf["n_head"], n_layers=hf["n_layer"], d_ff=hf.get("n_inner"),
                     layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
                     tie_embeddings=hf.get("tie_word_embeddings", True), activation=ACTIVATIONS_FROM_HF[act])


def config_to_hf(cfg: GPTConfig) -> dict:
    """The ``GPT2Config`` fields of ``cfg`` (``GPT2Config(**config_to_hf(cfg))``), dropout off."""
    require_biases(cfg)
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": cfg.vocab_size,
            "n_positions": cfg.context_length, "n_embd": cfg.d_model, "n_head": cfg.n_heads, "n_layer": cfg.n_layers,
            "n_inner": cfg.d_ff, "layer_norm_epsilon": cfg.layer_norm_eps, "tie_word_embeddings": cfg.tie_embeddings,
            "activation_function": ACTIVATIONS_TO_HF[cfg.activation], "resid_pdrop": 0.0, "embd_pdrop": 0.0,
            "attn_pdrop": 0.0}


def require_biases(cfg: GPTConfig) -> None:
    """HF's GPT-2 always has every bias: a ``bias=False`` model has no form there."""
    if not cfg.bias:
        raise ConfigError("GPTConfig.bias=False has no Hugging Face GPT-2 form: GPT2Config has no bias-free variant "
                          "(every Linear and LayerNorm has a bias); convert a bias=True model")
# --8<-- [end:config]


# --8<-- [start:convert]
def transpose_conv1d(params: dict) -> dict:
    """Swap the projection weights between HF's (in, out) and tinyref's (out, in); its own inverse.

    Works on full keys (``h.0.attn.c_attn.weight``) and component-local ones (``c_attn.weight``)."""
    return {k: (v.T.copy() if k.endswith(CONV1D_WEIGHTS) else v) for k, v in params.items()}


def from_hf(state: dict, cfg: GPTConfig) -> dict:
    """tinyref parameters from a HF GPT-2 state dict (``GPT2Model`` or ``GPT2LMHeadModel`` keys;
    NumPy arrays or torch tensors). Raises CheckpointError unless the result is exactly the
    tinyref state dict of ``cfg``."""
    params = {}
    for key, value in state.items():
        name = key[len(HF_PREFIX):] if key.startswith(HF_PREFIX) else key
        if name.endswith(MASK_BUFFERS):
            continue                                   # causal-mask buffers, not parameters
        params[name] = np.array(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    if cfg.tie_embeddings and "lm_head.weight" in params:
        head = params.pop("lm_head.weight")
        if "wte.weight" in params and not np.array_equal(head, params["wte.weight"]):
            raise CheckpointError("lm_head.weight differs from wte.weight although the config ties them; "
                                  "set tie_word_embeddings=false in config.json to keep both")
    params = transpose_conv1d(params)
    check_state_dict(params, cfg)
    return params


def to_hf(params: dict, cfg: GPTConfig) -> dict:
    """A ``GPT2LMHeadModel`` state dict (``load_state_dict(..., strict=True)`` accepts it) from tinyref parameters."""
    require_biases(cfg)
    check_state_dict(params, cfg)
    state = {(k if k == "lm_head.weight" else HF_PREFIX + k): v for k, v in transpose_conv1d(params).items()}
    if cfg.tie_embeddings:
        state["lm_head.weight"] = params["wte.weight"]   # HF lists the tied head under both names
    return state
# --8<-- [end:convert]


# --8<-- [start:llama]
def config_from_hf_llama(hf: dict) -> GPTConfig:
    """A GPTConfig from a HF ``LlamaConfig`` dict (``config.json``); refuses Llama variants tinyref does not compute."""
    act = hf.get("hidden_act", "silu")
    if act not in HF_LLAMA_ACTIVATIONS:
        raise ConfigError(f"hidden_act={act!r}: tinyref's gated MLP computes {sorted(HF_LLAMA_ACTIVATIONS)} only; "
                          "convert a model with one of those")
    rope = hf.get("rope_parameters") or {}
    scaling = rope_scaling(hf.get("rope_parameters"), hf.get("rope_scaling"))
    if scaling:
        raise ConfigError(f"rope scaling {scaling!r} is not computed by tinyref (plain RoPE, rope_type 'default', only); "
                          "convert a model without rope_scaling")
    if hf.get("attention_bias", False) != hf.get("mlp_bias", False):
        raise ConfigError(f"attention_bias={hf.get('attention_bias', False)} with mlp_bias={hf.get('mlp_bias', False)}: "
                          "tinyref's bias setting covers every projection; convert a model where both are equal")
    missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
               if k not in hf]
    if missing:
        raise ConfigError(f"the HF Llama config lacks {missing}; is it a LlamaConfig (model_type 'llama')?")
    C, H = hf["hidden_size"], hf["num_attention_heads"]
    if hf.get("head_dim") not in (None, C // H):
        raise ConfigError(f"head_dim={hf['head_dim']} differs from hidden_size / num_attention_heads = {C // H}: "
                          "tinyref's heads are d_model / n_heads wide")
    return GPTConfig.llama(vocab_size=hf["vocab_size"], context_length=hf.get("max_position_embeddings", 2048), d_model=C,
                           n_heads=H, n_layers=hf["num_hidden_layers"], n_kv_heads=hf.get("num_key_value_heads"),
                           d_ff=hf["intermediate_size"], rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
                           layer_norm_eps=hf.get("rms_norm_eps", 1e-6), tie_embeddings=hf.get("tie_word_embeddings", False),
                           activation=HF_LLAMA_ACTIVATIONS[act], bias=hf.get("attention_bias", False))


def rope_scaling(*settings) -> dict | None:
    """The first of a LlamaConfig's ``rope_parameters`` / ``rope_scaling`` that asks for more than plain RoPE, or None."""
    return next((s for s in settings if isinstance(s, dict) and s.get("rope_type", s.get("type", "default")) != "default"),
                None)


def config_to_hf_llama(cfg: GPTConfig) -> dict:
    """The ``LlamaConfig`` fields of ``cfg`` (``LlamaConfig(**config_to_hf_llama(cfg))``), dropout off."""
    require_llama_form(cfg)
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.d_model, "intermediate_size": cfg.d_ff, "num_hidden_layers": cfg.n_layers,
            "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim,
            "max_position_embeddings": cfg.context_length, "rms_norm_eps": cfg.layer_norm_eps,
            "tie_word_embeddings": cfg.tie_embeddings, "hidden_act": ACTIVATIONS_TO_HF_LLAMA[cfg.activation],
            "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta}, "attention_bias": cfg.bias,
            "mlp_bias": cfg.bias, "attention_dropout": 0.0}


def require_llama_form(cfg: GPTConfig) -> None:
    """HF's Llama is rotary ("half"), RMSNorm and gated: other GPTConfigs have no LlamaForCausalLM form."""
    want = {k: LLAMA[k] for k in ("positions", "rope_style", "norm", "gated_mlp")}   # GPTConfig.llama()'s
    wrong = [f"{k}={getattr(cfg, k)!r}" for k, v in want.items() if getattr(cfg, k) != v]
    if wrong:
        raise ConfigError(f"GPTConfig with {', '.join(wrong)} has no Hugging Face LlamaForCausalLM form (it needs "
                          "positions='rope', rope_style='half', norm='rmsnorm', gated_mlp=True: GPTConfig.llama(...))")


def module_names(modules: dict, n_layers: int) -> dict:
    """tinyref module -> the tuple of the other model's module names, each block spelled out (``modules``:
    a table like ``LLAMA_MODULES``)."""
    names = {}
    for ours, theirs in modules.items():
        theirs = theirs if isinstance(theirs, tuple) else (theirs,)
        for i in range(n_layers) if "{i}" in ours else (0,):
            names[ours.format(i=i)] = tuple(t.format(i=i) for t in theirs)
    return names


def parameter_names(modules: dict, cfg: GPTConfig) -> dict:
    """tinyref key -> the other model's parameter names whose rows it stacks, for every key of ``cfg``'s state dict."""
    names = module_names(modules, cfg.n_layers)
    return {key: tuple(f"{m}.{key.rsplit('.', 1)[1]}" for m in names[key.rsplit(".", 1)[0]])
            for key in oracle.param_shapes(cfg)}


def row_split(key: str, value, cfg: GPTConfig) -> list:
    """``value`` of tinyref's ``key`` cut into the rows of its parts: c_attn into [q | k | v]."""
    if not key.endswith(("c_attn.weight", "c_attn.bias")):
        return [value]
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    return np.split(value, [q, q + kv])


def from_hf_llama(state: dict, cfg: GPTConfig) -> dict:
    """tinyref parameters from a HF ``LlamaForCausalLM`` state dict (NumPy arrays or torch tensors). Raises
    CheckpointError unless it holds exactly the parameters of ``cfg`` (``rotary_emb`` buffers are ignored)."""
    state = {k: np.array(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in state.items()
             if ".rotary_emb." not in f".{k}"}
    names = parameter_names(LLAMA_MODULES, cfg)
    head = state.pop("lm_head.weight", None) if cfg.tie_embeddings else None
    if head is not None and "model.embed_tokens.weight" in state and not np.array_equal(head, state["model.embed_tokens.weight"]):
        raise CheckpointError("lm_head.weight differs from model.embed_tokens.weight although the config ties them; "
                              "set tie_word_embeddings=false in config.json to keep both")
    used = {n for parts in names.values() for n in parts}
    missing, extra = sorted(used - set(state)), sorted(set(state) - used)
    if missing or extra:
        raise CheckpointError(f"the HF Llama state dict does not match the config: missing {missing[:5]}, unexpected "
                              f"{extra[:5]}; check the config (num_hidden_layers, tie_word_embeddings, biases)")
    params = {key: np.concatenate([state[n] for n in parts]) for key, parts in names.items()}
    check_state_dict(params, cfg)
    return params


def to_hf_llama(params: dict, cfg: GPTConfig) -> dict:
    """A ``LlamaForCausalLM`` state dict (``load_state_dict(..., strict=True)`` accepts it) from tinyref parameters."""
    require_llama_form(cfg)
    check_state_dict(params, cfg)
    state = {}
    for key, parts in parameter_names(LLAMA_MODULES, cfg).items():
        state.update(zip(parts, row_split(key, params[key], cfg)))
    if cfg.tie_embeddings:
        state["lm_head.weight"] = params["wte.weight"]   # HF lists the tied head under both names
    return state
# --8<-- [end:llama]


def check_state_dict(params: dict, cfg: GPTConfig) -> None:
    """CheckpointError unless ``params`` has exactly the keys and shapes of tinyref's state dict for ``cfg``."""
    want = oracle.param_shapes(cfg)
    missing, extra = sorted(set(want) - set(params)), sorted(set(params) - set(want))
    if missing or extra:
        raise CheckpointError(f"state dict does not match the config: missing {missing[:5]}, unexpected {extra[:5]}"
                              f"{' (more not shown)' if len(missing) > 5 or len(extra) > 5 else ''}; "
                              "check the config (n_layers, tie_embeddings) against the weights")
    for k, shape in want.items():
        if tuple(np.shape(params[k])) != shape:
            raise CheckpointError(f"{k} has shape {tuple(np.shape(params[k]))}, the config needs {shape}")


def load_hf_gpt2(directory) -> tuple[GPTConfig, dict]:
    """(cfg, params) from a HF GPT-2 directory holding ``config.json`` and ``model.safetensors``."""
    directory = Path(directory)
    try:
        hf_config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {directory / 'config.json'} ({e}); point at a HF GPT-2 model directory") from None
    if not isinstance(hf_config, dict):
        raise CheckpointError(f"{directory / 'config.json'} must hold a JSON object")
    cfg = config_from_hf(hf_config)
    return cfg, from_hf(read_safetensors(directory / HF_WEIGHTS_FILE), cfg)


def save_hf_gpt2(directory, cfg: GPTConfig, params: dict, overwrite: bool = False) -> None:
    """Write ``config.json`` and ``model.safetensors`` that ``GPT2LMHeadModel.from_pretrained(directory)`` loads."""
    state = to_hf(params, cfg)
    with replacing_directory(Path(directory), overwrite) as tmp:
        (tmp / "config.json").write_text(json.dumps(config_to_hf(cfg), indent=2) + "\n")
        write_safetensors(tmp / HF_WEIGHTS_FILE, state)
