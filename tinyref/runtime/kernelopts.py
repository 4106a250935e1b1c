"""Register-tiled CPU matmuls: tinyref's choice of tinygrad kernel optimisations for matrix products.

tinygrad picks each kernel's optimisations (``Opt``: upcast an axis, unroll the reduce, split over
threads) with a hand-written heuristic, ``hand_coded_optimizations``, unless a BEAM search is
asked for. For a CPU matmul it takes a 4x4 tile with the reduce unrolled by 4 whatever the layout,
which runs at a fraction of what the vector unit can do. This module replaces that choice for one
pattern, by rule: the BLAS micro-kernel. When an operand ``B`` is contiguous along an output axis
``n`` (its rows stream) and the other, ``A``, does not move along ``n``, upcast ``n`` and a second
output axis ``m`` so that the m x n accumulators, one row of ``B`` and one broadcast of ``A`` fit
in the CPU's vector registers, and split the rest over the CPU threads. Every other kernel, device
and dtype, every CPU other than an x86-64 one with AVX2 and FMA, and every BEAM run keep tinygrad's
own choice, and a small CPU kernel gets none (SMALL_KERNEL).
"""
from __future__ import annotations

import platform
from functools import cache

import tinygrad.codegen.opt.heuristic as heuristic
import tinygrad.engine.worker as worker
from tinygrad.codegen.opt import KernelOptError, Opt, OptOps
from tinygrad.dtype import dtypes
from tinygrad.helpers import prod
from tinygrad.uop.ops import AxisType, Ops, UOp

VECTOR = 4    # tinygrad's CPU kernels load and compute float32 in 4-wide vectors: one register each
RULE = "tiles-2"     # names this rule in the program cache's keys: a changed rule recompiles
# A CPU kernel whose whole iteration space (outputs x reduction) has fewer points than this runs in
# microseconds however it is optimised, while tinygrad's upcast and unrolled version of it takes longer
# to generate and compile than it ever saves. Every kernel of the demo's step is this small: without opts
# its cold first step took 6.0 instead of 7.3 s, at 1.58 instead of 1.62 ms a step (2^17: 5.2 s but
# 1.76 ms; 2^18: 4.4 s but 2.46 ms; no opts at all, NOOPT=1: 2.6 s but 6.9 ms).
SMALL_KERNEL = 1 << 16
TINYGRAD_CHOICE = heuristic.hand_coded_optimizations
TINYGRAD_WORKER_START = worker._init_worker


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


def tiles(registers: int) -> list[tuple[int, int]]:
    """(m, n) register tiles, most accumulators first, whose m*n/4 accumulators, n/4 vectors of a row of
    B and one broadcast of A fit in ``registers`` vector registers."""
    shapes = [(m, n) for n in (16, 8) for m in (8, 6, 4, 3, 2) if m * n // VECTOR + n // VECTOR + 1 <= registers]
    return sorted(shapes, key=lambda s: -s[0] * s[1])


def stride(idx: UOp, rng: UOp) -> int | None:
    """How far the index ``idx`` moves when the loop ``rng`` steps by one; None when not a fixed step."""
    total = 0
    for term in idx.split_uop(Ops.ADD):
        if term is rng:
            total += 1
        elif term.op is Ops.MUL and rng in term.src and (c := term.src[1 - term.src.index(rng)]).op is Ops.CONST:
            total += c.arg
        elif rng in term.backward_slice:
            return None
    return total


# --8<-- [start:rule]
def tile_axes(k) -> tuple[int, int, int, int] | None:
    """(n, tile along n, m, tile along m) for a float32 matmul kernel ``k`` (tinygrad's Scheduler) whose
    operand B streams rows along output axis n, else None."""
    red = k.reduceop
    if red is None or len(k.reduceops) != 1 or red.arg[0] is not Ops.ADD or len(k.axes_of(AxisType.REDUCE)) != 1:
        return None
    mul = red.src[0]   # the product of two loads, nothing fused into them
    if mul.op is not Ops.MUL or mul.dtype != dtypes.float or any(s.op is not Ops.INDEX for s in mul.src):
        return None
    out = [b for b in k.bufs if b not in mul.src]
    if len(out) != 1:
        return None
    idx = [b.src[1].get_idx() for b in (*mul.src, out[0])]   # operand 0, operand 1, the output
    axes = k.axes_of(AxisType.WEAK, AxisType.GLOBAL)
    strides = {a: [stride(i, k.rngs[a]) for i in idx] for a in axes}
    if any(s is None for v in strides.values() for s in v):
        return None
    for b in (0, 1):   # n: contiguous in B and in the output, absent from A; m: moves A, not B
        for n in (a for a in axes if strides[a][b] == 1 and strides[a][1 - b] == 0 and strides[a][2] == 1):
            for m in (a for a in axes if a != n and strides[a][b] == 0 and strides[a][1 - b] != 0):
                for tm, tn in tiles(vector_registers()):
                    if k.full_shape[n] % tn == 0 and k.full_shape[m] % tm == 0:
                        return n, tn, m, tm
    return None


def tiled_matmul(k):
    """A copy of ``k`` with the register tile and a thread split applied, or None (not a streaming matmul)."""
    if (found := tile_axes(k)) is None:
        return None
    n, tn, m, tm = found
    k = k.copy()
    m_loop = k.rngs[m]
    k.apply_opt(Opt(OptOps.UPCAST, n, tn))
    k.apply_opt(Opt(OptOps.UPCAST, k.rngs.index(m_loop) if m_loop in k.rngs else m, tm))
    for threads in range(k.ren.global_max[0] if k.ren.global_max else 1, 1, -1):
        axis = next((a for a in k.axes_of(AxisType.WEAK) if k.full_shape[a] % threads == 0), None)
        if axis is not None and prod(k.full_shape) // (128 << 10) >= threads:   # tinygrad's ~128K operations a thread
            k.apply_opt(Opt(OptOps.THREAD, axis, threads))
            break
    return k


def hand_coded_optimizations(k):
    """tinygrad's heuristic, except on CPUs: no opts for a small kernel, and the register tile for a
    streaming float32 matmul on x86-64."""
    if k.ren.target.device == "CPU" and prod(k.full_shape) < SMALL_KERNEL:
        return k
    if vector_registers() and k.ren.has_threads and k.ren.target.device == "CPU":
        try:
            if (tiled := tiled_matmul(k)) is not None:
                return tiled
        except KernelOptError:   # an opt tinygrad refuses for this kernel: its own choice instead
            pass
    return TINYGRAD_CHOICE(k)
# --8<-- [end:rule]


def start_worker() -> None:
    """A compile worker's start: tinygrad's, then the same choice of opts as the parent process."""
    TINYGRAD_WORKER_START()
    install()


def install() -> None:
    """Use the register tiles wherever tinygrad optimises a kernel without BEAM: in this process and in the
    worker processes that compile in parallel (restarted if they started without it). Idempotent."""
    if heuristic.hand_coded_optimizations is hand_coded_optimizations:
        return
    heuristic.hand_coded_optimizations = hand_coded_optimizations
    worker._init_worker = start_worker
    worker.terminate_worker_pool()


def installed() -> bool:
    return heuristic.hand_coded_optimizations is hand_coded_optimizations
