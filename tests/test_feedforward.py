"""GELU (tanh and exact erf), SiLU, and the feed-forward network, plain and gated: oracle vs finite differences;
tinyref vs oracle."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import oracle
from helpers import tinygrad_examples, assert_no_mismatch, component_mismatches, oracle_component_fd
from strategies import seeds
from tinyref import PositionWiseFeedForward
from tinyref.feedforward import ACTIVATIONS


class Gelu:
    """tinyref's activation ``activation`` (the function PositionWiseFeedForward calls), as a module."""

    def __init__(self, activation="gelu_tanh"):
        self.gelu = ACTIVATIONS[activation]

    def __call__(self, x):
        return self.gelu(x)


def ffn_params(rng, C, F, scale=0.7, bias=True):
    params = {"c_fc.weight": rng.standard_normal((F, C)) * scale, "c_fc.bias": rng.standard_normal(F) * scale,
              "c_proj.weight": rng.standard_normal((C, F)) * scale, "c_proj.bias": rng.standard_normal(C) * scale}
    return params if bias else {k: v for k, v in params.items() if not k.endswith(".bias")}


@given(n=st.integers(1, 20), activation=st.sampled_from(sorted(oracle.ACTIVATIONS)), seed=seeds)
def test_oracle_gelu_backward_matches_finite_differences(n, activation, seed):
    """Both GELUs: the tanh approximation and the exact erf one."""
    rng = np.random.default_rng(seed)
    x, dout = rng.uniform(-5, 5, (1, 1, n)), rng.standard_normal((1, 1, n))
    assert_no_mismatch(oracle_component_fd(*oracle.ACTIVATIONS[activation], x, {}, dout))


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


def test_tinyref_gelu_matches_oracle_far_out():
    """Far from 0 the sigmoid saturates (exp overflows in float32 below x = -11): values and gradients
    stay finite and agree with the oracle: value x and slope 1 on the right, 0 and 0 on the left."""
    x = np.array([-60.0, -30.0, -12.0, -11.0, -9.0, 7.0, 12.0, 60.0]).reshape(1, 1, 8)
    dout = np.ones_like(x)
    assert_no_mismatch(component_mismatches(Gelu(), oracle.gelu_forward, oracle.gelu_backward, {}, x, dout))


# --8<-- [start:test_gelu_erf_formula]
def test_oracle_exact_gelu_is_x_times_the_normal_cdf():
    """x Φ(x), Φ from math.erf, and its derivative Φ(x) + x φ(x) written out independently."""
    for x in (-3.0, -1.0, 0.0, 0.5, 2.0):
        cdf = 0.5 * (1 + math.erf(x / math.sqrt(2)))
        pdf = math.exp(-x * x / 2) / math.sqrt(2 * math.pi)
        out, cache = oracle.gelu_erf_forward(np.array(x))
        assert abs(float(out) - x * cdf) < 1e-15
        assert abs(float(oracle.gelu_erf_backward(np.array(1.0), cache)[0]) - (cdf + x * pdf)) < 1e-15
# --8<-- [end:test_gelu_erf_formula]


def test_tinyref_exact_gelu_matches_oracle():
    """The same grid for activation="gelu": tinygrad's erf is an approximation (|error| <= 1.5e-7, see
    tinyref/feedforward.py), far inside the float32 tolerances."""
    x = np.linspace(-4, 4, 2 * 8 * 16).reshape(2, 8, 16)
    dout = np.random.default_rng(0).standard_normal(x.shape)
    assert_no_mismatch(component_mismatches(Gelu("gelu"), oracle.gelu_erf_forward, oracle.gelu_erf_backward, {}, x, dout))


@pytest.mark.parametrize("activation", sorted(oracle.ACTIVATIONS))
def test_oracle_activation_pair_dispatches_on_the_config_value(activation):
    x = np.linspace(-3, 3, 7)
    forward, backward = oracle.ACTIVATIONS[activation]
    out, cache = oracle.activation_forward(x, None, activation)
    assert np.array_equal(out, forward(x)[0])
    assert np.array_equal(oracle.activation_backward(x, cache)[0], backward(x, forward(x)[1])[0])


# --8<-- [start:test_fd]
@given(B=st.integers(1, 2), T=st.integers(1, 3), C=st.integers(1, 4), F=st.integers(1, 6), seed=seeds)
def test_oracle_feedforward_backward_matches_finite_differences(B, T, C, F, seed):
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal((B, T, C)), rng.standard_normal((B, T, C))
    assert_no_mismatch(oracle_component_fd(oracle.feedforward_forward, oracle.feedforward_backward,
                                           x, ffn_params(rng, C, F), dout))
# --8<-- [end:test_fd]


@given(B=st.integers(1, 2), T=st.integers(1, 3), C=st.integers(1, 4), F=st.integers(1, 6),
       activation=st.sampled_from(sorted(oracle.ACTIVATIONS)), bias=st.booleans(), seed=seeds)
def test_oracle_feedforward_variants_match_finite_differences(B, T, C, F, activation, bias, seed):
    """Either GELU, with or without biases (then no bias gradients either)."""
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal((B, T, C)), rng.standard_normal((B, T, C))
    params = ffn_params(rng, C, F, bias=bias)
    assert set(oracle.feedforward_backward(dout, oracle.feedforward_forward(x, params, activation)[1])[1]) == set(params)
    assert_no_mismatch(oracle_component_fd(oracle.feedforward_forward, oracle.feedforward_backward,
                                           x, params, dout, activation))


# --8<-- [start:test_agreement]
@tinygrad_examples
@given(seed=seeds)
def test_tinyref_feedforward_matches_oracle(seed):
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal((2, 8, 16)), rng.standard_normal((2, 8, 16))
    assert_no_mismatch(component_mismatches(PositionWiseFeedForward(16, 24), oracle.feedforward_forward,
                                            oracle.feedforward_backward, ffn_params(rng, 16, 24, 0.3), x, dout))
# --8<-- [end:test_agreement]


@tinygrad_examples
@given(seed=seeds)
def test_tinyref_feedforward_nanogpt_variant_matches_oracle(seed):
    """activation="gelu", bias=False: the module has only the two weights, and they agree with the oracle."""
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal((2, 8, 16)), rng.standard_normal((2, 8, 16))
    module = PositionWiseFeedForward(16, 24, activation="gelu", bias=False)
    assert_no_mismatch(component_mismatches(module, oracle.feedforward_forward, oracle.feedforward_backward,
                                            ffn_params(rng, 16, 24, 0.3, bias=False), x, dout, "gelu"))


def gated_params(rng, C, F, scale=0.7, bias=False):
    """The gated MLP's weights: c_gate and c_fc (F, C), c_proj (C, F); biases only when ``bias``."""
    params = {**ffn_params(rng, C, F, scale, bias), "c_gate.weight": rng.standard_normal((F, C)) * scale}
    if bias:
        params["c_gate.bias"] = rng.standard_normal(F) * scale
    return params


# --8<-- [start:test_gated]
@given(B=st.integers(1, 2), T=st.integers(1, 3), C=st.integers(1, 4), F=st.integers(1, 6),
       activation=st.sampled_from(sorted(oracle.ACTIVATIONS)), bias=st.booleans(), seed=seeds)
def test_oracle_gated_feedforward_backward_matches_finite_differences(B, T, C, F, activation, bias, seed):
    """SwiGLU (silu), GeGLU (gelu_tanh) and the exact-GELU gate: the product rule through act(c_gate(x)) * c_fc(x)."""
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal((B, T, C)), rng.standard_normal((B, T, C))
    assert_no_mismatch(oracle_component_fd(oracle.feedforward_forward, oracle.feedforward_backward, x,
                                           gated_params(rng, C, F, bias=bias), dout, activation, True))


@pytest.mark.parametrize("activation", ["silu", "gelu_tanh"])
@tinygrad_examples
@given(seed=seeds)
def test_tinyref_gated_feedforward_matches_oracle(activation, seed):
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal((2, 8, 16)), rng.standard_normal((2, 8, 16))
    module = PositionWiseFeedForward(16, 24, activation, bias=False, gated=True)
    assert_no_mismatch(component_mismatches(module, oracle.feedforward_forward, oracle.feedforward_backward,
                                            gated_params(rng, 16, 24), x, dout, activation, True))
# --8<-- [end:test_gated]


def test_oracle_silu_is_x_times_the_logistic_function():
    """x / (1 + e^-x) and its derivative s + x s (1 - s) written out with math.exp."""
    for x in (-30.0, -3.0, -1.0, 0.0, 0.5, 2.0, 30.0):
        s = 1 / (1 + math.exp(-x))
        out, cache = oracle.silu_forward(np.array(x))
        assert abs(float(out) - x * s) < 1e-15
        assert abs(float(oracle.silu_backward(np.array(1.0), cache)[0]) - (s + x * s * (1 - s))) < 1e-15


def test_tinyref_silu_matches_oracle_far_out():
    x = np.concatenate([np.linspace(-6, 6, 120), [-60.0, -30.0, -12.0, 12.0, 30.0, 60.0]]).reshape(1, 1, -1)
    dout = np.random.default_rng(0).standard_normal(x.shape)
    assert_no_mismatch(component_mismatches(Gelu("silu"), oracle.silu_forward, oracle.silu_backward, {}, x, dout))


def test_the_gated_mlp_has_a_gate_weight_and_no_other_new_key():
    from tinygrad.nn.state import get_state_dict
    gated = get_state_dict(PositionWiseFeedForward(8, 12, "silu", bias=False, gated=True))
    assert {k: tuple(t.shape) for k, t in gated.items()} == \
        {"c_fc.weight": (12, 8), "c_gate.weight": (12, 8), "c_proj.weight": (8, 12)}
