"""Soak: thousands of jitted training steps on a small model hold their memory and their speed.

Marked ``slow`` (deselected by default, run with ``pytest -m slow``): it is a bounded long run, not an
agreement check. Memory is the process's resident set, sampled after the warm-up; speed is compared
within the run (the last steps against the first ones after warm-up), so the machine's own speed
does not matter.
"""
import time

import numpy as np
import pytest
from tinygrad import Tensor, dtypes

from helpers import TIED, TIED_BT, random_inputs
from tinyref import GPTStyleTransformer
from tinyref.runtime.memory import resident_mib
from tinyref.optim import make_optimizer
from tinyref.train import make_train_step

STEPS, WARMUP, SAMPLE_EVERY = 3000, 200, 250


@pytest.mark.slow
def test_a_long_run_holds_memory_and_speed():
    Tensor.manual_seed(0)
    model = GPTStyleTransformer(TIED)
    step = make_train_step(model, make_optimizer(model, lr=1e-3, weight_decay=0.1))
    rng = np.random.default_rng(0)
    batches = [tuple(Tensor(a, dtype=dtypes.int32).realize() for a in random_inputs(rng, TIED, *TIED_BT)) for _ in range(16)]
    memory, times, losses = [], [], []
    for i in range(STEPS):
        t0 = time.perf_counter()
        loss = step(*batches[i % len(batches)])
        if i % SAMPLE_EVERY == 0 or i == STEPS - 1:
            losses.append(loss.item())          # a host sync only when sampling
        times.append(time.perf_counter() - t0)
        if i >= WARMUP and (i - WARMUP) % SAMPLE_EVERY == 0:
            memory.append(resident_mib())
    assert all(np.isfinite(losses)), losses
    growth = memory[-1] - memory[0]
    assert growth < 8.0, f"resident memory grew by {growth:.1f} MB over {STEPS - WARMUP} steps: {memory}"
    early, late = np.median(times[WARMUP:WARMUP + 500]), np.median(times[-500:])
    print(f"soak: {STEPS} steps, resident {memory[0]:.1f} -> {memory[-1]:.1f} MB, "
          f"median step {1e3 * early:.2f} -> {1e3 * late:.2f} ms, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert late < 1.5 * early, f"steps slowed down: {1e3 * early:.2f} ms -> {1e3 * late:.2f} ms"
