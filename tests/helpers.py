"""Shared test machinery: fixed tinygrad shapes, loading oracle weights into tinyref, running both sides."""
from __future__ import annotations

import functools
import os
import types

import numpy as np
from hypothesis import settings
from tinygrad import Tensor, TinyJit, dtypes
from tinygrad.nn.state import get_state_dict

import oracle
from tinyref import GPTConfig, GPTStyleTransformer, cross_entropy
from tinyref.verify.golden import PRESETS   # the golden vectors' configs are the suite's fixed tinygrad shapes
from tinyref.optim import decayed_keys, make_optimizer
from tinyref.verify.tolerances import (FINITE_DIFFERENCE, FINITE_DIFFERENCE_STEP, FLOAT32, FLOAT32_GRAD, MIN_VISIBLE_CHANGE, Mismatch,
                                compare, round_to)
from tinyref.cli import main
from tinyref.train import make_train_step

# tinygrad compiles a new kernel set for every new shape (15-40 s each on a 2-core CPU), so the
# tinygrad side of the tests uses only these shapes; values, seeds and configs vary freely on the
# NumPy side. TIED covers d_ff != 4*d_model and several heads; UNTIED covers one head,
# tie_embeddings=False and T < context_length; NANOGPT is TIED with the exact GELU and no biases;
# LLAMA is TIED's sizes with every Llama-family field (rotary positions, RMSNorm, SwiGLU, 2 kv heads, untied).
# --8<-- [start:shapes]
TIED = PRESETS["small"].config      # GPTConfig(vocab_size=11, context_length=8, d_model=16, n_heads=4, n_layers=2, d_ff=24)
TIED_BT = (2, 8)
UNTIED = PRESETS["untied"].config   # GPTConfig(vocab_size=7, context_length=8, d_model=8, n_heads=1, n_layers=1, d_ff=16,
                                     #           tie_embeddings=False)
UNTIED_BT = (2, 5)
NANOGPT = PRESETS["nanogpt"].config  # TIED with nanoGPT's bias=False model's activation="gelu", bias=False
LLAMA = PRESETS["llama"].config      # TIED's sizes as GPTConfig.llama(..., n_kv_heads=2): rope, rmsnorm, SwiGLU, GQA
# --8<-- [end:shapes]


# Each tinygrad-side example re-schedules its graph (~0.5 s for a forward+backward here), so those
# tests draw fewer examples than the NumPy-only ones; the profile still scales them.
tinygrad_examples = settings(max_examples={"ci": 8, "dev": 20, "thorough": 200}.get(
    os.environ.get("HYPOTHESIS_PROFILE", "ci"), 8))


def as_namespace(cfg: GPTConfig) -> types.SimpleNamespace:
    """The oracle accepts any object with the config's attributes; tests pass a plain namespace."""
    return types.SimpleNamespace(**cfg.to_dict())


# --8<-- [start:float32_exact]
def float32_exact(a):
    """``a`` rounded to float32 and back: the oracle then sees exactly the numbers tinyref sees, so
    comparisons measure computation error, not input quantisation."""
    if isinstance(a, dict):
        return {k: float32_exact(v) for k, v in a.items()}
    return round_to(a, "float32")
# --8<-- [end:float32_exact]


def load_params(model, params: dict) -> None:
    """Copy float64 oracle parameters into a tinyref model (cast to each tensor's dtype)."""
    state = get_state_dict(model)
    assert set(state) == set(params), f"key mismatch: {sorted(set(state) ^ set(params))}"
    for k, t in state.items():
        t.assign(Tensor(params[k].astype(np.float32), dtype=t.dtype, device=t.device))
    if state:
        Tensor.realize(*state.values())


def model_with(cfg: GPTConfig, params: dict) -> GPTStyleTransformer:
    model = GPTStyleTransformer(cfg)
    load_params(model, params)
    return model


_jitted = {}


def tinyref_forward_backward(model, idx: np.ndarray, targets: np.ndarray):
    """(logits, loss, grads) from tinyref as float64 NumPy arrays.

    Jitted per model: the first two calls schedule and compile, later ones replay the kernels on
    whatever weights load_params wrote into the same buffers (Hypothesis examples cost milliseconds).
    """
    state = get_state_dict(model)
    if id(model) not in _jitted:
        @TinyJit
        def step(x, y):
            for t in state.values():
                t.grad = None
            logits = model(x)
            loss = cross_entropy(logits, y)
            loss.backward()
            return [logits.realize(), loss.realize()] + [t.grad.realize() for t in state.values()]
        _jitted[id(model)] = (model, step)      # keep the model alive so its id stays unique
    out = _jitted[id(model)][1](Tensor(idx, dtype=dtypes.int32).realize(), Tensor(targets, dtype=dtypes.int32).realize())
    logits, loss, grads = out[0], out[1], out[2:]
    return (logits.numpy().astype(np.float64), float(loss.item()),
            {k: g.numpy().astype(np.float64) for k, g in zip(state, grads)})


def oracle_forward_backward(params: dict, cfg, idx: np.ndarray, targets: np.ndarray):
    """(logits, loss, grads) from the oracle."""
    logits, cache = oracle.gpt_forward(idx, params, cfg)
    loss, lcache = oracle.cross_entropy_forward(logits, targets)
    grads = oracle.gpt_backward(oracle.cross_entropy_backward(lcache), cache)
    return logits, loss, grads


# --8<-- [start:finite_differences]
def numerical_gradient(f, x: np.ndarray, indices=None, h: float = FINITE_DIFFERENCE_STEP) -> dict:
    """Central differences of the scalar function f w.r.t. the elements ``indices`` of x (default: all).

    x is perturbed in place and restored. Returns {index: derivative}.
    """
    grad = {}
    for i in (np.ndindex(x.shape) if indices is None else indices):
        old = x[i]
        x[i] = old + h
        up = f()
        x[i] = old - h
        down = f()
        x[i] = old
        grad[i] = (up - down) / (2 * h)
    return grad


def sample_indices(shape, rng: np.random.Generator, max_elements: int | None):
    """All indices of ``shape``, or ``max_elements`` of them drawn at random (cheap checks of big tensors)."""
    every = list(np.ndindex(shape))
    if max_elements is None or len(every) <= max_elements:
        return every
    return [every[i] for i in rng.choice(len(every), size=max_elements, replace=False)]


def finite_difference_mismatches(f, wrt: dict, analytic: dict, rng=None, max_elements=None) -> list[Mismatch]:
    """Compare analytic gradients with central differences of the scalar f() for each array in ``wrt``.

    Elements not sampled are filled with the analytic value, so a mismatch's index is the real one.
    """
    rng = rng or np.random.default_rng(0)
    found = []
    for name, x in wrt.items():
        numeric = np.array(analytic[name], dtype=np.float64, copy=True)
        for i, d in numerical_gradient(f, x, sample_indices(x.shape, rng, max_elements)).items():
            numeric[i] = d
        found.append(compare(f"d{name} (finite differences)", analytic[name], numeric, FINITE_DIFFERENCE))
    return [m for m in found if m]


def oracle_component_fd(forward, backward, x, params, dout, *args, wrt_x=True, rng=None, max_elements=None):
    """Finite-difference check of an oracle component pair on the scalar sum(forward(x) * dout)."""
    _, cache = forward(x, params, *args)
    dx, dp = backward(dout, cache)
    wrt = {k: params[k] for k in dp}
    analytic = dict(dp)
    if wrt_x:
        wrt["x"], analytic["x"] = x, dx
    return finite_difference_mismatches(lambda: float((forward(x, params, *args)[0] * dout).sum()),
                                        wrt, analytic, rng, max_elements)
# --8<-- [end:finite_differences]


# --8<-- [start:agreement]
def component_mismatches(module, forward, backward, params: dict, x: np.ndarray, dout: np.ndarray, *args,
                         x_is_tokens: bool = False, tol=FLOAT32, grad_tol=FLOAT32_GRAD) -> list[Mismatch]:
    """Run a tinyref module (float32) and its oracle pair (float64) on the same weights, input and
    upstream gradient; return every disagreement in the output, dx and each parameter gradient."""
    params = float32_exact(params)
    x = x if x_is_tokens else float32_exact(x)
    load_params(module, params)
    state = get_state_dict(module)
    for t in state.values():
        t.grad = None
    xt = Tensor(x, dtype=dtypes.int32) if x_is_tokens else Tensor(x.astype(np.float32))
    out = module(xt)
    (out * Tensor(dout.astype(np.float32))).sum().backward()
    ref, cache = forward(x, params, *args)
    dx_ref, dp_ref = backward(dout, cache)
    found = [compare("out", out.numpy(), ref, tol)]
    if not x_is_tokens:
        found.append(compare("dx", xt.grad.numpy(), dx_ref, grad_tol))
    found += [compare(f"d{k}", state[k].grad.numpy(), dp_ref[k], grad_tol) for k in sorted(dp_ref)]
    return [m for m in found if m]


def model_mismatches(model, params: dict, cfg, idx: np.ndarray, targets: np.ndarray) -> list[Mismatch]:
    """Every disagreement between tinyref and the oracle on logits, loss and each parameter gradient."""
    params = float32_exact(params)
    load_params(model, params)
    logits, loss, grads = tinyref_forward_backward(model, idx, targets)
    ref_logits, ref_loss, ref_grads = oracle_forward_backward(params, cfg, idx, targets)
    found = [compare("logits", logits, ref_logits, FLOAT32), compare("loss", loss, ref_loss, FLOAT32)]
    found += [compare(f"grad {k}", grads[k], ref_grads[k], FLOAT32_GRAD) for k in ref_grads]
    return [m for m in found if m]
# --8<-- [end:agreement]


def assert_no_mismatch(mismatches: list[Mismatch]) -> None:
    assert not mismatches, "\n".join(str(m) for m in mismatches)


def random_inputs(rng: np.random.Generator, cfg, B: int, T: int):
    return rng.integers(0, cfg.vocab_size, (B, T)), rng.integers(0, cfg.vocab_size, (B, T))


# AdamW agreement: three jitted tinyref training steps vs the oracle's gpt_backward + adamw_step.
ADAMW_HYPER = dict(lr=1e-2, b1=0.9, b2=0.999, eps=1e-8)
ADAMW_DECAY = 0.1


@functools.cache
def adamw_case():
    """Start weights, three batches, and the names of the weights that decay (computed once)."""
    cfg, (B, T) = TIED, TIED_BT
    rng = np.random.default_rng(7)
    params = float32_exact(oracle.init_params(as_namespace(cfg), rng, scale=0.3))
    batches = [random_inputs(rng, cfg, B, T) for _ in range(3)]
    return params, batches, frozenset(decayed_keys(GPTStyleTransformer(cfg)))


def adamw_run(make_step=make_train_step) -> tuple[list[float], dict]:
    """tinyref's three jitted AdamW steps on adamw_case's inputs: (the loss each step returned, the weights
    after the last step). ``make_step`` is replaceable, for the negative control."""
    params, batches, _ = adamw_case()
    model = GPTStyleTransformer(TIED)
    load_params(model, params)
    step = make_step(model, make_optimizer(model, weight_decay=ADAMW_DECAY, **ADAMW_HYPER))
    losses = [step(Tensor(x, dtype=dtypes.int32), Tensor(y, dtype=dtypes.int32)).item() for x, y in batches]
    return losses, {k: t.numpy().astype(np.float64) for k, t in get_state_dict(model).items()}


tinyref_adamw = functools.cache(adamw_run)   # the real step's run, computed once


def oracle_adamw_trajectory(adamw_step=None) -> tuple[list[float], dict]:
    """The oracle's three AdamW steps on adamw_case's inputs: (the loss at the weights each step starts
    from, the weights after the last step); ``adamw_step`` replaceable, for the negative control."""
    adamw_step = adamw_step or oracle.adamw_step
    params, batches, decay = adamw_case()
    groups = [{k: v for k, v in params.items() if k in decay}, {k: v for k, v in params.items() if k not in decay}]
    states, losses = [None, None], []
    for x, y in batches:
        _, loss, grads = oracle_forward_backward({**groups[0], **groups[1]}, as_namespace(TIED), x, y)
        losses.append(loss)
        for i, wd in enumerate((ADAMW_DECAY, 0.0)):
            groups[i], states[i] = adamw_step(groups[i], grads, states[i], weight_decay=wd, **ADAMW_HYPER)
    return losses, {**groups[0], **groups[1]}


def adamw_mismatches(adamw_step=None, after: dict | None = None) -> list[Mismatch]:
    """Disagreements between tinyref's weights after three AdamW steps (``after``, default adamw_case's
    one-device run) and the oracle's (``adamw_step`` replaceable, for the negative control)."""
    _, expected = oracle_adamw_trajectory(adamw_step)
    return trained_weight_mismatches(tinyref_adamw()[1] if after is None else after, expected)


def step_loss_mismatches(losses: list[float]) -> list[Mismatch]:
    """Disagreements between the losses three training steps returned and the oracle's loss at the
    weights each step started from (a step must report the loss it took the gradient of)."""
    expected, _ = oracle_adamw_trajectory()
    found = [compare(f"loss returned by step {i}", np.float64(got), want, FLOAT32)
             for i, (got, want) in enumerate(zip(losses, expected))]
    return [m for m in found if m]


def trained_weight_mismatches(actual: dict, expected: dict, what: str = "after 3 AdamW steps") -> list[Mismatch]:
    """Disagreements between two sets of TIED weights after AdamW steps. The key-bias slice of c_attn.bias
    is left out: its gradient is zero in exact arithmetic and Adam turns the rounding noise there into
    +-lr steps of arbitrary sign (test_model.py::test_key_bias_gets_no_gradient)."""
    found = []
    for k, got in actual.items():
        want = expected[k]
        if k.endswith("attn.c_attn.bias"):
            C = TIED.d_model
            got, want = np.delete(got, np.s_[C:2 * C]), np.delete(want, np.s_[C:2 * C])
        found.append(compare(f"{k} {what}", got, want, FLOAT32_GRAD))
    return [m for m in found if m]


# Properties of any causal language model, as checks that return what they found (None: holds).
def causality_violation(forward, idx: np.ndarray, j: int, new_token: int) -> str | None:
    """Changing token j must leave every output at positions < j bit-identical and change position j."""
    changed = idx.copy()
    changed[:, j] = new_token
    before, after = forward(idx), forward(changed)
    if not np.array_equal(before[:, :j], after[:, :j]):
        t = int(np.argwhere(before[:, :j] != after[:, :j])[0][1])
        return f"changing token {j} changed the output at earlier position {t}"
    if np.abs(before[:, j] - after[:, j]).max() < MIN_VISIBLE_CHANGE:
        return f"changing token {j} did not change the output at position {j}"
    return None


def batch_permutation_mismatches(forward, idx: np.ndarray, perm, tol=FLOAT32) -> list[Mismatch]:
    """Rows of a batch are independent sequences: running them permuted must permute the output."""
    return [m for m in [compare("logits of the permuted batch", forward(idx[perm]), forward(idx)[perm], tol)] if m]


def prefix_mismatches(forward, idx: np.ndarray, t: int, tol=FLOAT32) -> list[Mismatch]:
    """A causal model's outputs on the first t tokens are the first t outputs of the whole sequence."""
    return [m for m in [compare(f"logits of the {t}-token prefix", forward(idx[:, :t]), forward(idx)[:, :t], tol)] if m]


def cli(capsys, *argv):
    """(exit status, stdout, stderr) of ``tinyref argv`` run in this process."""
    try:
        status = main([str(a) for a in argv])
    except SystemExit as e:
        status = e.code
    out = capsys.readouterr()
    return status, out.out, out.err
