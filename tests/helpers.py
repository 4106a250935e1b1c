"""Shared test machinery: fixed tinygrad shapes, loading oracle weights into tinyref, running both sides."""
from __future__ import annotations

import types

import numpy as np
from tinygrad import Tensor, dtypes
from tinygrad.nn.state import get_state_dict

import oracle
from tinyref import GPTConfig, GPTStyleTransformer, cross_entropy
from tinyref.tolerances import FINITE_DIFFERENCE_STEP

# tinygrad compiles a new kernel set for every new shape (15-40 s each on a 2-core CPU), so the
# tinygrad side of the tests uses only these shapes; values, seeds and configs vary freely on the
# NumPy side. TIED covers d_ff != 4*d_model and several heads; UNTIED covers one head,
# tie_embeddings=False and T < context_length.
TIED = GPTConfig(vocab_size=11, context_length=8, d_model=16, n_heads=4, n_layers=2, d_ff=24)
TIED_BT = (2, 8)
UNTIED = GPTConfig(vocab_size=7, context_length=8, d_model=8, n_heads=1, n_layers=1, d_ff=16, tie_embeddings=False)
UNTIED_BT = (2, 5)


def as_namespace(cfg: GPTConfig) -> types.SimpleNamespace:
    """The oracle accepts any object with the config's attributes; tests pass a plain namespace."""
    return types.SimpleNamespace(**cfg.to_dict())


def load_params(model, params: dict) -> None:
    """Copy float64 oracle parameters into a tinyref model (cast to each tensor's dtype)."""
    state = get_state_dict(model)
    assert set(state) == set(params), f"key mismatch: {sorted(set(state) ^ set(params))}"
    for k, t in state.items():
        t.assign(Tensor(params[k].astype(np.float32), dtype=t.dtype, device=t.device))
    Tensor.realize(*state.values())


def model_with(cfg: GPTConfig, params: dict) -> GPTStyleTransformer:
    model = GPTStyleTransformer(cfg)
    load_params(model, params)
    return model


def tinyref_forward_backward(model, idx: np.ndarray, targets: np.ndarray):
    """(logits, loss, grads) from tinyref as float64 NumPy arrays."""
    for t in get_state_dict(model).values():
        t.grad = None
    logits = model(Tensor(idx, dtype=dtypes.int32))
    loss = cross_entropy(logits, Tensor(targets, dtype=dtypes.int32))
    loss.backward()
    grads = {k: t.grad.numpy().astype(np.float64) for k, t in get_state_dict(model).items()}
    return logits.numpy().astype(np.float64), float(loss.item()), grads


def oracle_forward_backward(params: dict, cfg, idx: np.ndarray, targets: np.ndarray):
    """(logits, loss, grads) from the oracle."""
    logits, cache = oracle.gpt_forward(idx, params, cfg)
    loss, lcache = oracle.cross_entropy_forward(logits, targets)
    grads = oracle.gpt_backward(oracle.cross_entropy_backward(lcache), cache)
    return logits, loss, grads


def numerical_gradient(f, x: np.ndarray, h: float = FINITE_DIFFERENCE_STEP) -> np.ndarray:
    """Central differences of the scalar function f at x (x is perturbed in place and restored)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f()
        x[i] = old - h
        down = f()
        x[i] = old
        grad[i] = (up - down) / (2 * h)
    return grad


def random_inputs(rng: np.random.Generator, cfg, B: int, T: int):
    return rng.integers(0, cfg.vocab_size, (B, T)), rng.integers(0, cfg.vocab_size, (B, T))
