"""How long the oracle will take: its matmul FLOP count over a rate measured on this machine, said in
one line before a check or an export that would otherwise run silently for minutes (GPT-2 size)."""
from __future__ import annotations

import sys
import time

import numpy as np

from ..config import GPTConfig

# The oracle's whole step runs at about this fraction of the float64 matmul rate measured below
# (the rest is softmax, GELU, LayerNorm and fresh memory): 0.6-0.7 measured at GPT-2 small's shape.
OVERHEAD = 1 / 0.6
SAY_ABOVE_S = 10.0          # quicker runs start without a word


def step_flops(cfg: GPTConfig, batch: int, seq_len: int) -> float:
    """FLOPs of one oracle forward and backward (matmuls only; backward does two per forward one)."""
    N, C, F = batch * seq_len, cfg.d_model, cfg.d_ff
    linear = 2 * N * C * (3 * C + C + 2 * F)                  # c_attn, c_proj, c_fc, mlp.c_proj
    attention = 2 * 2 * batch * seq_len * seq_len * C         # q k^T and att v, all heads
    head = 2 * N * C * cfg.vocab_size
    return 3.0 * (cfg.n_layers * (linear + attention) + head)


def matmul_rate(size: int = 1024, seconds: float = 0.3) -> float:
    """float64 FLOP/s of NumPy's matmul here and now, from ``seconds`` of (size x size) products."""
    a = np.random.default_rng(0).standard_normal((size, size))
    a @ a                                                     # warm the BLAS threads up
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        a @ a
        n += 1
    return 2.0 * size ** 3 * n / elapsed


def estimate_seconds(cfg: GPTConfig, batch: int, seq_len: int, runs: int = 1, rate: float | None = None) -> float:
    return runs * step_flops(cfg, batch, seq_len) * OVERHEAD / (rate or matmul_rate())


def say_estimate(what: str, cfg: GPTConfig, batch: int, seq_len: int, runs: int = 1) -> float:
    """Print ``what``'s estimated time to stderr when it is over SAY_ABOVE_S; return the estimate (0 when
    the work is too small to time a matmul for)."""
    if runs * step_flops(cfg, batch, seq_len) < 2e10:
        return 0.0
    rate = matmul_rate()
    seconds = estimate_seconds(cfg, batch, seq_len, runs, rate)
    if seconds > SAY_ABOVE_S:
        took = f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
        print(f"tinyref: {what}: about {took} ({runs} x {step_flops(cfg, batch, seq_len) / 1e9:,.0f} GFLOP of oracle "
              f"forward and backward at ~{rate / OVERHEAD / 1e9:.1f} GFLOP/s, from a matmul timed here just now)",
              file=sys.stderr, flush=True)
    return seconds
