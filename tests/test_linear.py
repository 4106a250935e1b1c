"""The linear layer y = x W^T + b: oracle vs finite differences; tinyref's (computed from a transposed copy of W, and
without one for a few rows) vs the oracle, with negative controls that drop or double x's gradient and a count of
the work that shows the zero carrying x's gradient is never computed; its output gradient
(tinyref.linear.stored_gradient) or its input (stored_padded) stored in padded rows at a power-of-two width (the
case the padding is for) and an odd one; a negative control where the padded rows are read at the wrong offset."""
import numpy as np
import pytest
from tinygrad import GlobalCounters, Tensor

import oracle
from helpers import assert_no_mismatch, component_mismatches, oracle_component_fd
from tinyref.linear import ROW_PAD, STREAM_FROM, Linear, stored_gradient, stored_padded


class LinearStored(Linear):
    """nn.Linear whose output's gradient is stored by ``store`` (tinyref's stored_gradient, or a planted variant)."""

    def __init__(self, n_in, n_out, bias=True, store=stored_gradient):
        super().__init__(n_in, n_out, bias=bias)
        self.store = store

    def __call__(self, x):
        return self.store(super().__call__(x))


class LinearPaddedInput(Linear):
    """nn.Linear reading its input through tinyref's stored_padded (as c_proj reads the MLP's hidden layer)."""

    def __call__(self, x):
        return super().__call__(stored_padded(x))


def linear_params(rng, n_in, n_out, bias=True):
    params = {"weight": rng.standard_normal((n_out, n_in)) * 0.5}
    return {**params, "bias": rng.standard_normal(n_out)} if bias else params


@pytest.mark.parametrize("bias", [True, False])
def test_oracle_linear_backward_matches_finite_differences(bias):
    rng = np.random.default_rng(0)
    x, dout = rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 3, 4))
    assert_no_mismatch(oracle_component_fd(oracle.linear_forward, oracle.linear_backward, x,
                                           linear_params(rng, 5, 4, bias), dout))


@pytest.mark.parametrize("rows, bias", [((2, STREAM_FROM // 2), True), ((2, STREAM_FROM // 2), False), ((1, 3), True)])
def test_tinyref_linear_matches_oracle(rows, bias):
    """Output, dx, dW and db, from W^T copied (STREAM_FROM rows) and from W itself (3 rows)."""
    rng = np.random.default_rng(3)
    x, dout = rng.standard_normal((*rows, 24)), rng.standard_normal((*rows, 40))
    assert_no_mismatch(component_mismatches(Linear(24, 40, bias), oracle.linear_forward, oracle.linear_backward,
                                            linear_params(rng, 24, 40, bias), x, dout))


def zero_with_gradient_of_x(x, w):
    through_x = x @ w.detach().T
    return through_x - through_x.detach()


class LinearPlanted(Linear):
    """A linear layer computing x W^T as ``planted(x, W)``, plus the bias."""

    def __init__(self, n_in, n_out, planted):
        super().__init__(n_in, n_out)
        self.planted = planted

    def __call__(self, x):
        return self.planted(x, self.weight) + self.bias


@pytest.mark.parametrize("planted, what", [
    (lambda x, w: x.detach() @ w.T.contiguous(), "the term carrying x's gradient dropped"),
    (lambda x, w: x @ w.T.contiguous() + zero_with_gradient_of_x(x, w), "x's gradient taken through the copy too"),
])
def test_the_agreement_check_catches_a_wrong_gradient_for_x(planted, what):
    """Negative control: the value is right, x's gradient is not."""
    rng = np.random.default_rng(3)
    x, dout = rng.standard_normal((2, STREAM_FROM // 2, 24)), rng.standard_normal((2, STREAM_FROM // 2, 40))
    found = component_mismatches(LinearPlanted(24, 40, planted), oracle.linear_forward, oracle.linear_backward,
                                 linear_params(rng, 24, 40), x, dout)
    assert {m.name for m in found} == {"dx"}, (what, found)


class LinearPlain(Linear):
    """x W^T + b as tinygrad's nn.Linear computes it."""

    def __call__(self, x):
        return x @ self.weight.T + self.bias


def kernels_run(layer, n_in=64, n_out=96) -> int:
    """How many kernels compute the layer's output, dx and dW for STREAM_FROM rows of x."""
    Tensor.realize(layer.weight, layer.bias)
    x = Tensor(np.random.default_rng(0).standard_normal((STREAM_FROM, n_in)).astype(np.float32)).realize()
    x.requires_grad = layer.weight.requires_grad = True
    y = layer(x)
    y.sum().backward()
    GlobalCounters.reset()
    Tensor.realize(y, x.grad, layer.weight.grad)
    return GlobalCounters.kernel_count


def test_the_zero_carrying_x_gradient_is_never_computed():
    """tinygrad's nn.Linear's kernels and one more, the copy of W^T: z in z - z.detach() is never computed. Control:
    the same zero with z stored first, which tinygrad cannot fold away, adds its product."""
    plain = kernels_run(LinearPlain(64, 96))
    assert kernels_run(Linear(64, 96)) == plain + 1
    stored = LinearPlanted(64, 96, lambda x, w: x.detach() @ w.T.contiguous() + (x @ w.detach().T).contiguous()
                           - (x @ w.detach().T).detach())
    assert kernels_run(stored) >= plain + 2


@pytest.mark.parametrize("n_in, n_out, bias", [(32, 512, True), (24, 40, False)])
def test_tinyref_linear_with_its_gradient_stored_matches_oracle(n_in, n_out, bias):
    """Output, dx, dW and db: the padded rows change where the gradient is kept, not its values."""
    rng = np.random.default_rng(1)
    x, dout = rng.standard_normal((2, 8, n_in)), rng.standard_normal((2, 8, n_out))
    assert_no_mismatch(component_mismatches(LinearStored(n_in, n_out, bias), oracle.linear_forward,
                                            oracle.linear_backward, linear_params(rng, n_in, n_out, bias), x, dout))


@pytest.mark.parametrize("n_in, n_out", [(512, 32), (40, 24)])
def test_tinyref_linear_reading_a_padded_input_matches_oracle(n_in, n_out):
    """Output, dx, dW and db with the input stored in padded rows: the same values."""
    rng = np.random.default_rng(2)
    x, dout = rng.standard_normal((2, 8, n_in)), rng.standard_normal((2, 8, n_out))
    assert_no_mismatch(component_mismatches(LinearPaddedInput(n_in, n_out), oracle.linear_forward,
                                            oracle.linear_backward, linear_params(rng, n_in, n_out), x, dout))


def test_the_agreement_check_catches_padding_read_at_the_wrong_offset():
    """Negative control: rows padded on the right but read from column ROW_PAD on (the padding read, the first
    columns lost) fail the same comparison."""
    def misread(y):
        n = y.shape[-1]
        return y.pad(((0, 0),) * (y.ndim - 1) + ((0, ROW_PAD),)).contiguous_backward()[..., ROW_PAD:ROW_PAD + n]
    rng = np.random.default_rng(1)
    x, dout = rng.standard_normal((2, 8, 32)), rng.standard_normal((2, 8, 512))
    found = component_mismatches(LinearStored(32, 512, store=misread), oracle.linear_forward, oracle.linear_backward,
                                 linear_params(rng, 32, 512), x, dout)
    assert {m.name for m in found} >= {"out", "dx", "dweight"}, found
