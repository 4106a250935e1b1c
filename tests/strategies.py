"""Hypothesis strategies for the suite: tinyref.testing's public ones, with configs as plain namespaces.

The oracle takes any object with the config's attributes; drawing ``types.SimpleNamespace`` configs
proves it needs nothing from ``tinyref.GPTConfig``. They draw nanoGPT's variants too (exact-erf GELU,
no biases) and the Llama family's (rotary positions, RMSNorm, SiLU, gated MLPs, grouped-query attention), and a
config object without those attributes must read as GPT-2, so ``configs`` sometimes leaves them out when they
hold GPT-2's values. Everything shrinks towards one head, one layer
and tiny sizes, so a failure reads as a config you can debug by hand.
"""
from __future__ import annotations

import types

from hypothesis import strategies as st

import oracle

from tinyref.testing.strategies import config_fields, seeds, token_batches

__all__ = ["config_and_tokens", "configs", "seeds"]


@st.composite
def configs(draw, **kwargs) -> types.SimpleNamespace:
    """Small valid model configs as namespaces (keyword arguments as for ``config_fields``)."""
    fields = draw(config_fields(**kwargs))
    gpt2 = {"activation": "gelu_tanh", "bias": True, **oracle.LLAMA_FIELDS, "n_kv_heads": fields["n_heads"]}
    if all(fields[k] == v for k, v in gpt2.items()) and draw(st.booleans()):
        for k in gpt2:                                # a config written before the variants existed
            del fields[k]
    return types.SimpleNamespace(**fields)


@st.composite
def config_and_tokens(draw, **config_kwargs):
    """(cfg, idx, seed): a namespace config, a (B, T) token batch for it, and a seed for its weights."""
    cfg = draw(configs(**config_kwargs))
    return cfg, draw(token_batches(cfg)), draw(seeds)
