"""Choosing the tinygrad backend: names, availability, tinyref's default, and a description to print.

A tinyref device is a tinygrad target such as ``CPU`` (clang), ``CPU:LLVM``, ``CPU:X86``, ``CL``,
``PYTHON`` or ``CUDA``. The CPU renderers share tinygrad's ``CPU`` device and are told apart by
the ``DEV`` target in force when kernels compile, so selecting one sets ``DEV``.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile

from tinygrad import Context, Device, Tensor, dtypes
from tinygrad.helpers import DEV

from . import cpugraph, kernelopts, programcache, schedulecache
from ..errors import DeviceError

GPU_DEVICES = ("CUDA", "NV", "AMD", "METAL", "WEBGPU")
CPU_DEVICES = ("CPU", "CPU:LLVM", "CPU:X86", "CL", "PYTHON")
KNOWN_DEVICES = CPU_DEVICES[:4] + ("PYTHON",) + GPU_DEVICES

# --8<-- [start:default_order]
# tinyref's default when DEV is unset: any GPU, else LLVM's CPU backend, whose kernels train the demo
# about twice as fast as clang's (2.8 vs 5.2 ms per step here) and compile as fast (a cold first step:
# 19.8 s vs 22.0 s); clang next, then PoCL's OpenCL (about twice as slow to compile); PYTHON last.
DEFAULT_ORDER = ("METAL", "CUDA", "NV", "AMD", "WEBGPU", "CPU:LLVM", "CPU", "CPU:X86", "CL", "PYTHON")
# --8<-- [end:default_order]

# What a backend needs, printed with the reason it could not be opened.
REQUIREMENTS = {
    "CPU": "needs clang on PATH (apt install clang)",
    "CPU:LLVM": "needs libLLVM (apt install libllvm19)",
    "CPU:X86": "needs an x86-64 CPU",
    "CL": "needs an OpenCL driver (apt install pocl-opencl-icd ocl-icd-libopencl1, or a GPU's ICD)",
    "PYTHON": "pure Python emulator, should always work",
    "CUDA": "needs an NVIDIA GPU and the CUDA driver",
    "NV": "needs an NVIDIA GPU and its kernel driver",
    "AMD": "needs an AMD GPU and its kernel driver",
    "METAL": "needs macOS with Metal",
    "WEBGPU": "needs the Dawn WebGPU library",
}

DTYPES = {"float32": dtypes.float32, "float16": dtypes.float16, "bfloat16": dtypes.bfloat16}


def normalize_device(spec: str) -> str:
    """Upper-case a device name and check that tinyref knows it (``cpu:llvm`` -> ``CPU:LLVM``)."""
    name = str(spec).strip().upper()
    if name not in KNOWN_DEVICES:
        raise DeviceError(f"unknown device {spec!r}: choose one of {', '.join(KNOWN_DEVICES)}")
    return name


@contextlib.contextmanager
def captured_stderr():
    """Send file descriptor 2 (compilers' chatter, e.g. PoCL's "1 warning generated.") to a file;
    yields a function returning the first captured line that reports an error ("" if none)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as f:
        os.dup2(f.fileno(), 2)
        try:
            yield lambda: next((line.strip() for line in _read(f).splitlines() if "error" in line.lower()), "")
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _read(f) -> str:
    f.flush()
    f.seek(0)
    return f.read()


def failure_reason(e: BaseException, compiler_error: str = "") -> str:
    """One line saying why a computation failed: the compiler's error if it printed one, then the exception."""
    detail = str(e).strip().splitlines()[0] if str(e).strip() else "no details"
    return (f"{compiler_error}; " if compiler_error else "") + f"{type(e).__name__}: {detail}"


@functools.cache
def _probe(name: str, dtype: str = "float32") -> str | None:
    """Compile and run small kernels that store ``dtype`` buffers (CCACHE=0: a cached binary proves
    nothing; PARALLEL=0: compile in this process, so the compiler's messages are captured)."""
    with captured_stderr() as tail, Context(DEV=name, CCACHE=0, PARALLEL=0):
        try:
            x = Tensor([float(i) for i in range(16)], device=name.split(":")[0]).cast(DTYPES[dtype]).contiguous().realize()
            got = (x * 2 + x.sum()).contiguous().realize().float().tolist()
        except Exception as e:  # noqa: BLE001 - any failure to open or compile means "not available"
            return failure_reason(e, tail())[:240]
    want = [2.0 * i + 120.0 for i in range(16)]
    return None if got == want else f"computed {got[:3]}... for {want[:3]}..."


def probe_device(spec: str) -> str | None:
    """None when ``spec`` computes correctly here, else the reason it cannot be used (one line; cached)."""
    name = normalize_device(spec)
    reason = _probe(name)
    return None if reason is None else f"{REQUIREMENTS[name]} ({reason})"


def available_devices(specs=KNOWN_DEVICES) -> dict[str, str | None]:
    """{device: None if usable here, else the reason it is not}, in the order given."""
    return {name: probe_device(name) for name in map(normalize_device, specs)}


def default_device() -> str:
    """tinyref's choice when DEV is unset: the first usable device of DEFAULT_ORDER."""
    for name in DEFAULT_ORDER:
        if probe_device(name) is None:
            return name
    raise DeviceError("no tinygrad device works here: install clang (apt install clang) or a GPU driver")


def select_device(spec: str | None) -> str:
    """Make ``spec`` the default tinygrad target for this process and return its name.

    None keeps a ``DEV`` set in the environment, and otherwise picks ``default_device()``.
    Also prepares the compiler as every command does (``prepare_compiler``), and on a CPU device replays jitted
    steps from C on every core (tinyref.runtime.cpugraph).
    """
    prepare_compiler()
    if spec is None and DEV.device:
        name = current_device()
    else:
        name = normalize_device(default_device() if spec is None else spec)
        reason = probe_device(name)
        if reason is not None:
            raise DeviceError(f"device {name} is not available here: {reason}; run 'tinyref check --device all' to see which are")
        DEV.value = name
    cpugraph.install(name)
    return name


# --8<-- [start:prepare_compiler]
def prepare_compiler() -> None:
    """What every command does before it compiles a kernel (train, bench, generate and check alike, so that check
    verifies the kernels the others run): keep kernel schedules and lowered kernels on disk
    (tinyref.runtime.schedulecache, programcache), so later runs at the same shapes start faster, and choose the
    CPU matmuls' and column sums' optimisations by tinyref's rule (tinyref.runtime.kernelopts). Idempotent."""
    programcache.enable()
    programcache.keep_compile_workers()
    schedulecache.enable()
    kernelopts.install()
# --8<-- [end:prepare_compiler]


@contextlib.contextmanager
def use_device(spec: str):
    """Run a block with ``spec`` as the default target (tensors created inside land on it)."""
    name = normalize_device(spec)
    with Context(DEV=name):
        yield name


def current_device() -> str:
    """The target in force, e.g. ``CPU:LLVM`` or ``CL``."""
    base = Device.DEFAULT
    renderer = DEV.renderer if DEV.device == base else ""
    return f"{base}:{renderer}" if renderer else base


def describe_device(name: str | None = None) -> str:
    """A human line such as ``CPU:LLVM (CPULLVMRenderer, steps replayed from C on 2 threads)`` for banners
    and reports; the part after the renderer says whether tinyref.runtime.cpugraph launches jitted steps."""
    name = name or current_device()
    with Context(DEV=name):
        renderer = type(Device[name.split(':')[0]].renderer).__name__
    graph = Device[cpugraph.buffer_device(name)].graph is cpugraph.CPUGraph
    return f"{name} ({renderer}{f', steps replayed from C on {cpugraph.runner_threads()} threads' if graph else ''})"


def dtype_support(spec: str, dtype: str) -> str | None:
    """None when the usable device ``spec`` computes in ``dtype`` (float32, float16, bfloat16), else why not.

    tinygrad's own list is not enough: it lets clang take bfloat16 on any x86, and some clangs refuse it.
    """
    if dtype not in DTYPES:
        raise DeviceError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    name = normalize_device(spec)
    with Context(DEV=name):
        renderer = Device[name.split(":")[0]].renderer
        if DTYPES[dtype] not in renderer.supported_dtypes():
            return f"tinygrad's {type(renderer).__name__} has no {dtype}"
    reason = _probe(name, dtype)
    return None if reason is None else f"{dtype} does not compile or compute on {name}: {reason}"
