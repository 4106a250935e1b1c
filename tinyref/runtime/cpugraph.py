"""A CPU "graph" for TinyJit: replay a captured step's kernels from one C loop, on every core.

tinygrad 0.14 has graphs (whole-step replays) for CUDA and Metal, but not for its CPU device: a
jitted step there launches each kernel from Python (tens of microseconds each; a training step
has ~250 kernels) and runs a kernel that tinygrad split over n CPU threads as n calls one after
the other, on one core. ``CPUGraph`` is a ``GraphRunner`` (tinygrad's extension point for graphs):
at capture it writes every launch of a batch into a table (kernel address, arguments), and a
call replays the table from C (``cpugraph.c``), running the thread-shares of a kernel at the
same time on a small pool of threads. Only the addresses of the step's inputs (the batch) and
symbolic values change between calls; they are patched in the table before each replay.

``install(device)`` makes tinygrad use it for jitted functions on that CPU device. Nothing is
installed (and tinygrad's own path runs) when ``TINYREF_CPU_GRAPH=0``, when ``JIT=2`` (tinygrad's
switch for "no graphs"), on non-CPU devices, or when the runner cannot be compiled (no clang).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
import time
from pathlib import Path

from tinygrad import Device
from tinygrad.device import MultiBuffer
from tinygrad.engine.jit import GraphRunner
from tinygrad.helpers import NUM_CPU_THREADS, cache_dir, getenv

SOURCE = Path(__file__).with_name("cpugraph.c")
STRIDE, NARGS = 65, 63    # as in cpugraph.c: kernel address, launch-group size, 63 argument words


def build_runner() -> ctypes.CDLL | None:
    """Compile cpugraph.c once (cached next to tinygrad's cache, keyed by the source) and load it."""
    source = SOURCE.read_bytes()
    lib = Path(cache_dir) / "tinyref" / f"cpugraph-{hashlib.sha256(source).hexdigest()[:16]}.so"
    if not lib.exists():
        tmp = None
        try:                               # no clang, a read-only cache folder, a compile error: no runner
            lib.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)
            os.close(fd)
            subprocess.run(["clang", "-O2", "-shared", "-fPIC", "-pthread", "-o", tmp, str(SOURCE)],
                           check=True, capture_output=True)
            os.replace(tmp, lib)           # atomic: concurrent processes never load a half-written file
        except (OSError, subprocess.CalledProcessError):
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            return None
    runner = ctypes.CDLL(str(lib))
    runner.tinyref_start.argtypes, runner.tinyref_start.restype = [ctypes.c_int], ctypes.c_int
    runner.tinyref_run.argtypes, runner.tinyref_run.restype = [ctypes.c_void_p, ctypes.c_int], None
    runner.threads = runner.tinyref_start(NUM_CPU_THREADS.value)
    return runner


RUNNER: ctypes.CDLL | None = None


# --8<-- [start:graph]
class CPUGraph(GraphRunner):
    """A batch of CPU kernel launches, replayed by one call into cpugraph.c."""

    def __init__(self, linear, input_uops=()):
        super().__init__(linear, input_uops)
        zero_vars = {v: 0 for v in self.vars}
        entries: list[list[int]] = []
        input_words: dict[tuple[int, int], list[int]] = {}    # (call, call argument) -> table words holding its address
        self.var_words: dict[tuple[int, int], list[int]] = {}  # (call, program variable) -> table words holding its value
        for j, ((_, prg, bufs, device_vars), runtime) in enumerate(zip(self.calls, self.runtimes)):
            info = prg.arg
            var_vals = {**zero_vars, **device_vars}
            global_size, _ = info.launch_dims(var_vals)
            args = [bufs[i]._buf.va_addr for i in info.globals] + [0 if v is None else v for v in info.vals(var_vals)]
            core = runtime.runtimevars.get("core_id")
            group = global_size[0] if core is not None else 1
            for tid in range(global_size[0]):
                words = [runtime.addr, group if tid == 0 else 0, *args, *[0] * (NARGS - len(args))]
                if core is not None:
                    words[2 + core] = tid
                base = len(entries) * STRIDE
                for k, pos in enumerate(info.globals):
                    input_words.setdefault((j, pos), []).append(base + 2 + k)
                for i in range(len(info.vars)):
                    self.var_words.setdefault((j, i), []).append(base + 2 + len(info.globals) + i)
                entries.append(words)
        self.count = len(entries)
        self.table = (ctypes.c_uint64 * (self.count * STRIDE))(*[w for e in entries for w in e])
        # what a call patches: (input slot, device index for a sharded input, the table words holding its address)
        self.input_patches = [(slot, self.calls[j][0], input_words[(j, pos)])
                              for j, replacements in enumerate(self.uop_replace) for pos, slot in replacements
                              if (j, pos) in input_words]

    @staticmethod
    def supports_uop(batch_devs, new_call) -> bool:
        """CPU programs with fixed launch sizes and at most NARGS arguments, on one device."""
        if not GraphRunner.supports_uop(batch_devs, new_call):
            return False
        info = new_call.src[0].arg
        return (all(isinstance(d, int) for d in info.global_size) and len(info.globals) + len(info.vars) <= NARGS
                and info.target.renderer != "LVP")

    def __call__(self, input_uops, var_vals: dict[str, int], wait: bool = False) -> float | None:
        for slot, device_index, words in self.input_patches:
            buf = input_uops[slot].buffer
            addr = (buf.bufs[device_index] if isinstance(buf, MultiBuffer) else buf)._buf.va_addr
            for word in words:
                self.table[word] = addr
        for j, i, value in self.updated_vars(var_vals):
            for word in self.var_words[(j, i)]:
                self.table[word] = value
        start = time.perf_counter()
        RUNNER.tinyref_run(self.table, self.count)
        return time.perf_counter() - start if wait else None
# --8<-- [end:graph]


def buffer_device(name: str) -> str:
    """The tinygrad device whose buffers a target uses: ``CPU:LLVM`` and ``CPU:X86`` pick a renderer for
    ``CPU`` (their tensors live on ``CPU``), while ``CPU:1`` is a device of its own (tinyref.runtime.parallel)."""
    base, _, suffix = name.partition(":")
    return name if not suffix or suffix.isdigit() else base


def install(device: str | tuple[str, ...]) -> bool:
    """Use CPUGraph for TinyJit on ``device`` (a name, or the tuple of a sharded tensor) where it is a CPU
    device; returns whether any device uses it. Idempotent and cheap: call it wherever a step is jitted."""
    global RUNNER
    if getenv("TINYREF_CPU_GRAPH", 1) == 0 or getenv("JIT", 1) >= 2:
        return False
    names = [buffer_device(d) for d in ((device,) if isinstance(device, str) else device)]
    cpus = [Device[d] for d in names if type(Device[d]).__name__ == "CPUDevice"]
    if not cpus or (RUNNER is None and (RUNNER := build_runner()) is None):
        return False
    for dev in cpus:
        dev.graph = CPUGraph
    return True


def runner_threads() -> int:
    """How many threads the runner spreads a kernel over (1 until a graph is installed)."""
    return RUNNER.threads if RUNNER is not None else 1
