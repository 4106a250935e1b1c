"""tinyref.testing, used as an engineer would: correct implementations of the whole model, the loss
and every component pass; planted bugs fail with a report naming the tensor, the worst element's
index, both values and the tolerance; the Hypothesis strategies drive a user's own @given test; the
examples/ scripts run and print what they promise. NumPy and PyTorch only (no tinygrad kernels)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings

import oracle
from tinyref import GPTConfig, UsageError
from tinyref.verify.hf import HF_PREFIX, transpose_conv1d
from tinyref.testing import (COMPONENTS, REFERENCE_CASES, ReferenceMismatch, assert_component_matches,
                             assert_loss_matches, assert_matches_reference, reference_inputs)
from tinyref.testing import strategies as user_strategies
from tinyref.verify.tolerances import FLOAT32, FLOAT32_GRAD, FLOAT64

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))
import verify_torch_gpt as torch_gpt  # noqa: E402  (the example's PyTorch GPT is the "user's model" here)

torch.set_num_threads(1)
REPORT_LINE = re.compile(r"^  (?P<name>.+?): worst element at index \((?P<index>[\d, ]*)\): actual=(?P<actual>\S+) "
                         r"expected=(?P<expected>\S+) \|diff\|=(?P<diff>\S+) > allowed (?P<allowed>\S+) "
                         r"\(rtol=(?P<rtol>\S+), atol=(?P<atol>\S+) x scale", re.M)


def report(error: ReferenceMismatch) -> dict:
    """{tensor name: (index, actual, expected, allowed, rtol)} from a mismatch report."""
    return {m["name"]: (tuple(int(i) for i in m["index"].split(",") if i.strip()), float(m["actual"]),
                        float(m["expected"]), float(m["allowed"]), float(m["rtol"]))
            for m in REPORT_LINE.finditer(str(error))}


def assert_reported(error: ReferenceMismatch, names: set, tol=FLOAT32) -> dict:
    """Every name in ``names`` has a report line whose difference exceeds the stated allowance."""
    found = report(error)
    assert names <= set(found), f"expected lines for {sorted(names)}, got:\n{error}"
    for name, (_, actual, expected, allowed, rtol) in found.items():
        assert abs(actual - expected) > allowed and rtol in (tol.rtol, FLOAT32_GRAD.rtol), f"{name}: {error}"
    return found


# --- correct implementations ------------------------------------------------------------------

def oracle_model(dtype_cast=None):
    """The oracle itself as a user's model: it computes in the dtype it is given."""
    def forward(idx, params, cfg):
        return oracle.gpt_forward(idx, params, cfg)[0]

    def backward(idx, params, dlogits, cfg):
        return oracle.gpt_backward(dlogits, oracle.gpt_forward(idx, params, cfg)[1])
    return forward, backward


def oracle_component(name):
    component = COMPONENTS[name]

    def forward(x, p, cfg):
        return component.forward(x, p, *component.args(cfg))[0]

    def backward(x, p, dout, cfg):
        return component.backward(dout, component.forward(x, p, *component.args(cfg))[1])
    return forward, backward


class Embeddings(nn.Module):
    """Token plus position embeddings, the PyTorch way (keys wte.weight, wpe.weight)."""

    def __init__(self, cfg, offset: int = 0):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.context_length, cfg.d_model)
        self.offset = offset      # a planted bug when non-zero: positions shifted

    def forward(self, idx):
        T = idx.size(1)
        return self.wte(idx) + self.wpe(torch.arange(self.offset, self.offset + T) % self.wpe.num_embeddings)


TORCH_COMPONENTS = {"embedding": Embeddings, "gelu": lambda cfg: nn.GELU(approximate="tanh"),
                    **torch_gpt.COMPONENT_MODULES}


def numpy_attention(x, p, cfg, scale_power=0.5, causal=True):
    """A float32 NumPy attention written differently from the oracle: one head at a time."""
    B, T, C = x.shape
    hd = C // cfg.n_heads
    qkv = x @ p["c_attn.weight"].T + p["c_attn.bias"]                    # (B, T, 3C)
    heads = []
    for h in range(cfg.n_heads):
        q, k, v = (qkv[..., part * C + h * hd: part * C + (h + 1) * hd] for part in range(3))
        scores = q @ k.transpose(0, 2, 1) / np.float32(hd) ** scale_power  # (B, T, T)
        if causal:
            scores = np.where(np.tri(T, dtype=bool), scores, -np.inf)
        w = np.exp(scores - scores.max(-1, keepdims=True))
        heads.append((w / w.sum(-1, keepdims=True)) @ v)
    return np.concatenate(heads, -1) @ p["c_proj.weight"].T + p["c_proj.bias"]


def test_the_oracle_itself_passes_exactly_in_float64_and_within_tolerance_in_float32():
    exact = assert_matches_reference(*oracle_model(), dtype=np.float64, tol=FLOAT64, grad_tol=FLOAT64)
    assert set(exact) == {"logits"} | {f"grad {k}" for case in REFERENCE_CASES.values()
                                       for k in oracle.param_shapes(case.config)}
    assert max(exact.values()) == 0.0
    rounded = assert_matches_reference(*oracle_model())        # float32 arrays: the oracle computes in float32
    assert 0 < max(rounded.values()) < FLOAT32_GRAD.atol
    assert assert_loss_matches(lambda l, t: oracle.cross_entropy_forward(l, t)[0],
                               lambda l, t: oracle.cross_entropy_backward(oracle.cross_entropy_forward(l, t)[1]))


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_every_component_passes_as_the_oracle_in_float32_and_as_pytorch(name):
    assert sorted(TORCH_COMPONENTS) == sorted(COMPONENTS)
    for forward, backward in (oracle_component(name), torch_gpt.numpy_functions(TORCH_COMPONENTS[name])):
        errors = assert_component_matches(name, forward, backward)
        assert f"{name} out" in errors and max(errors.values()) < FLOAT32_GRAD.atol
    float64 = assert_component_matches(name, *torch_gpt.numpy_functions(TORCH_COMPONENTS[name]), dtype=np.float64,
                                       tol=FLOAT64, grad_tol=FLOAT64)
    assert max(float64.values()) < 1e-13


LLAMA_COMPONENTS = ("rmsnorm", "rope", "attention", "gelu", "feedforward", "block")


@pytest.mark.parametrize("name", LLAMA_COMPONENTS)
def test_every_llama_component_passes_as_pytorch(name):
    """The Llama preset's components (rotary grouped-query attention, RMSNorm, SwiGLU) in float64, from the
    example's PyTorch model: HF's rotate_half, nn.RMSNorm, nn.SiLU, repeat_interleave."""
    from helpers import LLAMA
    build = (lambda cfg: nn.SiLU()) if name == "gelu" else TORCH_COMPONENTS[name]   # "gelu": the activation, SiLU here
    errors = assert_component_matches(name, *torch_gpt.numpy_functions(build), LLAMA, dtype=np.float64,
                                      tol=FLOAT64, grad_tol=FLOAT64)
    assert f"{name} out" in errors and max(errors.values()) < FLOAT64.atol


def test_the_component_check_catches_a_llama_attention_with_the_other_rope_style(monkeypatch):
    from helpers import LLAMA
    real = torch_gpt.rotate
    monkeypatch.setattr(torch_gpt, "rotate", lambda x, theta, style: real(x, theta, "interleaved"))
    with pytest.raises(ReferenceMismatch, match="attention out"):
        assert_component_matches("attention", *torch_gpt.numpy_functions(torch_gpt.CausalSelfAttention), LLAMA,
                                 dtype=np.float64)


def test_the_pytorch_gpt_passes_whole_model_loss_and_components_in_float32():
    errors = torch_gpt.verify("float32")
    assert set(errors) == {"whole model", "loss", "layernorm", "rmsnorm", "rope", "attention", "feedforward", "block"}
    assert 0 < max(max(e.values()) for e in errors.values()) < FLOAT32_GRAD.atol


def test_a_numpy_attention_written_differently_passes():
    errors = assert_component_matches("attention", numpy_attention)
    assert errors["attention out"] < FLOAT32.atol


# --- planted bugs: each fails, and the report says where --------------------------------------

def test_a_missing_causal_mask_is_reported_with_the_real_index_and_values(monkeypatch):
    monkeypatch.setattr(torch_gpt.CausalSelfAttention, "causal_mask", lambda self, scores: scores)
    forward, backward = torch_gpt.numpy_functions(torch_gpt.GPT)
    with pytest.raises(ReferenceMismatch) as e:
        assert_matches_reference(forward, backward=lambda i, p, d, c: backward(i, p, d, c)[1])
    found = assert_reported(e.value, {"logits", "grad h.0.attn.c_attn.weight", "grad wte.weight"})
    assert "case 'small'" in str(e.value) and "reference_inputs(cfg, 2, 8, seed=0)" in str(e.value)
    # the printed values are the real ones: rebuild the inputs the report names and look them up
    cfg = REFERENCE_CASES["small"].config
    params, idx, _ = reference_inputs(cfg, 2, 8, seed=0)
    index, actual, expected, _, _ = found["logits"]
    ours = forward(idx, {k: v.astype(np.float32) for k, v in params.items()}, cfg)
    assert actual == pytest.approx(float(ours[index]), rel=1e-8)
    assert expected == pytest.approx(float(oracle.gpt_forward(idx, params, cfg)[0][index]), rel=1e-8)
    assert index[1] >= 1, "position 0 sees no future token, so the first wrong logit is at position >= 1"


@pytest.mark.parametrize("bug, name", [
    (dict(scale_power=0.0), "no 1/sqrt(hd)"),
    (dict(scale_power=1.0), "1/hd instead of 1/sqrt(hd)"),
    (dict(causal=False), "no causal mask"),
])
def test_attention_bugs_are_reported(bug, name):
    with pytest.raises(ReferenceMismatch) as e:
        assert_component_matches("attention", lambda x, p, cfg: numpy_attention(x, p, cfg, **bug))
    assert_reported(e.value, {"attention out"})


class ReluMLP(torch_gpt.MLP):
    def forward(self, x):
        return self.c_proj(torch.relu(self.c_fc(x)))


class PostNormBlock(torch_gpt.Block):
    """The original Transformer's order: normalise after the residual sum."""

    def forward(self, x):
        x = self.ln_1(x + self.attn(x))
        return self.ln_2(x + self.mlp(x))


@pytest.mark.parametrize("name, build, tensors", [
    ("layernorm", lambda cfg: nn.LayerNorm(cfg.d_model, eps=1e-3), {"layernorm out", "layernorm dx"}),
    ("gelu", lambda cfg: nn.GELU(), {"gelu out", "gelu dx"}),                        # exact erf, not tanh
    ("feedforward", ReluMLP, {"feedforward out", "feedforward dc_fc.weight"}),
    ("embedding", lambda cfg: Embeddings(cfg, offset=1), {"embedding out", "embedding dwpe.weight"}),
    ("block", PostNormBlock, {"block out", "block dx", "block dln_1.weight"}),
])
def test_component_bugs_are_reported(name, build, tensors):
    with pytest.raises(ReferenceMismatch) as e:
        assert_component_matches(name, *torch_gpt.numpy_functions(build))
    assert_reported(e.value, tensors)


def test_loss_bugs_are_reported():
    loss, dlogits = torch_gpt.loss_functions()
    B, T = 2, 8
    with pytest.raises(ReferenceMismatch) as e:
        assert_loss_matches(lambda l, t: loss(l, t) * B * T, dlogits)                 # sum, not mean
    assert set(assert_reported(e.value, {"loss"})) == {"loss"}
    with pytest.raises(ReferenceMismatch) as e:
        assert_loss_matches(loss, lambda l, t: dlogits(l, t) * B * T)                 # gradient of the sum
    assert set(assert_reported(e.value, {"dlogits"})) == {"dlogits"}


def test_gradient_bugs_are_reported_per_tensor():
    forward, backward = oracle_model()

    def missing_and_zeroed(idx, params, dlogits, cfg):
        grads = backward(idx, params, dlogits, cfg)
        del grads["ln_f.bias"]
        return {**grads, "h.0.mlp.c_fc.weight": np.zeros_like(grads["h.0.mlp.c_fc.weight"])}

    with pytest.raises(ReferenceMismatch) as e:
        assert_matches_reference(forward, backward=missing_and_zeroed)
    assert "ln_f.bias: missing from your result" in str(e.value)
    assert set(assert_reported(e.value, {"grad h.0.mlp.c_fc.weight"})) == {"grad h.0.mlp.c_fc.weight"}
    assert str(e.value).startswith("2 of 29 tensors disagree")


# --- Hugging Face layout: Conv1D weights (in, out) --------------------------------------------

def from_hf_layout(hf_params, cfg, transpose_square_c_proj=True):
    """A user's HF -> tinyref conversion; the bug forgets the square attn.c_proj (its shape fits either way)."""
    params = {k.removeprefix(HF_PREFIX): v for k, v in hf_params.items()}
    if cfg.tie_embeddings:
        del params["lm_head.weight"]
    fixed = transpose_conv1d(params)
    if not transpose_square_c_proj:
        fixed.update({k: v for k, v in params.items() if k.endswith("attn.c_proj.weight")})
    return fixed


def test_hf_layout_passes_when_converted_and_fails_without_the_transpose():
    forward, backward = oracle_model()

    def hf_forward(idx, hf_params, cfg, **bug):
        return forward(idx, from_hf_layout(hf_params, cfg, **bug), cfg)

    def hf_backward(idx, hf_params, dlogits, cfg):        # gradients back in HF layout, keyed like hf_params
        grads = backward(idx, from_hf_layout(hf_params, cfg), dlogits, cfg)
        return {(k if k == "lm_head.weight" else HF_PREFIX + k): v for k, v in transpose_conv1d(grads).items()}

    assert assert_matches_reference(hf_forward, backward=hf_backward, layout="hf")
    with pytest.raises(ReferenceMismatch) as e:
        assert_matches_reference(lambda i, p, c: hf_forward(i, p, c, transpose_square_c_proj=False), layout="hf")
    assert_reported(e.value, {"logits"})
    with pytest.raises(ReferenceMismatch, match=r"grad h\.0\.attn\.c_attn\.weight \(shape \(16, 48\) != expected "
                                                r"\(48, 16\)\)"):
        assert_matches_reference(hf_forward, backward=lambda i, p, d, c: {   # forgot to transpose the gradients back
            HF_PREFIX + k: v for k, v in backward(i, from_hf_layout(p, c), d, c).items()}, layout="hf")


def test_usage_errors_are_one_line_and_name_the_fix():
    forward, _ = oracle_model()
    with pytest.raises(UsageError, match="unknown component 'softmaxx': choose one of embedding, layernorm"):
        assert_component_matches("softmaxx", forward)
    with pytest.raises(UsageError, match="layout='torch': use 'tinyref'"):
        assert_matches_reference(forward, layout="torch")
    with pytest.raises(UsageError, match="backward must return a dict of gradients keyed like params, got tuple"):
        assert_matches_reference(forward, backward=lambda i, p, d, c: (1, 2))


# --- the Hypothesis strategies, in a user's own @given test -----------------------------------

def users_property():
    """What a user writes: their model agrees with the reference on every drawn config and batch."""
    forward, backward = torch_gpt.numpy_functions(torch_gpt.GPT)

    @settings(max_examples=15)
    @given(case=user_strategies.config_and_tokens())
    def test_my_gpt(case):
        cfg, idx, seed = case
        assert isinstance(cfg, GPTConfig) and idx.dtype == np.int64
        assert 0 <= idx.min() and idx.max() < cfg.vocab_size and idx.shape[1] <= cfg.context_length
        assert_matches_reference(forward, lambda i, p, d, c: backward(i, p, d, c)[1], cfg,
                                 batch=idx.shape[0], seq_len=idx.shape[1], seeds=(seed,))
    return test_my_gpt


def test_the_strategies_drive_a_users_given_test():
    users_property()()


def test_the_users_given_test_finds_and_shrinks_a_missing_mask(monkeypatch):
    monkeypatch.setattr(torch_gpt.CausalSelfAttention, "causal_mask", lambda self, scores: scores)
    with pytest.raises(ReferenceMismatch) as e:
        users_property()()
    # shrunk towards the smallest case that shows the bug: two positions, one layer, one head
    assert re.search(r"n_heads=1, n_layers=1, .*batch 1, seq_len 2", str(e.value)), str(e.value)


# --- the examples, run as a user runs them ----------------------------------------------------

@pytest.fixture(scope="module")
def example_runs():
    """Both examples at once (each imports torch for ~3 s)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = {name: subprocess.Popen([sys.executable, str(EXAMPLES / f"{name}.py")], cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name in ("verify_torch_gpt", "buggy_torch_gpt")}
    return {name: (p.communicate(timeout=120)[0], p.returncode) for name, p in procs.items()}


def test_the_verify_example_passes_in_float64(example_runs):
    out, status = example_runs["verify_torch_gpt"]
    assert status == 0, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("PASS: the PyTorch GPT matches tinyref's oracle (float64): forward and backward, 8 checks")
    worst = float(re.search(r"worst error (\S+) of scale", last)[1])
    assert 0 <= worst < FLOAT64.atol


def test_the_buggy_example_fails_and_names_the_tensors(example_runs):
    out, status = example_runs["buggy_torch_gpt"]
    assert status == 1, out
    assert out.startswith("FAIL: the PyTorch GPT disagrees with tinyref's oracle (float64):")
    failed_checks = set(re.findall(r"^(\w[\w ]*): \d+ of \d+ tensors disagree", out, re.M))
    assert failed_checks == {"whole model", "attention", "block"}, out
    for name in ("logits", "grad h.0.attn.c_attn.weight", "attention out", "attention dx", "block out"):
        assert re.search(rf"^  {re.escape(name)}: worst element at index \(", out, re.M), name


# --- tolerances follow the dtype; variant configs -----------------------------------------------

def scaled_oracle(factor: float, dtype=None):
    """The oracle's forward with its logits multiplied by ``factor`` (1 + tiny: a planted relative error),
    computed in ``dtype`` when given (NumPy's own float16 arithmetic, say)."""
    def forward(idx, params, cfg):
        if dtype is not None:
            params = {k: v.astype(dtype) for k, v in params.items()}
        return oracle.gpt_forward(idx, params, cfg)[0] * factor
    return forward


def test_float64_checks_use_float64_tolerances_by_default():
    """dtype=np.float64 without tol: FLOAT64 applies, so a forward off by 1e-9 relative fails (FLOAT32 let it pass)."""
    assert max(assert_matches_reference(*oracle_model(), dtype=np.float64).values()) == 0.0
    with pytest.raises(ReferenceMismatch) as e:
        assert_matches_reference(scaled_oracle(1 + 1e-9), dtype=np.float64)
    assert "logits" in report(e.value) and f"rtol={FLOAT64.rtol:g}" in str(e.value)
    assert assert_matches_reference(scaled_oracle(1 + 1e-9), dtype=np.float64, tol=FLOAT32)   # what it used to accept


@pytest.mark.parametrize("dtype, off", [(np.float16, 1.05), ("bfloat16", 1.5)])
def test_reduced_precision_checks_use_their_own_tolerances(dtype, off):
    """float16 (NumPy computing in float16) and bfloat16 (float32 results rounded to bfloat16) pass the default,
    dtype-derived tolerance (2.1e-2 and 0.17 of scale here); logits 5% (float16) or 50% (bfloat16) off fail it,
    and the report names that tolerance."""
    from tinyref.verify.tolerances import reduced_precision, round_to
    name = "bfloat16" if dtype == "bfloat16" else "float16"

    def in_dtype(idx, params, cfg):
        if name == "float16":
            return scaled_oracle(1.0, np.float16)(idx, params, cfg)
        assert all(np.array_equal(round_to(v, "bfloat16"), v) for v in params.values()), "weights at bfloat16 values"
        return round_to(scaled_oracle(1.0)(idx, params, cfg), "bfloat16")
    errors = assert_matches_reference(in_dtype, dtype=dtype)
    assert 0 < errors["logits"] < reduced_precision(name, REFERENCE_CASES["small"].config)[0].atol
    with pytest.raises(ReferenceMismatch, match=rf"{name}: u\*sqrt"):
        assert_matches_reference(lambda i, p, c: in_dtype(i, p, c) * off, dtype=dtype)


def test_component_and_loss_checks_follow_the_dtype_too():
    forward, backward = oracle_component("layernorm")
    assert max(assert_component_matches("layernorm", forward, backward, dtype=np.float64).values()) == 0.0
    with pytest.raises(ReferenceMismatch):
        assert_component_matches("layernorm", lambda x, p, c: forward(x, p, c) * (1 + 1e-9), dtype=np.float64)
    loss = lambda l, t: oracle.cross_entropy_forward(l, t)[0]  # noqa: E731
    assert assert_loss_matches(loss, dtype=np.float64) == {"loss": 0.0}
    with pytest.raises(ReferenceMismatch):
        assert_loss_matches(lambda l, t: loss(l, t) * (1 + 1e-9), dtype=np.float64)
    with pytest.raises(UsageError, match="dtype=.*use np.float64, np.float32, np.float16 or 'bfloat16'"):
        assert_loss_matches(loss, dtype=np.int32)


NANOGPT_CFG = GPTConfig(vocab_size=11, context_length=8, d_model=16, n_heads=4, n_layers=2, d_ff=24,
                        activation="gelu", bias=False)


def test_variant_configs_pass_as_the_oracle_and_as_pytorch():
    """nanoGPT's variant (exact GELU, no biases): the oracle and the example's PyTorch GPT, which follows
    cfg.activation and cfg.bias as nanoGPT does, both pass the whole-model and component checks."""
    torch_forward, torch_backward = torch_gpt.numpy_functions(torch_gpt.GPT)
    for forward, backward in (oracle_model(), (torch_forward, lambda i, p, d, c: torch_backward(i, p, d, c)[1])):
        errors = assert_matches_reference(forward, backward, NANOGPT_CFG, dtype=np.float64)
        assert not [k for k in errors if k.endswith(".bias")] and max(errors.values()) < FLOAT64.atol
    for name in ("gelu", "layernorm", "feedforward", "block"):
        assert_component_matches(name, *oracle_component(name), NANOGPT_CFG, dtype=np.float64)
        if name != "gelu":
            assert_component_matches(name, *torch_gpt.numpy_functions(TORCH_COMPONENTS[name]), NANOGPT_CFG,
                                     dtype=np.float64)


@pytest.mark.parametrize("cfg", [NANOGPT_CFG, REFERENCE_CASES["small"].config], ids=["nanogpt", "gpt2"])
def test_each_variants_check_fails_on_the_other_variants_model(cfg):
    """Negative control: the PyTorch GPT built as the other activation fails on the logits; built as the
    other bias setting (biases the check does not give it, or dropped), it fails too."""
    from dataclasses import replace
    other_act = replace(cfg, activation="gelu_tanh" if cfg.activation == "gelu" else "gelu")
    forward, _ = torch_gpt.numpy_functions(lambda c: torch_gpt.GPT(other_act))
    with pytest.raises(ReferenceMismatch) as e:
        assert_matches_reference(forward, cfg=cfg, dtype=np.float64)
    assert "logits" in report(e.value)
    with pytest.raises((ReferenceMismatch, RuntimeError)) as e:      # torch refuses a state dict with other keys
        assert_matches_reference(torch_gpt.numpy_functions(lambda c: torch_gpt.GPT(replace(cfg, bias=not cfg.bias)))[0],
                                 cfg=cfg, dtype=np.float64)
    assert "bias" in str(e.value)
