"""Check a PyTorch GPT-2 module against the float64 oracle, and name the first layer that diverges.

    from tinyref.testing.torch import check_torch_model
    check_torch_model(model)      # nanoGPT, minGPT, HF GPT2LMHeadModel, or yours with GPT-2's names

Works on any ``torch.nn.Module`` whose parameters carry GPT-2's names, with or without the
``transformer.`` prefix, projections as ``nn.Linear`` ``(out, in)`` or HF ``Conv1D`` ``(in, out)``,
tied or untied head. The config comes from the parameters' shapes; what the weights cannot say
(heads, GELU, LayerNorm eps) from ``model.config`` or the modules, else from ``cfg``. A float64
copy of the model (in eval mode) gets tinyref's reference weights, then its logits and every
gradient of the mean cross-entropy are compared with the oracle's. On a mismatch, forward hooks on
each block's ``ln_1``, ``attn``, ``ln_2``, ``mlp`` and on ``ln_f`` find the first one whose input
or output leaves the oracle's, and the report names it.
"""
from __future__ import annotations

import contextlib
import inspect
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

import oracle

from ..config import GPTConfig
from ..errors import UsageError, require
from ..verify.hf import ACTIVATIONS_FROM_HF, CONV1D_WEIGHTS, HF_PREFIX
from ..verify.tolerances import FLOAT64, Tolerance
from . import ReferenceMismatch, _gradient_tolerance, _mismatch_lines, reference_inputs
from .divergence import first_divergence, oracle_trace

torch = require("torch", "tinyref.testing.torch", extra="torch")

__all__ = ["TorchCheck", "check_torch_model", "infer_config"]

DEFAULT_SEQ_LEN = 32   # positions checked when seq_len is not given: every mask bug shows by then
TORCH_GELUS = {"tanh": "gelu_tanh", "none": "gelu"}   # nn.GELU(approximate=...)


@dataclass(frozen=True)
class TorchCheck:
    """A passed check: the config it ran, where each field came from, the worst error per tensor."""

    cfg: GPTConfig
    notes: tuple
    errors: dict

    def __str__(self) -> str:
        worst = max(self.errors.values(), default=0.0)
        return "\n".join([f"agrees with the tinyref oracle: {len(self.errors)} tensors (logits, gradients, any loss "
                          f"returned), worst error {worst:.2g} of scale", f"checked as {self.cfg}", *self.notes])


# --- what the model is -----------------------------------------------------------------------

def _gpt2_parameters(model) -> tuple[dict, str, bool]:
    """(tinyref key -> the model's Parameter, the key prefix, whether projections are Conv1D (in, out))."""
    named = dict(model.named_parameters(remove_duplicate=False))
    prefix = HF_PREFIX if any(n.startswith(HF_PREFIX) for n in named) else ""
    params = {n[len(prefix):] if n.startswith(prefix) else n: p for n, p in named.items()}
    if params.get("lm_head.weight") is not None and params.get("lm_head.weight") is params.get("wte.weight"):
        del params["lm_head.weight"]                          # a tied head is wte itself
    if "wte.weight" not in params or "h.0.attn.c_attn.weight" not in params:
        raise UsageError(f"{type(model).__name__} has no parameters named wte.weight and h.0.attn.c_attn.weight "
                         f"(with or without '{HF_PREFIX}'): check_torch_model needs GPT-2's parameter names "
                         "(nanoGPT, minGPT, HF GPT2LMHeadModel)")
    C = params["wte.weight"].shape[1]
    return params, prefix, tuple(params["h.0.attn.c_attn.weight"].shape) == (C, 3 * C)


def _tinyref_shapes(params: dict, conv1d: bool) -> dict:
    return {k: tuple(p.shape)[::-1] if conv1d and k.endswith(CONV1D_WEIGHTS) else tuple(p.shape)
            for k, p in params.items()}


def _from_shapes(shapes: dict) -> dict:
    """The GPTConfig fields the parameters' shapes and names determine."""
    V, C = shapes["wte.weight"]
    blocks = {int(m.group(1)) for k in shapes if (m := re.match(r"h\.(\d+)\.", k))}
    return {"vocab_size": V, "context_length": shapes.get("wpe.weight", (1,))[0], "d_model": C,
            "n_layers": max(blocks) + 1, "d_ff": shapes.get("h.0.mlp.c_fc.weight", (1,))[0],
            "tie_embeddings": "lm_head.weight" not in shapes, "bias": any(k.endswith(".bias") for k in shapes)}


def _submodule(model, name: str):
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _declared(model, prefix: str) -> dict:
    """field -> (value, where it was read) for what the weights cannot show: heads, GELU, LayerNorm eps."""
    found, config = {}, getattr(model, "config", None)
    attn, mlp = _submodule(model, prefix + "h.0.attn"), _submodule(model, prefix + "h.0.mlp")
    for owner, where, attrs in ((config, "model.config", ("n_head", "n_heads", "num_attention_heads")),
                                (attn, f"{prefix}h.0.attn", ("n_head", "n_heads", "num_heads"))):
        attr = next((a for a in attrs if isinstance(getattr(owner, a, None), int)), None)
        if attr and "n_heads" not in found:
            found["n_heads"] = (getattr(owner, attr), f"{where}.{attr}")
    act = getattr(config, "activation_function", None)
    gelus = [(n, m) for n, m in (mlp.named_modules() if mlp is not None else ()) if isinstance(m, torch.nn.GELU)]
    if act in ACTIVATIONS_FROM_HF:
        found["activation"] = (ACTIVATIONS_FROM_HF[act], f"model.config.activation_function={act!r}")
    elif gelus:
        name, gelu = gelus[0]
        found["activation"] = (TORCH_GELUS[gelu.approximate],
                               f"{prefix}h.0.mlp.{name} is nn.GELU(approximate={gelu.approximate!r})")
    eps = {n: m.eps for n, m in model.named_modules() if isinstance(getattr(m, "eps", None), float)
           and re.search(r"(^|\.)ln_(1|2|f)$", n)}
    if eps:
        common = max(set(eps.values()), key=list(eps.values()).count)
        odd = [n for n, e in eps.items() if e != common]
        differs = f"; {odd[0]}.eps={eps[odd[0]]:g} differs" if odd else ""
        found["layer_norm_eps"] = (common, f"{next(iter(eps))}.eps{differs}")
    return found


def infer_config(model, cfg: GPTConfig | None = None) -> tuple[GPTConfig, list[str]]:
    """(the config to check ``model`` as, one note per field saying where it came from or what was assumed).

    With ``cfg``, checks that the parameters fit it and notes where the model declares otherwise."""
    params, prefix, conv1d = _gpt2_parameters(model)
    shapes = _tinyref_shapes(params, conv1d)
    declared = _declared(model, prefix)
    layout = f"'{prefix}' prefix, " if prefix else ""
    layout += "Conv1D (in, out)" if conv1d else "nn.Linear (out, in)"
    if cfg is not None:
        if not isinstance(cfg, GPTConfig):
            raise UsageError(f"cfg must be a tinyref.GPTConfig, got {type(cfg).__name__}")
        notes = [f"{layout}; checked as the cfg given"]
        notes += [f"note: cfg.{f}={getattr(cfg, f)!r}, but the model says {value!r} ({where})"
                  for f, (value, where) in declared.items() if getattr(cfg, f) != value]
    else:
        inferred = _from_shapes(shapes)
        notes = [f"{layout}; from the parameters: " + ", ".join(f"{k}={v}" for k, v in inferred.items())]
        if "n_heads" not in declared:
            raise UsageError("n_heads cannot be read from the weights and the model has no n_head/n_heads attribute "
                             f"(model.config, {prefix}h.0.attn): pass cfg=GPTConfig(..., n_heads=...)")
        notes += [f"{f}={value!r} from {where}" for f, (value, where) in declared.items()]
        assumed = {"activation": ("gelu_tanh", "no nn.GELU module in h.0.mlp and no config.activation_function"),
                   "layer_norm_eps": (1e-5, "no eps attribute on ln_1/ln_2/ln_f")}
        notes += [f"{f}={value!r} assumed (GPT-2's): {why}; pass cfg to check another"
                  for f, (value, why) in assumed.items() if f not in declared]
        cfg = GPTConfig(**inferred, **{f: v for f, (v, _) in {**assumed, **declared}.items()})
    want = oracle.param_shapes(cfg)
    missing, extra = sorted(set(want) - set(shapes)), sorted(set(shapes) - set(want))
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


def _load(params: dict, conv1d: bool, values: dict) -> None:
    with torch.no_grad():
        for k, v in values.items():
            params[k].copy_(torch.from_numpy(v.T if conv1d and k.endswith(CONV1D_WEIGHTS) else v))
            params[k].grad = None


def _gradient(params: dict, conv1d: bool, k: str):
    g = params[k].grad
    return None if g is None else (g.T if conv1d and k.endswith(CONV1D_WEIGHTS) else g).numpy()


def _capture(model, prefix: str, names, run: Callable) -> dict:
    """name -> {"input": ..., "output": ...} as ``run()`` passes each hooked submodule. An MLP that is
    only a container (minGPT's ModuleDict, called through a lambda) is read at c_fc's input and
    c_proj's output instead; a container that is called overwrites those (its hook runs last)."""
    captured, handles = {}, []

    def hook(name, parts):
        def record(module, args, kwargs, output):
            x = args[0] if args else next(iter(kwargs.values()), None)
            values = {"input": x, "output": output[0] if isinstance(output, (tuple, list)) else output}
            captured.setdefault(name, {}).update({part: values[part].detach().numpy() for part in parts})
        return record

    for name in names:
        watch = [(name, ("input", "output"))]
        if name.endswith(".mlp"):
            watch += [(f"{name}.c_fc", ("input",)), (f"{name}.c_proj", ("output",))]
        for path, parts in watch:
            module = _submodule(model, prefix + path)
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


# --8<-- [start:check_torch_model]
def check_torch_model(model, cfg: GPTConfig | None = None, *, forward: Callable | None = None, batch: int = 2,
                      seq_len: int | None = None, seeds=(0, 1), tol: Tolerance = FLOAT64,
                      grad_tol: Tolerance = FLOAT64) -> TorchCheck:
    """Check a PyTorch GPT-2 against the oracle, in float64 (``model`` is restored afterwards).

    ``cfg`` defaults to what ``infer_config`` reads off the model; ``forward(model, idx)`` adapts a
    forward that does not take ``idx`` (B, T) and return logits, ``(logits, loss)`` or ``.logits``.
    Checks ``seq_len`` positions (default: the context, at most ``DEFAULT_SEQ_LEN``) on each seed.
    Raises ReferenceMismatch naming each tensor that differs and the first submodule that diverges."""
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"check_torch_model needs a torch.nn.Module, got {type(model).__name__}")
    cfg, notes = infer_config(model, cfg)
    T = seq_len or min(cfg.context_length, DEFAULT_SEQ_LEN)
    errors = {}
    with _float64(model):
        params, prefix, conv1d = _gpt2_parameters(model)
        for seed in seeds:
            values, idx, targets = reference_inputs(cfg, batch, T, seed)
            logits, cache = oracle.gpt_forward(idx, values, cfg)
            loss, loss_cache = oracle.cross_entropy_forward(logits, targets)
            grads = oracle.gpt_backward(oracle.cross_entropy_backward(loss_cache), cache)
            _load(params, conv1d, values)
            run = lambda: _logits(model, idx, targets, forward, cfg.vocab_size)   # noqa: E731
            got, got_loss = run()
            torch.nn.functional.cross_entropy(got.flatten(0, 1), torch.from_numpy(targets).flatten()).backward()
            logit_lines = _mismatch_lines("logits", got.detach().numpy(), logits, tol, errors)
            lines = list(logit_lines)
            if got_loss is not None:
                lines += _mismatch_lines("loss (returned by the model)", got_loss.detach().numpy(), loss, tol, errors)
            grad_tol_here = _gradient_tolerance(grad_tol, grads.values())
            for k in grads:
                lines += _mismatch_lines(f"grad {k}", _gradient(params, conv1d, k), grads[k], grad_tol_here, errors)
            if lines:
                where = ["the logits agree, the gradients do not: the backward pass differs "
                         "(a detach(), an in-place op, a custom autograd.Function)"]
                if logit_lines:
                    trace = oracle_trace(idx, values, cfg)
                    where = first_divergence(_capture(model, prefix, trace, run), prefix, trace, tol)
                raise ReferenceMismatch("\n  ".join([
                    f"{type(model).__name__} disagrees with the tinyref oracle in {len(lines)} of "
                    f"{len(grads) + 1 + (got_loss is not None)} "
                    f"tensors (float64, batch {batch}, seq_len {T}, seed {seed}; inputs: "
                    f"tinyref.testing.reference_inputs(cfg, {batch}, {T}, seed={seed})):",
                    *where, *lines, f"checked as {cfg}", *notes]))
    return TorchCheck(cfg, tuple(notes), errors)
# --8<-- [end:check_torch_model]
