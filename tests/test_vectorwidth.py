"""tinyref.runtime.vectorwidth: float32 stores of a CPU kernel fold into vectors as wide as the registers on an x86-64
CPU with AVX2 (8 lanes; 16 for LLVM's kernels with AVX-512), and nothing else changes: loads, other dtypes and other
renderers keep tinygrad's widths, a tinygrad whose coalescer lacks the replaced line keeps its own, and the numbers
agree with NumPy's float64 ones. Negative controls: with tinygrad's own coalescer the same kind of product stores 4
lanes, which the width check catches; and a 16-lane store into a buffer only 32-byte aligned, as tinygrad's CPU
allocator promises, crashes the process without the alignment the stores now state.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tinygrad.codegen as codegen
import tinygrad.codegen.late.coalesce as coalesce
from tinygrad import Context, Device, Tensor, dtypes
from tinygrad.renderer.cstyle import ClangRenderer
from tinygrad.renderer.llvmir import CPULLVMRenderer
from tinygrad.uop.ops import Ops, UOp

from tinyref.runtime import kernelopts, vectorwidth
from tinyref.runtime.devices import current_device, probe_device
from tinyref.verify.tolerances import FLOAT32, compare

on_x86_cpu = pytest.mark.skipif(not vectorwidth.vector_registers() or Device[current_device()].renderer.target.device != "CPU",
                                reason="wide stores are for x86-64 CPUs with AVX2 and FMA only")


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
    # the tile sized for the register's lanes either way (vector_width reads 4 once the coalescer is not tinyref's)
    monkeypatch.setattr(kernelopts, "vector_width", vectorwidth.register_lanes)
    with Context(PARALLEL=0, CCACHE=0):
        return product().numpy(), widths


@on_x86_cpu
@pytest.mark.parametrize("wide", [True, False])
def test_a_tiled_product_stores_a_registers_lanes_with_the_wide_coalescer_and_agrees(monkeypatch, wide):
    """dy.T @ x gets the register tile; with tinyref's coalescer its stores are as wide as a register (8 or 16
    lanes), with tinygrad's (the negative control, at a shape of its own so that nothing comes from tinygrad's
    program cache) 4."""
    assert vectorwidth.wide_coalescing() is not None, "tinygrad's coalescer no longer has the line the patch replaces"
    rows = 128 if wide else 160
    rng = np.random.default_rng(6)
    dy, x = rng.standard_normal((rows, 64)).astype(np.float32), rng.standard_normal((rows, 48)).astype(np.float32)
    out, widths = stored_widths(monkeypatch, lambda: Tensor(dy).T @ Tensor(x),
                                vectorwidth.wide_coalescing() if wide else coalesce.memory_coalescing)
    assert max(widths) == (vectorwidth.register_lanes(Device[current_device()].renderer) if wide else 4), widths
    assert (m := compare("dy.T @ x", out, dy.T.astype(np.float64) @ x, FLOAT32)) is None, m


@pytest.mark.parametrize(("registers", "renderer", "lanes"), [
    (32, CPULLVMRenderer, 16), (32, ClangRenderer, 8), (16, CPULLVMRenderer, 8), (16, ClangRenderer, 8),
    (0, CPULLVMRenderer, 0), (32, object, 0)])
def test_only_float32_stores_get_a_registers_lanes(monkeypatch, registers, renderer, lanes):
    """By the CPU's registers (32 with AVX-512, 16 with AVX2, 0 on other CPUs) and the renderer (LLVM's, clang's,
    one that is not a CPU renderer): the store widths offered to the coalescer, none beyond a register's lanes."""
    monkeypatch.setattr(vectorwidth, "vector_registers", lambda: registers)
    ren = object.__new__(renderer)
    buf = {dt: UOp.param(0, dt, (64,), "CPU") for dt in (dtypes.float, dtypes.half)}
    assert vectorwidth.float32_widths(ren, Ops.STORE, buf[dtypes.float]) == ([w for w in (16, 8, 4, 2) if w <= lanes] or None)
    assert vectorwidth.float32_widths(ren, Ops.LOAD, buf[dtypes.float]) is None
    assert vectorwidth.float32_widths(ren, Ops.STORE, buf[dtypes.half]) is None


# Stores a register-tiled product (64 x 32 x 64: 16-lane stores) into a buffer 32 bytes past a 64-byte boundary.
STORE_INTO_32_BYTE_ALIGNED_BUFFER = """
import sys
import numpy as np
import tinygrad.renderer.llvmir as llvmir
from tinygrad import Device, Tensor, dtypes
from tinyref.runtime import kernelopts
from tinyref.runtime.devices import select_device
select_device("CPU:LLVM")
kernelopts.install()
if sys.argv[1] == "tinygrad's stores":
    llvmir.CPULLVMRenderer.string_rewrite = llvmir.base_rewrite
rng = np.random.default_rng(0)
a, b = rng.standard_normal((64, 32)).astype(np.float32), rng.standard_normal((32, 64)).astype(np.float32)
raw = np.zeros(64 * 64 + 32, np.float32)
start = (-raw.ctypes.data % 64) // 4 + 8
out = raw[start:start + 64 * 64]
assert out.ctypes.data % 64 == 32
Tensor.from_blob(out.ctypes.data, (64, 64), dtype=dtypes.float32, device=Device.DEFAULT).assign(Tensor(a) @ Tensor(b)).realize()
Device[Device.DEFAULT].synchronize()
print(np.abs(out.reshape(64, 64) - a.astype(np.float64) @ b).max())
"""


@pytest.mark.skipif(vectorwidth.vector_registers() != 32, reason="16-lane stores are for an x86-64 CPU with AVX-512")
@pytest.mark.parametrize("stores", ["tinyref's stores", "tinygrad's stores"])
def test_a_16_lane_store_into_a_32_byte_aligned_buffer(tmp_path, stores):
    """tinygrad's CPU allocator promises 32-byte alignment; LLVM takes a 16-lane store's own 64 bytes unless told.
    With the stores stating 32 the product lands and agrees; with tinygrad's (the negative control, compiled afresh
    in an empty cache) the aligned move faults."""
    if (reason := probe_device("CPU:LLVM")) is not None:
        pytest.skip(f"16-lane stores are for LLVM's kernels: {reason}")
    run = subprocess.run([sys.executable, "-c", STORE_INTO_32_BYTE_ALIGNED_BUFFER, stores], capture_output=True, text=True,
                         env={**os.environ, "XDG_CACHE_HOME": str(tmp_path), "PARALLEL": "0"}, timeout=300)
    if stores == "tinyref's stores":
        assert run.returncode == 0 and float(run.stdout) < 1e-4, run.stderr[-2000:]
    else:
        assert run.returncode == -signal.SIGSEGV, (run.returncode, run.stdout, run.stderr[-2000:])


def test_a_coalescer_without_the_replaced_line_is_left_alone(monkeypatch):
    monkeypatch.setattr(vectorwidth, "COALESCE_LINE", "lengths = [16,8,4,2]")
    assert vectorwidth.wide_coalescing.__wrapped__() is None


def test_vector_registers_read_the_cpu_flags(tmp_path):
    cases = {"fpu sse2 avx avx2 fma": 16, "fpu avx avx2 fma avx512f": 32, "fpu sse2 avx": 0}
    for i, (flags, registers) in enumerate(cases.items()):
        (info := tmp_path / f"cpuinfo{i}").write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert vectorwidth.vector_registers.__wrapped__(str(info)) == registers, flags
    assert vectorwidth.vector_registers.__wrapped__(str(tmp_path / "missing")) == 0
