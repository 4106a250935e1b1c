"""tinyref.runtime.vectorwidth: float32 stores of a CPU kernel fold into 8-lane vectors on an x86-64 CPU with AVX2,
and nothing else changes: loads, other dtypes and other renderers keep tinygrad's widths, a tinygrad whose coalescer
lacks the replaced line keeps its own, and the numbers agree with NumPy's float64 ones. Negative control: with
tinygrad's own coalescer the same kind of product stores 4 lanes, which the width check catches.
"""
from __future__ import annotations

import numpy as np
import pytest
import tinygrad.codegen as codegen
import tinygrad.codegen.late.coalesce as coalesce
from tinygrad import Context, Device, Tensor, dtypes
from tinygrad.uop.ops import Ops, UOp

from tinyref.runtime import vectorwidth
from tinyref.runtime.devices import current_device
from tinyref.verify.tolerances import FLOAT32, compare

on_x86_cpu = pytest.mark.skipif(not vectorwidth.vector_registers() or Device[current_device()].renderer.target.device != "CPU",
                                reason="8-lane stores are for x86-64 CPUs with AVX2 and FMA only")


def stored_widths(monkeypatch, product, coalescer) -> tuple[np.ndarray, set[int]]:
    """Realize ``product()`` compiling here with ``coalescer`` as tinygrad's memory coalescing; returns the result
    and the vector widths of the float32 stores it made."""
    widths: set[int] = set()

    def recording(sink, ren):
        out = coalescer(sink, ren)
        widths.update(u.src[0].src[2].arg if u.src[0].op is Ops.SHRINK else 1 for u in out.toposort()
                      if u.op is Ops.STORE and u.src[0].src[0].dtype == dtypes.float)
        return out
    monkeypatch.setattr(codegen, "memory_coalescing", recording)
    with Context(PARALLEL=0, CCACHE=0):
        return product().numpy(), widths


@on_x86_cpu
@pytest.mark.parametrize("wide", [True, False])
def test_a_tiled_product_stores_8_lanes_with_the_wide_coalescer_and_agrees(monkeypatch, wide):
    """dy.T @ x gets the register tile; with tinyref's coalescer its stores are 8 lanes wide, with tinygrad's
    (the negative control, at a shape of its own so that nothing comes from tinygrad's program cache) 4."""
    assert vectorwidth.wide_coalescing() is not None, "tinygrad's coalescer no longer has the line the patch replaces"
    rows = 128 if wide else 160
    rng = np.random.default_rng(6)
    dy, x = rng.standard_normal((rows, 64)).astype(np.float32), rng.standard_normal((rows, 48)).astype(np.float32)
    out, widths = stored_widths(monkeypatch, lambda: Tensor(dy).T @ Tensor(x),
                                vectorwidth.wide_coalescing() if wide else coalesce.memory_coalescing)
    assert max(widths) == (8 if wide else 4), widths
    assert (m := compare("dy.T @ x", out, dy.T.astype(np.float64) @ x, FLOAT32)) is None, m


@on_x86_cpu
def test_only_float32_stores_on_an_x86_cpu_get_8_lanes():
    ren = Device[current_device()].renderer
    buf = {dt: UOp.param(0, dt, (64,), current_device()) for dt in (dtypes.float, dtypes.half)}
    assert vectorwidth.float32_widths(ren, Ops.STORE, buf[dtypes.float]) == [8, 4, 2]
    assert vectorwidth.float32_widths(ren, Ops.LOAD, buf[dtypes.float]) is None
    assert vectorwidth.float32_widths(ren, Ops.STORE, buf[dtypes.half]) is None
    assert vectorwidth.float32_widths(object(), Ops.STORE, buf[dtypes.float]) is None   # not a CPU renderer


def test_a_coalescer_without_the_replaced_line_is_left_alone(monkeypatch):
    monkeypatch.setattr(vectorwidth, "COALESCE_LINE", "lengths = [16,8,4,2]")
    assert vectorwidth.wide_coalescing.__wrapped__() is None


def test_vector_registers_read_the_cpu_flags(tmp_path):
    cases = {"fpu sse2 avx avx2 fma": 16, "fpu avx avx2 fma avx512f": 32, "fpu sse2 avx": 0}
    for i, (flags, registers) in enumerate(cases.items()):
        (info := tmp_path / f"cpuinfo{i}").write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert vectorwidth.vector_registers.__wrapped__(str(info)) == registers, flags
    assert vectorwidth.vector_registers.__wrapped__(str(tmp_path / "missing")) == 0
