"""Check a PyTorch GPT-2 or Llama module against the float64 oracle, and name the first layer that diverges.

    from tinyref.testing.torch import check_torch_model
    check_torch_model(model)      # nanoGPT, minGPT, HF GPT2LMHeadModel or LlamaForCausalLM, Meta's Llama, or yours

Works on any ``torch.nn.Module`` whose parameters carry GPT-2's names (with or without the
``transformer.`` prefix, projections as ``nn.Linear`` ``(out, in)`` or HF ``Conv1D`` ``(in, out)``),
Hugging Face's ``LlamaForCausalLM`` names (``model.layers.{i}.self_attn.q_proj``, ...) or Meta's
reference Llama names (``layers.{i}.attention.wq``, ...), tied or untied head. The config comes from
the parameters' shapes; what the weights cannot say (heads, activation, norm eps, RoPE theta) from
``model.config`` (Meta's: ``model.params``) or the modules, else from ``cfg``. A Llama's RoPE style
is found by running the oracle with each. A float64 copy of the model (in eval mode) gets tinyref's
reference weights, then its logits and every gradient of the mean cross-entropy are compared with
the oracle's. On a mismatch, forward hooks on each block's norms, attention and MLP and on the
final norm find the first one whose input or output leaves the oracle's, and the report names it.
A model that agrees only to float32 precision (a float32 cast inside) passes with a note saying
where the precision is first lost.
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Callable

import numpy as np

import oracle

from ..config import GPTConfig
from ..errors import UsageError, require
from ..verify.hf import (ACTIVATIONS_FROM_HF, CONV1D_WEIGHTS, HF_LLAMA_ACTIVATIONS, HF_PREFIX, LLAMA_MODULES,
                         module_names, rope_scaling)
from ..verify.tolerances import FLOAT32, FLOAT32_CASTS, FLOAT64, Tolerance, compare, max_error
from . import ReferenceMismatch, _gradient_tolerance, _mismatch_lines, reference_inputs
from .divergence import agreeing_values, first_divergence, first_precision_loss, oracle_trace

torch = require("torch", "tinyref.testing.torch", extra="torch")

__all__ = ["TorchCheck", "check_torch_model", "infer_config"]

DEFAULT_SEQ_LEN = 32   # positions checked when seq_len is not given: every mask bug shows by then
TORCH_GELUS = {"tanh": "gelu_tanh", "none": "gelu"}   # nn.GELU(approximate=...)
ROPE_STYLES = ("half", "interleaved")

# --8<-- [start:names]
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
# --8<-- [end:names]


@dataclass(frozen=True)
class TorchCheck:
    """A passed check: the config it ran, where each field came from, the worst error per tensor."""

    cfg: GPTConfig
    notes: tuple
    errors: dict
    float32_from: str | None = None     # float32 precision only: the first hooked value that leaves float64's

    def __str__(self) -> str:
        worst = max(self.errors.values(), default=0.0)
        only = " to float32 precision only" if self.float32_from else ""
        return "\n".join([f"agrees with the tinyref oracle{only}: {len(self.errors)} tensors (logits, gradients, any "
                          f"loss returned), worst error {worst:.2g} of scale", f"checked as {self.cfg}", *self.notes])


# --- what the model is -----------------------------------------------------------------------

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


def _naming(model) -> Naming:
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


def _submodule(model, name: str):
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
    attn, mlp = _submodule(model, attn_name), _submodule(model, mlp_name)
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
        read = _attribute([(_submodule(model, name), name, ("eps", "variance_epsilon"))], float)
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
    naming = _naming(model)
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


# --- running it ------------------------------------------------------------------------------

def _logits(model, idx: np.ndarray, targets: np.ndarray, forward: Callable | None, V: int):
    """(logits (B, T, V), the loss the model returned or None) from ``model(idx)``, ``model(idx, targets=...)``
    (nanoGPT returns the last position only without targets), a tuple, HF's output object, or ``forward``."""
    idx_t, targets_t = torch.from_numpy(idx), torch.from_numpy(targets)
    if forward is not None:
        out = forward(model, idx_t)
    else:
        try:
            takes_targets = "targets" in inspect.signature(model.forward).parameters
        except (TypeError, ValueError):
            takes_targets = False
        out = model(idx_t, targets=targets_t) if takes_targets else model(idx_t)
    loss = None
    if isinstance(out, (tuple, list)) and out:
        loss = out[1] if len(out) > 1 and isinstance(out[1], torch.Tensor) and out[1].numel() == 1 else None
        out = out[0]
    out = getattr(out, "logits", out)
    adapter = "pass forward=lambda model, idx: ... returning the logits of every position"
    if not isinstance(out, torch.Tensor):
        raise UsageError(f"{type(model).__name__}'s forward returned {type(out).__name__}, not logits: {adapter}")
    if tuple(out.shape) != (*idx.shape, V):
        raise UsageError(f"{type(model).__name__} returned logits of shape {tuple(out.shape)}, "
                         f"expected (B, T, vocab) = {(*idx.shape, V)}: {adapter}")
    return out, loss


def _load(naming: Naming, values: dict) -> None:
    """The oracle's weights into the model: c_attn's rows back into q, k and v; Conv1D weights transposed."""
    with torch.no_grad():
        for k, v in values.items():
            parts = naming.params[k]
            v = v.T if naming.conv1d and k.endswith(CONV1D_WEIGHTS) else v
            for p, rows in zip(parts, np.split(v, np.cumsum([p.shape[0] for p in parts])[:-1])):
                p.copy_(torch.from_numpy(np.ascontiguousarray(rows)))
                p.grad = None


def _gradient(naming: Naming, k: str):
    grads = [p.grad for p in naming.params[k]]
    if any(g is None for g in grads):
        return None
    g = torch.cat(grads).numpy()
    return g.T if naming.conv1d and k.endswith(CONV1D_WEIGHTS) else g


def _capture(model, naming: Naming, modules, run: Callable) -> dict:
    """tinyref module -> {"input": ..., "output": ...} as ``run()`` passes the model's module of each. An MLP
    that is only a container (minGPT's ModuleDict, called through a lambda) is read at c_fc's input and
    c_proj's output instead; a container that is called overwrites those (its hook runs last)."""
    captured, handles = {}, []

    def hook(name, parts):
        def record(module, args, kwargs, output):
            x = args[0] if args else next(iter(kwargs.values()), None)
            values = {"input": x, "output": output[0] if isinstance(output, (tuple, list)) else output}
            captured.setdefault(name, {}).update({part: values[part].detach().numpy() for part in parts})
        return record

    for name in modules:
        watch = [(naming.modules[name], ("input", "output"))]
        if name.endswith(".mlp"):
            watch += [(naming.modules[f"{name}.c_fc"], ("input",)), (naming.modules[f"{name}.c_proj"], ("output",))]
        for path, parts in watch:
            module = _submodule(model, path)
            if module is not None:
                handles.append(module.register_forward_hook(hook(name, parts), with_kwargs=True))
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return captured


@contextlib.contextmanager
def _float64(model):
    """The model itself in float64 and eval mode (dropout off); dtypes, weights, gradients, buffers and
    mode restored afterwards. Not a deepcopy: minGPT's MLP is a lambda over the original modules."""
    params = [(p, p.data, p.grad) for p in model.parameters()]
    buffers = [(m, dict(m._buffers)) for m in model.modules()]
    training = model.training
    try:
        yield model.to(torch.float64).eval()
    finally:
        for p, data, grad in params:
            p.data, p.grad = data, grad
        for m, saved in buffers:
            m._buffers.update(saved)
        model.train(training)


@dataclass
class _Run:
    """One seed's inputs, and each compared tensor's (the model's value, the oracle's, whether a gradient)."""

    seed: int
    values: dict
    idx: np.ndarray
    targets: np.ndarray
    tensors: dict


def _run(model, naming: Naming, cfg: GPTConfig, forward, batch: int, T: int, seed: int) -> _Run:
    values, idx, targets = reference_inputs(cfg, batch, T, seed)
    logits, cache = oracle.gpt_forward(idx, values, cfg)
    loss, loss_cache = oracle.cross_entropy_forward(logits, targets)
    grads = oracle.gpt_backward(oracle.cross_entropy_backward(loss_cache), cache)
    _load(naming, values)
    got, got_loss = _logits(model, idx, targets, forward, cfg.vocab_size)
    torch.nn.functional.cross_entropy(got.flatten(0, 1), torch.from_numpy(targets).flatten()).backward()
    tensors = {"logits": (got.detach().numpy(), logits, False)}
    if got_loss is not None:
        tensors["loss (returned by the model)"] = (got_loss.detach().numpy(), loss, False)
    tensors.update({f"grad {k}": (_gradient(naming, k), g, True) for k, g in grads.items()})
    return _Run(seed, values, idx, targets, tensors)


def _compare(run: _Run, tol: Tolerance, grad_tol: Tolerance, errors: dict) -> list[str]:
    """One line per tensor of ``run`` that disagrees (gradients with the floor of the largest one)."""
    grad_tol = _gradient_tolerance(grad_tol, [want for _, want, is_grad in run.tensors.values() if is_grad])
    return [line for name, (got, want, is_grad) in run.tensors.items()
            for line in _mismatch_lines(name, got, want, grad_tol if is_grad else tol, errors)]


def _rope_style(model, naming: Naming, cfg: GPTConfig, forward, batch: int, T: int, seed: int, tol: Tolerance):
    """(cfg to check, notes): the model's logits against the oracle's with each RoPE style. A model whose style
    is not the one its names imply is checked as the implied one, so the report shows where it differs; one
    that agrees with neither is checked as the style it agrees with further into the model (ties: the implied)."""
    values, idx, targets = reference_inputs(cfg, batch, T, seed)
    styles = {s: replace(cfg, rope_style=s) for s in ROPE_STYLES}
    traces = {s: oracle_trace(idx, values, c, naming.modules) for s, c in styles.items()}
    want = {s: oracle.gpt_forward(idx, values, c)[0] for s, c in styles.items()}
    _load(naming, values)
    run = {}
    captured = _capture(model, naming, traces["half"], lambda: run.update(
        logits=_logits(model, idx, targets, forward, cfg.vocab_size)[0].numpy()))
    got, implied = run["logits"], naming.rope_style
    measured = "logit error of scale " + ", ".join(f"{s!r} {max_error(got, want[s]):.2g}" for s in ROPE_STYLES)
    agree = [s for s in ROPE_STYLES if compare("logits", got, want[s], tol) is None]
    if agree and implied not in agree:
        return cfg, [f"the model's RoPE is rope_style={agree[0]!r} (the oracle with it agrees; {measured}), but "
                     f"checkpoints with {naming.layout.split(',')[0]} hold q and k rows for {implied!r}, so their "
                     f"weights would compute wrong numbers: checked as {implied!r} to show where (pass "
                     f"cfg=GPTConfig.llama(..., rope_style={agree[0]!r}) to check it as it is)"]
    if agree:          # both agree only at head_dim 2, where the two styles pair the same dimensions
        return cfg, [f"rope_style={implied!r} detected: the oracle with it agrees ({measured})"]
    depth = {s: agreeing_values(captured, traces[s], tol) for s in ROPE_STYLES}
    closer = max(ROPE_STYLES, key=lambda s: (depth[s], s == implied))
    why = (f"the style of the names ({depth[closer]} hooked values agree with either before the first difference)"
           if len(set(depth.values())) == 1 else "with which more hooked values agree before the first difference ("
           + ", ".join(f"{s!r} {depth[s]}" for s in ROPE_STYLES) + ")")
    return styles[closer], [f"rope_style: the oracle agrees with neither style ({measured}); checked as {closer!r}, {why}"]


# --8<-- [start:check_torch_model]
def check_torch_model(model, cfg: GPTConfig | None = None, *, forward: Callable | None = None, batch: int = 2,
                      seq_len: int | None = None, seeds=(0, 1), tol: Tolerance = FLOAT64,
                      grad_tol: Tolerance = FLOAT64, cast_tol: Tolerance | None = FLOAT32_CASTS) -> TorchCheck:
    """Check a PyTorch GPT-2 or Llama against the oracle, in float64 (``model`` is restored afterwards).

    ``cfg`` defaults to what ``infer_config`` reads off the model (a Llama's RoPE style: the one whose
    oracle agrees); ``forward(model, idx)`` adapts a forward that does not take ``idx`` (B, T) and
    return logits, ``(logits, loss)`` or ``.logits``. Checks ``seq_len`` positions (default: the
    context, at most ``DEFAULT_SEQ_LEN``) on each seed. A model that misses ``tol``/``grad_tol`` but
    agrees within ``cast_tol`` passes with ``float32_from`` set (float32 casts inside; None: fail it).
    Raises ReferenceMismatch naming each tensor that differs and the first submodule that diverges."""
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"check_torch_model needs a torch.nn.Module, got {type(model).__name__}")
    inferred = cfg is None
    cfg, notes = infer_config(model, cfg)
    T = seq_len or min(cfg.context_length, DEFAULT_SEQ_LEN)
    with _float64(model):
        naming = _naming(model)
        if naming.rope_style and inferred:
            cfg, style_notes = _rope_style(model, naming, cfg, forward, batch, T, seeds[0], cast_tol or tol)
            notes += style_notes
        runs, errors = [_run(model, naming, cfg, forward, batch, T, seed) for seed in seeds], {}
        failed = next(((run, lines) for run in runs if (lines := _compare(run, tol, grad_tol, errors))), None)
        if failed is None:
            return TorchCheck(cfg, tuple(notes), errors)
        cast_errors, (run, lines) = {}, failed
        trace = oracle_trace(run.idx, run.values, cfg, naming.modules)

        def capture():
            _load(naming, run.values)
            return _capture(model, naming, trace, lambda: _logits(model, run.idx, run.targets, forward, cfg.vocab_size))

        if cast_tol is not None and not any(_compare(r, cast_tol, cast_tol, cast_errors) for r in runs):
            lost = first_precision_loss(capture(), naming.modules, trace, tol) or "the output head"
            notes.append(f"float32 precision only: agrees within rtol=atol={cast_tol.atol:g} ({cast_tol.why}) but not "
                         f"within {tol.atol:g}; the values first leave float64 precision at {lost}: likely a cast to "
                         "float32 inside (x.float(), dtype=torch.float32; Hugging Face's Llama computes its RMSNorm, "
                         "rotary angles and eager softmax in float32)")
            return TorchCheck(cfg, tuple(notes), cast_errors, lost)
        where = ["the logits agree, the gradients do not: the backward pass differs "
                 "(a detach(), an in-place op, a custom autograd.Function)"]
        if any(line.startswith("logits") for line in lines):
            where = first_divergence(capture(), naming.modules, trace, tol, cast_tol and (FLOAT32, cast_tol))
        raise ReferenceMismatch("\n  ".join([
            f"{type(model).__name__} disagrees with the tinyref oracle in {len(lines)} of {len(run.tensors)} "
            f"tensors (float64, batch {batch}, seq_len {T}, seed {run.seed}; inputs: "
            f"tinyref.testing.reference_inputs(cfg, {batch}, {T}, seed={run.seed})):",
            *where, *lines, f"checked as {cfg}", *notes]))
# --8<-- [end:check_torch_model]
