"""GELU and the feed-forward network: oracle vs finite differences; tinyref vs oracle."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import oracle
from helpers import tinygrad_examples, assert_no_mismatch, component_mismatches, oracle_component_fd
from strategies import seeds
from tinyref import PositionWiseFeedForward


class Gelu:
    def __call__(self, x):
        return x.gelu()


def ffn_params(rng, C, F, scale=0.7):
    return {"c_fc.weight": rng.standard_normal((F, C)) * scale, "c_fc.bias": rng.standard_normal(F) * scale,
            "c_proj.weight": rng.standard_normal((C, F)) * scale, "c_proj.bias": rng.standard_normal(C) * scale}


@given(n=st.integers(1, 20), seed=seeds)
def test_oracle_gelu_backward_matches_finite_differences(n, seed):
    rng = np.random.default_rng(seed)
    x, dout = rng.uniform(-5, 5, (1, 1, n)), rng.standard_normal((1, 1, n))
    assert_no_mismatch(oracle_component_fd(oracle.gelu_forward, oracle.gelu_backward, x, {}, dout))


# --8<-- [start:test_gelu_formula]
def test_oracle_gelu_matches_the_tanh_formula():
    """Known values of 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), computed with math.tanh."""
    import math
    for x in (-3.0, -1.0, 0.0, 0.5, 2.0):
        want = 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
        assert abs(float(oracle.gelu_forward(np.array(x))[0]) - want) < 1e-15
# --8<-- [end:test_gelu_formula]


def test_tinyref_gelu_matches_oracle():
    """Dense grid over [-4, 4]: where tanh-GELU and erf-GELU differ most (4.7e-4 at x = -2.7)."""
    x = np.linspace(-4, 4, 2 * 8 * 16).reshape(2, 8, 16)
    dout = np.random.default_rng(0).standard_normal(x.shape)
    assert_no_mismatch(component_mismatches(Gelu(), oracle.gelu_forward, oracle.gelu_backward, {}, x, dout))


# --8<-- [start:test_fd]
@given(B=st.integers(1, 2), T=st.integers(1, 3), C=st.integers(1, 4), F=st.integers(1, 6), seed=seeds)
def test_oracle_feedforward_backward_matches_finite_differences(B, T, C, F, seed):
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal((B, T, C)), rng.standard_normal((B, T, C))
    assert_no_mismatch(oracle_component_fd(oracle.feedforward_forward, oracle.feedforward_backward,
                                           x, ffn_params(rng, C, F), dout))
# --8<-- [end:test_fd]


# --8<-- [start:test_agreement]
@tinygrad_examples
@given(seed=seeds)
def test_tinyref_feedforward_matches_oracle(seed):
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal((2, 8, 16)), rng.standard_normal((2, 8, 16))
    assert_no_mismatch(component_mismatches(PositionWiseFeedForward(16, 24), oracle.feedforward_forward,
                                            oracle.feedforward_backward, ffn_params(rng, 16, 24, 0.3), x, dout))
# --8<-- [end:test_agreement]
