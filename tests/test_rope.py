"""Rotary position embeddings: the oracle's backward against finite differences, tinyref against the oracle,
and the properties that make RoPE what it is (relative positions, rotations keep norms, the two pairing
styles are one permutation apart)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import oracle
from helpers import (LLAMA, assert_no_mismatch, component_mismatches, oracle_component_fd, random_inputs,
                     tinygrad_examples)
from strategies import seeds
from tinyref import RotaryPositionalEmbedding
from tinyref.verify.tolerances import FLOAT64_REARRANGED, ROPE_RELATIVE

STYLES = ("half", "interleaved")
thetas = st.sampled_from([10000.0, 100.0, 2.0])   # 2.0: every pair turns fast, so no angle is negligible


def style_permutation(hd: int) -> np.ndarray:
    """Indices that lay an interleaved vector out as a half-style one: pair j's (2j, 2j + 1) -> (j, j + hd/2)."""
    return np.concatenate([np.arange(0, hd, 2), np.arange(1, hd, 2)])


# --8<-- [start:test_fd]
@given(B=st.integers(1, 2), H=st.integers(1, 3), T=st.integers(1, 5), half_hd=st.integers(1, 3),
       theta=thetas, style=st.sampled_from(STYLES), seed=seeds)
def test_oracle_rope_backward_matches_finite_differences(B, H, T, half_hd, theta, style, seed):
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal((2, B, H, T, 2 * half_hd))
    assert_no_mismatch(oracle_component_fd(oracle.rope_forward, oracle.rope_backward, x, {}, dout, theta, style))
# --8<-- [end:test_fd]


# --8<-- [start:test_agreement]
@pytest.mark.parametrize("style", STYLES)
@tinygrad_examples
@given(seed=seeds)
def test_tinyref_rope_matches_oracle(style, seed):
    """LLAMA's shapes: (B, H, T, hd) = (2, 4, 8, 4); theta 2 turns every pair by up to 7 radians."""
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal((2, 2, 4, 8, 4))
    assert_no_mismatch(component_mismatches(RotaryPositionalEmbedding(4, 2.0, style), oracle.rope_forward,
                                            oracle.rope_backward, {}, x, dout, 2.0, style))
# --8<-- [end:test_agreement]


# --8<-- [start:test_relative_position]
@given(p=st.integers(0, 50), s=st.integers(0, 50), shift=st.integers(1, 1000), half_hd=st.integers(1, 4),
       theta=thetas, style=st.sampled_from(STYLES), seed=seeds)
def test_a_score_depends_only_on_the_distance_between_positions(p, s, shift, half_hd, theta, style, seed):
    """q turned to position p and k to position s score as q at p + shift and k at s + shift."""
    q, k = np.random.default_rng(seed).standard_normal((2, 1, 2 * half_hd))   # (T=1, hd) each

    def score(pq, pk):
        return (oracle.rope_forward(q, None, theta, style, positions=[pq])[0] @
                oracle.rope_forward(k, None, theta, style, positions=[pk])[0].T).item()
    scale = np.linalg.norm(q) * np.linalg.norm(k)
    assert abs(score(p + shift, s + shift) - score(p, s)) <= ROPE_RELATIVE * scale, (p, s, shift)


@given(T=st.integers(1, 40), half_hd=st.integers(1, 4), theta=thetas, style=st.sampled_from(STYLES), seed=seeds)
def test_the_rotation_keeps_every_vector_norm(T, half_hd, theta, style, seed):
    x = np.random.default_rng(seed).standard_normal((2, T, 2 * half_hd))
    out, _ = oracle.rope_forward(x, None, theta, style)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.linalg.norm(x, axis=-1), rtol=FLOAT64_REARRANGED)
    assert np.abs(out - x).max() > 0 or T == 1      # and it does turn them (past position 0)
# --8<-- [end:test_relative_position]


def test_position_zero_is_the_identity_and_the_first_pair_turns_by_its_position():
    """Independent of the formula's code: at position 1 with theta^(-0) = 1, pair 0 turns by exactly 1 radian."""
    x = np.array([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])                      # (T=2, hd=4), pair 0 = (1, 0)
    half, _ = oracle.rope_forward(x, None, 10000.0, "half")                          # pair 0: dims (0, 2)
    inter, _ = oracle.rope_forward(x, None, 10000.0, "interleaved")                  # pair 0: dims (0, 1)
    np.testing.assert_array_equal(half[0], x[0])
    np.testing.assert_allclose(half[1], [np.cos(1), 0, np.sin(1), 0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(inter[1], [np.cos(1), np.sin(1), 0, 0], rtol=0, atol=1e-15)


# --8<-- [start:test_styles]
@given(T=st.integers(1, 8), half_hd=st.integers(1, 4), theta=thetas, seed=seeds)
def test_the_two_styles_agree_after_the_pair_permutation(T, half_hd, theta, seed):
    """rope_half(x laid out half-style) is rope_interleaved(x) laid out the same way."""
    x = np.random.default_rng(seed).standard_normal((2, 3, T, 2 * half_hd))
    perm = style_permutation(2 * half_hd)
    half, _ = oracle.rope_forward(x[..., perm], None, theta, "half")
    inter, _ = oracle.rope_forward(x, None, theta, "interleaved")
    np.testing.assert_array_equal(half, inter[..., perm])     # the same products, element for element


def interleaved_to_half_rows(params: dict, cfg) -> dict:
    """A Meta-style (interleaved) model's weights as a Hugging Face-style (half) model's: the q and k rows of
    every head permuted by the pair permutation, as HF's Llama conversion script does."""
    hd, H, KV = cfg.d_model // cfg.n_heads, cfg.n_heads, cfg.n_kv_heads
    perm = style_permutation(hd)
    rows = np.concatenate([h * hd + perm for h in range(H + KV)] + [np.arange((H + KV) * hd, (H + 2 * KV) * hd)])
    return {k: v[rows] if k.endswith("attn.c_attn.weight") else v for k, v in params.items()}


@given(seed=seeds)
def test_an_interleaved_model_is_a_half_model_with_permuted_q_and_k_rows(seed):
    rng = np.random.default_rng(seed)
    inter = oracle.init_params(LLAMA, rng)
    idx, _ = random_inputs(rng, LLAMA, 2, 8)
    half_cfg = LLAMA
    inter_cfg = type(LLAMA)(**{**LLAMA.to_dict(), "rope_style": "interleaved"})
    expected, _ = oracle.gpt_forward(idx, inter, inter_cfg)
    got, _ = oracle.gpt_forward(idx, interleaved_to_half_rows(inter, inter_cfg), half_cfg)
    np.testing.assert_allclose(got, expected, rtol=FLOAT64_REARRANGED, atol=FLOAT64_REARRANGED)
# --8<-- [end:test_styles]
