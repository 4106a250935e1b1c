"""Check *your* GPT against tinyref's float64 NumPy oracle: the whole model or one component.

You give plain functions on NumPy arrays (wrap PyTorch, JAX, C, ... inside them); tinyref draws
weights and inputs, runs the oracle, and raises ``ReferenceMismatch`` naming, for every tensor
that disagrees, its worst element: index, your value, the oracle's, and the tolerance. Nothing
here runs tinygrad. Weights come in tinyref's layout (GPT-2 names, linear weights ``(out, in)``)
or, with ``layout="hf"``, in Hugging Face's (``transformer.`` keys, Conv1D weights ``(in, out)``).

Your functions take the oracle's arguments plus the config (sizes, heads, eps) to run:

    from tinyref.testing import assert_matches_reference, assert_component_matches
    assert_matches_reference(my_forward, my_backward)             # my_forward(idx, params, cfg) -> logits
    assert_component_matches("attention", my_attention)           # my_attention(x, p, cfg) -> out
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Callable

import numpy as np

import oracle

from ..config import GPTConfig
from ..errors import UsageError
from ..verify.cost import say_estimate
from ..verify.golden import PRESETS, GoldenCase
from ..verify.hf import to_hf, transpose_conv1d
from ..verify.tolerances import Tolerance, compare, max_error, round_to, tolerances_for
from .components import COMPONENTS, Component, component_input

__all__ = ["COMPONENTS", "REFERENCE_CASES", "ReferenceMismatch", "assert_component_matches",
           "assert_loss_matches", "assert_matches_reference", "reference_inputs"]

# The two cases every check runs by default: several heads, d_ff != 4*d_model and a tied head;
# one head, an untied head and T < context_length (unused position rows).
REFERENCE_CASES = {"small": PRESETS["small"], "untied": PRESETS["untied"]}
LAYOUTS = ("tinyref", "hf")
DTYPES = ("float64", "float32", "float16", "bfloat16")


class ReferenceMismatch(AssertionError):
    """Your implementation disagrees with the oracle; the message has one line per tensor that differs."""


def _float32_exact(a):
    """Round to float32 values (kept float64): a float32 implementation then sees exactly the oracle's inputs."""
    return round_to(a, "float32")


def reference_inputs(cfg: GPTConfig, batch: int, seq_len: int, seed: int = 0):
    """(params, idx, targets) the checks use: oracle.init_params weights at float32 values, random token ids."""
    rng = np.random.default_rng(seed)
    params = {k: _float32_exact(v) for k, v in oracle.init_params(cfg, rng).items()}
    idx = rng.integers(0, cfg.vocab_size, (batch, seq_len), dtype=np.int64)
    return params, idx, rng.integers(0, cfg.vocab_size, (batch, seq_len), dtype=np.int64)


def _precision(dtype, cfg, tol: Tolerance | None, grad_tol: Tolerance | None):
    """(the arrays' dtype, the dtype's name, forward and gradient tolerance) of a check in ``dtype``: ``tol`` and
    ``grad_tol`` when given, else the dtype's own (tinyref.verify.tolerances.tolerances_for: FLOAT64 in float64,
    FLOAT32 and FLOAT32_GRAD in float32, the reduced-precision estimate for ``cfg`` in float16 and bfloat16).
    NumPy has no bfloat16: ``dtype="bfloat16"`` hands your functions float32 arrays holding bfloat16 values."""
    try:
        name = "bfloat16" if dtype == "bfloat16" else np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise UsageError(f"dtype={dtype!r}: use np.float64, np.float32, np.float16 or 'bfloat16'")
    default_tol, default_grad_tol = tolerances_for(name, cfg)
    return np.dtype(np.float32 if name == "bfloat16" else name), name, tol or default_tol, grad_tol or default_grad_tol


def _exact_in(a, name: str):
    """``a`` at values the dtype ``name`` holds exactly (kept float64), so only computation error is measured."""
    return a if name == "float64" else round_to(a, name)


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise UsageError(f"layout={layout!r}: use 'tinyref' (linear weights (out, in)) or 'hf' (Conv1D (in, out))")


def _mismatch_lines(name: str, actual, expected, tol: Tolerance, errors: dict) -> list[str]:
    """[] when ``actual`` agrees with ``expected`` (recording its error in ``errors``), else one report line."""
    if actual is None:
        return [f"{name}: missing from your result"]
    try:
        actual = np.asarray(actual, dtype=np.float64)
    except (TypeError, ValueError) as e:
        return [f"{name}: not an array of numbers ({type(e).__name__}: {e})"]
    mismatch = compare(name, actual, expected, tol)
    if mismatch is None:
        errors[name] = max(errors.get(name, 0.0), max_error(actual, expected))
        return []
    return [str(mismatch)]


def _gradient_tolerance(grad_tol: Tolerance, grads) -> Tolerance:
    """``grad_tol`` plus an absolute floor of ``atol`` x the largest gradient of the whole check.

    Backpropagation's rounding errors are absolute, inherited from the largest upstream terms: a
    tensor whose gradient cancels to 1e-5 of the others (tiny configs, one token, vocab 2) keeps
    the error of the terms it cancelled. Measured over 600 Hypothesis-drawn configs (the PyTorch
    example): worst error 7.3e-6 (float32) and 1.2e-14 (float64) of the largest gradient, but up to
    5e-5 and 1.1e-12 of the tensor's own scale, which the per-tensor tolerance alone rejects."""
    largest = max((float(np.abs(g).max()) for g in grads if g is not None and np.size(g)), default=0.0)
    return replace(grad_tol, floor=max(grad_tol.floor, grad_tol.atol * largest),
                   why=f"{grad_tol.why}; floor = atol x the largest gradient")


def _raise_if_any(lines: list[str], total: int, where: str) -> None:
    if lines:
        raise ReferenceMismatch(f"{len(lines)} of {total} tensors disagree with the tinyref oracle ({where}):\n  "
                                + "\n  ".join(lines))


# --8<-- [start:model_check]
def assert_matches_reference(forward: Callable, backward: Callable | None = None, cfg: GPTConfig | None = None, *,
                             batch: int = 2, seq_len: int | None = None, seeds=(0, 1, 2), layout: str = "tinyref",
                             dtype=np.float32, tol: Tolerance | None = None, grad_tol: Tolerance | None = None) -> dict:
    """Check a whole model: ``forward(idx, params, cfg) -> logits`` and optionally
    ``backward(idx, params, dlogits, cfg) -> grads`` (a dict keyed like ``params``).

    ``params`` maps state-dict keys to ``dtype`` arrays (see ``layout``); ``idx`` is (B, T) int64;
    ``logits`` and ``dlogits`` are (B, T, V), ``dlogits`` being the gradient of the mean
    cross-entropy. Runs ``cfg`` (default: ``REFERENCE_CASES``) on every seed, stops at the first
    failing example, and otherwise returns the worst error seen per tensor (relative to its scale).
    ``dtype``: np.float64, np.float32, np.float16 or "bfloat16"; ``tol``/``grad_tol`` default to its tolerances.
    """
    _check_layout(layout)
    if cfg is not None and not isinstance(cfg, GPTConfig):
        raise UsageError(f"cfg must be a tinyref.GPTConfig, got {type(cfg).__name__}")
    cases = REFERENCE_CASES if cfg is None else {"cfg": GoldenCase(cfg, batch, seq_len)}
    errors = {}
    for name, case in cases.items():
        c, B, T = case.config, case.batch, case.T
        array_dtype, dtype_name, tol_here, grad_tol_here = _precision(dtype, c, tol, grad_tol)
        say_estimate(f"the oracle's side of case {name!r} ({len(seeds)} seeds; yours comes on top)", c, B, T, len(seeds))
        for seed in seeds:
            params, idx, targets = reference_inputs(c, B, T, seed)
            params = {k: _exact_in(v, dtype_name) for k, v in params.items()}
            logits, cache = oracle.gpt_forward(idx, params, c)
            loss, loss_cache = oracle.cross_entropy_forward(logits, targets)
            dlogits = oracle.cross_entropy_backward(loss_cache)
            given = to_hf(params, c) if layout == "hf" else params
            given = {k: v.astype(array_dtype) for k, v in given.items()}
            lines = _mismatch_lines("logits", forward(idx.copy(), given, c), logits, tol_here, errors)
            total = 1
            if backward is not None:
                grads = oracle.gpt_backward(dlogits, cache)
                got = backward(idx.copy(), given, dlogits.astype(array_dtype), c)
                if not isinstance(got, dict):
                    raise UsageError(f"backward must return a dict of gradients keyed like params, got {type(got).__name__}")
                got = _grads_from_layout(got, layout, c)
                floored = _gradient_tolerance(grad_tol_here, grads.values())
                for k in grads:
                    lines += _mismatch_lines(f"grad {k}", got.get(k), grads[k], floored, errors)
                total += len(grads)
            _raise_if_any(lines, total, f"case {name!r}: {c}, batch {B}, seq_len {T}, seed {seed}; "
                                        f"inputs: tinyref.testing.reference_inputs(cfg, {B}, {T}, seed={seed})")
    return errors
# --8<-- [end:model_check]


def _grads_from_layout(grads: dict, layout: str, cfg: GPTConfig) -> dict:
    """Your gradients in tinyref's layout; in HF's, a tied head's gradient is wte's (the same tensor)."""
    if layout == "tinyref":
        return grads
    grads = {(k[len("transformer."):] if k.startswith("transformer.") else k): v for k, v in grads.items()}
    if cfg.tie_embeddings:
        grads.pop("lm_head.weight", None)
    return transpose_conv1d({k: np.asarray(v) for k, v in grads.items()})


def assert_loss_matches(loss_fn: Callable, backward: Callable | None = None, *, shape=(2, 8, 11), seeds=(0, 1, 2),
                        dtype=np.float32, tol: Tolerance | None = None, grad_tol: Tolerance | None = None) -> dict:
    """Check ``loss_fn(logits, targets) -> mean cross-entropy`` and optionally
    ``backward(logits, targets) -> dloss/dlogits``; logits (B, T, V) float, targets (B, T) int64."""
    B, T, V = shape
    # the loss alone: reductions of length V, no decoder block
    sizes = SimpleNamespace(d_model=1, d_ff=1, vocab_size=V, context_length=T, n_layers=0)
    array_dtype, dtype_name, tol, grad_tol = _precision(dtype, sizes, tol, grad_tol)
    errors = {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        logits = _exact_in(_float32_exact(rng.standard_normal(shape) * 3), dtype_name)
        targets = rng.integers(0, V, (B, T), dtype=np.int64)
        loss, cache = oracle.cross_entropy_forward(logits, targets)
        lines = _mismatch_lines("loss", loss_fn(logits.astype(array_dtype), targets.copy()), loss, tol, errors)
        if backward is not None:
            lines += _mismatch_lines("dlogits", backward(logits.astype(array_dtype), targets.copy()),
                                     oracle.cross_entropy_backward(cache), grad_tol, errors)
        _raise_if_any(lines, 1 + (backward is not None), f"cross-entropy, logits {shape}, seed {seed}")
    return errors


# --8<-- [start:component_check]
def assert_component_matches(name: str, forward: Callable, backward: Callable | None = None, cfg: GPTConfig | None = None,
                             *, batch: int = 2, seq_len: int | None = None, seeds=(0, 1, 2), layout: str = "tinyref",
                             dtype=np.float32, tol: Tolerance | None = None, grad_tol: Tolerance | None = None) -> dict:
    """Check one component (a key of ``COMPONENTS``): ``forward(x, p, cfg) -> out`` and optionally
    ``backward(x, p, dout, cfg) -> (dx, dp)``, ``p`` holding the component's parameters under local
    names (``c_attn.weight``, ``ln_1.weight``, ``wte.weight``, ...). Sizes and hyper-parameters
    (heads, eps) come from ``cfg`` (default: the ``small`` reference config); for the embedding,
    ``x`` is token ids and ``dx`` is ignored. Returns the worst error seen per tensor."""
    if name not in COMPONENTS:
        raise UsageError(f"unknown component {name!r}: choose one of {', '.join(COMPONENTS)}")
    _check_layout(layout)
    component = COMPONENTS[name]
    cfg = cfg or REFERENCE_CASES["small"].config
    T = seq_len or cfg.context_length
    array_dtype, dtype_name, tol, grad_tol = _precision(dtype, cfg, tol, grad_tol)
    errors = {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        full, _, _ = reference_inputs(cfg, batch, T, seed)
        p = {k: _exact_in(v, dtype_name) for k, v in component.params(full).items()}
        x = component_input(rng, component, cfg, batch, T)
        x = x if component.input == "tokens" else _exact_in(x, dtype_name)
        out, cache = component.forward(x, p, *component.args(cfg))
        dout = _float32_exact(rng.standard_normal(out.shape))
        given = {k: v.astype(array_dtype) for k, v in (transpose_conv1d(p) if layout == "hf" else p).items()}
        user_x = x.copy() if component.input == "tokens" else x.astype(array_dtype)
        lines = _mismatch_lines(f"{name} out", forward(user_x, given, cfg), out, tol, errors)
        total = 1
        if backward is not None:
            dx, dp = component.backward(dout, cache)
            got_dx, got_dp = backward(user_x, given, dout.astype(array_dtype), cfg)
            got_dp = transpose_conv1d({k: np.asarray(v) for k, v in got_dp.items()}) if layout == "hf" else got_dp
            grad_tol_here = _gradient_tolerance(grad_tol, [dx, *dp.values()])
            if dx is not None:
                lines += _mismatch_lines(f"{name} dx", got_dx, dx, grad_tol_here, errors)
            for k in sorted(dp):
                lines += _mismatch_lines(f"{name} d{k}", got_dp.get(k), dp[k], grad_tol_here, errors)
            total += (dx is not None) + len(dp)
        _raise_if_any(lines, total, f"component {name!r}, {cfg}, batch {batch}, seq_len {T}, seed {seed}")
    return errors
# --8<-- [end:component_check]
