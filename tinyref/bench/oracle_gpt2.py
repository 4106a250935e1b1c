"""``tinyref bench --oracle-gpt2``: the oracle's float64 forward and backward at GPT-2 small's real
shape next to Hugging Face's ``GPT2LMHeadModel`` in PyTorch float64, on the same random weights
and tokens (nothing downloaded).

Each run is a fresh process (``python -m tinyref.bench.oracle_gpt2 IMPL SEQ_LEN SEED``) that builds
its model, resets Linux's peak-resident mark, times one step (forward, mean cross-entropy, backward)
and prints one JSON line, so every peak is that implementation's own, as the kernel counts it. Runs
alternate (oracle, PyTorch, oracle, ...) so a change in the machine's load reaches both.

NumPy asks the kernel for transparent huge pages for every large array; PyTorch's allocator does
not. Where the kernel compacts memory on that request (THP ``defrag=madvise``, a common default), a
first touch of each fresh array can wait for compaction, which on a busy machine costs the oracle
more than some of its arithmetic. The oracle's process therefore runs with ``NUMPY_MADVISE_HUGEPAGE=0``
unless ``numpy_hugepages`` is set; the JSON records which.
"""
from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import time

import numpy as np

from ..config import GPTConfig
from ..errors import UsageError
from ..runtime.memory import peak_resident_mib, reset_peak
from .harness import run_fresh

GPT2_SMALL = GPTConfig(vocab_size=50257, context_length=1024, d_model=768, n_heads=12, n_layers=12)
# implementation -> Hugging Face attn_implementation (None: the oracle); the first PyTorch one is the yardstick
IMPLS = {"oracle": None, "torch-hf": "sdpa", "torch-hf-eager": "eager"}
REFERENCE = "torch-hf"
MISSING = "--oracle-gpt2 needs PyTorch and transformers: pip install torch transformers"


def gpt2_inputs(seq_len: int, seed: int = 0, cfg: GPTConfig = GPT2_SMALL):
    """(params, idx, targets): float64 weights at GPT-2's scale (N(0, 0.02^2)), batch 1 of ``seq_len`` ids."""
    import oracle
    rng = np.random.default_rng(seed)
    params = oracle.init_params(cfg, rng, scale=0.02)
    idx, targets = (rng.integers(0, cfg.vocab_size, (1, seq_len), dtype=np.int64) for _ in range(2))
    return params, idx, targets


def oracle_step(cfg: GPTConfig, params, idx, targets):
    """A function running the oracle's forward, loss and backward once, keeping nothing a caller would not."""
    import oracle

    def step():
        logits, cache = oracle.gpt_forward(idx, params, cfg)
        _, loss_cache = oracle.cross_entropy_forward(logits, targets)
        del logits                                            # the loss cache holds what backward needs
        return oracle.gpt_backward(oracle.cross_entropy_backward(loss_cache), cache)
    return step


def hf_gpt2_model(cfg: GPTConfig, params: dict, attn_implementation: str = "sdpa"):
    """Hugging Face's ``GPT2LMHeadModel`` holding ``params`` (through tinyref's HF bridge), float64, eval mode (no dropout)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from ..verify.hf import config_to_hf, to_hf
    model = GPT2LMHeadModel(GPT2Config(**config_to_hf(cfg), attn_implementation=attn_implementation)).double().eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in to_hf(params, cfg).items()})
    return model


def hf_step(cfg: GPTConfig, params, idx, targets, attn_implementation: str):
    """The same step through ``hf_gpt2_model``."""
    import torch
    model = hf_gpt2_model(cfg, params, attn_implementation)
    x, y = torch.from_numpy(idx), torch.from_numpy(targets).reshape(-1)

    def step():
        logits = model(x).logits                                                 # (1, T, V)
        torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), y).backward()
    return step


def measure(impl: str, seq_len: int, seed: int) -> dict:
    """One run in this process: seconds and peak resident MB of one step, after building the model."""
    params, idx, targets = gpt2_inputs(seq_len, seed)
    if IMPLS[impl] is None:
        step = oracle_step(GPT2_SMALL, params, idx, targets)
    else:
        step = hf_step(GPT2_SMALL, params, idx, targets, IMPLS[impl])
        del params                                            # the model holds its own copy
    gc.collect()
    start_mb = reset_peak()
    t0 = time.perf_counter()
    step()
    return {"impl": impl, "seconds": time.perf_counter() - t0, "peak_mem_mb": peak_resident_mib(),
            "start_mem_mb": start_mb}


def run_in_process(impl: str, seq_len: int, seed: int, numpy_hugepages: bool) -> dict:
    """``measure`` in a fresh Python process (so its peak is its own); TinyrefError if it fails."""
    env = dict(os.environ)
    if IMPLS[impl] is None and not numpy_hugepages:
        env["NUMPY_MADVISE_HUGEPAGE"] = "0"
    return run_fresh("tinyref.bench.oracle_gpt2", [impl, str(seq_len), str(seed)], impl, env)


def torch_and_transformers_available() -> bool:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def bench_oracle_gpt2(seq_len: int = 1024, runs: int = 1, seed: int = 0, numpy_hugepages: bool = False,
                      impls=tuple(IMPLS), log=None) -> dict:
    """Every implementation ``runs`` times, alternated; the median seconds and peak of each, and both as
    ratios to ``REFERENCE`` (PyTorch's default attention) when it ran."""
    if not torch_and_transformers_available():
        raise UsageError(MISSING)
    samples = {impl: [] for impl in impls}
    for r in range(runs):
        for impl in impls:
            if log:
                log(f"  {impl}: run {r + 1} of {runs} ...")
            samples[impl].append(run_in_process(impl, seq_len, seed, numpy_hugepages))
    rows = []
    for impl, done in samples.items():
        peaks = [d["peak_mem_mb"] for d in done]
        rows.append({"impl": impl, "seconds": statistics.median(d["seconds"] for d in done),
                     "peak_mem_mb": None if None in peaks else statistics.median(peaks), "runs": done})
    ref = next((row for row in rows if row["impl"] == REFERENCE), None)
    for row in rows:
        row["time_ratio"] = row["seconds"] / ref["seconds"] if ref else None
        row["memory_ratio"] = (row["peak_mem_mb"] / ref["peak_mem_mb"]
                               if ref and row["peak_mem_mb"] and ref["peak_mem_mb"] else None)
    cfg = GPT2_SMALL
    return {"shape": {"vocab": cfg.vocab_size, "context": cfg.context_length, "layers": cfg.n_layers,
                      "heads": cfg.n_heads, "d_model": cfg.d_model, "batch": 1, "seq_len": seq_len, "dtype": "float64"},
            "reference": REFERENCE, "numpy_hugepages": numpy_hugepages, "results": rows}


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
