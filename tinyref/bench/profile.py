"""``tinyref bench --profile``: where one training step's time goes, kernel class by kernel class.

The step is built and warmed up as the benchmark does (one fixed batch, AdamW); the warm-up is
split into compiling the kernels (tinygrad's lowering to source and the compiler) and the rest
(tracing, scheduling, capture). Then every kernel the step replays is run once more on its own,
its thread shares one after the other, and timed: the times are one core's work, so their sum
is what a step costs on one thread, and the classes show where the arithmetic goes. A class is
``matmul`` (a reduce kernel doing at least 4 FLOP per byte it touches), ``reduction`` (any other
reduce: sums, means, maxima) or ``elementwise``.
"""
from __future__ import annotations

import time
from collections import defaultdict

import tinygrad.engine.realize as realize
from tinygrad import Device

from ..errors import UsageError
from ..runtime import cpugraph
from ..runtime.devices import current_device
from .harness import CONFIGS, bench_batch, bench_params, tinyref_step_maker

LARGEST = 10


class RecordingGraph(cpugraph.CPUGraph):
    """The CPU graph, keeping every instance so the kernels it replays can be timed one by one."""
    made: list[cpugraph.CPUGraph] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        RecordingGraph.made.append(self)


def kernel_times(graphs) -> list[dict]:
    """Each kernel launch of ``graphs``: name, class, MFLOP and milliseconds on one thread."""
    rows = []
    for graph in graphs:
        zero_vars = {v: 0 for v in graph.vars}
        for (_, prg, bufs, device_vars), runtime in zip(graph.calls, graph.runtimes):
            info, estimates = prg.arg, prg.src[0].arg.estimates
            var_vals = {**zero_vars, **device_vars}
            global_size, _ = info.launch_dims(var_vals)
            seconds = runtime(*[bufs[i]._buf for i in info.globals], global_size=global_size, vals=info.vals(var_vals), wait=True)
            flop, moved = (int(estimates.ops), int(estimates.mem)) if estimates is not None else (0, 0)
            kind = "elementwise" if not info.name.startswith("r") else "matmul" if flop >= 4 * moved else "reduction"
            rows.append({"name": info.function_name, "class": kind, "mflop": flop / 1e6, "ms": 1000 * seconds})
    return rows


def profile_config(name: str) -> dict:
    """The profile of config ``name``'s training step (see the module docstring)."""
    batch, cfg = CONFIGS[name]
    params, (x, y) = bench_params(cfg), bench_batch(cfg, batch)
    compile_s = [0.0]
    lower_and_compile = realize.lower_and_compile

    def timed_compile(linear):
        t = time.perf_counter()
        try:
            return lower_and_compile(linear)
        finally:
            compile_s[0] += time.perf_counter() - t

    run = tinyref_step_maker(cfg, params, x, y)()
    device = Device[cpugraph.buffer_device(current_device())]
    if getattr(device, "graph", None) is not cpugraph.CPUGraph:
        raise UsageError("--profile times the kernels of tinyref's CPU graph: use a CPU device, without TINYREF_CPU_GRAPH=0 or JIT=2")
    RecordingGraph.made = []
    realize.lower_and_compile, device.graph = timed_compile, RecordingGraph
    try:
        t = time.perf_counter()
        run()
        warmup = time.perf_counter() - t
    finally:
        realize.lower_and_compile, device.graph = lower_and_compile, cpugraph.CPUGraph
    rows = kernel_times(RecordingGraph.made)
    total = sum(r["ms"] for r in rows) or 1.0
    classes = defaultdict(lambda: {"kernels": 0, "ms": 0.0})
    for r in rows:
        classes[r["class"]]["kernels"] += 1
        classes[r["class"]]["ms"] += r["ms"]
    largest = sorted(rows, key=lambda r: -r["ms"])[:LARGEST]
    return {"config": name, "kernels": len(rows), "ms_one_thread": total,
            "classes": [{"class": c, "kernels": v["kernels"], "ms": v["ms"], "share": v["ms"] / total}
                        for c, v in sorted(classes.items(), key=lambda kv: -kv[1]["ms"])],
            "largest": [{"name": r["name"], "mflop": r["mflop"], "ms": r["ms"],
                         "gflops": r["mflop"] / r["ms"] if r["ms"] else None} for r in largest],
            "warmup": {"compiling kernels": compile_s[0], "tracing, scheduling, capture": warmup - compile_s[0],
                       "first step in all": warmup}}


def profile_lines(p: dict) -> list[str]:
    """The profile as text tables."""
    lines = [f"{p['config']}: {p['kernels']} kernels per step, {p['ms_one_thread']:.1f} ms of kernel time on one thread",
             f"  {'class':<12} {'kernels':>7} {'ms':>9} {'share':>6}"]
    lines += [f"  {c['class']:<12} {c['kernels']:>7} {c['ms']:>9.2f} {c['share']:>6.0%}" for c in p["classes"]]
    lines += [f"  {'largest kernels':<40} {'MFLOP':>7} {'ms':>8} {'GFLOP/s':>8}"]
    lines += [f"  {k['name'][:40]:<40} {k['mflop']:>7.0f} {k['ms']:>8.2f} {k['gflops'] or 0:>8.1f}" for k in p["largest"]]
    lines += [f"  warm-up: {', '.join(f'{part} {s:.2f} s' for part, s in p['warmup'].items())}"]
    return lines
