"""tinyref.runtime.kernelopts: the register tile goes to the matmuls whose operand streams rows (the
backward's two products of a linear layer, and all three of tinyref's in training, tinyref.linear), a block of
dot products to a forward product whose reduce fits the rule, 16 columns at a time to a sum down columns, 8-lane
vectors to a float32 elementwise kernel and every thread to one tinygrad leaves on one, tinygrad's own choice to every
other kernel,
and the numbers do not change: each result agrees with NumPy's float64 one.

Kernels are compiled in this process (PARALLEL=0), at shapes no other test uses, so the choice of
opts is made here and can be recorded. Negative controls: a tile tinygrad refuses must fall back to
tinygrad's choice (and still compute the product), and the comparison must catch a wrong element.
"""
from __future__ import annotations

from math import prod
from types import SimpleNamespace

import numpy as np
import pytest
from tinygrad import Context, Device, Tensor, nn
from tinygrad.codegen.opt import OptOps

from tinyref.linear import STREAM_FROM, linear
from tinyref.runtime import kernelopts
from tinyref.runtime.devices import current_device
from tinyref.verify.tolerances import FLOAT32, compare

pytestmark = pytest.mark.skipif(not kernelopts.vector_registers() or Device[current_device()].renderer.target.device != "CPU",
                                reason="the register tile is chosen for x86-64 CPUs with AVX2 and FMA only")

M, K, N = 96, 40, 48    # rows, inputs, outputs of a linear layer y = x @ w.T


def products(rng):
    """The three products of a linear layer and its backward, as (tinygrad product, float64 reference)."""
    x, w, dy = (rng.standard_normal(s).astype(np.float32) for s in ((M, K), (N, K), (M, N)))
    tx, tw, tdy = (Tensor(a) for a in (x, w, dy))
    x, w, dy = (a.astype(np.float64) for a in (x, w, dy))
    return {"forward y = x @ w.T": (lambda: tx @ tw.T, x @ w.T),            # both operands contiguous along K
            "input gradient dy @ w": (lambda: tdy @ tw, dy @ w),            # w streams rows along K
            "weight gradient dy.T @ x": (lambda: tdy.T @ tx, dy.T @ x)}     # x streams rows along K


def compiled_kernels(monkeypatch, make, rule=kernelopts.hand_coded_optimizations):
    """Realize ``make()`` compiling in this process with ``rule`` as the choice of opts; returns the result and
    every kernel as ``rule`` optimised it."""
    chosen = []

    def recording(k):
        chosen.append(opts := rule(k))
        return opts
    monkeypatch.setattr(kernelopts.heuristic, "hand_coded_optimizations", recording)
    with Context(PARALLEL=0, CCACHE=0):   # compiled here, now: not by a worker, not from the disk cache
        out = make().numpy()
    return out, chosen


def compiled_opts(monkeypatch, product, rule=kernelopts.hand_coded_optimizations):
    """Realize ``product()`` compiling in this process with ``rule`` as the choice of opts; returns the
    result and the opts chosen for its reduce kernel."""
    out, chosen = compiled_kernels(monkeypatch, product, rule)
    reduce_opts = [k.applied_opts for k in chosen if k.reduceop is not None]
    assert len(reduce_opts) == 1, f"expected one reduce kernel, compiled {len(reduce_opts)}"
    return out, reduce_opts[0]


def tiled(opts) -> bool:
    return any(o.op is OptOps.UPCAST and o.arg in (8, 16) for o in opts) and not any(o.op is OptOps.UNROLL for o in opts)


@pytest.mark.parametrize("name", ["forward y = x @ w.T", "input gradient dy @ w", "weight gradient dy.T @ x"])
def test_streaming_products_get_the_tile_and_agree(monkeypatch, name):
    product, expected = products(np.random.default_rng(0))[name]
    out, opts = compiled_opts(monkeypatch, product)
    assert tiled(opts) == (name != "forward y = x @ w.T"), f"{name}: opts {opts}"
    assert (m := compare(name, out, expected, FLOAT32)) is None, m


def test_every_product_of_tinyrefs_linear_layer_gets_the_tile_and_agrees(monkeypatch):
    """tinyref.linear.linear computes x @ w.T (STREAM_FROM rows of x) from a copy of w^T and x's gradient from w
    itself: its forward, input gradient and weight gradient each stream rows of an operand, and each gets the
    register tile."""
    rng = np.random.default_rng(4)
    x, w, dy = (rng.standard_normal(s).astype(np.float32) for s in ((STREAM_FROM, K), (N, K), (STREAM_FROM, N)))
    tx, tw = Tensor(x), Tensor(w)
    tx.requires_grad = tw.requires_grad = True

    def forward_and_backward():
        y = linear(tx, tw)
        (y * Tensor(dy)).sum().backward()
        Tensor.realize(y, tx.grad, tw.grad)
        return y
    y, chosen = compiled_kernels(monkeypatch, forward_and_backward)
    matmuls = [k.applied_opts for k in chosen if k.reduceop is not None]
    assert len(matmuls) == 3 and all(tiled(opts) for opts in matmuls), matmuls
    x, w, dy = (a.astype(np.float64) for a in (x, w, dy))
    for name, got, want in (("y", y, x @ w.T), ("dx", tx.grad.numpy(), dy @ w), ("dw", tw.grad.numpy(), dy.T @ x)):
        assert (m := compare(name, got, want, FLOAT32)) is None, m


def dot_block(opts, points: int) -> bool:
    """The opts of kernelopts.dot_block(points): its rows of A and of B upcast (B's as two upcasts when over 8), the
    reduce unrolled by 4."""
    rows_a, rows_b, _, _ = kernelopts.dot_block(points)
    upcasts = sorted(o.arg for o in opts if o.op is OptOps.UPCAST)
    return (upcasts == sorted([rows_a, *((4, rows_b // 4) if rows_b > 8 else (rows_b,))])
            and [o.arg for o in opts if o.op is OptOps.UNROLL] == [4])


def test_the_dot_block_follows_the_vector_registers_and_the_kernels_size():
    """16 registers (AVX2): 4 x 16 dot products for K from 64 to 256; 32 (AVX-512): 16 x 8 for K from 32 to 1024, in
    a kernel of at least BIG_DOT points (smaller ones get the 4 x 16 block, which compiles faster)."""
    assert kernelopts.DOT_BLOCKS[16] == (4, 16, 64, 256) and kernelopts.DOT_BLOCKS[32] == (16, 8, 32, 1024)
    assert kernelopts.dot_block(kernelopts.BIG_DOT) == kernelopts.DOT_BLOCKS[kernelopts.vector_registers()]
    assert kernelopts.dot_block(kernelopts.BIG_DOT - 1) == kernelopts.DOT_BLOCKS[16]


@pytest.mark.parametrize("rows, K, blocked", [(128, 128, True), (128, 16, False), (1024, 64, True)])
def test_a_forward_product_with_a_mid_length_reduce_gets_the_dot_block_and_agrees(monkeypatch, rows, K, blocked):
    """x @ w.T reads both operands along the reduce: with K in the block's range it gets the block of dot products
    that kernelopts.dot_block() sizes to the vector registers and the kernel (128 x 48 x 128 points: the 4 x 16
    block; 1024 x 64 x 64: the registers' block); with K = 16, shorter than any block's shortest, tinygrad's own
    choice."""
    rng = np.random.default_rng(4)
    N = 48 if rows == 128 else 64
    x, w = rng.standard_normal((rows, K)).astype(np.float32), rng.standard_normal((N, K)).astype(np.float32)
    out, opts = compiled_opts(monkeypatch, lambda: Tensor(x) @ Tensor(w).T)
    assert dot_block(opts, rows * N * K) == blocked, f"K={K}: opts {opts}"
    assert (m := compare(f"x @ w.T, K={K}", out, x.astype(np.float64) @ w.T.astype(np.float64), FLOAT32)) is None, m


def test_a_bias_gradient_sums_a_vector_of_columns_and_agrees(monkeypatch):
    """dy.sum(0) over 1024 positions of 96 outputs reads down the columns: it gets one upcast of 16 (whole
    cache lines a row) and no unroll; a sum along rows (the other axis) keeps tinygrad's choice."""
    dy = np.random.default_rng(5).standard_normal((1024, 96)).astype(np.float32)
    out, opts = compiled_opts(monkeypatch, lambda: Tensor(dy).sum(0))
    assert [(o.op, o.arg) for o in opts if o.op in (OptOps.UPCAST, OptOps.UNROLL)] == [(OptOps.UPCAST, 16)], opts
    assert (m := compare("column sum", out, dy.astype(np.float64).sum(0), FLOAT32)) is None, m
    out, opts = compiled_opts(monkeypatch, lambda: Tensor(dy).sum(1) * 2.0)
    assert (OptOps.UPCAST, 16) not in [(o.op, o.arg) for o in opts], opts
    assert (m := compare("row sum", out, 2.0 * dy.astype(np.float64).sum(1), FLOAT32)) is None, m


@pytest.mark.parametrize("tied", [False, True])
def test_an_embedding_gradient_sums_columns_for_4_rows_at_a_time_and_agrees(monkeypatch, tied):
    """The gradient of an embedding, sum over 96 positions of (idx == v) * dy for 32 ids x 48 columns, reads dy
    down its columns and the ids along the reduce: 16 columns and 4 ids (rows of the output) per load of dy; also
    with a term added after the sum that moves along the ids (as a tied head's stored gradient does)."""
    rng = np.random.default_rng(7)
    idx, dy = rng.integers(0, 32, (1, 96)).astype(np.int32), rng.standard_normal((1, 96, 48)).astype(np.float32)
    head = rng.standard_normal((32, 48)).astype(np.float32) if tied else np.zeros((32, 48), np.float32)

    def gradient():
        emb = nn.Embedding(32, 48)
        (emb(Tensor(idx)) * Tensor(dy)).sum().backward()
        return emb.weight.grad + Tensor(head) if tied else emb.weight.grad
    out, opts = compiled_opts(monkeypatch, gradient)
    upcasts = sorted((o.op, o.arg) for o in opts if o.op in (OptOps.UPCAST, OptOps.UNROLL))
    assert upcasts == [(OptOps.UPCAST, 4), (OptOps.UPCAST, 16)], opts
    expected = head.astype(np.float64)
    np.add.at(expected, idx.ravel(), dy[0].astype(np.float64))
    assert (m := compare("embedding gradient", out, expected, FLOAT32)) is None, m


def test_a_refused_tile_falls_back_to_tinygrads_choice(monkeypatch):
    """Planted bug: a tile that does not divide the axis. tinygrad refuses it; the product still comes out."""
    monkeypatch.setattr(kernelopts, "tile_axes", lambda k: (1, 7, 0, 5))
    product, expected = products(np.random.default_rng(1))["weight gradient dy.T @ x"]
    out, opts = compiled_opts(monkeypatch, lambda: product() + 1.0)   # a kernel not compiled by the test above
    assert not tiled(opts), opts
    assert compare("refused tile", out, expected + 1.0, FLOAT32) is None


def test_the_comparison_catches_one_wrong_element():
    _, expected = products(np.random.default_rng(2))["input gradient dy @ w"]
    wrong = expected.copy()
    wrong[3, 5] += 1e-2
    assert compare("planted", wrong, expected, FLOAT32) is not None


def test_tiles_fit_the_registers():
    for registers in (16, 32):
        for lanes in (4, 8, 16):
            for m, n in kernelopts.tiles(registers, lanes):
                assert n % lanes == 0 and m * n // lanes + n // lanes + 1 <= registers
    (m16, n16), (m32, n32) = kernelopts.tiles(16, 8)[0], kernelopts.tiles(32, 8)[0]
    assert m16 * n16 < m32 * n32


def test_tiles_are_sized_for_16_lanes_from_wide_tile_points(monkeypatch):
    """With 16-lane vectors (LLVM, AVX-512) a kernel of WIDE_TILE points or more gets a tile sized for them, a smaller
    one a tile sized for 8 lanes; with 8-lane vectors every tile is sized for 8."""
    ren = Device[current_device()].renderer
    big, small = (SimpleNamespace(full_shape=shape, ren=ren) for shape in ((256, 64, 64), (256, 64, 32)))
    assert prod(big.full_shape) == kernelopts.WIDE_TILE == 2 * prod(small.full_shape)
    for lanes, expected in ((16, (16, 8)), (8, (8, 8))):
        monkeypatch.setattr(kernelopts, "vector_width", lambda ren, lanes=lanes: lanes)
        assert (kernelopts.tile_lanes(big), kernelopts.tile_lanes(small)) == expected, lanes


def test_a_weight_gradient_walks_the_narrower_operand_in_its_inner_loop_and_agrees(monkeypatch):
    """dy.T @ x with x 8x wider than dy: the tile's inner loop is swapped onto dy's columns (so each column panel
    of x is read once per sweep of dy), and the product is unchanged."""
    rng = np.random.default_rng(6)
    dy, x = rng.standard_normal((128, 32)).astype(np.float32), rng.standard_normal((128, 256)).astype(np.float32)
    swapped = []
    swap = kernelopts.swap_loops
    monkeypatch.setattr(kernelopts, "swap_loops", lambda k, a, b: (swapped.append(k.full_shape[:]), swap(k, a, b)))
    out, opts = compiled_opts(monkeypatch, lambda: Tensor(dy).T @ Tensor(x))
    assert tiled(opts) and swapped == [[32, 256, 128]], (opts, swapped)
    assert (m := compare("dy.T @ x", out, dy.T.astype(np.float64) @ x.astype(np.float64), FLOAT32)) is None, m


def elementwise_opts(monkeypatch, make):
    """Realize ``make()`` (one elementwise kernel) compiling in this process; its result and upcasts."""
    out, chosen = compiled_kernels(monkeypatch, make)
    assert len(chosen) == 1, f"expected one kernel, compiled {len(chosen)}"
    return out, [(o.op, o.arg) for o in chosen[0].applied_opts if o.op is OptOps.UPCAST]


@pytest.mark.skipif(kernelopts.vector_width(Device[current_device()].renderer) < 8,
                    reason="8-lane float32 stores are not in use here")
def test_a_float32_elementwise_kernel_computes_in_8_lane_vectors_and_agrees(monkeypatch):
    """tinygrad upcasts an elementwise kernel by 4; a float32 one gets 8, the same math."""
    x = np.random.default_rng(5).standard_normal((256, 512)).astype(np.float32)
    out, upcasts = elementwise_opts(monkeypatch, lambda: (Tensor(x) * 1.5).sigmoid())
    assert upcasts == [(OptOps.UPCAST, 8)], upcasts
    expected = 1 / (1 + np.exp(-1.5 * x.astype(np.float64)))
    assert (m := compare("sigmoid(1.5 x)", out, expected, FLOAT32)) is None, m


def test_an_elementwise_kernel_tinygrad_leaves_on_one_thread_is_split_over_the_threads_and_agrees(monkeypatch):
    """768 x 256 elements (AdamW's first moment of a c_attn weight at L's size): below tinygrad's 128K operations a
    thread, so on one, while tinyref splits it over the CPU's threads, with the same math. Negative control: tinygrad's
    own choice, for a kernel of the same kind (a shape of its own, so that nothing comes from the cache), has no split."""
    if (threads := Device[current_device()].renderer.global_max[0]) < 2:
        pytest.skip(f"{threads} CPU thread here: nothing to split over")
    rng = np.random.default_rng(8)

    def moment(shape):
        m, g = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
        return (lambda: Tensor(m) * 0.9 + Tensor(g) * 0.1), 0.9 * m.astype(np.float64) + 0.1 * g

    def split(chosen):
        assert len(chosen) == 1, f"expected one kernel, compiled {len(chosen)}"
        return [o.arg for o in chosen[0].applied_opts if o.op is OptOps.THREAD]

    make, expected = moment((768, 256))
    out, chosen = compiled_kernels(monkeypatch, make)
    assert split(chosen) == [threads], chosen[0].applied_opts
    assert (m := compare("0.9 m + 0.1 g", out, expected, FLOAT32)) is None, m
    make, _ = moment((760, 256))
    assert split(compiled_kernels(monkeypatch, make, kernelopts.TINYGRAD_CHOICE)[1]) == []


def test_an_integer_elementwise_kernel_keeps_tinygrads_choice(monkeypatch):
    """Negative control: the widening is for float32 stores only; an int32 kernel keeps tinygrad's upcast of 4."""
    a = np.arange(256 * 512, dtype=np.int32).reshape(256, 512)
    out, upcasts = elementwise_opts(monkeypatch, lambda: Tensor(a) * 3 + 1)
    assert upcasts == [(OptOps.UPCAST, 4)], upcasts
    assert (out == a * 3 + 1).all()


def test_a_small_kernel_gets_no_opts_and_agrees(monkeypatch):
    """16 x 16 outputs over 16 inputs: 4096 points, far below SMALL_KERNEL, so compiled as written."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((16, 16)).astype(np.float32), rng.standard_normal((16, 16)).astype(np.float32)
    out, opts = compiled_opts(monkeypatch, lambda: Tensor(a) @ Tensor(b) * 3.0)
    assert opts == [], opts
    assert (m := compare("small product", out, 3.0 * (a.astype(np.float64) @ b), FLOAT32)) is None, m
    assert kernelopts.SMALL_KERNEL > 16 * 16 * 16 and M * N * K >= kernelopts.SMALL_KERNEL   # the other tests' shapes get opts
