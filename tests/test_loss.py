"""Cross-entropy: the oracle against finite differences and a direct definition; tinyref against the oracle."""
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from tinygrad import Tensor, dtypes

import oracle
from helpers import assert_no_mismatch, finite_difference_mismatches, tinygrad_examples
from strategies import seeds
from tinyref import cross_entropy
from tinyref.verify.tolerances import FLOAT32, FLOAT32_GRAD, Mismatch, compare


# --8<-- [start:test_fd]
@given(B=st.integers(1, 3), T=st.integers(1, 3), V=st.integers(2, 7), seed=seeds)
def test_oracle_cross_entropy_backward_matches_finite_differences(B, T, V, seed):
    rng = np.random.default_rng(seed)
    logits, targets = rng.standard_normal((B, T, V)) * 3, rng.integers(0, V, (B, T))
    _, cache = oracle.cross_entropy_forward(logits, targets)
    dlogits = oracle.cross_entropy_backward(cache)
    assert_no_mismatch(finite_difference_mismatches(lambda: oracle.cross_entropy_forward(logits, targets)[0],
                                                    {"logits": logits}, {"logits": dlogits}))
# --8<-- [end:test_fd]


# --8<-- [start:test_definition]
def test_oracle_cross_entropy_equals_the_definition():
    """-mean log softmax(target), written out with math.exp/math.log on one small case."""
    logits = np.array([[[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]])
    targets = np.array([[1, 2]])
    expected = -(math.log(math.exp(2) / (math.exp(1) + math.exp(2) + math.exp(0.5)))
                 + math.log(math.exp(3) / (1 + math.exp(-1) + math.exp(3)))) / 2
    loss, _ = oracle.cross_entropy_forward(logits, targets)
    assert abs(loss - expected) < 1e-12
# --8<-- [end:test_definition]


def test_oracle_cross_entropy_is_stable_for_huge_logits():
    loss, cache = oracle.cross_entropy_forward(np.array([[[1000.0, 0.0]]]), np.array([[1]]))
    assert loss == 1000.0 and np.isfinite(oracle.cross_entropy_backward(cache)).all()


# --8<-- [start:test_agreement]
def cross_entropy_mismatches(logits, targets, forward=oracle.cross_entropy_forward,
                             backward=oracle.cross_entropy_backward) -> list[Mismatch]:
    """tinyref's loss and dlogits (float32) against the oracle pair (replaceable, for the negative control)."""
    lt = Tensor(logits.astype(np.float32))
    loss = cross_entropy(lt, Tensor(targets, dtype=dtypes.int32))
    loss.backward()
    ref, cache = forward(logits, targets)
    found = [compare("loss", loss.item(), ref, FLOAT32), compare("dlogits", lt.grad.numpy(), backward(cache), FLOAT32_GRAD)]
    return [m for m in found if m]


def cross_entropy_case(seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((2, 8, 11)) * 3, rng.integers(0, 11, (2, 8))


@tinygrad_examples
@given(seed=seeds)
def test_tinyref_cross_entropy_matches_oracle(seed):
    assert_no_mismatch(cross_entropy_mismatches(*cross_entropy_case(seed)))
# --8<-- [end:test_agreement]


def test_the_oracle_loss_can_work_over_its_own_arrays():
    """``out=logits`` and ``in_place=True`` (the GPT-2- and SmolLM-size benchmarks' use) give the default's loss and
    gradient bit for bit, the gradient in the array that held the logits."""
    rng = np.random.default_rng(0)
    logits, targets = rng.standard_normal((2, 3, 5)) * 4, rng.integers(0, 5, (2, 3))
    loss, cache = oracle.cross_entropy_forward(logits, targets)
    expected = oracle.cross_entropy_backward(cache)
    given_logits = logits.copy()
    loss_over, cache_over = oracle.cross_entropy_forward(given_logits, targets, out=given_logits)
    dlogits = oracle.cross_entropy_backward(cache_over, in_place=True)
    assert loss_over == loss and np.array_equal(dlogits, expected)
    assert np.shares_memory(dlogits, given_logits)
