"""LayerNorm and RMSNorm: the oracle's backward against finite differences; tinyref against the oracle."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from tinygrad.nn.state import get_state_dict

import oracle
from helpers import tinygrad_examples, assert_no_mismatch, component_mismatches, oracle_component_fd
from strategies import seeds
from tinyref import LayerNorm, RMSNorm
from tinyref.verify.tolerances import RMSNORM_RESCALED

# Row scales: 1e-2 gives variance 1e-4, where eps=1e-5 changes the result by ~5%; a wrong eps
# is invisible on unit-variance rows, so the checks must see small ones. Each row's mean stays on
# the scale of its spread: float32 LayerNorm loses |mean|/std digits to cancellation in x - mean,
# an input property, not an implementation error.
ROW_SCALES = [1e-2, 1.0, 10.0]


def layernorm_case(rng, shape, eps=1e-5, bias=True):
    C = shape[-1]
    rows = shape[:-1] + (1,)
    x = (rng.standard_normal(shape) + rng.standard_normal(rows)) * rng.choice(ROW_SCALES, size=rows)
    params = {"weight": 1.0 + 0.5 * rng.standard_normal(C), "bias": 0.5 * rng.standard_normal(C)}
    if not bias:
        del params["bias"]
    return x, params, rng.standard_normal(shape)


# --8<-- [start:test_fd]
@given(B=st.integers(1, 3), T=st.integers(1, 3), C=st.integers(2, 6), eps=st.sampled_from([1e-5, 1e-3]),
       bias=st.booleans(), seed=seeds)
def test_oracle_layernorm_backward_matches_finite_differences(B, T, C, eps, bias, seed):
    x, params, dout = layernorm_case(np.random.default_rng(seed), (B, T, C), bias=bias)
    assert_no_mismatch(oracle_component_fd(oracle.layernorm_forward, oracle.layernorm_backward, x, params, dout, eps))
# --8<-- [end:test_fd]


# --8<-- [start:test_agreement]
@tinygrad_examples
@given(seed=seeds)
def test_tinyref_layernorm_matches_oracle(seed):
    x, params, dout = layernorm_case(np.random.default_rng(seed), (2, 8, 16))
    assert_no_mismatch(component_mismatches(LayerNorm(16, eps=1e-5), oracle.layernorm_forward,
                                            oracle.layernorm_backward, params, x, dout, 1e-5))
# --8<-- [end:test_agreement]


def test_layernorm_normalises_rows():
    """Independent of both implementations: with unit gain and zero bias, rows get mean 0 and variance 1."""
    x = np.random.default_rng(0).standard_normal((3, 4, 8)) * 5 + 2
    out, _ = oracle.layernorm_forward(x, {"weight": np.ones(8), "bias": np.zeros(8)}, eps=0.0)
    np.testing.assert_allclose(out.mean(-1), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(-1), 1, atol=1e-12)


@tinygrad_examples
@given(seed=seeds)
def test_tinyref_bias_free_layernorm_matches_oracle(seed):
    """bias=False (nanoGPT): no bias tensor at all, and weight-only LayerNorm agrees with the oracle's."""
    from tinygrad.nn.state import get_state_dict
    module = LayerNorm(16, eps=1e-5, bias=False)
    assert list(get_state_dict(module)) == ["weight"]
    x, params, dout = layernorm_case(np.random.default_rng(seed), (2, 8, 16), bias=False)
    assert_no_mismatch(component_mismatches(module, oracle.layernorm_forward, oracle.layernorm_backward,
                                            params, x, dout, 1e-5))


# --8<-- [start:test_rmsnorm]
@given(B=st.integers(1, 3), T=st.integers(1, 3), C=st.integers(1, 6), eps=st.sampled_from([1e-5, 1e-3]), seed=seeds)
def test_oracle_rmsnorm_backward_matches_finite_differences(B, T, C, eps, seed):
    x, params, dout = layernorm_case(np.random.default_rng(seed), (B, T, C), bias=False)
    assert_no_mismatch(oracle_component_fd(oracle.rmsnorm_forward, oracle.rmsnorm_backward, x, params, dout, eps))


@tinygrad_examples
@given(seed=seeds)
def test_tinyref_rmsnorm_matches_oracle(seed):
    x, params, dout = layernorm_case(np.random.default_rng(seed), (2, 8, 16), bias=False)
    assert_no_mismatch(component_mismatches(RMSNorm(16, eps=1e-5), oracle.rmsnorm_forward,
                                            oracle.rmsnorm_backward, params, x, dout, 1e-5))


@given(C=st.integers(1, 8), c=st.floats(1e-3, 1e3), eps=st.sampled_from([1e-5, 1e-3]), seed=seeds)
def test_rmsnorm_is_invariant_to_a_positive_rescaling_up_to_eps(C, c, eps, seed):
    """rmsnorm(c x) with eps is rmsnorm(x) with eps / c^2: exactly the same function of x, so only eps moves."""
    x, params, _ = layernorm_case(np.random.default_rng(seed), (2, 3, C), bias=False)
    scaled, _ = oracle.rmsnorm_forward(c * x, params, eps)
    same, _ = oracle.rmsnorm_forward(x, params, eps / c ** 2)
    np.testing.assert_allclose(scaled, same, rtol=RMSNORM_RESCALED, atol=RMSNORM_RESCALED * np.abs(same).max())
# --8<-- [end:test_rmsnorm]


def test_rmsnorm_gives_rows_a_unit_root_mean_square_without_centring_them():
    """Independent of both implementations: unit gain and eps 0 leave every row with mean square exactly 1
    (up to rounding) and keep its mean's sign (no centring)."""
    x = np.random.default_rng(0).standard_normal((3, 4, 8)) * 5 + 2
    out, _ = oracle.rmsnorm_forward(x, {"weight": np.ones(8)}, eps=0.0)
    np.testing.assert_allclose((out * out).mean(-1), 1, atol=1e-12)
    assert (np.sign(out.mean(-1)) == np.sign(x.mean(-1))).all()
    assert sorted(get_state_dict(RMSNorm(8))) == ["weight"]
