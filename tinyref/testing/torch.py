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
from typing import Callable

import numpy as np

import oracle

from ..config import GPTConfig
from ..errors import UsageError, require
from ..verify.hf import CONV1D_WEIGHTS
from ..verify.tolerances import FLOAT32, FLOAT32_CASTS, FLOAT64, Tolerance, compare, max_error
from . import ReferenceMismatch, _gradient_tolerance, _mismatch_lines, reference_inputs
from .divergence import agreeing_values, first_divergence, first_precision_loss, oracle_trace
from .torch_config import DEFAULT_SEQ_LEN, Naming, infer_config, read_naming, submodule

torch = require("torch", "tinyref.testing.torch", extra="torch")

__all__ = ["TorchCheck", "check_torch_model", "infer_config"]
ROPE_STYLES = ("half", "interleaved")


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
            module = submodule(model, path)
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
        naming = read_naming(model)
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
