"""Causal self-attention and softmax, with grouped-query attention: oracle vs finite differences; tinyref vs
oracle; attention properties."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from tinygrad import Tensor
from tinygrad.nn.state import get_state_dict

import oracle
from helpers import tinygrad_examples, assert_no_mismatch, component_mismatches, float32_exact, load_params, oracle_component_fd
from strategies import seeds
from tinyref import GPTConfig, MultiHeadSelfAttention, RotaryPositionalEmbedding
from tinyref.verify.tolerances import FLOAT64_REARRANGED, PROBABILITY_SUM


def attention_params(rng, C, scale=0.5):
    return {"c_attn.weight": rng.standard_normal((3 * C, C)) * scale, "c_attn.bias": rng.standard_normal(3 * C) * scale,
            "c_proj.weight": rng.standard_normal((C, C)) * scale, "c_proj.bias": rng.standard_normal(C) * scale}


@given(rows=st.integers(1, 3), n=st.integers(1, 6), seed=seeds)
def test_oracle_softmax_backward_matches_finite_differences(rows, n, seed):
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal((1, rows, n)) * 3, rng.standard_normal((1, rows, n))
    assert_no_mismatch(oracle_component_fd(oracle.softmax_forward, oracle.softmax_backward, x, {}, dout))


def test_oracle_in_place_softmax_matches_and_attention_backward_keeps_its_cache():
    """Attention writes its softmax over the scores and its gradient over dA; neither may touch
    what a caller still holds: the inputs, or the cache a second backward reads."""
    rng = np.random.default_rng(0)
    x, dout = rng.standard_normal((2, 3, 5)) * 3, rng.standard_normal((2, 3, 5))
    x_before, dout_before = x.copy(), dout.copy()
    y, cache = oracle.softmax_forward(x)
    dx, _ = oracle.softmax_backward(dout, cache)
    assert np.array_equal(x, x_before) and np.array_equal(dout, dout_before), "softmax changed its input without out="
    y_over_x, _ = oracle.softmax_forward(x, out=x)
    dx_over_dout, _ = oracle.softmax_backward(dout, cache, out=dout)
    assert y_over_x is x and dx_over_dout is dout
    np.testing.assert_array_equal(y_over_x, y)
    np.testing.assert_array_equal(dx_over_dout, dx)

    B, T, H, hd = 2, 4, 2, 3
    C = H * hd
    a, da = rng.standard_normal((B, T, C)), rng.standard_normal((B, T, C))
    a_before, da_before = a.copy(), da.copy()
    _, acache = oracle.attention_forward(a, attention_params(rng, C), H)
    first, first_grads = oracle.attention_backward(da, acache)
    second, second_grads = oracle.attention_backward(da, acache)
    assert np.array_equal(a, a_before) and np.array_equal(da, da_before), "attention changed its input"
    np.testing.assert_array_equal(second, first)
    for key in first_grads:
        np.testing.assert_array_equal(second_grads[key], first_grads[key], err_msg=key)


# --8<-- [start:test_fd]
@given(B=st.integers(1, 2), T=st.integers(1, 4), H=st.integers(1, 3), hd=st.integers(1, 3), seed=seeds)
def test_oracle_attention_backward_matches_finite_differences(B, T, H, hd, seed):
    rng = np.random.default_rng(seed)
    C = H * hd
    x, dout = rng.standard_normal((B, T, C)), rng.standard_normal((B, T, C))
    assert_no_mismatch(oracle_component_fd(oracle.attention_forward, oracle.attention_backward,
                                           x, attention_params(rng, C), dout, H))
# --8<-- [end:test_fd]


# --8<-- [start:test_agreement]
@tinygrad_examples
@given(seed=seeds)
def test_tinyref_attention_matches_oracle(seed):
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal((2, 8, 16)), rng.standard_normal((2, 8, 16))
    assert_no_mismatch(component_mismatches(MultiHeadSelfAttention(16, 4), oracle.attention_forward,
                                            oracle.attention_backward, attention_params(rng, 16), x, dout, 4))
# --8<-- [end:test_agreement]


ATTENTION = MultiHeadSelfAttention(16, 4)   # one module, reloaded per example: no re-initialisation


def tinyref_attention_probs(params, x, n_heads=4):
    attn = ATTENTION
    assert (x.shape[-1], n_heads) == (16, attn.n_heads)
    load_params(attn, params)
    att, _ = attn.attention_weights(Tensor(x.astype(np.float32)))
    return att.numpy().astype(np.float64)


def oracle_attention_probs(params, x, n_heads=4):
    return oracle.attention_forward(x, params, n_heads)[1]["att"]


# --8<-- [start:test_rows]
@tinygrad_examples
@given(seed=seeds, scale=st.sampled_from([0.1, 1.0, 10.0]))
def test_attention_rows_are_distributions_with_exact_zeros_above_the_diagonal(seed, scale):
    rng = np.random.default_rng(seed)
    params, x = attention_params(rng, 16, scale), rng.standard_normal((2, 8, 16))
    future = np.triu(np.ones((8, 8), dtype=bool), 1)
    for name, att in (("tinyref", tinyref_attention_probs(params, x)), ("oracle", oracle_attention_probs(params, x))):
        assert (att[..., future] == 0.0).all(), f"{name}: attention above the diagonal is not exactly zero"
        assert (att >= 0).all(), f"{name}: negative attention weight {att.min()}"
        worst = np.abs(att.sum(-1) - 1).max()
        assert worst < PROBABILITY_SUM, f"{name}: a row sums to 1 +- {worst}"
# --8<-- [end:test_rows]


@tinygrad_examples
@given(seed=seeds, head=st.integers(0, 3))
def test_heads_are_independent(seed, head):
    """Changing head h's q, k, v weights changes head h's attention and no other head's."""
    rng = np.random.default_rng(seed)
    params, x = float32_exact(attention_params(rng, 16)), float32_exact(rng.standard_normal((2, 8, 16)))
    changed = {k: v.copy() for k, v in params.items()}
    hd = 4
    for part in range(3):                                   # the q, k and v blocks of c_attn
        rows = slice(part * 16 + head * hd, part * 16 + (head + 1) * hd)
        changed["c_attn.weight"][rows] += float32_exact(rng.standard_normal((hd, 16)))
    others = [h for h in range(4) if h != head]
    for name, probs in (("tinyref", tinyref_attention_probs), ("oracle", oracle_attention_probs)):
        before, after = probs(params, x), probs(changed, x)
        np.testing.assert_array_equal(before[:, others], after[:, others], err_msg=f"{name}: other heads changed")
        assert np.abs(before[:, head] - after[:, head]).max() > 1e-3, f"{name}: head {head} did not change"


def test_attention_has_no_parameters_besides_its_projections():
    """The causal mask is built in forward, so it never appears in the state dict."""
    assert sorted(get_state_dict(MultiHeadSelfAttention(16, 4))) == ["c_attn.bias", "c_attn.weight",
                                                                     "c_proj.bias", "c_proj.weight"]


def gqa_params(rng, C, H, KV, scale=0.5, bias=False):
    """c_attn for n_heads query heads and n_kv_heads key/value heads: ((H + 2 KV) hd, C) rows [q | k | v]."""
    rows = (H + 2 * KV) * (C // H)
    params = {"c_attn.weight": rng.standard_normal((rows, C)) * scale, "c_proj.weight": rng.standard_normal((C, C)) * scale}
    if bias:
        params.update({"c_attn.bias": rng.standard_normal(rows) * scale, "c_proj.bias": rng.standard_normal(C) * scale})
    return params


# --8<-- [start:test_gqa]
@given(B=st.integers(1, 2), T=st.integers(1, 4), KV=st.integers(1, 2), group=st.integers(1, 3), half_hd=st.integers(1, 2),
       rope=st.sampled_from([None, (10000.0, "half"), (2.0, "interleaved")]), bias=st.booleans(), seed=seeds)
def test_oracle_gqa_backward_matches_finite_differences(B, T, KV, group, half_hd, rope, bias, seed):
    """dk and dv summed over each kv head's query group, through the rotation of q and k."""
    rng = np.random.default_rng(seed)
    H, hd = KV * group, 2 * half_hd
    C = H * hd
    x, dout = rng.standard_normal((B, T, C)), rng.standard_normal((B, T, C))
    assert_no_mismatch(oracle_component_fd(oracle.attention_forward, oracle.attention_backward,
                                           x, gqa_params(rng, C, H, KV, bias=bias), dout, H, KV, rope))


def repeated_kv_heads(params, C, H, KV):
    """The same attention as plain multi-head attention: the k and v rows of each kv head repeated once per
    query head of its group (query head h reads kv head h // (H // KV))."""
    hd = C // H
    q, k, v = np.split(params["c_attn.weight"], [H * hd, (H + KV) * hd])
    repeat = lambda w: np.repeat(w.reshape(KV, hd, C), H // KV, axis=0).reshape(H * hd, C)   # noqa: E731
    return {**params, "c_attn.weight": np.concatenate([q, repeat(k), repeat(v)])}


@given(B=st.integers(1, 2), T=st.integers(1, 5), KV=st.integers(1, 2), group=st.integers(1, 3),
       rope=st.sampled_from([None, (10000.0, "half")]), seed=seeds)
def test_gqa_is_multi_head_attention_whose_kv_heads_repeat_over_their_group(B, T, KV, group, rope, seed):
    rng = np.random.default_rng(seed)
    H, hd = KV * group, 4
    C = H * hd
    x, params = rng.standard_normal((B, T, C)), gqa_params(rng, C, H, KV)
    grouped, _ = oracle.attention_forward(x, params, H, KV, rope)
    plain, _ = oracle.attention_forward(x, repeated_kv_heads(params, C, H, KV), H, None, rope)
    np.testing.assert_allclose(grouped, plain, rtol=FLOAT64_REARRANGED, atol=FLOAT64_REARRANGED)


@tinygrad_examples
@given(seed=seeds)
def test_tinyref_gqa_matches_oracle(seed):
    """LLAMA's attention: 4 query heads on 2 kv heads, rotary q and k, no biases."""
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal((2, 8, 16)), rng.standard_normal((2, 8, 16))
    module = MultiHeadSelfAttention(16, 4, bias=False, n_kv_heads=2, rope=RotaryPositionalEmbedding(4, 10000.0, "half"))
    assert_no_mismatch(component_mismatches(module, oracle.attention_forward, oracle.attention_backward,
                                            gqa_params(rng, 16, 4, 2), x, dout, 4, 2, (10000.0, "half")))
# --8<-- [end:test_gqa]


def test_with_as_many_kv_heads_as_heads_gqa_is_plain_multi_head_attention():
    """n_kv_heads = n_heads: the same weights, the same keys, the same outputs as leaving it unset."""
    rng = np.random.default_rng(0)
    x, params = rng.standard_normal((2, 5, 12)), attention_params(rng, 12)
    assert oracle.param_shapes(GPTConfig(d_model=12, n_heads=3, n_kv_heads=3))["h.0.attn.c_attn.weight"] == (36, 12)
    np.testing.assert_array_equal(oracle.attention_forward(x, params, 3, 3)[0], oracle.attention_forward(x, params, 3)[0])
    assert sorted(get_state_dict(MultiHeadSelfAttention(12, 3, n_kv_heads=3))) == \
        sorted(get_state_dict(MultiHeadSelfAttention(12, 3)))
