"""How wide the vectors of tinygrad's CPU kernels are: the CPU's vector registers, and an 8-lane float32 store.

tinygrad folds a kernel's float32 loads and stores into vectors of at most 4 lanes on every device (one line of
its ``memory_coalescing``), and LLVM then computes in vectors as wide as those; an x86-64 CPU with AVX2 has
8-lane registers. ``wide_coalescing`` is tinygrad's own function with that one line asking ``float32_widths``
first; tinyref.runtime.kernelopts installs it with its register tiles, which it sizes by ``vector_width``.
"""
from __future__ import annotations

import inspect
import platform
from functools import cache

import tinygrad.codegen as codegen
import tinygrad.codegen.late.coalesce as coalesce
from tinygrad.dtype import dtypes
from tinygrad.renderer.cstyle import ClangRenderer
from tinygrad.renderer.llvmir import CPULLVMRenderer
from tinygrad.uop.ops import Ops

# tinygrad folds the float32 loads and stores of a kernel into vectors of at most 4 lanes, on every device, in this
# line of its memory_coalescing; LLVM then computes in vectors as wide as those. An x86-64 CPU with AVX2 has
# 8-lane registers (AVX-512 has 16, but tinygrad's CPU allocator promises 32-byte alignment: 8 lanes).
COALESCE_LINE = 'lengths = [8,4,2] if buf.dtype == dtypes.half and getenv("ALLOW_HALF8") else [4,2]'
WIDE = (8, 4, 2)   # a fresh list of them each time: the coalescer appends to it


@cache
def vector_registers(cpuinfo: str = "/proc/cpuinfo") -> int:
    """Vector registers of this x86-64 CPU: 32 with AVX-512, 16 with AVX2 and FMA; 0 (keep tinygrad's
    choice) on other machines or when the flags cannot be read."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return 0
    try:
        with open(cpuinfo) as f:
            flags = set(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return 0
    return 0 if not {"avx2", "fma"} <= flags else 32 if "avx512f" in flags else 16


# --8<-- [start:wide]
def float32_widths(ren, op, buf) -> list[int] | None:
    """The vector widths tinygrad's coalescer may fold ``op`` (a LOAD or STORE of ``buf``) into: up to 8 lanes for
    a float32 store on the CPU (clang or LLVM) of an x86-64 machine with AVX2 and FMA; None (tinygrad's) elsewhere.
    Only stores: LLVM's vectoriser grows its vectors from the stores, so a register tile stored 8 lanes at a time
    computes 8 lanes at a time (two 4-lane loads make one 8-lane operand), while 8-lane loads made it vectorise a
    block of dot products across its outputs (a shuffle per element: 40 -> 18 GFLOP/s)."""
    wide = op is Ops.STORE and buf.dtype == dtypes.float and isinstance(ren, (ClangRenderer, CPULLVMRenderer))
    return list(WIDE) if wide and vector_registers() else None


@cache
def wide_coalescing():
    """tinygrad's memory_coalescing with COALESCE_LINE asking ``float32_widths`` first; None when this tinygrad's
    coalescer does not have that line (then tinygrad's stays, and so do 4-lane vectors)."""
    source = inspect.getsource(coalesce.memory_coalescing)
    if source.count(COALESCE_LINE) != 1:
        return None
    lengths = COALESCE_LINE.split(" = ", 1)[1]
    namespace = {**vars(coalesce), "float32_widths": float32_widths}
    patched = source.replace(COALESCE_LINE, f"lengths = float32_widths(ctx, op, buf) or ({lengths})")
    exec(compile(patched, coalesce.__file__, "exec"), namespace)
    return namespace["memory_coalescing"]
# --8<-- [end:wide]


def vector_width() -> int:
    """float32 lanes in one vector of tinygrad's CPU kernels: 8 with the wide coalescer installed, else 4."""
    return WIDE[0] if wide_coalescing() is not None and codegen.memory_coalescing is wide_coalescing() else 4


def install() -> None:
    """Use the wide coalescer in this process, where this tinygrad has the line it replaces. Idempotent."""
    if wide_coalescing() is not None:
        codegen.memory_coalescing = wide_coalescing()
