"""What a PyTorch GPT is, read off the module: which names it uses (GPT-2's, Hugging Face Llama's or
Meta's Llama's), its parameters under tinyref's keys (q, k and v stacked into c_attn), and the
GPTConfig its shapes, config object and modules describe, each field with where it came from.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import oracle

from ..config import GPTConfig
from ..errors import UsageError, require
from ..verify.hf import (ACTIVATIONS_FROM_HF, CONV1D_WEIGHTS, HF_LLAMA_ACTIVATIONS, HF_PREFIX, LLAMA_MODULES,
                         module_names, rope_scaling)

torch = require("torch", "tinyref.testing.torch", extra="torch")

DEFAULT_SEQ_LEN = 32   # positions checked when seq_len is not given: every mask bug shows by then
TORCH_GELUS = {"tanh": "gelu_tanh", "none": "gelu"}   # nn.GELU(approximate=...)

# GPT-2's modules under their own names (nanoGPT, minGPT, HF GPT2LMHeadModel; "transformer." prefix or none)
GPT2_MODULES = {m: m for m in ("wte", "wpe", "h.{i}", "h.{i}.ln_1", "h.{i}.attn", "h.{i}.attn.c_attn", "h.{i}.attn.c_proj",
                               "h.{i}.ln_2", "h.{i}.mlp", "h.{i}.mlp.c_fc", "h.{i}.mlp.c_proj", "ln_f", "lm_head")}
# Meta's reference Llama (llama/model.py): w1 is the gate, w3 the up projection, w2 the down projection
META_MODULES = {"wte": "tok_embeddings", "h.{i}": "layers.{i}", "h.{i}.ln_1": "layers.{i}.attention_norm",
                "h.{i}.attn": "layers.{i}.attention",
                "h.{i}.attn.c_attn": ("layers.{i}.attention.wq", "layers.{i}.attention.wk", "layers.{i}.attention.wv"),
                "h.{i}.attn.c_proj": "layers.{i}.attention.wo", "h.{i}.ln_2": "layers.{i}.ffn_norm",
                "h.{i}.mlp": "layers.{i}.feed_forward", "h.{i}.mlp.c_gate": "layers.{i}.feed_forward.w1",
                "h.{i}.mlp.c_fc": "layers.{i}.feed_forward.w3", "h.{i}.mlp.c_proj": "layers.{i}.feed_forward.w2",
                "ln_f": "norm", "lm_head": "output"}


@dataclass(frozen=True)
class Naming:
    """How a model names tinyref's modules and parameters."""

    layout: str                 # what the report calls it
    modules: dict               # tinyref module -> the model's (h.0.attn -> model.layers.0.self_attn)
    params: dict                # tinyref key -> the model's Parameters whose rows it stacks (q, k, v -> c_attn)
    conv1d: bool                # HF GPT-2: projection weights stored (in, out)
    rope_style: str | None      # the RoPE style a Llama's names imply (their checkpoints' q, k rows); None: GPT-2
    unused: tuple               # the model's parameters no tinyref key takes
    n_layers: int

    def shape(self, key: str) -> tuple:
        """The shape of tinyref's ``key`` (its parts' rows stacked, a Conv1D weight transposed)."""
        parts = [tuple(p.shape) for p in self.params[key]]
        if self.conv1d and key.endswith(CONV1D_WEIGHTS):
            return parts[0][::-1]
        return (sum(s[0] for s in parts), *parts[0][1:])


def read_naming(model) -> Naming:
    """Which names ``model`` uses (GPT-2's, HF Llama's or Meta's Llama's) and its parameters under tinyref's keys."""
    named = dict(model.named_parameters(remove_duplicate=False))
    prefix = HF_PREFIX if any(n.startswith(HF_PREFIX) for n in named) else ""
    if "model.embed_tokens.weight" in named:
        table, layout, style = LLAMA_MODULES, "Hugging Face LlamaForCausalLM names, nn.Linear (out, in)", "half"
    elif "tok_embeddings.weight" in named:
        table, layout, style = META_MODULES, "Meta's Llama names, nn.Linear (out, in)", "interleaved"
    else:
        table = {k: v if k == "lm_head" else prefix + v for k, v in GPT2_MODULES.items()}
        layout, style = f"'{prefix}' prefix, " if prefix else "", None
    first_qkv = table["h.{i}.attn.c_attn"]
    first_qkv = first_qkv[0] if isinstance(first_qkv, tuple) else first_qkv
    n_layers = next(i for i in range(len(named) + 1) if f"{first_qkv.format(i=i)}.weight" not in named)
    modules = module_names(table, n_layers)
    params = {f"{m}.{suffix}": tuple(named[f"{p}.{suffix}"] for p in parts)
              for m, parts in modules.items() for suffix in ("weight", "bias")
              if all(f"{p}.{suffix}" in named for p in parts)}
    if "lm_head.weight" in params and "wte.weight" in params and params["lm_head.weight"][0] is params["wte.weight"][0]:
        del params["lm_head.weight"]                          # a tied head is wte itself
    if "wte.weight" not in params or "h.0.attn.c_attn.weight" not in params:
        raise UsageError(f"{type(model).__name__} has no parameters named wte.weight and h.0.attn.c_attn.weight "
                         f"(with or without '{HF_PREFIX}'), model.embed_tokens.weight or tok_embeddings.weight: "
                         "check_torch_model needs GPT-2's parameter names (nanoGPT, minGPT, HF GPT2LMHeadModel) or "
                         "a Llama's (HF LlamaForCausalLM, Meta's llama/model.py)")
    C = params["wte.weight"][0].shape[1]
    conv1d = style is None and tuple(params["h.0.attn.c_attn.weight"][0].shape) == (C, 3 * C)
    if style is None:
        layout += "Conv1D (in, out)" if conv1d else "nn.Linear (out, in)"
    used = {id(p) for parts in params.values() for p in parts}
    unused = tuple(n for n, p in named.items() if id(p) not in used)
    return Naming(layout, {m: parts[0] for m, parts in modules.items()}, params, conv1d, style, unused, n_layers)


def _from_shapes(shapes: dict, n_layers: int, llama: bool) -> dict:
    """The GPTConfig fields the parameters' shapes and names determine (a Llama's context length they do not)."""
    V, C = shapes["wte.weight"]
    fields = {"vocab_size": V, "context_length": shapes.get("wpe.weight", (1,))[0], "d_model": C, "n_layers": n_layers,
              "d_ff": shapes.get("h.0.mlp.c_fc.weight", (1,))[0], "tie_embeddings": "lm_head.weight" not in shapes,
              "bias": any(k.endswith(".bias") and ".ln_" not in f".{k}" for k in shapes)}
    if llama:
        del fields["context_length"]
    return fields


def submodule(model, name: str):
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _attribute(sources, kind=int):
    """(value, where) of the first attribute of type ``kind`` among ``(owner, where, attribute names)``."""
    for owner, where, attrs in sources:
        for attr in attrs:
            value = getattr(owner, attr, None)
            if isinstance(value, kind) and not isinstance(value, bool):
                return value, f"{where}.{attr}"
    return None


def _declared(model, naming: Naming) -> dict:
    """field -> (value, where it was read) for what the weights cannot show: heads, activation, norm eps; for a
    Llama also RoPE theta and the context length. Refuses RoPE scaling, which the oracle does not compute."""
    config, args = getattr(model, "config", None), getattr(model, "params", None)   # Meta keeps its ModelArgs in .params
    attn_name, mlp_name = naming.modules["h.0.attn"], naming.modules["h.0.mlp"]
    attn, mlp = submodule(model, attn_name), submodule(model, mlp_name)
    C, found = naming.shape("wte.weight")[1], {}
    heads = _attribute([(config, "model.config", ("n_head", "n_heads", "num_attention_heads")),
                        (args, "model.params", ("n_heads",)),
                        (attn, attn_name, ("n_head", "n_heads", "num_heads", "n_local_heads"))])
    head_dim = _attribute([(config, "model.config", ("head_dim",)), (attn, attn_name, ("head_dim",))])
    if heads:
        found["n_heads"] = heads
    elif head_dim and C % head_dim[0] == 0:
        found["n_heads"] = (C // head_dim[0], f"d_model {C} / {head_dim[1]}")
    act_name = _attribute([(config, "model.config", ("activation_function", "hidden_act"))], str)
    from_hf = HF_LLAMA_ACTIVATIONS if naming.rope_style else ACTIVATIONS_FROM_HF
    acts = [(n, m) for n, m in (mlp.named_modules() if mlp is not None else ())
            if isinstance(m, (torch.nn.GELU, torch.nn.SiLU))]
    if act_name and act_name[0] in from_hf:
        found["activation"] = (from_hf[act_name[0]], f"{act_name[1]}={act_name[0]!r}")
    elif acts:
        name, act = acts[0]
        found["activation"] = ("silu", f"{mlp_name}.{name} is nn.SiLU()") if isinstance(act, torch.nn.SiLU) else \
            (TORCH_GELUS[act.approximate], f"{mlp_name}.{name} is nn.GELU(approximate={act.approximate!r})")
    norms = [naming.modules[m] for m in naming.modules if m.endswith(("ln_1", "ln_2", "ln_f"))]
    eps = {}
    for name in norms:
        read = _attribute([(submodule(model, name), name, ("eps", "variance_epsilon"))], float)
        if read:
            eps[read[1]] = read[0]
    if eps:
        common = max(set(eps.values()), key=list(eps.values()).count)
        odd = [n for n, e in eps.items() if e != common]
        found["layer_norm_eps"] = (common, next(iter(eps)) + (f"; {odd[0]}={eps[odd[0]]:g} differs" if odd else ""))
    elif declared_eps := _attribute([(config, "model.config", ("rms_norm_eps", "layer_norm_epsilon")),
                                     (args, "model.params", ("norm_eps",))], float):
        found["layer_norm_eps"] = declared_eps
    if naming.rope_style:
        rope = getattr(config, "rope_parameters", None)
        scaling = rope_scaling(rope, getattr(config, "rope_scaling", None))
        if scaling:
            raise UsageError(f"model.config asks for RoPE scaling {scaling!r}, which tinyref's oracle does not compute "
                             "(plain RoPE only): check a model without rope scaling")
        theta = _attribute([(SimpleNamespace(**rope) if isinstance(rope, dict) else None, "model.config.rope_parameters",
                             ("rope_theta",)), (config, "model.config", ("rope_theta",)),
                            (args, "model.params", ("rope_theta",)), (attn, attn_name, ("rope_theta", "theta"))],
                           (int, float))
        if theta:
            found["rope_theta"] = (float(theta[0]), theta[1])
        context = _attribute([(config, "model.config", ("max_position_embeddings", "n_positions")),
                              (args, "model.params", ("max_seq_len",))])
        if context:
            found["context_length"] = context
    return found


def _assumed(llama: bool) -> dict:
    """field -> (value, why) for what neither the weights nor the model said."""
    if not llama:
        return {"activation": ("gelu_tanh", "no nn.GELU module in h.0.mlp and no config.activation_function"),
                "layer_norm_eps": (1e-5, "no eps attribute on ln_1/ln_2/ln_f")}
    return {"activation": ("silu", "no nn.SiLU/nn.GELU module in the MLP and no config.hidden_act"),
            "layer_norm_eps": (1e-6, "no eps/variance_epsilon attribute on the RMSNorms and no config.rms_norm_eps"),
            "rope_theta": (10000.0, "no rope_theta in model.config or model.params"),
            "context_length": (DEFAULT_SEQ_LEN, "no max_position_embeddings/max_seq_len: the weights do not bound it")}


def infer_config(model, cfg: GPTConfig | None = None) -> tuple[GPTConfig, list[str]]:
    """(the config to check ``model`` as, one note per field saying where it came from or what was assumed).

    With ``cfg``, checks that the parameters fit it and notes where the model declares otherwise."""
    naming = read_naming(model)
    llama = naming.rope_style is not None
    shapes = {k: naming.shape(k) for k in naming.params}
    declared = _declared(model, naming)
    if cfg is not None:
        if not isinstance(cfg, GPTConfig):
            raise UsageError(f"cfg must be a tinyref.GPTConfig, got {type(cfg).__name__}")
        notes = [f"{naming.layout}; checked as the cfg given"]
        notes += [f"note: cfg.{f}={getattr(cfg, f)!r}, but the model says {value!r} ({where})"
                  for f, (value, where) in declared.items() if getattr(cfg, f) != value]
    else:
        inferred = _from_shapes(shapes, naming.n_layers, llama)
        notes = [f"{naming.layout}; from the parameters: " + ", ".join(f"{k}={v}" for k, v in inferred.items())]
        if "n_heads" not in declared:
            raise UsageError("n_heads cannot be read from the weights and the model has no n_head/n_heads/num_heads or "
                             f"head_dim attribute (model.config, {naming.modules['h.0.attn']}): "
                             "pass cfg=GPTConfig(..., n_heads=...)")
        notes += [f"{f}={value!r} from {where}" for f, (value, where) in declared.items()]
        assumed = _assumed(llama)
        notes += [f"{f}={value!r} assumed ({'Llama' if llama else 'GPT-2'}'s): {why}; pass cfg to check another"
                  for f, (value, why) in assumed.items() if f not in declared]
        fields = {**inferred, **{f: v for f, (v, _) in {**assumed, **declared}.items()}}
        if llama:
            k_name = naming.modules["h.0.attn.c_attn"].replace("q_proj", "k_proj").replace(".wq", ".wk")
            k_rows, head_dim = naming.params["h.0.attn.c_attn.weight"][1].shape[0], inferred["d_model"] // fields["n_heads"]
            fields.update(positions="rope", norm="rmsnorm", gated_mlp=True, rope_style=naming.rope_style,
                          n_kv_heads=max(k_rows // head_dim, 1))
            notes += [f"n_kv_heads={fields['n_kv_heads']} from {k_name}'s {k_rows} rows / head_dim {head_dim}",
                      f"positions='rope', norm='rmsnorm', gated_mlp=True from the Llama names; rope_style="
                      f"{naming.rope_style!r}, the style checkpoints with these names hold"]
        cfg = GPTConfig(**fields)
    want = oracle.param_shapes(cfg)
    missing, extra = sorted(set(want) - set(shapes)), sorted(set(shapes) - set(want)) + list(naming.unused)
    wrong = [f"{k} {shapes[k]} (needs {s})" for k, s in want.items() if k in shapes and shapes[k] != s]
    problems = [f"{what} {names[:4]}" for what, names in (("missing", missing), ("unexpected", extra),
                                                          ("wrong shape", wrong)) if names]
    if problems:
        raise UsageError(f"the parameters of {type(model).__name__} do not fit {cfg}: {'; '.join(problems)}")
    return cfg, notes
