"""tinyref.testing.torch: PyTorch GPT-2s written the nanoGPT, minGPT and Hugging Face ways, and Llamas
written the Hugging Face and Meta ways, pass, and a planted bug is reported at the submodule where it
first shows."""
from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from tinyref import GPTConfig, UsageError
from tinyref.testing import ReferenceMismatch
from tinyref.testing.torch import check_torch_model, infer_config
from tinyref.verify.tolerances import FLOAT32_CASTS, max_error
from torch_gpts import MinStyleGPT, NanoConfig, NanoStyleGPT
from torch_llamas import BUGS, MetaStyleLlama, ModelArgs, hf_bug, hf_float64, hf_llama

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)
hf_logging.set_verbosity_error()      # GPT2Config's default token ids lie outside a tiny vocabulary


def nano_gpt2(**overrides) -> GPTConfig:
    """The GPTConfig NanoConfig(**overrides) describes."""
    n = NanoConfig(**overrides)
    return GPTConfig(vocab_size=n.vocab_size, context_length=n.block_size, d_model=n.n_embd, n_heads=n.n_head,
                     n_layers=n.n_layer, activation="gelu" if n.exact_gelu else "gelu_tanh", bias=n.bias)


def hf_gpt2(tie=True, **overrides):
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=11, n_positions=8, n_embd=16, n_head=4, n_layer=2, n_inner=24,
                                      tie_word_embeddings=tie, **overrides))


def divergence(model, cfg=None, **kwargs) -> str:
    """The report's first-divergence line (the check must fail)."""
    with pytest.raises(ReferenceMismatch) as e:
        check_torch_model(model, cfg, **kwargs)
    return next(line.strip() for line in str(e.value).splitlines() if line.strip().startswith("first divergence"))


@pytest.mark.parametrize("build", [lambda: NanoStyleGPT(NanoConfig()), lambda: MinStyleGPT(NanoConfig()),
                                   hf_gpt2, lambda: hf_gpt2(tie=False)],
                         ids=["nanogpt", "mingpt", "hf-tied", "hf-untied"])
def test_gpt2s_written_three_ways_pass_with_the_config_read_off_the_model(build):
    model = build()
    result = check_torch_model(model)
    assert result.cfg.n_heads == 4 and result.cfg.n_layers == 2 and result.cfg.vocab_size == 11
    assert result.cfg.tie_embeddings == (not isinstance(model, MinStyleGPT) and model.lm_head.weight is
                                         model.get_submodule("transformer.wte").weight)
    assert max(result.errors.values()) < 1e-13 and len(result.errors) == 29 + (not result.cfg.tie_embeddings) + (
        not isinstance(model, GPT2LMHeadModel))   # logits, every gradient, and the loss nanoGPT/minGPT return


@pytest.mark.parametrize("build", [lambda: MinStyleGPT(NanoConfig()), lambda: hf_llama().train()], ids=["mingpt", "hf-llama"])
def test_the_model_is_left_as_it_was(build):
    model = build()       # minGPT's MLP runs through a lambda over the original modules; HF's Llama has buffers
    before = {k: v.clone() for k, v in [*model.state_dict().items(), *model.named_buffers()]}
    check_torch_model(model)
    assert model.training and all(torch.equal(before[k], v) and v.dtype == before[k].dtype
                                  for k, v in [*model.state_dict().items(), *model.named_buffers()])
    assert all(p.grad is None for p in model.parameters())


def test_the_report_says_what_was_read_and_what_was_assumed():
    _, notes = infer_config(MinStyleGPT(NanoConfig()))
    assert "n_heads=4 from transformer.h.0.attn.n_head" in notes
    assert "layer_norm_eps=1e-05 from transformer.h.0.ln_1.eps" in notes
    assert any(n.startswith("activation='gelu_tanh' assumed") for n in notes)     # a hand-written GELU
    _, notes = infer_config(hf_gpt2())
    assert "activation='gelu_tanh' from model.config.activation_function='gelu_new'" in notes
    assert notes[0].startswith("'transformer.' prefix, Conv1D (in, out); from the parameters: vocab_size=11")


@pytest.mark.parametrize("build, bug, where", [
    (NanoStyleGPT, "no_mask", "transformer.h.0.attn output (transformer.h.0.ln_1 agrees)"),
    (NanoStyleGPT, "scale", "transformer.h.0.attn output (transformer.h.0.ln_1 agrees)"),
    (NanoStyleGPT, "eps", "transformer.h.0.ln_1 output"),
    (NanoStyleGPT, "no_residual", "transformer.h.0.ln_2 input, which should be the residual x + attn(ln_1(x)) "
                                  "after transformer.h.0.attn (transformer.h.0.ln_1, transformer.h.0.attn agree)"),
    (NanoStyleGPT, "no_ln_f", "the output head (lm_head or wte.weight.T), after every hooked input and output agrees"),
    (MinStyleGPT, "erf_gelu", "transformer.h.0.mlp output (transformer.h.0.attn, transformer.h.0.ln_2 agree)"),
    (MinStyleGPT, "eps", "transformer.h.0.ln_1 output"),
])
def test_a_planted_bug_is_named_where_it_first_shows(build, bug, where):
    assert divergence(build(NanoConfig(), bug=bug)) == f"first divergence: {where}"


def test_hf_gpt2_without_the_attention_scale_is_named_at_attn():
    assert divergence(hf_gpt2(scale_attn_weights=False)) == \
        "first divergence: transformer.h.0.attn output (transformer.h.0.ln_1 agrees)"


def test_a_bug_in_the_second_block_is_named_there():
    model = NanoStyleGPT(NanoConfig(), bug="no_mask", bug_layer=1)
    assert divergence(model) == "first divergence: transformer.h.1.attn output (transformer.h.0.mlp, transformer.h.1.ln_1 agree)"


def test_a_minGPT_mlp_never_called_as_a_module_is_read_at_its_layers():
    with pytest.raises(ReferenceMismatch) as e:
        check_torch_model(MinStyleGPT(NanoConfig(), bug="no_mask", bug_layer=1))
    assert "first divergence: transformer.h.1.attn output (transformer.h.0.mlp, transformer.h.1.ln_1 agree)" in str(e.value)
    assert "never called" not in str(e.value)


def test_a_gradient_only_bug_is_said_to_be_in_the_backward_pass():
    with pytest.raises(ReferenceMismatch) as e:
        check_torch_model(NanoStyleGPT(NanoConfig(), bug="detached_wpe"))
    lines = str(e.value).splitlines()
    assert lines[1].strip().startswith("the logits agree, the gradients do not")
    assert "grad wpe.weight: missing from your result" in str(e.value) and "  logits:" not in str(e.value)


def test_hf_gpt2_with_another_eps_fails_as_gpt2_at_ln_1_and_the_note_says_why():
    model = hf_gpt2(layer_norm_epsilon=1e-3)
    check_torch_model(model)                                 # as the model it is
    cfg = GPTConfig(vocab_size=11, context_length=8, d_model=16, n_heads=4, n_layers=2, d_ff=24)
    with pytest.raises(ReferenceMismatch) as e:
        check_torch_model(model, cfg)
    assert "first divergence: transformer.h.0.ln_1 output\n" in str(e.value)
    assert "note: cfg.layer_norm_eps=1e-05, but the model says 0.001 (transformer.h.0.ln_1.eps)" in str(e.value)


# --- nanoGPT's variants: exact GELU, no biases ---------------------------------------------------

def test_nanogpt_without_biases_and_with_exact_gelu_passes_as_itself():
    model = NanoStyleGPT(NanoConfig(bias=False, exact_gelu=True))
    result = check_torch_model(model)
    assert result.cfg == nano_gpt2(bias=False, exact_gelu=True)
    assert "activation='gelu' from transformer.h.0.mlp.gelu is nn.GELU(approximate='none')" in result.notes
    assert check_torch_model(model, nano_gpt2(bias=False, exact_gelu=True)).errors.keys() == result.errors.keys()


def test_nanogpt_with_exact_gelu_fails_as_gpt2_at_the_mlp():
    model = NanoStyleGPT(NanoConfig(bias=False, exact_gelu=True))
    assert divergence(model, nano_gpt2(bias=False)) == \
        "first divergence: transformer.h.0.mlp output (transformer.h.0.attn, transformer.h.0.ln_2 agree)"
    assert divergence(NanoStyleGPT(NanoConfig(exact_gelu=True)), nano_gpt2()).startswith(
        "first divergence: transformer.h.0.mlp output")


@pytest.mark.parametrize("bug, where", [("no_mask", "h.0.attn output"), ("scale", "h.0.attn output"),
                                        ("tanh_gelu", "h.0.mlp output")])
def test_a_bug_in_the_nanogpt_variant_is_named(bug, where):
    model = NanoStyleGPT(NanoConfig(bias=False, exact_gelu=True), bug=bug)
    assert divergence(model).startswith(f"first divergence: transformer.{where}")


# --- what it cannot check, said in one line --------------------------------------------------------

def test_unknown_heads_need_cfg():
    model = MinStyleGPT(NanoConfig())
    for block in model.transformer.h:
        del block.attn.n_head              # nothing left says how many heads (the weights cannot)
    with pytest.raises(UsageError, match=r"n_heads cannot be read from the weights .* pass cfg=GPTConfig"):
        check_torch_model(model)


def test_forward_signatures_that_need_an_adapter_say_which_argument():
    nano = NanoStyleGPT(NanoConfig())
    with pytest.raises(UsageError, match=r"logits of shape \(2, 1, 11\), expected .*pass forward=lambda model, idx"):
        check_torch_model(nano, forward=lambda model, idx: model(idx))   # nanoGPT without targets: last position only
    check_torch_model(nano, forward=lambda model, idx: model(idx, torch.zeros_like(idx))[0])
    with pytest.raises(UsageError, match=r"returned dict, not logits: pass forward=lambda model, idx"):
        check_torch_model(nano, forward=lambda model, idx: {"logits": model(idx, idx)[0]})


def test_models_that_are_not_gpt2_shaped_are_refused_in_one_line():
    with pytest.raises(UsageError, match="needs GPT-2's parameter names"):
        check_torch_model(nn.Linear(3, 3))
    with pytest.raises(UsageError, match="needs a torch.nn.Module"):
        check_torch_model("model.pt")
    with pytest.raises(UsageError, match=r"do not fit GPTConfig.*: missing \['h.2.attn.c_attn.bias'"):
        check_torch_model(NanoStyleGPT(NanoConfig()), nano_gpt2(n_layer=3))


def test_without_torch_the_error_names_the_extra():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from tinyref.errors import UsageError\n"
            "try:\n    import tinyref.testing.torch\nexcept UsageError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True).stdout
    assert out == "tinyref.testing.torch needs the Python package 'torch', which is not installed: pip install 'tinyref[torch]'\n"


def test_the_example_checks_a_model_file_and_names_the_divergence(tmp_path):
    user_file = tmp_path / "my_gpt.py"
    user_file.write_text("from torch_gpts import NanoConfig, NanoStyleGPT\n"
                         "def build_model():\n    return NanoStyleGPT(NanoConfig())\n"
                         "def build_buggy():\n    return NanoStyleGPT(NanoConfig(), bug='no_mask')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    run = lambda *args: subprocess.run([sys.executable, str(ROOT / "examples" / "check_my_torch_gpt.py"), *args],  # noqa: E731
                                       capture_output=True, text=True, env=env, cwd=tmp_path)
    good = run(str(user_file))
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.startswith("agrees with the tinyref oracle") and "activation='gelu_tanh' from" in good.stdout
    bad = run(str(user_file), "--build", "build_buggy")
    assert bad.returncode == 1 and "first divergence: transformer.h.0.attn output" in bad.stdout
    missing = run(str(user_file), "--build", "nothing_here")
    assert missing.returncode == 2 and missing.stderr.startswith("tinyref: error: ") and len(missing.stderr.splitlines()) == 1


# --- the Llama family: Hugging Face's LlamaForCausalLM and Meta's names ---------------------------

def llama_cfg(**fields) -> GPTConfig:
    """The GPTConfig of torch_llamas' models (the llama preset's sizes; Meta's MLP rounds d_ff up to 48)."""
    return GPTConfig.llama(11, 8, 16, 4, 2, n_kv_heads=2, layer_norm_eps=1e-5, **{"d_ff": 24, **fields})


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_a_meta_style_llama_passes_in_float64_with_interleaved_rope_detected(tie):
    result = check_torch_model(MetaStyleLlama(ModelArgs(tie=tie)), cast_tol=None)   # no float32 allowance
    assert result.cfg == llama_cfg(d_ff=48, rope_style="interleaved", tie_embeddings=tie)
    assert result.float32_from is None and max(result.errors.values()) < 1e-13 and len(result.errors) == 18 - tie
    assert any(n.startswith("rope_style='interleaved' detected: the oracle with it agrees") for n in result.notes)
    assert "n_kv_heads=2 from layers.0.attention.wk's 8 rows / head_dim 4" in result.notes
    assert "n_heads=4 from model.params.n_heads" in result.notes and \
        "layer_norm_eps=1e-05 from layers.0.attention_norm.eps" in result.notes


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_hf_llama_as_shipped_passes_to_float32_precision_and_says_where_it_is_lost(tie):
    result = check_torch_model(hf_llama(tie=tie))
    assert result.cfg == llama_cfg(tie_embeddings=tie)
    assert any(n.startswith("rope_style='half' detected: the oracle with it agrees") for n in result.notes)
    assert "layer_norm_eps=1e-05 from model.layers.0.input_layernorm.variance_epsilon" in result.notes
    assert "rope_theta=10000.0 from model.config.rope_parameters.rope_theta" in result.notes
    # HF's LlamaRMSNorm computes in float32: the first hooked value that leaves float64 precision is its output
    assert result.float32_from == "model.layers.0.input_layernorm output"
    assert str(result).startswith("agrees with the tinyref oracle to float32 precision only")
    assert "likely a cast to float32 inside" in str(result)
    assert 1e-9 < max(result.errors.values()) < FLOAT32_CASTS.atol
    with pytest.raises(ReferenceMismatch, match="first divergence: model.layers.0.input_layernorm output"):
        check_torch_model(hf_llama(tie=tie), cast_tol=None)      # float64's tolerance alone rejects it


@pytest.mark.parametrize("overrides", [{}, dict(hidden_size=32, num_attention_heads=2, num_key_value_heads=1,
                                                max_position_embeddings=32, tie_word_embeddings=True,
                                                rope_parameters={"rope_type": "default", "rope_theta": 5e5})],
                         ids=["llama-preset", "mqa-tied-T32-theta5e5"])
def test_hf_llama_with_its_float32_casts_removed_equals_the_oracle_in_float64(overrides):
    """The oracle against an exact float64 formulation: HF's own modules with only their casts removed."""
    with hf_float64():
        result = check_torch_model(hf_llama(**overrides), seeds=(0, 1, 2), cast_tol=None)
    assert result.float32_from is None and max(result.errors.values()) < 1e-13


@pytest.mark.parametrize("bug, where", [
    ("half_rope", "layers.0.attention output (layers.0.attention_norm agrees)"),
    ("tiled_kv", "layers.0.attention output (layers.0.attention_norm agrees)"),
    ("rms_sum", "layers.0.attention_norm output"),
    ("no_mask", "layers.0.attention output (layers.0.attention_norm agrees)"),
    ("q_ahead", "layers.0.attention output (layers.0.attention_norm agrees)"),
])
def test_a_bug_planted_in_the_meta_style_llama_is_named_where_it_first_shows(bug, where):
    assert divergence(MetaStyleLlama(ModelArgs(), bug=bug)) == f"first divergence: {where}"


@pytest.mark.parametrize("bug, where", [
    ("half_rope", "model.layers.0.self_attn output (model.layers.0.input_layernorm agrees)"),
    ("tiled_kv", "model.layers.0.self_attn output (model.layers.0.input_layernorm agrees)"),
    ("rms_sum", "model.layers.0.input_layernorm output"),
    ("no_mask", "model.layers.0.self_attn output (model.layers.0.input_layernorm agrees)"),
])
def test_a_bug_planted_in_hf_llama_is_named_where_it_first_shows(bug, where):
    """Through HF's float32 casts: the first float32-sized difference is taken for a cast and said so."""
    model = hf_llama()
    with hf_bug(model, bug), pytest.raises(ReferenceMismatch) as e:
        check_torch_model(model)
    assert f"first divergence: {where}\n" in str(e.value)
    if bug != "rms_sum":
        assert "note: from model.layers.0.input_layernorm output on the values agree only to float32 precision" in str(e.value)


def test_the_planted_llama_bugs_are_far_above_the_float32_cast_tolerance():
    """Each bug moves the Meta-style model's own float64 logits (same weights) by >= 100x FLOAT32_CASTS."""
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        good = MetaStyleLlama(ModelArgs()).double()(idx).numpy()
        for bug in BUGS:
            assert max_error(MetaStyleLlama(ModelArgs(), bug=bug).double()(idx).numpy(), good) > 100 * FLOAT32_CASTS.atol, bug


def test_a_llama_whose_rope_is_not_its_names_style_is_told_which_it_computes():
    with pytest.raises(ReferenceMismatch) as e:
        check_torch_model(MetaStyleLlama(ModelArgs(), bug="half_rope"))
    assert "the model's RoPE is rope_style='half' (the oracle with it agrees;" in str(e.value)
    assert "but checkpoints with Meta's Llama names hold q and k rows for 'interleaved'" in str(e.value)
    result = check_torch_model(MetaStyleLlama(ModelArgs(), bug="half_rope"), llama_cfg(d_ff=48))   # as what it is
    assert result.cfg.rope_style == "half" and result.float32_from is None


def test_a_bug_in_the_second_llama_block_is_named_there():
    model = MetaStyleLlama(ModelArgs(), bug="no_mask", bug_layer=1)
    assert divergence(model) == "first divergence: layers.1.attention output (layers.0.feed_forward, layers.1.attention_norm agree)"
    with pytest.raises(ReferenceMismatch, match=r"rope_style: the oracle agrees with neither style .* checked as "
                                                r"'interleaved', with which more hooked values agree"):
        check_torch_model(model)


def test_llama_settings_the_oracle_does_not_compute_are_refused_in_one_line():
    with pytest.raises(UsageError, match=r"^model.config asks for RoPE scaling .*'linear'.*check a model without rope scaling$"):
        check_torch_model(hf_llama(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}))
    with pytest.raises(UsageError, match=r"do not fit GPTConfig.*bias=True.*: missing \['h.0.mlp.c_fc.bias'"):
        check_torch_model(hf_llama(attention_bias=True))    # biases on q, k, v, o but not the MLP: no tinyref form


def test_the_llama_example_checks_both_llamas_and_names_the_tiled_kv_heads(capsys):
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / "examples" / "check_llama.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert e.value.code == 0, out
    assert out.startswith("agrees with the tinyref oracle to float32 precision only") and \
        "rope_style='half' detected" in out and "rope_style='interleaved' detected" in out
    assert "first divergence: layers.0.attention output (layers.0.attention_norm agrees)" in out


def test_a_position_offset_shared_by_queries_and_keys_is_invisible():
    """RoPE scores depend only on the distance between positions: a model started at position 3 computes the
    same logits (what the docs say a check cannot see), unlike queries one position ahead of the keys."""
    result = check_torch_model(MetaStyleLlama(ModelArgs()), forward=lambda model, idx: model(idx, start_pos=3),
                               cast_tol=None)
    assert result.cfg.rope_style == "interleaved" and result.float32_from is None
