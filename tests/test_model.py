"""The whole GPT: state-dict contract, oracle vs finite differences, tinyref vs oracle, AdamW steps."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tinygrad import Tensor, dtypes
from tinygrad.nn.state import get_state_dict

import oracle
from helpers import (LLAMA, NANOGPT, TIED, TIED_BT, UNTIED, UNTIED_BT, adamw_mismatches, as_namespace, assert_no_mismatch,
                     finite_difference_mismatches, model_mismatches, oracle_forward_backward, random_inputs,
                     step_loss_mismatches, tinygrad_examples, tinyref_adamw)
from strategies import configs, seeds
from tinyref import GPTConfig, GPTStyleTransformer
from tinyref.verify.tolerances import KEY_BIAS_GRADIENT_ZERO

MODELS = {"tied": (TIED, TIED_BT), "untied": (UNTIED, UNTIED_BT), "nanogpt": (NANOGPT, TIED_BT), "llama": (LLAMA, TIED_BT)}
_built = {}


def built(name):
    """One tinyref model per fixed config for the whole session (weights are reloaded per example)."""
    if name not in _built:
        _built[name] = GPTStyleTransformer(MODELS[name][0])
    return _built[name]


@pytest.mark.parametrize("tie", [True, False])
def test_state_dict_keys_and_shapes_are_the_contract(tie):
    cfg = GPTConfig(vocab_size=13, context_length=6, d_model=8, n_heads=2, n_layers=3, d_ff=20, tie_embeddings=tie)
    state = get_state_dict(GPTStyleTransformer(cfg))
    assert {k: tuple(t.shape) for k, t in state.items()} == oracle.param_shapes(cfg)
    assert ("lm_head.weight" in state) is (not tie)


@pytest.mark.parametrize("activation", ["gelu_tanh", "gelu"])
def test_bias_free_state_dict_has_no_bias_keys(activation):
    cfg = GPTConfig(vocab_size=13, context_length=6, d_model=8, n_heads=2, n_layers=2, d_ff=20, activation=activation,
                    bias=False)
    state = get_state_dict(GPTStyleTransformer(cfg))
    assert {k: tuple(t.shape) for k, t in state.items()} == oracle.param_shapes(cfg)
    assert not [k for k in state if k.endswith(".bias")]
    with_bias = oracle.param_shapes(GPTConfig(**{**cfg.to_dict(), "bias": True}))
    assert set(with_bias) - set(state) == {k for k in with_bias if k.endswith(".bias")}   # only the biases go


def test_oracle_reads_a_config_without_variant_attributes_as_gpt2():
    """A namespace without activation/bias computes exactly what GPTConfig's defaults (GPT-2) compute."""
    old = as_namespace(TIED)
    del old.activation, old.bias
    assert oracle.variant(old) == ("gelu_tanh", True)
    rng = np.random.default_rng(3)
    params = oracle.init_params(old, rng)
    assert set(params) == set(oracle.param_shapes(TIED))
    idx = rng.integers(0, TIED.vocab_size, TIED_BT)
    assert np.array_equal(oracle.gpt_forward(idx, params, old)[0], oracle.gpt_forward(idx, params, TIED)[0])
    exact_gelu = GPTConfig(**{**TIED.to_dict(), "activation": "gelu"})
    assert not np.array_equal(oracle.gpt_forward(idx, params, old)[0], oracle.gpt_forward(idx, params, exact_gelu)[0])


def test_parameter_count_is_the_sum_of_the_table():
    cfg = GPTConfig()
    C, F, V, L = 32, 128, 52, 2
    per_block = 2 * C + (3 * C * C + 3 * C) + (C * C + C) + 2 * C + (F * C + F) + (C * F + C)
    assert GPTStyleTransformer(cfg).num_parameters() == V * C + 16 * C + L * per_block + 2 * C


# --8<-- [start:test_fd]
@given(cfg=configs(), data=st.data())
def test_oracle_model_backward_matches_finite_differences(cfg, data):
    """Every parameter tensor (up to 6 random elements each) against central differences."""
    rng = np.random.default_rng(data.draw(seeds, label="seed"))
    B, T = data.draw(st.integers(1, 2), label="B"), data.draw(st.integers(1, cfg.context_length), label="T")
    params = oracle.init_params(cfg, rng)
    idx, targets = random_inputs(rng, cfg, B, T)
    _, _, grads = oracle_forward_backward(params, cfg, idx, targets)
    loss = lambda: oracle_forward_backward(params, cfg, idx, targets)[1]  # noqa: E731
    assert_no_mismatch(finite_difference_mismatches(loss, params, grads, rng, max_elements=6))
# --8<-- [end:test_fd]


@pytest.mark.parametrize("case", ["tied, d_ff != 4*d_model", "untied, one head, T < context", "T = 1"])
def test_oracle_model_backward_matches_finite_differences_on_named_cases(case):
    """The issue's named cases, every element of every parameter."""
    cfg, (B, T) = {"tied, d_ff != 4*d_model": (TIED, (1, 3)), "untied, one head, T < context": (UNTIED, UNTIED_BT),
                   "T = 1": (TIED, (2, 1))}[case]
    cfg = as_namespace(cfg)
    cfg.d_model, cfg.d_ff, cfg.n_heads = (4, 6, 2) if cfg.n_heads > 1 else (3, 5, 1)   # small: every element is cheap
    cfg.n_kv_heads = cfg.n_heads
    rng = np.random.default_rng(1)
    params = oracle.init_params(cfg, rng)
    idx, targets = random_inputs(rng, cfg, B, T)
    _, _, grads = oracle_forward_backward(params, cfg, idx, targets)
    loss = lambda: oracle_forward_backward(params, cfg, idx, targets)[1]  # noqa: E731
    assert_no_mismatch(finite_difference_mismatches(loss, params, grads, rng))
    if T < cfg.context_length:
        assert (grads["wpe.weight"][T:] == 0).all(), "unused position rows must get exactly zero gradient"


# --8<-- [start:test_agreement]
@tinygrad_examples
@given(name=st.sampled_from(sorted(MODELS)), seed=seeds)
def test_tinyref_model_matches_oracle(name, seed):
    """Logits, loss and the gradient of every parameter, float32 tinyref vs float64 oracle."""
    cfg, (B, T) = MODELS[name]
    rng = np.random.default_rng(seed)
    params = oracle.init_params(as_namespace(cfg), rng)
    idx, targets = random_inputs(rng, cfg, B, T)
    assert_no_mismatch(model_mismatches(built(name), params, as_namespace(cfg), idx, targets))
# --8<-- [end:test_agreement]


@tinygrad_examples
@given(seed=seeds)
def test_tinyref_nanogpt_variant_matches_oracle(seed):
    """Exact GELU, no biases: logits, loss and every (bias-free) gradient agree."""
    cfg, (B, T) = MODELS["nanogpt"]
    rng = np.random.default_rng(seed)
    params = oracle.init_params(as_namespace(cfg), rng)
    idx, targets = random_inputs(rng, cfg, B, T)
    assert_no_mismatch(model_mismatches(built("nanogpt"), params, as_namespace(cfg), idx, targets))


# --8<-- [start:test_llama]
@tinygrad_examples
@given(seed=seeds)
def test_tinyref_llama_matches_oracle(seed):
    """Rotary positions, RMSNorm, SwiGLU, 4 query heads on 2 kv heads, no biases, an untied head: logits, loss and
    every gradient agree."""
    cfg, (B, T) = MODELS["llama"]
    rng = np.random.default_rng(seed)
    params = oracle.init_params(cfg, rng)
    idx, targets = random_inputs(rng, cfg, B, T)
    assert_no_mismatch(model_mismatches(built("llama"), params, cfg, idx, targets))
# --8<-- [end:test_llama]


# --8<-- [start:test_llama_state_dict]
LLAMA_KEYS = {"wte.weight": ("V", "C"), "h.{i}.ln_1.weight": ("C",), "h.{i}.attn.c_attn.weight": ("(H+2KV)hd", "C"),
              "h.{i}.attn.c_proj.weight": ("C", "C"), "h.{i}.ln_2.weight": ("C",), "h.{i}.mlp.c_fc.weight": ("F", "C"),
              "h.{i}.mlp.c_gate.weight": ("F", "C"), "h.{i}.mlp.c_proj.weight": ("C", "F"), "ln_f.weight": ("C",),
              "lm_head.weight": ("V", "C")}


@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_llama_state_dict_is_the_contract(n_kv_heads):
    """DESIGN.md's table for GPTConfig.llama: no wpe, no bias anywhere, a gate per MLP, a narrower c_attn with GQA."""
    cfg = GPTConfig.llama(vocab_size=13, context_length=6, d_model=16, n_heads=4, n_layers=2, n_kv_heads=n_kv_heads, d_ff=20)
    sizes = {"V": 13, "C": 16, "F": 20, "(H+2KV)hd": (4 + 2 * n_kv_heads) * 4}
    expected = {key.format(i=i): tuple(sizes[d] for d in dims) for key, dims in LLAMA_KEYS.items() for i in range(2)}
    state = get_state_dict(GPTStyleTransformer(cfg))
    assert {k: tuple(t.shape) for k, t in state.items()} == expected == oracle.param_shapes(cfg)


def test_each_llama_field_changes_only_its_own_keys():
    """One field at a time from GPT-2: rope drops wpe; rmsnorm drops the norms' biases; the gate adds c_gate;
    fewer kv heads narrow c_attn."""
    base = dict(vocab_size=13, context_length=6, d_model=16, n_heads=4, n_layers=1, d_ff=20)
    gpt2 = oracle.param_shapes(GPTConfig(**base))

    def diff(**field):
        shapes = oracle.param_shapes(GPTConfig(**base, **field))
        return sorted(set(gpt2) - set(shapes)), sorted(set(shapes) - set(gpt2)), \
            sorted(k for k in set(gpt2) & set(shapes) if gpt2[k] != shapes[k])
    assert diff(positions="rope") == (["wpe.weight"], [], [])
    assert diff(norm="rmsnorm") == (["h.0.ln_1.bias", "h.0.ln_2.bias", "ln_f.bias"], [], [])
    assert diff(gated_mlp=True) == ([], ["h.0.mlp.c_gate.bias", "h.0.mlp.c_gate.weight"], [])
    assert diff(n_kv_heads=1) == ([], [], ["h.0.attn.c_attn.bias", "h.0.attn.c_attn.weight"])
    assert oracle.param_shapes(GPTConfig(**base, n_kv_heads=1))["h.0.attn.c_attn.weight"] == ((4 + 2) * 4, 16)
    assert diff(activation="silu") == diff(rope_theta=500.0) == diff(rope_style="interleaved") == ([], [], [])
# --8<-- [end:test_llama_state_dict]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_initialisation_statistics_are_gpt2s(family):
    """N(0, 0.02) weights, residual projections (attn.c_proj, mlp.c_proj) N(0, 0.02 / sqrt(2 n_layers)), unit
    norm gains, zero biases. Sample statistics of n draws: the std's standard error is std / sqrt(2n), so 5
    standard errors is a bound a correct init passes with probability 1 - 6e-7 per tensor; a std off by 10%
    (e.g. 0.022) is >= 8 standard errors away on every tensor of >= 4096 draws checked here."""
    size = dict(vocab_size=64, context_length=64, d_model=64, n_heads=4, n_layers=3, d_ff=128)
    cfg = GPTConfig(**size) if family == "gpt2" else GPTConfig.llama(**size, n_kv_heads=2)
    Tensor.manual_seed(0)
    state = {k: t.numpy().astype(np.float64) for k, t in get_state_dict(GPTStyleTransformer(cfg)).items()}
    for key, w in state.items():
        if key.endswith(".bias"):
            assert (w == 0).all(), key
        elif ".ln_" in f".{key}":
            assert (w == 1).all(), key
        else:
            std = 0.02 / np.sqrt(2 * cfg.n_layers) if key.endswith("c_proj.weight") else 0.02
            n = w.size
            assert abs(w.mean()) < 5 * std / np.sqrt(n), (key, w.mean())
            assert abs(w.std() - std) < 5 * std / np.sqrt(2 * n), (key, w.std(), std)
    assert ("wpe.weight" in state) is (family == "gpt2")


def test_model_accepts_any_integer_dtype_and_lists():
    model = built("tied")
    idx = np.random.default_rng(0).integers(0, TIED.vocab_size, TIED_BT)
    ref = model(Tensor(idx, dtype=dtypes.int32)).numpy()
    for variant in (idx.astype(np.int64), idx.astype(np.uint8), idx.tolist()):
        np.testing.assert_array_equal(model(variant).numpy(), ref)


# --8<-- [start:test_adamw]
def test_adamw_training_steps_match_oracle():
    """Three jitted training steps (forward, loss, backward, AdamW with decay on matrices only) vs the oracle."""
    assert_no_mismatch(adamw_mismatches())
# --8<-- [end:test_adamw]


def test_training_step_returns_the_loss_it_took_the_gradient_of():
    """Each jitted step returns the loss at the weights it started from (the oracle's loss there), not a
    loss computed after its own update."""
    assert_no_mismatch(step_loss_mismatches(tinyref_adamw()[0]))


@given(seed=seeds)
def test_key_bias_gets_no_gradient(seed):
    """softmax ignores a per-row shift, and q.b_k shifts each row of scores: the key bias's gradient is
    exactly zero in exact arithmetic. Adam normalises whatever rounding noise sits there into steps of
    +-lr with arbitrary sign, so the AdamW agreement test leaves that slice out."""
    cfg = as_namespace(TIED)
    rng = np.random.default_rng(seed)
    params = oracle.init_params(cfg, rng)
    idx, targets = random_inputs(rng, cfg, *TIED_BT)
    _, _, grads = oracle_forward_backward(params, cfg, idx, targets)
    C = cfg.d_model
    for i in range(cfg.n_layers):
        g = grads[f"h.{i}.attn.c_attn.bias"]
        assert np.abs(g[C:2 * C]).max() < KEY_BIAS_GRADIENT_ZERO * np.abs(g).max(), "key bias gradient should vanish"


def test_a_second_backward_on_one_cache_is_a_clear_error_not_wrong_gradients():
    """gpt_backward frees each block's activations as it passes them (as autograd does): reusing the cache
    must say so, never return gradients computed from a half-emptied cache."""
    rng = np.random.default_rng(0)
    params = oracle.init_params(TIED, rng)
    idx, _ = random_inputs(rng, TIED, *TIED_BT)
    logits, cache = oracle.gpt_forward(idx, params, TIED)
    first = oracle.gpt_backward(np.ones_like(logits), cache)
    with pytest.raises(ValueError, match="run gpt_forward again"):
        oracle.gpt_backward(np.ones_like(logits), cache)
    again = oracle.gpt_backward(np.ones_like(logits), oracle.gpt_forward(idx, params, TIED)[1])
    assert all(np.array_equal(first[k], again[k]) for k in first)
