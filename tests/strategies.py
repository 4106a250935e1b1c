"""Hypothesis strategies: model configs and inputs that shrink to small, readable cases."""
from __future__ import annotations

import types

import numpy as np
from hypothesis import strategies as st


@st.composite
def configs(draw, max_layers: int = 2, max_vocab: int = 13, max_context: int = 8, tie=None):
    """A small model config as a SimpleNamespace; shrinks towards 1 head, 1 layer, tiny sizes."""
    n_heads = draw(st.integers(1, 3))
    # d_model >= 2: LayerNorm over a single feature returns its bias whatever the input, so a
    # 1-wide model ignores its tokens and no property about them can hold.
    head_dim = draw(st.integers(2 if n_heads == 1 else 1, 4))
    d_model = n_heads * head_dim
    return types.SimpleNamespace(
        vocab_size=draw(st.integers(2, max_vocab)),
        context_length=draw(st.integers(1, max_context)),
        d_model=d_model,
        n_heads=n_heads,
        n_layers=draw(st.integers(1, max_layers)),
        d_ff=draw(st.integers(1, 3 * d_model)),
        layer_norm_eps=draw(st.sampled_from([1e-5, 1e-3])),
        tie_embeddings=draw(st.booleans()) if tie is None else tie,
    )


seeds = st.integers(0, 2**32 - 1)


@st.composite
def config_and_tokens(draw, **config_kwargs):
    """(cfg, idx, seed): idx is a (B, T) token array with T <= context_length."""
    cfg = draw(configs(**config_kwargs))
    B = draw(st.integers(1, 3))
    T = draw(st.integers(1, cfg.context_length))
    idx = np.array(draw(st.lists(st.integers(0, cfg.vocab_size - 1), min_size=B * T, max_size=B * T))).reshape(B, T)
    return cfg, idx, draw(seeds)
