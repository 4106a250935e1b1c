"""Properties every causal language model has, drawn by Hypothesis, on tinyref and on the oracle."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from tinygrad import Tensor, dtypes

import oracle
from helpers import (TIED, TIED_BT, as_namespace, assert_no_mismatch, batch_permutation_mismatches, causality_violation,
                     float32_exact, load_params, prefix_mismatches, tinygrad_examples)
from strategies import config_and_tokens, seeds
from tinyref import GPTStyleTransformer
from tinyref.verify.tolerances import FLOAT64_REARRANGED

MODEL = GPTStyleTransformer(TIED)   # one compiled forward for the tinyref side; weights reloaded per example


def tinyref_forward(params):
    load_params(MODEL, float32_exact(params))
    return lambda idx: MODEL(Tensor(np.ascontiguousarray(idx), dtype=dtypes.int32)).numpy().astype(np.float64)


def oracle_forward(params, cfg):
    return lambda idx: oracle.gpt_forward(idx, params, cfg)[0]


def tinyref_case(seed):
    rng = np.random.default_rng(seed)
    params = oracle.init_params(as_namespace(TIED), rng)
    return params, rng.integers(0, TIED.vocab_size, TIED_BT), rng


# --8<-- [start:test_causality]
@tinygrad_examples
@given(seed=seeds, j=st.integers(0, TIED_BT[1] - 1), shift=st.integers(1, TIED.vocab_size - 1))
def test_tinyref_is_causal(seed, j, shift):
    params, idx, _ = tinyref_case(seed)
    new_token = (int(idx[0, j]) + shift) % TIED.vocab_size   # differs from the old token in row 0
    assert causality_violation(tinyref_forward(params), idx, j, new_token) is None


@given(case=config_and_tokens(), data=st.data())
def test_oracle_is_causal(case, data):
    cfg, idx, seed = case
    j = data.draw(st.integers(0, idx.shape[1] - 1), label="j")
    new_token = (int(idx[0, j]) + data.draw(st.integers(1, max(1, cfg.vocab_size - 1)), label="shift")) % cfg.vocab_size
    params = oracle.init_params(cfg, np.random.default_rng(seed))
    assert causality_violation(oracle_forward(params, cfg), idx, j, new_token) is None
# --8<-- [end:test_causality]


@tinygrad_examples
@given(seed=seeds)
def test_tinyref_permuting_the_batch_permutes_the_output(seed):
    params, _, rng = tinyref_case(seed)
    idx = rng.integers(0, TIED.vocab_size, TIED_BT)
    idx[1] = idx[0][::-1]                      # two different rows
    assert_no_mismatch(batch_permutation_mismatches(tinyref_forward(params), idx, [1, 0]))


@given(case=config_and_tokens(), seed=seeds)
def test_oracle_permuting_the_batch_permutes_the_output(case, seed):
    cfg, idx, pseed = case
    perm = np.random.default_rng(seed).permutation(idx.shape[0])
    forward = oracle_forward(oracle.init_params(cfg, np.random.default_rng(pseed)), cfg)
    np.testing.assert_allclose(forward(idx[perm]), forward(idx)[perm], rtol=FLOAT64_REARRANGED, atol=FLOAT64_REARRANGED)


@tinygrad_examples
@given(seed=seeds)
def test_tinyref_prefix_logits_equal_the_full_sequence_logits(seed):
    """No padding needed: the logits of a 5-token prefix are the first 5 positions of the 8-token run."""
    params, idx, _ = tinyref_case(seed)
    assert_no_mismatch(prefix_mismatches(tinyref_forward(params), idx, 5))


@given(case=config_and_tokens(), data=st.data())
def test_oracle_prefix_logits_equal_the_full_sequence_logits(case, data):
    cfg, idx, seed = case
    t = data.draw(st.integers(1, idx.shape[1]), label="prefix")
    forward = oracle_forward(oracle.init_params(cfg, np.random.default_rng(seed)), cfg)
    np.testing.assert_allclose(forward(idx[:, :t]), forward(idx)[:, :t], rtol=FLOAT64_REARRANGED, atol=FLOAT64_REARRANGED)
