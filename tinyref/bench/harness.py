"""``tinyref bench``: training-step speed of tinyref, and (``--compare``) of PyTorch and the oracle
on the same weights and data, each in a fresh process; generation speed with and without the KV cache.

Every implementation starts from one NumPy parameter dict (GPT-2's initialisation, seeded) and
trains on one fixed batch with AdamW (lr 1e-3, no weight decay). A step is forward, mean
cross-entropy, backward and the optimizer update, float32. Each is warmed up with two untimed
steps (tinygrad: trace and compile, then capture the jit; torch.compile: compile), then timed
step by step, waiting for the device after each, and the median is reported.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..config import GPTConfig
from ..errors import TinyrefError
from ..runtime.memory import peak_resident_mib, reset_peak

# --8<-- [start:configs]
# name -> (batch size, model); S is the seed demo's shapes.
CONFIGS = {
    "S": (8, GPTConfig(vocab_size=52, context_length=16, d_model=32, n_heads=4, n_layers=2)),
    "M": (16, GPTConfig(vocab_size=65, context_length=64, d_model=128, n_heads=4, n_layers=4)),
    "L": (8, GPTConfig(vocab_size=512, context_length=128, d_model=256, n_heads=8, n_layers=6)),
}
# --8<-- [end:configs]
LR = 1e-3
WARMUP_STEPS = 2
IMPLS = ("tinyref", "torch-eager", "torch-compile", "oracle")
TORCH_MISSING = ("--compare needs PyTorch, which is not installed: pip install 'tinyref[bench]' "
                 "(or pip install torch), or run without --compare")


@dataclass
class Result:
    """One implementation on one config. ``peak_mem_mb``: how far the peak resident set of the process
    that ran it rose above its size just before the model was built (None where Linux cannot report
    it); ``note``: why a run was skipped, or details."""
    impl: str
    config: str
    ms_per_step: float | None
    tokens_per_s: float | None
    warmup_s: float | None
    peak_mem_mb: float | None
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def bench_params(cfg: GPTConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """float32 weights from NumPy in GPT-2's proportions (N(0, 0.02) matrices, zero biases, unit LayerNorm
    gains; no residual-projection scaling, which does not change the cost of a step), shared by every impl."""
    import oracle
    rng = np.random.default_rng(seed)
    params = {}
    for key, shape in oracle.param_shapes(cfg).items():
        if key.endswith(".bias"):
            params[key] = np.zeros(shape, np.float32)
        elif ".ln_" in f".{key}":
            params[key] = np.ones(shape, np.float32)
        else:
            params[key] = (0.02 * rng.standard_normal(shape)).astype(np.float32)
    return params


def bench_batch(cfg: GPTConfig, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed (B, T) batch of token ids and its next-token targets."""
    rng = np.random.default_rng(seed + 1)
    ids = rng.integers(0, cfg.vocab_size, (batch, cfg.context_length + 1), dtype=np.int32)
    return ids[:, :-1], ids[:, 1:]


def tinyref_model(cfg: GPTConfig, params: dict[str, np.ndarray]):
    """A GPTStyleTransformer holding ``params`` (loaded with tinygrad's load_state_dict)."""
    from tinygrad import Tensor
    from tinygrad.nn.state import load_state_dict

    from ..model import GPTStyleTransformer
    model = GPTStyleTransformer(cfg)
    load_state_dict(model, {k: Tensor(v) for k, v in params.items()}, verbose=False)
    return model


def peak_growth_mib(start_mib: float | None) -> float | None:
    """How far the peak resident memory rose above ``start_mib`` (reset_peak()'s value) during a run."""
    peak = peak_resident_mib()
    return None if start_mib is None or peak is None else max(0.0, peak - start_mib)


def time_steps(impl: str, config: str, tokens: int, make_step, steps: int) -> Result:
    """Build (``make_step()`` -> a function running one step and waiting for it), warm up, time ``steps`` steps."""
    start_mib = reset_peak()
    step = make_step()                     # building the model and optimizer is not warm-up
    t0 = time.perf_counter()
    for _ in range(WARMUP_STEPS):
        step()
    warmup = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    return Result(impl, config, 1000 * median, tokens / median, warmup, peak_growth_mib(start_mib))


# ---- the implementations: each returns make_step for time_steps ----

def tinyref_step_maker(cfg: GPTConfig, params, x, y):
    from tinygrad import Device, Tensor, dtypes

    from ..optim import make_optimizer
    from ..train import make_train_step

    def make():
        model = tinyref_model(cfg, params)
        step = make_train_step(model, make_optimizer(model, lr=LR))
        xt, yt = Tensor(x, dtype=dtypes.int32).realize(), Tensor(y, dtype=dtypes.int32).realize()
        device = Device[xt.device]

        def run():
            loss = step(xt, yt)
            device.synchronize()
            return loss
        return run
    return make


def oracle_step_maker(cfg: GPTConfig, params, x, y):
    import oracle

    def make():
        state = {"params": dict(params), "opt": None}

        def run():
            logits, cache = oracle.gpt_forward(x, state["params"], cfg)
            loss, ce_cache = oracle.cross_entropy_forward(logits, y)
            grads = oracle.gpt_backward(oracle.cross_entropy_backward(ce_cache), cache)
            state["params"], state["opt"] = oracle.adamw_step(state["params"], grads, state["opt"], lr=LR, b1=0.9,
                                                              b2=0.999, eps=1e-8, weight_decay=0.0)
            return loss
        return run
    return make


def torch_step_maker(cfg: GPTConfig, params, x, y, compile: bool):
    from .torch_gpt import make_torch_step
    return lambda: make_torch_step(cfg, params, x, y, LR, compile=compile)


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def bench_one(impl: str, name: str, steps: int) -> Result:
    """``impl`` on config ``name`` in this process (a failed torch.compile becomes a note, not an error)."""
    batch, cfg = CONFIGS[name]
    params, (x, y) = bench_params(cfg), bench_batch(cfg, batch)
    makers = {"tinyref": lambda: tinyref_step_maker(cfg, params, x, y),
              "torch-eager": lambda: torch_step_maker(cfg, params, x, y, compile=False),
              "torch-compile": lambda: torch_step_maker(cfg, params, x, y, compile=True),
              "oracle": lambda: oracle_step_maker(cfg, params, x, y)}
    try:
        return time_steps(impl, name, batch * cfg.context_length, makers[impl](), steps)
    except Exception as e:  # noqa: BLE001 - torch.compile needs a working C++ toolchain; report why it failed
        if impl != "torch-compile":
            raise
        reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else 'no details'}"
        return Result(impl, name, None, None, None, None, note=f"torch.compile failed: {reason[:200]}")


def run_fresh(module: str, args: list[str], what: str, env: dict[str, str] | None = None) -> dict:
    """``python -m module args`` in a fresh process (tinyref and oracle importable); the JSON of its last
    line of output, or TinyrefError naming ``what`` and the last line it wrote to stderr."""
    root = str(Path(__file__).resolve().parents[2])
    base = env or os.environ
    env = {**base, "PYTHONPATH": os.pathsep.join(filter(None, [root, base.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise TinyrefError(f"the {what} run failed (exit {done.returncode}): {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_fresh(impl: str, name: str, steps: int, device: str | None = None, threads: int | None = None,
                beam: int = 0) -> Result:
    """``bench_one`` in a fresh process, so its peak memory is its own. In one process an implementation
    reuses the pages that an earlier one freed but the allocator kept resident, and its peak hardly
    rises: torch.compile at L read 0 MB after tinyref, PyTorch eager and its own warm-up had run."""
    args = [impl, name, str(steps), "--beam", str(beam)] + (["--device", device] if device else []) \
        + (["--threads", str(threads)] if threads else [])
    return Result(**run_fresh("tinyref.bench.harness", args, f"{impl} {name}"))


def bench_config(name: str, steps: int, compare: bool, log=None, device: str | None = None,
                 threads: int | None = None, beam: int = 0) -> list[Result]:
    """Every implementation on config ``name``, in IMPLS order (torch ones and the oracle only with
    ``compare``, and then each in its own process: ``bench_fresh``); tinyref alone runs in this one."""
    impls = IMPLS if compare else ("tinyref",)
    results = []
    for impl in impls:
        if log:
            log(f"  {name} {impl}: warming up and timing {steps} steps ...")
        results.append(bench_fresh(impl, name, steps, device, threads, beam) if compare else bench_one(impl, name, steps))
    return results


def generation_results(name: str, new_tokens: int) -> list[dict]:
    """Greedy generation tokens/s of config ``name``'s model, with and without the KV cache."""
    from ..generation.sampling import generation_speed
    _, cfg = CONFIGS[name]
    model = tinyref_model(cfg, bench_params(cfg))
    rows = []
    for use_cache in (True, False):
        r = generation_speed(model, new_tokens, use_cache=use_cache, repeats=1 if not use_cache else 3)
        rows.append({"config": name, "impl": "tinyref", "kv_cache": use_cache, "new_tokens": new_tokens,
                     "tokens_per_s": r["tokens_per_s"], "slides": new_tokens + 1 > cfg.context_length})
    return rows


def tinygrad_env() -> dict[str, str]:
    """The tinygrad switches that change speed and were set for this run (HCQ2=1: batched CPU kernel launches)."""
    return {k: os.environ[k] for k in ("HCQ2", "BEAM", "JIT", "NUM_CPU_THREADS") if k in os.environ}


def machine_info(device: str) -> dict:
    """Where and when the figures were taken (the load average says how busy the shared machine was)."""
    from importlib.metadata import version

    from ..runtime.devices import describe_device
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "cpu": cpu,
            "cores": os.cpu_count(), "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "tinygrad": version("tinygrad"),
            "device": describe_device(device), "load_average": [round(v, 2) for v in os.getloadavg()],
            "tinygrad_env": tinygrad_env()}
    if torch_available():
        import torch
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    return info


def main(argv: list[str] | None = None) -> None:
    """One implementation on one config, as one line of JSON (what ``bench_fresh`` runs)."""
    from ..runtime.devices import select_device
    p = argparse.ArgumentParser(prog="python -m tinyref.bench.harness", description=main.__doc__)
    p.add_argument("impl", choices=IMPLS)
    p.add_argument("config", choices=CONFIGS)
    p.add_argument("steps", type=int)
    p.add_argument("--device")
    p.add_argument("--threads", type=int)
    p.add_argument("--beam", type=int, default=0)
    args = p.parse_args(argv)
    if args.impl == "tinyref":
        select_device(args.device)
        if args.beam:
            from tinygrad.helpers import BEAM
            BEAM.value = args.beam
    if args.threads and args.impl.startswith("torch"):
        import torch
        torch.set_num_threads(args.threads)
    print(json.dumps(bench_one(args.impl, args.config, args.steps).to_dict()))


if __name__ == "__main__":
    main()
