"""Every tolerance tinyref's agreement checks use, with the reason for each value, and the comparison.

An element passes when ``|actual - expected| <= atol * scale + rtol * |expected|``, where ``scale`` is
the largest ``|expected|`` of the tensor (at least 1e-30). Scaling ``atol`` by the tensor's own size
makes one tolerance fit logits of size 10 and gradients of size 1e-4 alike; the ``rtol`` term covers
elements far above the typical size. NumPy only: importable without tinygrad.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float
    why: str


# float32 unit roundoff is 2^-24 = 6e-8. The test models run every value through <= 6 reductions
# of length <= 128 (LayerNorm, matmuls, softmax) per layer, whose rounding errors grow like
# sqrt(n) * 6e-8 ~ 1e-6 relative; the worst error measured on the test configs was 1.2e-6 of the
# tensor's scale. 1e-4 leaves ~100x headroom for other backends' instruction choices (FMA, fast
# exp/log), yet every planted bug in tests/test_negative_controls.py moves results by > 1e-3.
FLOAT32 = Tolerance(rtol=1e-4, atol=1e-4, why="float32 vs float64: ~1e-6 measured, 100x headroom, bugs move >1e-3")

# Gradients are longer chains (the backward pass doubles the depth) and subtract nearly equal
# terms in LayerNorm and softmax backward, so relative error on small elements is larger: the
# worst measured was 3e-6 of scale. 5e-4 keeps ~100x headroom and stays well under bug-size errors.
FLOAT32_GRAD = Tolerance(rtol=5e-4, atol=5e-4, why="float32 gradients: ~3e-6 measured, 100x headroom")

# Central differences in float64 with step h: truncation error ~h^2 |f'''| and rounding error
# ~eps64 |f| / h. h = 1e-6 balances them at ~1e-10 for O(1) functions; 1e-6 relative leaves
# 10^4 headroom and still catches any wrong backward line (those err by O(1) of the gradient).
FINITE_DIFFERENCE_STEP = 1e-6
FINITE_DIFFERENCE = Tolerance(rtol=1e-6, atol=1e-6, why="float64 central differences, h=1e-6: ~1e-10 error")


@dataclass
class Mismatch:
    """The worst element of a failed comparison, ready to print."""

    name: str
    index: tuple
    actual: float
    expected: float
    allowed: float
    tol: Tolerance

    def __str__(self) -> str:
        return (f"{self.name}: worst element at index {self.index}: actual={self.actual:.9g} "
                f"expected={self.expected:.9g} |diff|={abs(self.actual - self.expected):.3g} > allowed {self.allowed:.3g} "
                f"(rtol={self.tol.rtol:g}, atol={self.tol.atol:g} x scale; {self.tol.why})")


def compare(name: str, actual, expected, tol: Tolerance) -> Mismatch | None:
    """None when ``actual`` agrees with ``expected`` within ``tol``, else the worst element."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return Mismatch(f"{name} (shape {actual.shape} != expected {expected.shape})", (), float("nan"), float("nan"), 0.0, tol)
    if actual.size == 0:
        return None
    scale = max(float(np.abs(expected).max()), 1e-30)
    allowed = tol.atol * scale + tol.rtol * np.abs(expected)
    excess = np.abs(actual - expected) - allowed
    excess = np.where(np.isnan(excess), np.inf, excess)        # NaN anywhere is a failure
    worst = np.unravel_index(int(np.argmax(excess)), excess.shape)
    if excess[worst] <= 0:
        return None
    return Mismatch(name, tuple(int(i) for i in worst), float(actual[worst]), float(expected[worst]), float(allowed[worst]), tol)


def assert_close(name: str, actual, expected, tol: Tolerance) -> None:
    """AssertionError naming the tensor, the worst index and both values when they disagree."""
    mismatch = compare(name, actual, expected, tol)
    if mismatch is not None:
        raise AssertionError(str(mismatch))


def max_error(actual, expected) -> float:
    """Largest |actual - expected| relative to the scale of ``expected`` (for reports and tables)."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(float(np.abs(expected).max()), 1e-30) if expected.size else 1.0
    return float(np.abs(np.asarray(actual, dtype=np.float64) - expected).max() / scale) if expected.size else 0.0
