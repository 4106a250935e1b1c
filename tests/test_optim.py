"""The optimizer's pieces against the oracle: the learning-rate schedule, global-norm clipping and
the gradient accumulation identity (AdamW's update itself is checked step by step in test_train.py
and test_model.py, where the jitted training step runs it)."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import oracle
from helpers import TIED, TIED_BT, as_namespace, assert_no_mismatch, oracle_forward_backward, random_inputs
from tinyref.optim import lr_at
from tinyref.verify.tolerances import FLOAT64, FLOAT64_REARRANGED, LR_SCHEDULE_ATOL, LR_SCHEDULE_RTOL, compare

K = 2                                   # micro-batches in the accumulation identity


# --- the schedule (pure Python on both sides: many examples) --------------------------------------

schedules = st.fixed_dictionaries(dict(
    step=st.integers(0, 300), lr=st.floats(1e-6, 1.0), warmup_steps=st.integers(0, 100),
    total_steps=st.integers(1, 300), schedule=st.sampled_from(["cosine", "constant"]), min_lr=st.floats(0.0, 1e-6)))


def schedule_mismatch(impl, case) -> str | None:
    want = oracle.lr_at(**case)
    got = impl(**case)
    return None if math.isclose(got, want, rel_tol=LR_SCHEDULE_RTOL, abs_tol=LR_SCHEDULE_ATOL) else f"{case}: {got!r} != oracle {want!r}"


@given(case=schedules)
def test_schedule_matches_oracle(case):
    assert schedule_mismatch(lr_at, case) is None


def warmup_off_by_one(step, lr, warmup_steps=0, total_steps=1, schedule="constant", min_lr=0.0):
    return lr * step / warmup_steps if step < warmup_steps else lr_at(step, lr, warmup_steps, total_steps, schedule, min_lr)


def cosine_to_zero(step, lr, warmup_steps=0, total_steps=1, schedule="constant", min_lr=0.0):
    return lr_at(step, lr, warmup_steps, total_steps, schedule, 0.0)


@pytest.mark.parametrize("mutant", [warmup_off_by_one, cosine_to_zero])
def test_schedule_check_catches_planted_bugs(mutant):
    cases = [dict(step=s, lr=1.0, warmup_steps=4, total_steps=12, schedule="cosine", min_lr=0.1) for s in range(14)]
    assert any(schedule_mismatch(mutant, c) for c in cases), f"{mutant.__name__} went unnoticed"


def test_oracle_schedule_shape():
    lrs = [oracle.lr_at(s, 1.0, 4, 12, "cosine", 0.1) for s in range(14)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0] and lrs[4] == 1.0
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:])) and lrs[12] == lrs[13] == pytest.approx(0.1, rel=LR_SCHEDULE_RTOL)


@given(scale=st.floats(1e-3, 1e3), max_norm=st.floats(1e-3, 1e3), seed=st.integers(0, 2**16))
def test_oracle_clipping_caps_the_norm_and_keeps_the_direction(scale, max_norm, seed):
    rng = np.random.default_rng(seed)
    grads = {"a": rng.normal(size=(3, 4)) * scale, "b": rng.normal(size=5) * scale}
    clipped, norm = oracle.clip_grad_norm(grads, max_norm)
    after = math.sqrt(sum(float((g ** 2).sum()) for g in clipped.values()))
    assert after <= max_norm * (1 + FLOAT64_REARRANGED)
    assert after == pytest.approx(norm * min(1.0, max_norm / (norm + 1e-6)), rel=FLOAT64_REARRANGED)   # 1e-6 guards norm = 0
    ratio = clipped["a"].flat[0] / grads["a"].flat[0]
    for k in grads:
        np.testing.assert_allclose(clipped[k], grads[k] * ratio, rtol=FLOAT64_REARRANGED)


def test_oracle_accumulation_equals_one_big_batch():
    """The identity accumulation relies on: the mean of k micro-batch gradients is the gradient of
    the k-times-larger batch (float64, equal up to rounding)."""
    cfg, rng = as_namespace(TIED), np.random.default_rng(5)
    params = oracle.init_params(cfg, rng, scale=0.3)
    x, y = random_inputs(rng, TIED, K * TIED_BT[0], TIED_BT[1])
    whole = oracle_forward_backward(params, cfg, x, y)[2]
    micro = [oracle_forward_backward(params, cfg, x[i::K], y[i::K])[2] for i in range(K)]
    assert_no_mismatch([m for key, g in oracle.accumulate_gradients(micro).items()
                        if (m := compare(f"accumulated {key}", g, whole[key], FLOAT64))])


ADAMW_HYPERPARAMETERS = ("lr", "b1", "b2", "eps", "weight_decay")


def default_mismatches(ours, reference) -> dict:
    """{name: (ours, reference)} for each AdamW hyper-parameter whose default differs between the two functions."""
    import inspect
    defaults = [{k: p.default for k, p in inspect.signature(f).parameters.items()} for f in (ours, reference)]
    pairs = {k: (defaults[0].get(k), defaults[1].get(k)) for k in ADAMW_HYPERPARAMETERS}
    return {k: pair for k, pair in pairs.items() if pair[0] != pair[1]}


def test_oracle_adamw_defaults_are_tinygrads():
    """oracle.adamw_step called without lr, b1, b2, eps or weight_decay takes the step tinygrad's AdamW takes."""
    from tinygrad.nn.optim import AdamW
    assert default_mismatches(oracle.adamw_step, AdamW) == {}


def test_the_defaults_check_catches_a_changed_default():
    """Negative control: an adamw_step whose b2 default drifted to 0.99 is reported, with both values."""
    from tinygrad.nn.optim import AdamW

    def drifted(params, grads, state=None, lr=1e-3, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.01):
        raise NotImplementedError
    assert default_mismatches(drifted, AdamW) == {"b2": (0.99, 0.999)}
