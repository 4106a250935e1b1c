"""The linear layer y = x W^T + b, with its output gradient (tinyref.linear.stored_gradient) or its input
(stored_padded) stored in padded rows: oracle vs finite differences; tinyref vs oracle at a power-of-two width (the
case the padding is for) and an odd one; a negative control where the padded rows are read at the wrong offset."""
import numpy as np
import pytest
from tinygrad import nn

import oracle
from helpers import assert_no_mismatch, component_mismatches, oracle_component_fd
from tinyref.linear import ROW_PAD, stored_gradient, stored_padded


class LinearStored(nn.Linear):
    """nn.Linear whose output's gradient is stored by ``store`` (tinyref's stored_gradient, or a planted variant)."""

    def __init__(self, n_in, n_out, bias=True, store=stored_gradient):
        super().__init__(n_in, n_out, bias=bias)
        self.store = store

    def __call__(self, x):
        return self.store(super().__call__(x))


class LinearPaddedInput(nn.Linear):
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
