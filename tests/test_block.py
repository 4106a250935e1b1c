"""The pre-norm decoder block: oracle vs finite differences; tinyref vs oracle."""
import functools

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import oracle
from helpers import tinygrad_examples, LLAMA, TIED, assert_no_mismatch, component_mismatches, oracle_component_fd
from strategies import configs, seeds
from tinyref import TransformerDecoderBlock


def block_params(rng, cfg):
    return oracle.sub_params(oracle.init_params(cfg, rng), "h.0.")


# --8<-- [start:test_fd]
@given(cfg=configs(max_layers=1), B=st.integers(1, 2), data=st.data())
def test_oracle_block_backward_matches_finite_differences(cfg, B, data):
    rng = np.random.default_rng(data.draw(seeds, label="seed"))
    T = data.draw(st.integers(1, min(cfg.context_length, 4)), label="T")
    x, dout = rng.standard_normal((B, T, cfg.d_model)), rng.standard_normal((B, T, cfg.d_model))
    forward = functools.partial(oracle.block_forward, n_heads=cfg.n_heads, eps=cfg.layer_norm_eps,
                                **oracle.block_options(cfg))
    assert_no_mismatch(oracle_component_fd(forward, oracle.block_backward, x, block_params(rng, cfg), dout))
# --8<-- [end:test_fd]


# --8<-- [start:test_agreement]
@tinygrad_examples
@given(seed=seeds)
def test_tinyref_block_matches_oracle(seed):
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal((2, 8, 16)), rng.standard_normal((2, 8, 16))
    assert_no_mismatch(component_mismatches(TransformerDecoderBlock(TIED), oracle.block_forward, oracle.block_backward,
                                            block_params(rng, TIED), x, dout, TIED.n_heads, TIED.layer_norm_eps))
# --8<-- [end:test_agreement]


@tinygrad_examples
@given(seed=seeds)
def test_tinyref_llama_block_matches_oracle(seed):
    """RMSNorm before rotary grouped-query attention and a SwiGLU MLP, no biases."""
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal((2, 8, 16)), rng.standard_normal((2, 8, 16))
    forward = functools.partial(oracle.block_forward, n_heads=LLAMA.n_heads, eps=LLAMA.layer_norm_eps,
                                **oracle.block_options(LLAMA))
    assert_no_mismatch(component_mismatches(TransformerDecoderBlock(LLAMA), forward, oracle.block_backward,
                                            block_params(rng, LLAMA), x, dout))
