"""The KV cache: decoding one position at a time from cached keys and values gives the same logits as
recomputing the whole window, for any prompt length and any number of new tokens, past the context too.

Both sides are checked against the same brute force, ``oracle.recomputed_logits`` (a full
``gpt_forward`` of the window ending at each token): the oracle's own incremental decoder in float64
for any Hypothesis config, and tinyref's jitted KVCache (and, as a control, its RecomputeDecoder) in
float32 on the fixed shapes of tests/helpers.py, so their kernels compile once. LLAMA covers rotary
positions (a new token's q and k turned by its position) and a cache of fewer key/value heads.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import oracle
from tests.helpers import LLAMA, TIED, UNTIED, as_namespace, float32_exact, load_params, model_with, tinygrad_examples
from tests.strategies import configs, seeds
from tinyref.generation.kvcache import KVCache, RecomputeDecoder
from tinyref.verify.tolerances import FLOAT32, FLOAT64, assert_close, compare

# Under pytest-xdist, this file's and test_generate.py's tests run on one worker, so the TIED and
# UNTIED kernels compile once for both.
pytestmark = pytest.mark.xdist_group("generation")


@st.composite
def token_runs(draw, cfg, max_windows: int = 3):
    """(prompt_length, tokens): a prompt of 1..context_length tokens and 0..2*context_length more, so
    the window slides; the logits after token prompt_length-1 onwards are what decoding produces."""
    T = cfg.context_length
    prompt_length = draw(st.integers(1, T))
    n = prompt_length + draw(st.integers(0, (max_windows - 1) * T))
    return prompt_length, draw(st.lists(st.integers(0, cfg.vocab_size - 1), min_size=n, max_size=n))


# --- the oracle: any config -----------------------------------------------------------------------

# --8<-- [start:oracle_property]
@given(data=st.data(), cfg=configs(), seed=seeds)
def test_oracle_incremental_decoding_equals_full_forward(data, cfg, seed):
    _, tokens = data.draw(token_runs(cfg))
    params = oracle.init_params(cfg, np.random.default_rng(seed))
    assert_close("incremental logits", oracle.incremental_logits(tokens, params, cfg),
                 oracle.recomputed_logits(tokens, params, cfg), FLOAT64)
# --8<-- [end:oracle_property]


def key_in_wrong_slot(token, params, cfg, cache):
    """Planted bug: the new key lands one slot early (it swaps places with its predecessor's)."""
    logits, cache = oracle.decode_step(token, params, cfg, cache)
    for layer in cache:
        if layer["k"].shape[1] >= 2:
            layer["k"][:, [-2, -1]] = layer["k"][:, [-1, -2]]
    return logits, cache


def test_oracle_check_catches_a_key_in_the_wrong_slot():
    cfg = as_namespace(TIED)
    params = oracle.init_params(cfg, np.random.default_rng(0))
    tokens = list(np.random.default_rng(1).integers(0, cfg.vocab_size, 2 * cfg.context_length))
    expected = oracle.recomputed_logits(tokens, params, cfg)
    assert compare("logits", oracle.incremental_logits(tokens, params, cfg), expected, FLOAT64) is None
    assert compare("logits", oracle.incremental_logits(tokens, params, cfg, step=key_in_wrong_slot), expected, FLOAT64)


# --- tinyref: the fixed shapes ------------------------------------------------------------------

@pytest.fixture(scope="module", params=[TIED, UNTIED, LLAMA], ids=["tied", "untied", "llama"])
def decoders(request):
    """One model per config with both decoders over it; examples load new weights into the same
    buffers, so the jitted functions compile once and then replay."""
    cfg = request.param
    model = model_with(cfg, oracle.init_params(as_namespace(cfg), np.random.default_rng(0)))
    return cfg, model, KVCache(model), RecomputeDecoder(model)


def decoded_logits(decoder, tokens: list[int], prompt_length: int, extend=None) -> np.ndarray:
    """(N - prompt_length + 1, V): prefill the prompt, then extend by one token at a time."""
    extend = extend or decoder.extend
    out = [decoder.prefill(tokens[:prompt_length]).numpy()]
    out += [extend(t).numpy() for t in tokens[prompt_length:]]
    return np.stack(out).astype(np.float64)


def reload(model, cfg, seed: int) -> dict:
    params = float32_exact(oracle.init_params(as_namespace(cfg), np.random.default_rng(seed)))
    load_params(model, params)
    return params


# --8<-- [start:tinyref_property]
@tinygrad_examples
@given(data=st.data(), seed=seeds)
def test_cached_decoding_equals_recomputation(decoders, data, seed):
    cfg, model, cached, recompute = decoders
    params = reload(model, cfg, seed)
    prompt_length, tokens = data.draw(token_runs(cfg))
    expected = oracle.recomputed_logits(tokens, params, as_namespace(cfg))[prompt_length - 1:]
    assert_close("KV-cached logits", decoded_logits(cached, tokens, prompt_length), expected, FLOAT32)
    assert_close("recomputed logits", decoded_logits(recompute, tokens, prompt_length), expected, FLOAT32)
# --8<-- [end:tinyref_property]


def off_by_one_slot(decoder: KVCache, token: int):
    """Planted bug for ``decoder.extend``: the new token is stored in (and embedded at) slot pos - 1, the
    classic off-by-one. It drives the decoder's own jitted step, so nothing new is compiled."""
    pos = len(decoder.window)
    if pos == decoder.model.config.context_length:
        return decoder.extend(token)
    decoder.window.append(int(token))
    return decoder._step(decoder.tok.bind(int(token)), decoder.pos.bind(pos - 1))


def test_cache_check_catches_an_off_by_one_slot(decoders):
    cfg, model, cached, _ = decoders
    params = reload(model, cfg, 3)
    tokens = list(np.random.default_rng(4).integers(0, cfg.vocab_size, cfg.context_length))
    expected = oracle.recomputed_logits(tokens, params, as_namespace(cfg))[1:]
    planted = decoded_logits(cached, tokens, 2, extend=lambda t: off_by_one_slot(cached, t))
    assert compare("logits", planted, expected, FLOAT32) is not None
    assert compare("logits", decoded_logits(cached, tokens, 2), expected, FLOAT32) is None


class TurnedOneFurther:
    """Planted bug for a rotary attention: q and k of a cached step turn by pos + 1, one position too far.
    The prefill (positions None) turns correctly, so only the step is wrong: an offset shared by every
    position would cancel, as rotary scores depend only on the distance between positions."""

    def __init__(self, rope):
        self.rope = rope

    def __call__(self, x, positions=None):
        return self.rope(x, positions if positions is None else positions + 1)


def test_cache_check_catches_a_step_turned_one_position_too_far(monkeypatch):
    model = model_with(LLAMA, oracle.init_params(as_namespace(LLAMA), np.random.default_rng(0)))
    params = reload(model, LLAMA, 8)
    tokens = list(np.random.default_rng(9).integers(0, LLAMA.vocab_size, 2 * LLAMA.context_length))
    expected = oracle.recomputed_logits(tokens, params, as_namespace(LLAMA))[1:]
    assert compare("logits", decoded_logits(KVCache(model), tokens, 2), expected, FLOAT32) is None
    for block in model.h:
        monkeypatch.setattr(block.attn, "rope", TurnedOneFurther(block.attn.rope))
    assert compare("logits", decoded_logits(KVCache(model), tokens, 2), expected, FLOAT32) is not None


def test_a_reused_decoder_follows_the_prompt_length(decoders):
    """Regression: the jitted prefill picked the last position with x[:, Variable], which replays at the
    position it was captured with; each prompt length must give that prompt's own last logits."""
    cfg, model, cached, recompute = decoders
    params = reload(model, cfg, 5)
    tokens = list(np.random.default_rng(6).integers(0, cfg.vocab_size, cfg.context_length))
    full = oracle.gpt_forward(np.array([tokens]), params, as_namespace(cfg))[0][0]     # (T, V)
    for decoder in (cached, recompute):
        got = np.stack([decoder.prefill(tokens[:n]).numpy() for n in range(1, len(tokens) + 1)])
        assert_close(f"{type(decoder).__name__} prefill logits", got, full, FLOAT32)
