"""GPTConfig: every bad field is a ConfigError naming the field and the fix; d_ff resolves to an int."""
import math

import pytest

from tinyref import ConfigError, GPTConfig


def test_defaults_are_the_seed_demo_and_d_ff_resolves():
    cfg = GPTConfig()
    assert (cfg.vocab_size, cfg.context_length, cfg.d_model, cfg.n_heads, cfg.n_layers) == (52, 16, 32, 4, 2)
    assert cfg.d_ff == 4 * 32 and cfg.head_dim == 8 and cfg.tie_embeddings and cfg.layer_norm_eps == 1e-5
    assert GPTConfig(d_model=8, n_heads=2, d_ff=5).d_ff == 5


@pytest.mark.parametrize("field, value", [
    ("vocab_size", 0), ("vocab_size", -1), ("vocab_size", 2.5), ("vocab_size", True), ("context_length", 0),
    ("d_model", 0), ("n_heads", 0), ("n_layers", 0), ("d_ff", 0), ("d_ff", -4), ("n_layers", "2"),
])
def test_sizes_must_be_positive_integers(field, value):
    with pytest.raises(ConfigError, match=rf"GPTConfig\.{field} must be a positive integer, got {value!r}"):
        GPTConfig(**{field: value})


@pytest.mark.parametrize("eps", [0.0, -1e-5, math.nan, math.inf, True, "1e-5"])
def test_layer_norm_eps_must_be_finite_and_positive(eps):
    with pytest.raises(ConfigError, match="layer_norm_eps must be a finite number > 0"):
        GPTConfig(layer_norm_eps=eps)


def test_heads_must_divide_d_model_and_the_message_lists_the_choices():
    with pytest.raises(ConfigError, match=r"n_heads=5 must divide d_model=32: choose n_heads among \[1, 2, 4, 8, 16, 32\]"):
        GPTConfig(n_heads=5)


def test_tie_embeddings_must_be_a_bool():
    with pytest.raises(ConfigError, match="tie_embeddings must be True or False"):
        GPTConfig(tie_embeddings="yes")


def test_config_errors_are_value_errors_with_one_line_messages():
    with pytest.raises(ValueError) as e:
        GPTConfig(d_model=0)
    assert "\n" not in str(e.value)


def test_from_dict_round_trips_and_rejects_unknown_fields():
    cfg = GPTConfig(vocab_size=7, d_model=8, n_heads=2, d_ff=12, tie_embeddings=False)
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"unknown GPTConfig field\(s\) \['n_embd'\]"):
        GPTConfig.from_dict({**cfg.to_dict(), "n_embd": 8})
    with pytest.raises(ConfigError, match="must be a JSON object"):
        GPTConfig.from_dict([1, 2])


def test_numpy_numbers_are_accepted_and_stored_as_python_numbers():
    import numpy as np
    cfg = GPTConfig(vocab_size=np.int64(11), d_model=np.int32(8), n_heads=np.int64(2), d_ff=np.uint16(12),
                    layer_norm_eps=np.float32(1e-3))
    assert (cfg.vocab_size, cfg.d_model, cfg.d_ff) == (11, 8, 12) and type(cfg.vocab_size) is int
    assert type(cfg.layer_norm_eps) is float and cfg == GPTConfig.from_dict(cfg.to_dict())


def test_the_variants_default_to_gpt2():
    cfg = GPTConfig()
    assert (cfg.activation, cfg.bias) == ("gelu_tanh", True)
    assert (GPTConfig(activation="gelu", bias=False).activation, GPTConfig(bias=False).bias) == ("gelu", False)


@pytest.mark.parametrize("field, value, message", [
    ("activation", "relu", "GPTConfig.activation must be one of 'gelu_tanh', 'gelu', 'silu', got 'relu'"),
    ("activation", "gelu_new", "GPTConfig.activation must be one of 'gelu_tanh', 'gelu', 'silu', got 'gelu_new'"),
    ("positions", "sinusoid", "GPTConfig.positions must be one of 'learned', 'rope', got 'sinusoid'"),
    ("rope_style", "neox", "GPTConfig.rope_style must be one of 'half', 'interleaved', got 'neox'"),
    ("norm", "batchnorm", "GPTConfig.norm must be one of 'layernorm', 'rmsnorm', got 'batchnorm'"),
    ("gated_mlp", 1, "GPTConfig.gated_mlp must be True or False, got 1"),
    ("rope_theta", 0.0, "GPTConfig.rope_theta must be a finite number > 0, got 0.0"),
    ("rope_theta", math.inf, "GPTConfig.rope_theta must be a finite number > 0, got inf"),
    ("n_kv_heads", 0, "GPTConfig.n_kv_heads must be a positive integer, got 0"),
    ("n_kv_heads", 3, "GPTConfig.n_kv_heads=3 must divide n_heads=4: choose n_kv_heads among [1, 2, 4]"),
    ("bias", "no", "GPTConfig.bias must be True or False, got 'no'"),
    ("bias", 0, "GPTConfig.bias must be True or False, got 0"),
])
def test_variant_fields_are_validated_in_one_line(field, value, message):
    with pytest.raises(ConfigError) as e:
        GPTConfig(**{field: value})
    assert str(e.value) == message


def test_a_config_saved_without_the_variant_fields_loads_as_gpt2():
    """config.json written before activation and bias existed: the fields take GPT-2's values."""
    old = {k: v for k, v in GPTConfig(vocab_size=7, d_model=8, n_heads=2).to_dict().items() if k not in ("activation", "bias")}
    cfg = GPTConfig.from_dict(old)
    assert (cfg.activation, cfg.bias) == ("gelu_tanh", True)
    variant = GPTConfig(vocab_size=7, d_model=8, n_heads=2, activation="gelu", bias=False)
    assert GPTConfig.from_dict(variant.to_dict()) == variant


def test_the_llama_fields_default_to_gpt2_and_n_kv_heads_resolves():
    cfg = GPTConfig()
    assert (cfg.positions, cfg.rope_theta, cfg.rope_style, cfg.norm, cfg.gated_mlp) == \
        ("learned", 10000.0, "half", "layernorm", False)
    assert cfg.n_kv_heads == cfg.n_heads == 4 and GPTConfig(n_kv_heads=2).n_kv_heads == 2
    assert type(GPTConfig(rope_theta=500000).rope_theta) is float


def test_rope_needs_an_even_head_size_and_says_so():
    with pytest.raises(ConfigError, match=r"head size d_model / n_heads = 3 must be even"):
        GPTConfig(d_model=12, n_heads=4, positions="rope")
    assert GPTConfig(d_model=12, n_heads=3, positions="rope").head_dim == 4


def test_the_llama_preset_sets_the_family_and_passes_other_fields_through():
    cfg = GPTConfig.llama(vocab_size=50, context_length=32, d_model=64, n_heads=8, n_layers=3)
    assert (cfg.positions, cfg.rope_style, cfg.norm, cfg.activation, cfg.gated_mlp, cfg.bias, cfg.tie_embeddings) == \
        ("rope", "half", "rmsnorm", "silu", True, False, False)
    assert (cfg.n_kv_heads, cfg.d_ff, cfg.rope_theta, cfg.layer_norm_eps) == (8, 256, 10000.0, 1e-5)
    gqa = GPTConfig.llama(50, 32, 64, 8, 3, n_kv_heads=2, d_ff=96, rope_theta=5e5, rope_style="interleaved",
                          layer_norm_eps=1e-6)
    assert (gqa.n_kv_heads, gqa.d_ff, gqa.rope_theta, gqa.rope_style, gqa.layer_norm_eps) == (2, 96, 5e5, "interleaved", 1e-6)
    assert GPTConfig.from_dict(gqa.to_dict()) == gqa


def test_a_config_saved_without_the_llama_fields_loads_as_gpt2():
    new = ("positions", "rope_theta", "rope_style", "norm", "gated_mlp", "n_kv_heads")
    old = {k: v for k, v in GPTConfig(vocab_size=7, d_model=8, n_heads=2).to_dict().items() if k not in new}
    assert GPTConfig.from_dict(old) == GPTConfig(vocab_size=7, d_model=8, n_heads=2)
