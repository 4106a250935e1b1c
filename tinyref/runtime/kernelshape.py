"""What a kernel does along each of its axes, read from its graph: the facts tinyref.runtime.kernelopts chooses by.

A tinygrad kernel (its ``Scheduler``, ``k``) is a graph of loads, arithmetic and stores over loops (``k.rngs``):
output axes and reduce axes. For each buffer it reads or writes, the rule needs how far its index moves when one
loop steps by one: a matmul's operand that does not move along an output axis is broadcast along it, one that moves
by 1 streams along it.
"""
from __future__ import annotations

from tinygrad.dtype import dtypes
from tinygrad.uop.ops import AxisType, Ops, UOp


# --8<-- [start:reading]
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


def single_sum(k) -> UOp | None:
    """The reduce of kernel ``k`` (tinygrad's Scheduler) when it is one float32 sum over one reduce axis, else None."""
    red = k.reduceop
    if red is None or len(k.reduceops) != 1 or red.arg[0] is not Ops.ADD or len(k.axes_of(AxisType.REDUCE)) != 1:
        return None
    return red if red.dtype == dtypes.float else None


def axis_strides(k, buffers) -> dict[int, list[int]] | None:
    """How far each of ``buffers`` (INDEX uops of ``k``) moves along each output and reduce axis of ``k``:
    {axis: [one stride per buffer]}; None when one does not move by a fixed step."""
    idx = [b.src[1].get_idx() for b in buffers]
    strides = {a: [stride(i, k.rngs[a]) for i in idx] for a in k.axes_of(AxisType.WEAK, AxisType.GLOBAL, AxisType.REDUCE)}
    return None if any(s is None for v in strides.values() for s in v) else strides


def matmul_strides(k) -> dict[int, list[int]] | None:
    """For a float32 matmul kernel ``k``: one sum of the product of two loads, with nothing fused into them
    (a bias added after the sum is fine), how far operand A, operand B and the output move along each
    axis: {axis: [A, B, out]}. None for any other kernel."""
    if (red := single_sum(k)) is None:
        return None
    mul = red.src[0]
    if mul.op is not Ops.MUL or any(s.op is not Ops.INDEX for s in mul.src):
        return None
    out = [u.src[0] for u in k.ast.toposort() if u.op is Ops.STORE]
    return axis_strides(k, (*mul.src, out[0])) if len(out) == 1 else None


def axis_now(k, loop: UOp, axis: int) -> int:
    """Where ``loop`` (one of ``k.rngs`` before an upcast) is among ``k``'s axes now; ``axis`` if it was split away."""
    return k.rngs.index(loop) if loop in k.rngs else axis
# --8<-- [end:reading]
