"""Hypothesis strategies for testing your own GPT against tinyref: configs and token batches.

They shrink towards the smallest readable case (one head, one layer, tiny sizes), so a failing
property reports a config you can debug by hand. Needs ``hypothesis`` (``pip install tinyref[testing]``).
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..config import ACTIVATIONS, NORMS, POSITIONS, ROPE_STYLES, GPTConfig

seeds = st.integers(0, 2**32 - 1)
GELUS = ("gelu_tanh", "gelu")   # the GPT-2 family's activations


# --8<-- [start:config_fields]
@st.composite
def config_fields(draw, max_layers: int = 2, max_vocab: int = 13, max_context: int = 8, tie=None, activation=None,
                  bias=None, llama=None) -> dict:
    """The fields of a small valid GPTConfig, as a dict (build a GPTConfig, a namespace, your own config).
    ``tie``, ``activation``, ``bias``: None draws them (GPT-2, nanoGPT's and the Llama family's variants,
    shrinking towards GPT-2); a value fixes them, e.g. ``activation="gelu_tanh", bias=True`` for a GPT-2-only
    model. ``llama``: None draws the Llama-family fields (positions, rope_theta, rope_style, norm, gated_mlp,
    n_kv_heads) each on its own, True draws a Llama (rope, rmsnorm, gated), False the GPT-2 family only (GPT-2's
    fields and a GELU: GPT-2 and nanoGPT)."""
    n_heads = draw(st.integers(1, 3))
    fixed = {} if llama is None else ({"positions": "learned", "norm": "layernorm", "gated_mlp": False} if not llama
                                      else {"positions": "rope", "norm": "rmsnorm", "gated_mlp": True})
    positions = fixed.get("positions") or draw(st.sampled_from(POSITIONS))
    # d_model >= 3: LayerNorm over one feature returns its bias whatever the input; over two it
    # returns bias +- weight up to eps, so its gradient nearly vanishes and a float32 model loses
    # most digits of every gradient to cancellation (a correct model would fail the check).
    # Rotary positions turn pairs of dimensions, so their heads are 2 or 4 wide.
    head_dims = st.integers(-(-3 // n_heads), 4)
    head_dim = draw(head_dims.filter(lambda hd: hd % 2 == 0) if positions == "rope" else head_dims)
    d_model = n_heads * head_dim
    return dict(
        vocab_size=draw(st.integers(2, max_vocab)),
        context_length=draw(st.integers(1, max_context)),
        d_model=d_model,
        n_heads=n_heads,
        n_layers=draw(st.integers(1, max_layers)),
        d_ff=draw(st.integers(1, 3 * d_model)),
        layer_norm_eps=draw(st.sampled_from([1e-5, 1e-3])),
        tie_embeddings=draw(st.booleans()) if tie is None else tie,
        activation=draw(st.sampled_from(ACTIVATIONS if llama is not False else GELUS)) if activation is None else activation,
        bias=draw(st.sampled_from([True, False])) if bias is None else bias,
        positions=positions,
        rope_theta=draw(st.sampled_from([10000.0, 2.0])),   # 2.0: every pair turns fast, no angle negligible
        rope_style=draw(st.sampled_from(ROPE_STYLES)),
        norm=fixed.get("norm") or draw(st.sampled_from(NORMS)),
        gated_mlp=fixed["gated_mlp"] if "gated_mlp" in fixed else draw(st.booleans()),
        # the divisors of n_heads, largest first: shrinking ends at one kv head per query head
        n_kv_heads=n_heads if llama is False else draw(st.sampled_from([k for k in range(n_heads, 0, -1) if n_heads % k == 0])),
    )
# --8<-- [end:config_fields]


def configs(**kwargs) -> st.SearchStrategy[GPTConfig]:
    """Small valid ``GPTConfig``s (keyword arguments as for ``config_fields``)."""
    return config_fields(**kwargs).map(lambda fields: GPTConfig(**fields))


@st.composite
def token_batches(draw, cfg, max_batch: int = 3) -> np.ndarray:
    """A (B, T) int64 array of token ids for ``cfg``, 1 <= B <= max_batch, 1 <= T <= context_length."""
    B = draw(st.integers(1, max_batch))
    T = draw(st.integers(1, cfg.context_length))
    ids = draw(st.lists(st.integers(0, cfg.vocab_size - 1), min_size=B * T, max_size=B * T))
    return np.array(ids, dtype=np.int64).reshape(B, T)


@st.composite
def config_and_tokens(draw, **config_kwargs):
    """(cfg, idx, seed): a GPTConfig, a token batch for it, and a seed for its weights."""
    cfg = draw(configs(**config_kwargs))
    return cfg, draw(token_batches(cfg)), draw(seeds)
