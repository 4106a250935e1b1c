"""Token + positional embeddings: the oracle's gradients against finite differences; tinyref against the oracle."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import oracle
from helpers import tinygrad_examples, assert_no_mismatch, component_mismatches, finite_difference_mismatches
from strategies import seeds
from tinyref import LearnedPositionalEmbeddings, TokenEmbedding


class Embeddings:
    """The model's two embedding tables under their state-dict names, as one module for the check."""

    def __init__(self, vocab_size, context_length, d_model):
        self.wte = TokenEmbedding(vocab_size, d_model)
        self.wpe = LearnedPositionalEmbeddings(context_length, d_model)

    def __call__(self, idx):
        return self.wpe(self.wte(idx))


def embedding_case(rng, V, ctx, C, B, T):
    params = {"wte.weight": rng.standard_normal((V, C)), "wpe.weight": rng.standard_normal((ctx, C))}
    return rng.integers(0, V, (B, T)), params, rng.standard_normal((B, T, C))


# --8<-- [start:test_fd]
@given(V=st.integers(1, 5), ctx=st.integers(1, 4), C=st.integers(1, 4), B=st.integers(1, 3), data=st.data())
def test_oracle_embedding_backward_matches_finite_differences(V, ctx, C, B, data):
    T = data.draw(st.integers(1, ctx), label="T")
    idx, params, dout = embedding_case(np.random.default_rng(data.draw(seeds, label="seed")), V, ctx, C, B, T)
    _, cache = oracle.embedding_forward(idx, params)
    dx, dp = oracle.embedding_backward(dout, cache)
    assert dx is None
    f = lambda: float((oracle.embedding_forward(idx, params)[0] * dout).sum())  # noqa: E731
    assert_no_mismatch(finite_difference_mismatches(f, params, dp))
# --8<-- [end:test_fd]


# --8<-- [start:test_repeated]
def test_oracle_embedding_repeated_token_and_unused_positions():
    """A token used twice collects both gradients; positions past T get exactly zero."""
    params = {"wte.weight": np.zeros((3, 2)), "wpe.weight": np.zeros((4, 2))}
    _, cache = oracle.embedding_forward(np.array([[1, 1]]), params)
    _, dp = oracle.embedding_backward(np.array([[[1.0, 2.0], [10.0, 20.0]]]), cache)
    np.testing.assert_array_equal(dp["wte.weight"], [[0, 0], [11, 22], [0, 0]])
    np.testing.assert_array_equal(dp["wpe.weight"], [[1, 2], [10, 20], [0, 0], [0, 0]])
# --8<-- [end:test_repeated]


# --8<-- [start:test_agreement]
@tinygrad_examples
@given(seed=seeds, T=st.sampled_from([8, 5]))
def test_tinyref_embeddings_match_oracle(seed, T):
    idx, params, dout = embedding_case(np.random.default_rng(seed), 11, 8, 16, 2, T)
    assert_no_mismatch(component_mismatches(Embeddings(11, 8, 16), oracle.embedding_forward, oracle.embedding_backward,
                                            params, idx, dout, x_is_tokens=True))
# --8<-- [end:test_agreement]
