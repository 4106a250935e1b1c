"""Hugging Face GPT-2 and Llama interop: a random HF model (built locally, no download) converted to
tinyref's layout gives the same logits and gradients in the oracle (float64) and in tinyref (float32)."""
import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import oracle
from helpers import LLAMA, TIED, TIED_BT, UNTIED, UNTIED_BT, load_params, oracle_forward_backward, tinyref_forward_backward
from strategies import seeds
from tinyref import CheckpointError, ConfigError, GPTConfig, GPTStyleTransformer
from tinyref.verify.hf import (config_from_hf, config_from_hf_llama, config_to_hf, config_to_hf_llama, from_hf, from_hf_llama,
                               load_hf_gpt2, save_hf_gpt2, to_hf, to_hf_llama, transpose_conv1d)
from tinyref.bench.oracle_gpt2 import GPT2_SMALL, gpt2_inputs, hf_gpt2_model
from tinyref.testing import ReferenceMismatch, assert_matches_reference
from tinyref.verify.tolerances import FLOAT32, FLOAT32_CASTS, FLOAT32_GRAD, FLOAT64, compare
from torch_llamas import hf_float64

CASES = {"tied": (TIED, TIED_BT), "untied": (UNTIED, UNTIED_BT)}
_tinyref_models = {}


def hf_model(cfg: GPTConfig, seed: int, activation: str = "gelu_new") -> GPT2LMHeadModel:
    """A float64 HF GPT-2 in eval mode with N(0, 0.5^2) weights (LayerNorm gains 1 + N(0, 0.5^2)), all at
    float32 values: large enough that every term matters, exactly representable for tinyref's float32."""
    hf_config = GPT2Config(**{**config_to_hf(cfg), "activation_function": activation}, attn_implementation="eager")
    return randomized(GPT2LMHeadModel(hf_config), seed, lambda name: ".ln_" in f".{name}" and name.endswith(".weight"))


def randomized(model, seed: int, is_gain):
    """``model`` in float64 and eval mode, its weights N(0, 0.5^2) (gains, where ``is_gain(name)``, 1 + N(0, 0.5^2))
    at float32 values."""
    model = model.double().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            x = torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5
            p.copy_((1.0 + x if is_gain(name) else x).float().double())
    return model


def hf_forward_backward(model, cfg, idx, targets, convert=from_hf):
    """(logits, loss, grads) from HF, float64, gradients converted to tinyref's layout by ``convert``."""
    model.zero_grad()
    logits = model(torch.tensor(idx)).logits                                  # (B, T, V)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), torch.tensor(targets).reshape(-1))
    loss.backward()
    grads = convert({k: p.grad for k, p in model.named_parameters()}, cfg)
    return logits.detach().numpy(), loss.item(), grads


def hf_case(name, seed, activation="gelu_new"):
    cfg, (B, T) = CASES[name]
    model = hf_model(cfg, seed, activation)
    rng = np.random.default_rng(seed)
    idx, targets = rng.integers(0, cfg.vocab_size, (B, T)), rng.integers(0, cfg.vocab_size, (B, T))
    return cfg, model, from_hf(model.state_dict(), cfg), idx, targets


def mismatches(actual, expected, tol, grad_tol):
    (logits, loss, grads), (ref_logits, ref_loss, ref_grads) = actual, expected
    found = [compare("logits", logits, ref_logits, tol), compare("loss", loss, ref_loss, tol)]
    found += [compare(f"grad {k}", grads[k], ref_grads[k], grad_tol) for k in ref_grads]
    return [str(m) for m in found if m]


def test_conversion_transposes_conv1d_and_round_trips():
    cfg = GPTConfig(vocab_size=13, context_length=6, d_model=8, n_heads=2, n_layers=2, d_ff=20)
    params = oracle.init_params(cfg, np.random.default_rng(0))
    state = to_hf(params, cfg)
    assert state["transformer.h.1.attn.c_attn.weight"].shape == (8, 24)          # Conv1D (in, out)
    assert state["transformer.h.0.mlp.c_fc.weight"].shape == (8, 20)
    np.testing.assert_array_equal(state["transformer.h.0.mlp.c_proj.weight"], params["h.0.mlp.c_proj.weight"].T)
    np.testing.assert_array_equal(state["lm_head.weight"], params["wte.weight"])    # tied head listed by HF
    back = from_hf(state, cfg)
    assert sorted(back) == sorted(params)
    for k in params:
        np.testing.assert_array_equal(back[k], params[k], err_msg=k)


def test_from_hf_drops_mask_buffers_and_accepts_bare_keys():
    """Older HF files (and the hub's gpt2) have no 'transformer.' prefix and carry attn.bias / attn.masked_bias."""
    cfg = GPTConfig(vocab_size=5, context_length=4, d_model=4, n_heads=2, n_layers=1)
    params = oracle.init_params(cfg, np.random.default_rng(1))
    bare = {k.removeprefix("transformer."): v for k, v in to_hf(params, cfg).items() if k != "lm_head.weight"}
    bare["h.0.attn.bias"] = np.tril(np.ones((1, 1, 4, 4)))
    bare["h.0.attn.masked_bias"] = np.array(-1e4)
    back = from_hf(bare, cfg)
    np.testing.assert_array_equal(back["h.0.attn.c_attn.bias"], params["h.0.attn.c_attn.bias"])
    assert set(back) == set(params)


def test_config_round_trips_through_hf():
    for cfg in (TIED, UNTIED):
        hf = GPT2Config(**config_to_hf(cfg))
        assert config_from_hf(hf.to_dict()) == cfg
        assert hf.n_inner == cfg.d_ff and hf.tie_word_embeddings == cfg.tie_embeddings


# --8<-- [start:test_hf_oracle]
@given(name=st.sampled_from(sorted(CASES)), seed=seeds)
def test_oracle_reproduces_hf_gpt2_in_float64(name, seed):
    """Logits, loss and every gradient of a random HF GPT-2, float64 on both sides."""
    cfg, model, params, idx, targets = hf_case(name, seed)
    found = mismatches(oracle_forward_backward(params, cfg, idx, targets),
                       hf_forward_backward(model, cfg, idx, targets), FLOAT64, FLOAT64)
    assert not found, "\n".join(found)
# --8<-- [end:test_hf_oracle]


@pytest.mark.parametrize("cfg, T", [
    pytest.param(GPTConfig(vocab_size=97, context_length=16, d_model=24, n_heads=3, n_layers=2), 16, id="small"),
    pytest.param(GPT2_SMALL, 1024, id="gpt2-small", marks=pytest.mark.slow),   # ~7 GB, minutes on 2 cores
])
def test_oracle_reproduces_hf_gpt2_at_gpt2_scale(cfg, T):
    """GPT-2's initialisation scale (N(0, 0.02^2)) through tinyref's HF bridge, float64 on both sides; at
    GPT-2 small's full shape (vocab 50257, 12 layers, T = 1024) with the slow marker."""
    params, idx, targets = gpt2_inputs(T, seed=0, cfg=cfg)
    expected = hf_forward_backward(hf_gpt2_model(cfg, params, "eager"), cfg, idx, targets)
    actual = oracle_forward_backward(params, cfg, idx, targets)
    found = mismatches(actual, expected, FLOAT64, FLOAT64)
    assert not found, "\n".join(found)
    # negative control: at this size the same comparison still rejects logits off by 1e-9 relative
    assert compare("logits", actual[0] * (1 + 1e-9), expected[0], FLOAT64) is not None


def test_oracle_vs_hf_catches_exact_gelu():
    """Negative control: HF with the exact-erf GELU ('gelu') differs by ~1e-4, far outside FLOAT64."""
    cfg, model, params, idx, targets = hf_case("tied", 0, activation="gelu")
    found = mismatches(oracle_forward_backward(params, cfg, idx, targets),
                       hf_forward_backward(model, cfg, idx, targets), FLOAT64, FLOAT64)
    assert found and found[0].startswith("logits: worst element at index")


def test_oracle_vs_hf_catches_a_missing_transpose():
    """Negative control: forgetting the Conv1D transpose of the square attn.c_proj (the shapes still fit)."""
    cfg, model, params, idx, targets = hf_case("tied", 1)
    params = {**params, "h.1.attn.c_proj.weight": params["h.1.attn.c_proj.weight"].T.copy()}
    found = mismatches(oracle_forward_backward(params, cfg, idx, targets),
                       hf_forward_backward(model, cfg, idx, targets), FLOAT64, FLOAT64)
    assert any(m.startswith("logits:") for m in found)


@pytest.mark.parametrize("name", sorted(CASES))
def test_tinyref_reproduces_hf_gpt2_in_float32(name):
    """tinyref (float32, on the test suite's fixed shapes) against HF (float64), two seeds each."""
    for seed in (0, 1):
        cfg, model, params, idx, targets = hf_case(name, seed)
        if name not in _tinyref_models:
            _tinyref_models[name] = GPTStyleTransformer(cfg)
        load_params(_tinyref_models[name], params)
        found = mismatches(tinyref_forward_backward(_tinyref_models[name], idx, targets),
                           hf_forward_backward(model, cfg, idx, targets), FLOAT32, FLOAT32_GRAD)
        assert not found, "\n".join(found)


def test_hf_model_passes_tinyref_testing_in_hf_layout():
    """The HF model as a 'user implementation' of tinyref.testing with layout='hf': float64, FLOAT64 tolerance."""
    cases = {}

    def run(idx, params, cfg):
        model = cases.setdefault(cfg.vocab_size, hf_model(cfg, 0))
        model.load_state_dict({k: torch.tensor(v) for k, v in params.items()}, strict=True)
        model.zero_grad()
        return model(torch.tensor(idx)).logits, model

    def forward(idx, params, cfg):
        return run(idx, params, cfg)[0].detach().numpy()

    def backward(idx, params, dlogits, cfg):
        logits, model = run(idx, params, cfg)
        logits.backward(torch.tensor(dlogits))
        return {k: p.grad.numpy() for k, p in model.named_parameters()}

    errors = assert_matches_reference(forward, backward=backward, layout="hf", dtype=np.float64,
                                      tol=FLOAT64, grad_tol=FLOAT64)
    assert max(errors.values()) < 1e-13
    with pytest.raises(ReferenceMismatch, match=r"grad h\.0\.attn\.c_attn\.weight: worst element"):
        assert_matches_reference(forward, backward=lambda i, p, d, c: {**backward(i, p, d, c), "transformer.h.0.attn.c_attn.weight":
                                 np.zeros_like(p["transformer.h.0.attn.c_attn.weight"])},
                                 layout="hf", dtype=np.float64, tol=FLOAT64, grad_tol=FLOAT64)


def test_save_pretrained_files_round_trip(tmp_path):
    """HF's save_pretrained -> load_hf_gpt2 -> save_hf_gpt2 -> HF's from_pretrained: same weights, same logits."""
    cfg, model, params, idx, _ = hf_case("untied", 2)
    model.save_pretrained(tmp_path / "hf")
    cfg2, loaded = load_hf_gpt2(tmp_path / "hf")
    assert cfg2 == cfg
    for k in params:
        np.testing.assert_array_equal(loaded[k], params[k], err_msg=k)
    save_hf_gpt2(tmp_path / "ours", cfg, loaded)
    again = GPT2LMHeadModel.from_pretrained(tmp_path / "ours", local_files_only=True, attn_implementation="eager",
                                          dtype=torch.float64).eval()
    with torch.no_grad():
        np.testing.assert_array_equal(again(torch.tensor(idx)).logits.numpy(), model(torch.tensor(idx)).logits.numpy())


def test_tied_save_writes_both_names_and_loads_back(tmp_path):
    cfg, model, params, idx, _ = hf_case("tied", 3)
    save_hf_gpt2(tmp_path / "m", cfg, params)
    again = GPT2LMHeadModel.from_pretrained(tmp_path / "m", local_files_only=True, attn_implementation="eager",
                                          dtype=torch.float64).eval()
    assert again.lm_head.weight.data_ptr() == again.transformer.wte.weight.data_ptr()   # tied again
    with torch.no_grad():
        np.testing.assert_array_equal(again(torch.tensor(idx)).logits.numpy(), model(torch.tensor(idx)).logits.numpy())


def test_bad_hf_input_is_a_one_line_error(tmp_path):
    cfg = TIED
    params = oracle.init_params(cfg, np.random.default_rng(0))
    state = to_hf(params, cfg)
    with pytest.raises(CheckpointError, match=r"lm_head.weight differs from wte.weight"):
        from_hf({**state, "lm_head.weight": state["lm_head.weight"] + 1}, cfg)
    with pytest.raises(CheckpointError, match=r"missing \['h.1.ln_1.bias'\]"):
        from_hf({k: v for k, v in state.items() if k != "transformer.h.1.ln_1.bias"}, cfg)
    with pytest.raises(CheckpointError, match=r"h.0.attn.c_attn.weight has shape \(16, 48\), the config needs \(48, 16\)"):
        from_hf(transpose_conv1d(state), cfg)        # transposed twice: (out, in) where HF has (in, out)
    with pytest.raises(ConfigError, match="tanh GELU only"):
        config_from_hf({**config_to_hf(cfg), "activation_function": "relu"})
    with pytest.raises(ConfigError, match=r"lacks \['n_head'\]"):
        config_from_hf({k: v for k, v in config_to_hf(cfg).items() if k != "n_head"})
    with pytest.raises(CheckpointError, match="cannot read .*config.json"):
        load_hf_gpt2(tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps(config_to_hf(cfg)))
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read safetensors file"):
        load_hf_gpt2(tmp_path / "bad")


def test_activation_names_map_both_ways():
    """GPT2Config's "gelu_new" is GPTConfig's "gelu_tanh" (so is torch's fused "gelu_pytorch_tanh"); "gelu" is "gelu"."""
    for hf_name, ours in (("gelu_new", "gelu_tanh"), ("gelu_pytorch_tanh", "gelu_tanh"), ("gelu", "gelu")):
        assert config_from_hf({**config_to_hf(TIED), "activation_function": hf_name}).activation == ours
    exact = GPTConfig(**{**TIED.to_dict(), "activation": "gelu"})
    assert config_to_hf(exact)["activation_function"] == "gelu" and config_from_hf(config_to_hf(exact)) == exact


def test_oracle_reproduces_hf_exact_gelu_gpt2_in_float64():
    """HF's activation_function="gelu" model, read through config_from_hf, is the oracle's activation="gelu"."""
    _, model, params, idx, targets = hf_case("tied", 0, activation="gelu")
    cfg = config_from_hf(model.config.to_dict())
    assert cfg.activation == "gelu"
    found = mismatches(oracle_forward_backward(params, cfg, idx, targets),
                       hf_forward_backward(model, cfg, idx, targets), FLOAT64, FLOAT64)
    assert not found, "\n".join(found)


def test_a_bias_free_model_has_no_hf_form(tmp_path):
    cfg = GPTConfig(**{**TIED.to_dict(), "bias": False})
    params = oracle.init_params(cfg, np.random.default_rng(0))
    for convert in (lambda: config_to_hf(cfg), lambda: to_hf(params, cfg), lambda: save_hf_gpt2(tmp_path / "x", cfg, params),
                    lambda: assert_matches_reference(lambda i, p, c: None, cfg=cfg, layout="hf")):
        with pytest.raises(ConfigError) as e:
            convert()
        assert "\n" not in str(e.value) and "bias=False has no Hugging Face GPT-2 form" in str(e.value)
    assert not (tmp_path / "x").exists()


# --- LlamaForCausalLM ------------------------------------------------------------------------------

LLAMA_VARIANT = GPTConfig.llama(13, 16, 24, 3, 2, n_kv_heads=1, d_ff=40, rope_theta=5e5, layer_norm_eps=1e-6,
                                tie_embeddings=True, bias=True)    # one kv head, tied, biases, another theta and eps


def hf_llama_model(cfg: GPTConfig, seed: int) -> LlamaForCausalLM:
    """A float64 HF Llama (eager attention) with N(0, 0.5^2) weights (RMSNorm gains 1 + N(0, 0.5^2)), at float32 values."""
    model = LlamaForCausalLM._from_config(LlamaConfig(**config_to_hf_llama(cfg)), attn_implementation="eager")
    return randomized(model, seed, lambda name: name.endswith("norm.weight"))


def hf_llama_forward_backward(model, cfg, idx, targets):
    """hf_forward_backward for HF's Llama: gradients through the Llama bridge."""
    return hf_forward_backward(model, cfg, idx, targets, convert=from_hf_llama)


def llama_case(cfg, seed):
    model = hf_llama_model(cfg, seed)
    rng = np.random.default_rng(seed)
    idx, targets = rng.integers(0, cfg.vocab_size, (2, 8)), rng.integers(0, cfg.vocab_size, (2, 8))
    return model, from_hf_llama(model.state_dict(), cfg), idx, targets


@pytest.mark.parametrize("cfg", [LLAMA, LLAMA_VARIANT], ids=["llama", "variant"])
def test_llama_config_round_trips_through_hf(cfg):
    hf = LlamaConfig(**config_to_hf_llama(cfg))
    assert config_from_hf_llama(hf.to_dict()) == cfg
    assert (hf.num_key_value_heads, hf.rope_parameters["rope_theta"], hf.rms_norm_eps, hf.tie_word_embeddings,
            hf.attention_bias, hf.mlp_bias) == (cfg.n_kv_heads, cfg.rope_theta, cfg.layer_norm_eps, cfg.tie_embeddings,
                                                cfg.bias, cfg.bias)
    # a config.json written before rope_parameters: rope_theta at the top, rope_scaling null
    old = {k: v for k, v in config_to_hf_llama(cfg).items() if k != "rope_parameters"}
    assert config_from_hf_llama({**old, "rope_theta": cfg.rope_theta, "rope_scaling": None}) == cfg


@pytest.mark.parametrize("cfg", [LLAMA, LLAMA_VARIANT], ids=["llama", "variant"])
def test_llama_state_dicts_round_trip_both_ways(cfg):
    params = oracle.init_params(cfg, np.random.default_rng(0))
    state = to_hf_llama(params, cfg)
    H, KV, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    assert state["model.layers.1.self_attn.k_proj.weight"].shape == (KV * hd, cfg.d_model)
    np.testing.assert_array_equal(state["model.layers.0.self_attn.v_proj.weight"],
                                  params["h.0.attn.c_attn.weight"][(H + KV) * hd:])       # [q | k | v]: v last
    np.testing.assert_array_equal(state["model.layers.0.mlp.gate_proj.weight"], params["h.0.mlp.c_gate.weight"])
    np.testing.assert_array_equal(state["model.layers.0.mlp.up_proj.weight"], params["h.0.mlp.c_fc.weight"])
    model = LlamaForCausalLM(LlamaConfig(**config_to_hf_llama(cfg))).double()
    model.load_state_dict({k: torch.tensor(v) for k, v in state.items()}, strict=True)     # every HF key, no other
    back = from_hf_llama(model.state_dict(), cfg)
    assert sorted(back) == sorted(params)
    for k in params:
        np.testing.assert_array_equal(back[k], params[k], err_msg=k)
    again = to_hf_llama(from_hf_llama(state, cfg), cfg)
    assert all(np.array_equal(again[k], state[k]) for k in state) and sorted(again) == sorted(state)


@pytest.mark.parametrize("cfg", [LLAMA, LLAMA_VARIANT], ids=["llama", "variant"])
@pytest.mark.parametrize("seed", [0, 1])
def test_oracle_reproduces_hf_llama_through_the_bridge(cfg, seed):
    """HF's own float64 Llama: with its float32 casts removed it equals the oracle within FLOAT64; as shipped
    it does not, and is within FLOAT32_CASTS."""
    model, params, idx, targets = llama_case(cfg, seed)
    expected = oracle_forward_backward(params, cfg, idx, targets)
    with hf_float64():
        exact = hf_llama_forward_backward(model, cfg, idx, targets)
    assert not mismatches(exact, expected, FLOAT64, FLOAT64), "\n".join(mismatches(exact, expected, FLOAT64, FLOAT64))
    shipped = hf_llama_forward_backward(model, cfg, idx, targets)
    assert mismatches(shipped, expected, FLOAT64, FLOAT64)                 # its float32 casts show in float64
    assert not mismatches(shipped, expected, FLOAT32_CASTS, FLOAT32_CASTS)


def test_oracle_vs_hf_llama_catches_a_kv_head_order_slip():
    """Negative control: k and v rows swapped in the bridge (shapes fit) leave the oracle far from HF."""
    model, params, idx, targets = llama_case(LLAMA, 0)
    H, KV, hd = LLAMA.n_heads, LLAMA.n_kv_heads, LLAMA.head_dim
    w = params["h.0.attn.c_attn.weight"]
    swapped = np.concatenate([w[:H * hd], w[(H + KV) * hd:], w[H * hd:(H + KV) * hd]])
    found = mismatches(oracle_forward_backward({**params, "h.0.attn.c_attn.weight": swapped}, LLAMA, idx, targets),
                       hf_llama_forward_backward(model, LLAMA, idx, targets), FLOAT32_CASTS, FLOAT32_CASTS)
    assert found and found[0].startswith("logits: worst element")


def test_bad_hf_llama_input_is_a_one_line_error():
    hf = config_to_hf_llama(LLAMA)
    for bad, message in [({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope scaling .*'llama3'"),
                         ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}, "rope scaling .*'linear'"),
                         ({"attention_bias": True}, "attention_bias=True with mlp_bias=False"),
                         ({"head_dim": 8}, "head_dim=8 differs from hidden_size / num_attention_heads = 4"),
                         ({"hidden_act": "relu"}, "hidden_act='relu'")]:
        with pytest.raises(ConfigError, match=message) as e:
            config_from_hf_llama({**hf, **bad})
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"lacks \['num_attention_heads'\]"):
        config_from_hf_llama({k: v for k, v in hf.items() if k != "num_attention_heads"})
    params = oracle.init_params(LLAMA, np.random.default_rng(0))
    interleaved = GPTConfig(**{**LLAMA.to_dict(), "rope_style": "interleaved"})
    for convert in (lambda: config_to_hf_llama(interleaved), lambda: to_hf_llama(params, interleaved),
                    lambda: config_to_hf_llama(TIED)):
        with pytest.raises(ConfigError, match="has no Hugging Face LlamaForCausalLM form") as e:
            convert()
        assert "\n" not in str(e.value)
    state = to_hf_llama(params, LLAMA)
    with pytest.raises(CheckpointError, match=r"missing \['model.layers.1.self_attn.k_proj.weight'\]"):
        from_hf_llama({k: v for k, v in state.items() if k != "model.layers.1.self_attn.k_proj.weight"}, LLAMA)
    tied = GPTConfig(**{**LLAMA.to_dict(), "tie_embeddings": True})
    with pytest.raises(CheckpointError, match="lm_head.weight differs from model.embed_tokens.weight"):
        from_hf_llama({**state}, tied)
