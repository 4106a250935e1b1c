"""How wide the vectors of tinygrad's CPU kernels are: the CPU's vector registers, and float32 stores as wide as them.

tinygrad folds a kernel's float32 loads and stores into vectors of at most 4 lanes on every device (one line of
its ``memory_coalescing``), and LLVM then computes in vectors as wide as those; an x86-64 CPU with AVX2 has
8-lane registers, one with AVX-512 16. ``wide_coalescing`` is tinygrad's own function with that one line asking
``float32_widths`` first; tinyref.runtime.kernelopts installs it with its register tiles, which it sizes by
``vector_width``. An LLVM vector store wider than the 32 bytes tinygrad's CPU allocator aligns buffers to says so
(``store_alignment``), where it would otherwise claim its own width.
"""
from __future__ import annotations

import inspect
import platform
from functools import cache

import tinygrad.codegen as codegen
import tinygrad.codegen.late.coalesce as coalesce
import tinygrad.renderer.llvmir as llvmir
from tinygrad.dtype import dtypes
from tinygrad.renderer.cstyle import ClangRenderer
from tinygrad.renderer.llvmir import CPULLVMRenderer
from tinygrad.uop.ops import Ops, PatternMatcher, UPat

# tinygrad folds the float32 loads and stores of a kernel into vectors of at most 4 lanes, on every device, in this
# line of its memory_coalescing; LLVM then computes in vectors as wide as those. An x86-64 CPU with AVX2 has
# 8-lane registers, one with AVX-512 16.
COALESCE_LINE = 'lengths = [8,4,2] if buf.dtype == dtypes.half and getenv("ALLOW_HALF8") else [4,2]'
# What tinygrad's CPU allocator promises of every buffer's address (its LLVM renderer says `align 32` of each).
ALIGNMENT = 32


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


def register_lanes(ren) -> int:
    """float32 lanes of the vector registers that renderer ``ren``'s kernels compute in on this CPU: 16 for LLVM's
    with AVX-512 (a register-tiled product, one thread: 107 -> 161 GFLOP/s), 8 for the others with AVX2 and FMA
    (clang vectorises 16-lane stores 8 lanes at a time, and the tile sized for 16 lanes ran at 47 GFLOP/s against
    64 sized for 8); 0 on other CPUs."""
    if not vector_registers():
        return 0
    return 16 if vector_registers() == 32 and isinstance(ren, CPULLVMRenderer) else 8


# --8<-- [start:wide]
def float32_widths(ren, op, buf) -> list[int] | None:
    """The vector widths tinygrad's coalescer may fold ``op`` (a LOAD or STORE of ``buf``) into: up to a register's
    lanes for a float32 store on the CPU (clang or LLVM) of an x86-64 machine with AVX2 and FMA (8, or 16 with
    AVX-512); None (tinygrad's) elsewhere. Only stores: LLVM's vectoriser grows its vectors from the stores, so a
    register tile stored 16 lanes at a time computes 16 lanes at a time (four 4-lane loads make one operand), while
    8-lane loads made it vectorise a block of dot products across its outputs (a shuffle per element: 40 -> 18
    GFLOP/s)."""
    wide = op is Ops.STORE and buf.dtype == dtypes.float and isinstance(ren, (ClangRenderer, CPULLVMRenderer))
    lanes = register_lanes(ren) if wide else 0
    return [w for w in (16, 8, 4, 2) if w <= lanes] or None


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


# --8<-- [start:aligned]
def store_alignment(line: str | None, stored) -> str | None:
    """tinygrad's LLVM IR ``line`` for a store of ``stored`` (a STORE), told that its address is aligned to ALIGNMENT
    bytes where the vector is wider: without it LLVM takes a vector store's own width (64 bytes for 16 float32
    lanes) as its alignment and emits a move that faults on an address that is only 32-byte aligned."""
    width = stored.src[1].dtype.itemsize * stored.src[0].max_numel()
    return f"{line}, align {ALIGNMENT}" if line and line.lstrip().startswith("store ") and width > ALIGNMENT else line


@cache
def aligned_llvm_stores() -> PatternMatcher:
    """tinygrad's LLVM renderer's rules, each STORE's line passed through ``store_alignment``."""
    return PatternMatcher([(UPat(Ops.STORE, name="x"), lambda ctx, x: store_alignment(llvmir.base_rewrite.rewrite(x, ctx), x))]) \
        + llvmir.base_rewrite
# --8<-- [end:aligned]


def vector_width(ren) -> int:
    """float32 lanes in one vector of renderer ``ren``'s CPU kernels: ``register_lanes`` with the wide coalescer
    installed, else 4."""
    installed = wide_coalescing() is not None and codegen.memory_coalescing is wide_coalescing()
    return (register_lanes(ren) or 4) if installed else 4


def install() -> None:
    """Use the wide coalescer in this process, with LLVM's CPU stores saying their alignment, where this tinygrad
    has the line it replaces. Idempotent."""
    if wide_coalescing() is not None:
        codegen.memory_coalescing = wide_coalescing()
        CPULLVMRenderer.string_rewrite = aligned_llvm_stores()
