"""Register-tiled CPU matmuls: tinyref's choice of tinygrad kernel optimisations for matrix products.

tinygrad picks each kernel's optimisations (``Opt``: upcast an axis, unroll the reduce, split over threads) with a
hand-written heuristic, ``hand_coded_optimizations``, unless a BEAM search is asked for. For a CPU matmul it takes a
4x4 tile with the reduce unrolled by 4 whatever the layout, which runs at a fraction of what the vector unit can do.
This module replaces that choice for one pattern, by rule: the BLAS micro-kernel. When an operand ``B`` is
contiguous along an output axis ``n`` (its rows stream) and the other, ``A``, does not move along ``n``, upcast
``n`` and a second output axis ``m`` so that the m x n accumulators, one row of ``B`` and one broadcast of ``A`` fit
in the CPU's vector registers, and split the rest over the CPU threads. tinyref's model computes every product of a
training step in that form (tinyref.linear.product). A matmul whose operands are both contiguous along the sum (a
linear layer's forward ``x @ w.T`` over a short window, when generating) gets, while the sum is of middling length,
a block of dot products sized to the vector registers; a sum down columns (a bias gradient, an embedding's one-hot
gradient) reads a vector of columns at a time. Every other kernel, device and dtype, every CPU other than an x86-64
one with AVX2 and FMA, and every BEAM run keep tinygrad's own choice, and a small CPU kernel gets none
(SMALL_KERNEL). On those CPUs, float32 stores may also fold into vectors as wide as the registers (8 lanes, 16 for
LLVM's kernels with AVX-512), where tinygrad stops at 4 (tinyref.runtime.vectorwidth, a one-line patch to tinygrad's
coalescer), so that the tiles compute in whole registers; and an elementwise kernel that tinygrad would leave on one
thread is split over them all.
"""
from __future__ import annotations

import tinygrad.codegen.opt.heuristic as heuristic
import tinygrad.engine.worker as worker
from tinygrad.codegen.opt import KernelOptError, Opt, OptOps
from tinygrad.dtype import dtypes
from tinygrad.helpers import prod
from tinygrad.uop.ops import AxisType, Ops, graph_rewrite, remove_all_tags

from . import vectorwidth
from .kernelshape import axis_now, axis_strides, matmul_strides, single_sum
from .vectorwidth import vector_registers, vector_width

# names this rule in the program cache's keys (and `tinyref check`'s table): a changed rule recompiles
RULE = "tiles-16-from-2e20-threads-onehot-rows-dot16x8-k32-wide-elementwise-swap-streaming"
# A CPU kernel whose whole iteration space (outputs x reduction) has fewer points than this runs in microseconds
# however it is optimised, while tinygrad's upcast and unrolled version of it takes longer to generate and compile
# than it ever saves. The demo's step without opts for them: cold first step 6.0 instead of 7.3 s, 1.58 ms a step
# instead of 1.62 (2^17: 5.2 s but 1.76 ms; 2^18: 4.4 s but 2.46 ms; NOOPT=1: 2.6 s but 6.9 ms).
SMALL_KERNEL = 1 << 16
# A tile sized for 16 lanes (8 x 32) is twice the code of 8 x 16: the demo's first step took 8.6 instead of 6.4 s. Its
# products (up to 2^19 points) keep 8-lane tiles, stored 16 lanes wide; M's, L's (2^23 and up) and the check's get 16.
WIDE_TILE = 1 << 20
# The dot-product block, by the CPU's vector registers: (rows of A, rows of B, shortest and longest reduce). With 32
# (AVX-512), 16 x 8 dot products, the reduce unrolled by 4: one thread, 62-68 GFLOP/s at x @ w.T for K 128-256, 53 at
# K = 1024 (4 x 16, BEAM's choice on an AVX2 CPU: 33-38; tinygrad's 4 x 4: 35); its 24 rows of K floats stay in a
# 48 KB L1 up to K = 256. With 16, 4 x 16, whose 20 rows stay in a 32 KB L1 up to K = 256 (below K = 64 its 64 final
# horizontal sums cost more than the reduce). They serve generation's forward passes over windows shorter than
# tinyref.linear.STREAM_FROM rows; a training step streams every product (tinyref.linear.product).
DOT_BLOCKS = {32: (16, 8, 32, 1024), 16: (4, 16, 64, 256)}
# The 16 x 8 block is twice the 4 x 16 block's code, and LLVM takes over twice as long on it (a step compiled 0.7 s
# slower). Below this many points (M's 64-token window's products have 2^20 to 2^22) a kernel gets the 4 x 16 block.
BIG_DOT = 1 << 20
# 8-lane elementwise kernels compile slower too (M's first step: 0.7 s); from this many elements (`tinyref check`'s
# MLP hidden layer; the demo's largest has 2^14) they get 8 lanes, the small ones keep tinygrad's 4.
WIDE_ELEMENTWISE = 1 << 16
# 8 with AVX-512 too: 16 compiled M's first step 1.2 s slower and ran no faster (one thread, M: 20.7 ms, 20.1 with 8).
ELEMENTWISE_LANES = 8
# tinygrad threads a kernel from 128K operations a thread, leaving elementwise kernels of up to 256K elements (AdamW's
# updates of L's 768 x 256 weights) on one core. From 32K a thread: L's step 204 -> 199 ms (medians of 4 pairs).
ELEMENTWISE_PER_THREAD = 1 << 15
# A one-hot sum (an embedding's gradient) computes 4 of its rows from each load of a row of the summed input. L's
# (512 x 256 outputs, 1024 positions, one thread): tinygrad's choice 70 ms; 16 columns 18.7; 2 rows 9.2; 4 or 8 3.7.
ONE_HOT_ROWS = 4
TINYGRAD_CHOICE = heuristic.hand_coded_optimizations
TINYGRAD_WORKER_START = worker._init_worker


def tiles(registers: int, lanes: int) -> list[tuple[int, int]]:
    """(m, n) register tiles, most accumulators first, then most rows of A (more of each cache line of A used:
    8 x 16 ran 3-5% faster than 4 x 32 at M's products), whose m*n/lanes accumulators, n/lanes vectors of a row
    of B and one broadcast of A fit in ``registers`` vector registers of ``lanes`` float32 each."""
    shapes = [(m, n) for n in (32, 16, 8) for m in (8, 6, 4, 3, 2)
              if n % lanes == 0 and m * n // lanes + n // lanes + 1 <= registers]
    return sorted(shapes, key=lambda s: (-s[0] * s[1], -s[0]))


def tile_lanes(k) -> int:
    """The float32 lanes the register tile of ``k`` is sized for: ``vector_width`` (16 with AVX-512 for LLVM), but
    at most 8 below WIDE_TILE points."""
    return min(vector_width(k.ren), 16 if prod(k.full_shape) >= WIDE_TILE else 8)


# --8<-- [start:rule]
def tile_axes(k) -> tuple[int, int, int, int] | None:
    """(n, tile along n, m, tile along m) for a float32 matmul kernel ``k`` whose operand B streams rows
    along output axis n, else None."""
    if (strides := matmul_strides(k)) is None:
        return None
    axes = k.axes_of(AxisType.WEAK, AxisType.GLOBAL)
    for b in (0, 1):   # n: contiguous in B and in the output, absent from A; m: moves A, not B
        for n in (a for a in axes if strides[a][b] == 1 and strides[a][1 - b] == 0 and strides[a][2] == 1):
            for m in (a for a in axes if a != n and strides[a][b] == 0 and strides[a][1 - b] != 0):
                for tm, tn in tiles(vector_registers(), tile_lanes(k)):
                    if k.full_shape[n] % tn == 0 and k.full_shape[m] % tm == 0:
                        return n, tn, m, tm
    return None


def dot_block(points: int = BIG_DOT) -> tuple[int, int, int, int]:
    """(rows of A, rows of B, shortest and longest reduce) of the dot-product block for this CPU's vector registers
    and a kernel of ``points`` (outputs x reduce)."""
    return DOT_BLOCKS[vector_registers() if points >= BIG_DOT else 16]


def dot_axes(k) -> tuple[int, int] | None:
    """(m, n) for a float32 matmul kernel ``k`` whose operands are both contiguous along the reduce axis (a
    dot product per output, as in a linear layer's forward ``x @ w.T``), when the block's rows of A and of B
    divide the axes m and n they move along (n: contiguous in the output) and 4 divides the reduce; else None."""
    if (strides := matmul_strides(k)) is None:
        return None
    (r,) = k.axes_of(AxisType.REDUCE)
    rows_a, rows_b, shortest, longest = dot_block(prod(k.full_shape))
    if strides[r] != [1, 1, 0] or k.full_shape[r] % 4 or not shortest <= k.full_shape[r] <= longest:
        return None
    axes = k.axes_of(AxisType.WEAK, AxisType.GLOBAL)
    for b in (0, 1):
        for n in (a for a in axes if strides[a][b] != 0 and strides[a][1 - b] == 0 and strides[a][2] == 1):
            for m in (a for a in axes if strides[a][b] == 0 and strides[a][1 - b] != 0 and strides[a][2] != 0):
                if k.full_shape[n] % rows_b == 0 and k.full_shape[m] % rows_a == 0:
                    return m, n
    return None


def column_axis(k) -> tuple[int, int] | None:
    """(n, width) for a float32 kernel ``k`` that sums down columns: one sum over one reduce axis, and an output
    axis n contiguous in the output and in every buffer that moves along it, none of which is contiguous along
    the reduce (a bias gradient, a sum over positions, an embedding's one-hot gradient, whose token ids are
    read along the reduce but not along n), ``width`` (16, 8 or 4) dividing it; else None."""
    if single_sum(k) is None or (strides := axis_strides(k, k.bufs)) is None:
        return None
    (r,) = k.axes_of(AxisType.REDUCE)
    for n in k.axes_of(AxisType.WEAK, AxisType.GLOBAL):
        along_rows = any(sr == 1 for sr, sn in zip(strides[r], strides[n]) if sn != 0)
        if all(s in (0, 1) for s in strides[n]) and strides[n].count(1) >= 2 and not along_rows:   # the output and an input
            width = next((w for w in (16, 8, 4) if k.full_shape[n] % w == 0), None)
            if width is not None:
                return n, width
    return None


def output_only_axis(k, n: int) -> int | None:
    """An output axis of ``k`` other than ``n``, divisible by ONE_HOT_ROWS, along which no input read inside the
    sum moves: the vocabulary axis of a one-hot sum (an embedding's gradient, sum over positions of
    (idx == v) * dx), where the loop index enters the math as a value and not as an address (a term added
    after the sum, such as a tied head's gradient, may move along it); else None."""
    outputs = {u.src[0] for u in k.ast.toposort() if u.op is Ops.STORE}
    inputs = [b for b in k.bufs if b not in outputs]
    if not inputs or (strides := axis_strides(k, inputs)) is None:
        return None
    (r,) = k.axes_of(AxisType.REDUCE)
    summed = [i for i, s in enumerate(strides[r]) if s != 0]     # the inputs read inside the sum
    return next((a for a in k.axes_of(AxisType.WEAK, AxisType.GLOBAL)
                 if a != n and not any(strides[a][i] for i in summed) and k.full_shape[a] % ONE_HOT_ROWS == 0), None)


def split_over_threads(k, per_thread: int = 128 << 10) -> None:
    """Split ``k``'s first output axis that divides evenly over the CPU's threads, as tinygrad would: each thread
    gets at least ``per_thread`` points (tinygrad's ~128K operations a thread by default)."""
    for threads in range(k.ren.global_max[0] if k.ren.global_max else 1, 1, -1):
        axis = next((a for a in k.axes_of(AxisType.WEAK) if k.full_shape[a] % threads == 0), None)
        if axis is not None and prod(k.full_shape) // per_thread >= threads:
            k.apply_opt(Opt(OptOps.THREAD, axis, threads))
            return


def dot_tiled_matmul(k):
    """A copy of ``k`` computing a block of dot products at once (``dot_block``) with the reduce unrolled by 4,
    split over threads; or None (not a dot-product matmul)."""
    if (found := dot_axes(k)) is None:
        return None
    m, n = found
    rows_a, rows_b, _, _ = dot_block(prod(k.full_shape))
    k = k.copy()
    n_loop = k.rngs[n]
    k.apply_opt(Opt(OptOps.UPCAST, m, rows_a))
    for part in (4, rows_b // 4) if rows_b > 8 else (rows_b,):   # 16 as BEAM has it, two upcasts of 4; 8 as one
        k.apply_opt(Opt(OptOps.UPCAST, axis_now(k, n_loop, n), part))
    split_over_threads(k)
    k.apply_opt(Opt(OptOps.UNROLL, 0, 4))
    return k


def swap_loops(k, a: int, b: int) -> None:
    """Exchange the nesting of ``k``'s output axes ``a`` and ``b`` in place: tinygrad's OptOps.SWAP, which it
    applies to a GPU's global axes only, for a CPU kernel's loops."""
    ra, rb = k.rngs[a], k.rngs[b]
    k.ast = k.ast.substitute({ra: ra.replace(arg=(*rb.arg[:-1], ra.arg[-1]), tag=1),
                              rb: rb.replace(arg=(*ra.arg[:-1], rb.arg[-1]), tag=1)}, name="swap loops")
    k.ast = graph_rewrite(k.ast, remove_all_tags, name="swap loops: remove tags")


def tiled_matmul(k):
    """A copy of ``k`` with the register tile and a thread split applied, or None (not a streaming matmul).
    The inner of the two tiled loops walks the operand that spans fewer columns, so that a column panel of the
    other, read down every row of the sum, is reused from cache across the whole inner loop (a weight gradient
    dy^T h with h 4C wide: 52 -> 84 GFLOP/s once h's rows are padded, see tinyref.linear)."""
    if (found := tile_axes(k)) is None:
        return None
    n, tn, m, tm = found
    k = k.copy()
    inner, outer = max(n, m), min(n, m)
    if k.full_shape[inner] > k.full_shape[outer]:
        swap_loops(k, inner, outer)
        n, m = (outer, inner) if n == inner else (inner, outer)
    m_loop, n_loop = k.rngs[m], k.rngs[n]
    k.apply_opt(Opt(OptOps.UPCAST, n, min(tn, 16)))          # tinygrad upcasts by at most 16 at a time
    if tn > 16:
        k.apply_opt(Opt(OptOps.UPCAST, axis_now(k, n_loop, n), tn // 16))
    k.apply_opt(Opt(OptOps.UPCAST, axis_now(k, m_loop, m), tm))
    split_over_threads(k)
    return k


def vector_column_sum(k):
    """A copy of ``k`` summing ``column_axis``'s columns a vector of them at a time, so that each row's load
    fills whole cache lines instead of one or two floats of each, and ONE_HOT_ROWS rows of a one-hot sum from
    each such load, split over threads; or None."""
    if (found := column_axis(k)) is None:
        return None
    n, width = found
    m = output_only_axis(k, n)
    k = k.copy()
    m_loop = k.rngs[m] if m is not None else None
    k.apply_opt(Opt(OptOps.UPCAST, n, width))
    if m is not None:
        k.apply_opt(Opt(OptOps.UPCAST, axis_now(k, m_loop, m), ONE_HOT_ROWS))
    split_over_threads(k)
    return k


def with_opts(k, opts):
    """A copy of ``k`` with ``opts`` applied."""
    copy = k.copy()
    for o in opts:
        copy.apply_opt(o)
    return copy


def wide_elementwise(k, chosen):
    """For a float32 elementwise kernel ``k`` (no reduce) of at least WIDE_ELEMENTWISE elements to which tinygrad's
    choice ``chosen`` gives one upcast, of 4, a copy of ``k`` with the same opts but that upcast ELEMENTWISE_LANES, so
    that its math (GELU's and softmax's exp, a division) runs in 8-lane vectors where stores fold 8 floats or more;
    else ``chosen``. At L's step, one thread: its elementwise kernels took 78 instead of 100 ms."""
    upcasts = [o for o in chosen.applied_opts if o.op is OptOps.UPCAST]
    stores = [u for u in k.ast.toposort() if u.op is Ops.STORE]
    if (vector_width(k.ren) < 8 or k.reduceop is not None or prod(k.full_shape) < WIDE_ELEMENTWISE
            or len(upcasts) != 1 or upcasts[0].arg != 4
            or any(s.src[0].dtype != dtypes.float for s in stores)):
        return chosen
    return with_opts(k, [Opt(o.op, o.axis, ELEMENTWISE_LANES) if o is upcasts[0] else o for o in chosen.applied_opts])


def threaded_elementwise(k, chosen):
    """For an elementwise kernel ``k`` (no reduce) of at least WIDE_ELEMENTWISE elements that ``chosen`` (its opts)
    leaves on one thread, a copy with the same opts split over the CPU's threads from ELEMENTWISE_PER_THREAD elements
    a thread; else ``chosen``."""
    split = any(o.op is OptOps.THREAD for o in chosen.applied_opts)
    if k.reduceop is not None or prod(k.full_shape) < WIDE_ELEMENTWISE or split:
        return chosen
    split_over_threads(threaded := with_opts(k, chosen.applied_opts), ELEMENTWISE_PER_THREAD)
    return threaded


def hand_coded_optimizations(k):
    """tinygrad's heuristic, except on CPUs: no opts for a small kernel, and on x86-64 the register tile
    for a streaming float32 matmul, the dot-product block for a forward one, vectors for a column sum,
    8-lane vectors and every thread for an elementwise kernel."""
    if k.ren.target.device == "CPU" and prod(k.full_shape) < SMALL_KERNEL:
        return k
    if vector_registers() and k.ren.has_threads and k.ren.target.device == "CPU":
        try:
            if (tiled := tiled_matmul(k) or dot_tiled_matmul(k) or vector_column_sum(k)) is not None:
                return tiled
            # tinygrad's heuristic optimises a copy of k
            return threaded_elementwise(k, wide_elementwise(k, TINYGRAD_CHOICE(k)))
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
    vectorwidth.install()
    worker._init_worker = start_worker
    worker.terminate_worker_pool()


def installed() -> bool:
    return heuristic.hand_coded_optimizations is hand_coded_optimizations
