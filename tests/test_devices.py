"""The oracle-agreement checks on every tinygrad backend: forward, causal mask, every gradient, one AdamW step.

Each device runs tinyref.verify.check's case once (``device_result``, shared by all of its tests) and the
tests judge those numbers with the same functions ``tinyref check`` uses. A device this machine
cannot use is skipped with the reason. The negative controls plant errors in copies of the numbers,
so they prove the judging catches them without compiling anything new.
"""
import dataclasses
import os

import numpy as np
import pytest

from conftest import THOROUGH, device_result
from tinyref.verify.check import ADAMW, THOROUGH_CASE, case_for, judge, row_from, run_oracle
from tinyref.verify.tolerances import tolerances_for

REDUCED_PRECISION = ("float16", "bfloat16")


def mismatches(result, prefix: str, actual: dict | None = None) -> list:
    """``judge``'s findings (the check's own verdict) for the quantities whose name starts with ``prefix``."""
    actual = result.actual if actual is None else actual
    expected = {k: v for k, v in result.expected.items() if k.startswith(prefix)}
    assert expected, f"{result.device}: no quantity named {prefix!r}*"
    return judge(result.device, result.dtype, result.case.config, actual, expected)


def causal_violation(result, logits: np.ndarray | None = None) -> str | None:
    """The rows whose later tokens changed must keep every earlier logit bit for bit, and change at ``split``."""
    B, s = result.case.batch, result.inputs.split
    logits = result.actual["logits"] if logits is None else logits
    same, changed = logits[:B], logits[B:]
    if not np.array_equal(same[:, :s], changed[:, :s]):
        b, t, v = np.argwhere(same[:, :s] != changed[:, :s])[0]
        return (f"{result.device} {result.dtype}: causal mask leaks: tokens from position {s} on changed, and the "
                f"logit at batch {b}, position {t}, token {v} moved from {same[b, t, v]!r} to {changed[b, t, v]!r}")
    if np.array_equal(same[:, s], changed[:, s]):
        return f"{result.device} {result.dtype}: changing the token at position {s} did not change its logits"
    return None


def report(found: list) -> str:
    return "\n".join(map(str, found))


# ---- float32 on every selected device ------------------------------------------------------------

def test_logits_and_loss_agree_with_oracle(backend):
    result = device_result(backend)
    assert not (found := mismatches(result, "logits") + mismatches(result, "loss")), report(found)


def test_every_parameter_gradient_agrees_with_oracle(backend):
    result = device_result(backend)
    grads = {k for k in result.actual if k.startswith("grad ")}
    assert grads == {k for k in result.expected if k.startswith("grad ")}, f"{backend}: gradients missing"
    assert not (found := mismatches(result, "grad ")), report(found)


def test_adamw_step_agrees_with_oracle(backend):
    result = device_result(backend)
    assert not (found := mismatches(result, "adamw ")), report(found)


def test_earlier_logits_are_bit_identical_when_later_tokens_change(backend):
    assert causal_violation(device_result(backend)) is None


def test_check_row_agrees(backend):
    """``tinyref check``'s verdict on the same numbers (what the CLI prints for this device)."""
    row = row_from(device_result(backend))
    assert row.ok and row.causal_ok and row.reason is None, row.reason


def test_llama_agrees_with_oracle(backend):
    """The Llama family in the device's case: rotary positions, RMSNorm, SwiGLU, grouped-query attention (4 query
    heads on 2 kv heads), no biases, an untied head: logits, loss, every gradient, one AdamW step, causality."""
    result = device_result(backend, case=case_for(backend, "llama"))
    assert not (found := result.mismatches), report(found)
    assert causal_violation(result) is None


@pytest.mark.skipif(not THOROUGH, reason="thorough profile only (HYPOTHESIS_PROFILE=thorough): one more compile per device")
def test_two_layer_case_agrees_with_oracle(backend):
    """The suite's two-layer shape (T = context_length) on every device: one more kernel set each."""
    if backend == "PYTHON":
        pytest.skip("the emulator takes minutes at this size; it runs the one-layer case")
    result = device_result(backend, case=THOROUGH_CASE)
    assert not (found := result.mismatches), report(found)
    assert causal_violation(result) is None


# ---- float16 and bfloat16 where the device has them ----------------------------------------------

@pytest.mark.parametrize("dtype", REDUCED_PRECISION)
def test_reduced_precision_agrees_with_float64_oracle(dtype_backend, dtype):
    """Logits, loss and every gradient within tolerances.py's u * sqrt(n) * sqrt(D) estimate; causal exactly."""
    result = device_result(dtype_backend, dtype)
    assert not (found := mismatches(result, "")), report(found)
    assert causal_violation(result) is None


@pytest.mark.parametrize("dtype", REDUCED_PRECISION)
def test_llama_reduced_precision_agrees_with_float64_oracle(dtype_backend, dtype):
    result = device_result(dtype_backend, dtype, case=case_for(dtype_backend, "llama"))
    assert not (found := mismatches(result, "")), report(found)
    assert causal_violation(result) is None


# ---- negative controls: the judging catches planted errors (no new kernels) ----------------------

@pytest.fixture(scope="module")
def reference(default_backend):
    return device_result(default_backend)


def planted(result, key: str, index: tuple, times_tolerance: float = 3.0):
    """A copy of ``result.actual`` with one element of ``key`` moved by a few times its allowed error."""
    forward_tol, grad_tol = tolerances_for(result.dtype, result.case.config)
    tol = grad_tol if key.startswith("grad") else forward_tol
    expected = result.expected[key]
    allowed = tol.atol * np.abs(expected).max() + tol.rtol * abs(expected[index])
    actual = {k: v.copy() for k, v in result.actual.items()}
    actual[key][index] += times_tolerance * allowed
    return actual


@pytest.mark.parametrize("key, index", [("logits", (1, 2, 3)), ("loss", ()),
                                        ("grad h.0.attn.c_attn.weight", (37, 5)), ("grad wte.weight", (4, 9))],
                         ids=["logit", "loss", "grad c_attn", "grad wte"])
def test_control_one_wrong_element_is_caught_and_named(reference, key, index):
    actual = planted(reference, key, index)
    found = mismatches(reference, key, actual)
    assert len(found) == 1, report(found)
    message = str(found[0])
    for part in (reference.device, key, f"index {index}", f"actual={actual[key][index]:.9g}",
                 f"expected={reference.expected[key][index]:.9g}"):
        assert part in message, f"{part!r} missing from: {message}"
    row = row_from(dataclasses.replace(reference, actual=actual, mismatches=found))
    assert row.ok is False and key in row.reason


def test_control_an_element_just_inside_tolerance_passes(reference):
    """The other side of the control: the same planting at half the allowance is not reported."""
    actual = planted(reference, "grad h.0.attn.c_attn.weight", (37, 5), times_tolerance=0.5)
    assert not mismatches(reference, "grad h.0.attn.c_attn.weight", actual)


def test_control_leaking_mask_is_caught(reference):
    """A leak as small as one float32 ulp at position 0 is caught, with the place named."""
    B = reference.case.batch
    logits = reference.actual["logits"].copy()
    logits[B, 0, 1] = np.nextafter(np.float32(logits[B, 0, 1]), np.float32(np.inf))
    message = causal_violation(reference, logits)
    assert message and "batch 0, position 0, token 1" in message and reference.device in message
    row = row_from(dataclasses.replace(reference, actual={**reference.actual, "logits": logits}))
    assert row.causal_ok is False and row.ok is False and "causal mask leaks" in row.reason


def test_control_model_ignoring_later_tokens_is_caught(reference):
    """Causal but blind: identical logits everywhere for both halves must not pass either."""
    B = reference.case.batch
    logits = np.concatenate([reference.actual["logits"][:B]] * 2)
    assert "did not change" in causal_violation(reference, logits)


def test_control_adamw_decaying_every_parameter_is_caught(reference):
    """A realistic optimizer bug, weight decay on biases and LayerNorm gains too, fails the AdamW check."""
    every_key = [k for k in reference.inputs.params]
    wrong = run_oracle(reference.case, reference.inputs, True, every_key)
    found = judge(reference.device, "float32", reference.case.config, reference.actual,
                  {k: v for k, v in wrong.items() if k.startswith("adamw ")})
    assert ADAMW["weight_decay"] > 0
    names = {m.name.split(" ", 2)[-1] for m in found}
    assert any(n.endswith(".bias") for n in names) and any("ln_" in n for n in names), report(found)
    assert not any(n.endswith("c_attn.weight") for n in names), "decayed matrices must still agree"


@pytest.mark.parametrize("dtype", REDUCED_PRECISION)
def test_control_reduced_precision_wrong_gradient_is_caught(default_backend, dtype):
    """The wider 16-bit allowances still catch an element moved by three times its allowance."""
    result = device_result(default_backend, dtype)
    key = "grad h.0.attn.c_attn.weight"
    found = mismatches(result, key, planted(result, key, (37, 5)))
    assert [(m.name, m.index) for m in found] == [(f"{default_backend} {dtype} {key}", (37, 5))], report(found)


def test_compile_workers_are_kept_for_the_run_unless_the_user_says_otherwise(monkeypatch):
    from tinyref.runtime import programcache
    monkeypatch.delenv("BEAM_MAX_TASKS_PER_CHILD", raising=False)
    programcache.keep_compile_workers()
    assert int(os.environ["BEAM_MAX_TASKS_PER_CHILD"]) >= 10**6   # never replaced within a run
    monkeypatch.setenv("BEAM_MAX_TASKS_PER_CHILD", "4")
    programcache.keep_compile_workers()
    assert os.environ["BEAM_MAX_TASKS_PER_CHILD"] == "4"          # a value the user set is kept
