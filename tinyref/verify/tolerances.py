"""Every tolerance tinyref's agreement checks use, with the reason for each value, and the comparison.

An element passes when ``|actual - expected| <= atol * scale + rtol * |expected| + floor``, where
``scale`` is the largest ``|expected|`` of the tensor (at least 1e-30) and ``floor`` an absolute
allowance for errors that do not shrink with the tensor (finite differences' rounding). Scaling ``atol`` by the tensor's own size
makes one tolerance fit logits of size 10 and gradients of size 1e-4 alike; the ``rtol`` term covers
elements far above the typical size. NumPy only: importable without tinygrad.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float
    why: str
    floor: float = 0.0


# float32 unit roundoff is 2^-24 = 6e-8. Forward values pass through <= 6 reductions of length
# <= 128 per layer (LayerNorm, matmuls, softmax), whose rounding errors grow like sqrt(n) * 6e-8.
# Measured on the test configs (tests/helpers.py TIED and UNTIED, 4 seeds, DEV=CPU): worst logit
# error 3.8e-7 and worst loss error 1.4e-7 of scale. 2e-5 leaves ~50x headroom for other backends'
# instruction choices (FMA, fast exp/log), and is still tight enough that the subtle planted bugs
# fail: exact-erf GELU differs from tanh GELU by up to 4.7e-4, a wrong LayerNorm eps by percent
# on low-variance rows (see tests/test_negative_controls.py). The Llama-family test config (tests/helpers.py
# LLAMA: rotary angles computed in float32, SwiGLU's product of two expansions) measured 2.1e-6 (12 seeds):
# ~10x headroom there.
FLOAT32 = Tolerance(rtol=2e-5, atol=2e-5, why="float32 vs float64 forward: 3.8e-7 measured, ~50x headroom")

# Gradients chain twice as many operations and subtract nearly equal terms (LayerNorm and softmax
# backward), so small elements lose more relative precision: the worst measured was 2.0e-6 of
# scale. 1e-4 keeps ~50x headroom; planted gradient bugs move results by O(1) of scale. LLAMA measured 1.4e-5
# (12 seeds; the gated MLP's gradient is a product of two float32 expansions): ~7x headroom there.
FLOAT32_GRAD = Tolerance(rtol=1e-4, atol=1e-4, why="float32 gradients: 2.0e-6 measured, ~50x headroom")

# Central differences in float64 with step h: truncation error ~h^2 |f'''| and rounding error
# ~eps64 |f| / h, independent of the gradient's own size. h = 1e-6 balances them; the checked
# scalars f = sum(out * dout) stay below ~100 in the tests, so rounding is < 1.1e-16 * 100 / 1e-6
# ~ 1e-8 absolute: that is the floor. On top, 1e-6 of the gradient's scale covers truncation
# (relative ~1e-8 even on LayerNorm rows of std 1e-2). A wrong backward line errs by O(1).
# Two float64 implementations of the same model (the oracle vs Hugging Face's GPT-2 in torch, or a
# user's float64 code vs the golden vectors) differ only in operation order: unit roundoff 1.1e-16,
# grown by the same reductions as above. Measured on tests/helpers.py TIED and UNTIED, 4 seeds
# each: worst 1.4e-15 of scale on logits, 1.5e-14 on gradients (tests/test_hf.py). 1e-12 leaves
# ~70x headroom; the subtlest planted bug (exact-erf GELU, 4.7e-4) is 1e8 times larger.
FLOAT64 = Tolerance(rtol=1e-12, atol=1e-12, why="float64 vs float64, different op order: 1.5e-14 measured, ~70x headroom")

# A float64 model that casts to float32 inside: Hugging Face's LlamaForCausalLM, even after .double(),
# computes its RMSNorm in float32, its rotary angles from float32 inverse frequencies and float32
# positions, and its eager softmax in float32 (Meta's reference does the same). Its results carry
# float32 rounding (unit roundoff 6e-8) grown by the model, not float64's. Measured against the
# oracle on tinyref.testing.reference_inputs weights (N(0, 0.5^2), which amplify it), 8 seeds each
# of 5 configs (d_model 16-64, 1-4 layers, 1-8 kv heads, T 8 and 32, theta 1e4 and 5e5, eager and
# sdpa attention), as the smallest atol = rtol that passes (gradients with check_torch_model's
# floor): worst 8.2e-6 on logits and 3.0e-5 on gradients (d_model 64, 4 layers, T 32); with the three
# casts removed the same runs agree to 1.9e-14 and 8.2e-14, so the casts are the whole difference.
# 2e-4 leaves 24x and 7x headroom; the planted Llama bugs (a wrong RoPE style, kv heads tiled, RMSNorm
# over the sum, no causal mask, queries one position ahead) move logits by 5e-2 to 0.6 of scale even
# at PyTorch's small default init, 250x and more above it (tests/test_testing_torch.py), and by O(1)
# on the check's own weights. It only says "agrees to float32 precision": check_torch_model
# reports such a model with the first submodule that leaves FLOAT64, where the cast (or a bug
# that small, e.g. an RMSNorm eps of 1e-5 for 1e-6: >= 4e-5 on the same logits) sits.
FLOAT32_CASTS = Tolerance(rtol=2e-4, atol=2e-4, why="float64 model with float32 casts inside: 3.0e-5 measured, 7x headroom")

FINITE_DIFFERENCE_STEP = 1e-6
FINITE_DIFFERENCE = Tolerance(rtol=1e-6, atol=1e-6, floor=2e-8, why="float64 central differences, h=1e-6")


# Single-purpose thresholds of the property tests. Plain numbers, used with NumPy's or math's own
# comparisons (absolute atol, not scaled like a Tolerance's), each with what it must tell apart.

# The oracle run twice in float64 on rearranged inputs (batch rows permuted, or only a prefix of
# the sequence): the same operations on the same numbers, but NumPy's BLAS may block a matmul of
# another shape differently, so sums can round in another order: ~1e-16 relative, a few ulps. Used
# as both rtol and atol (np.testing.assert_allclose) on logits of size ~1: 1e-12 leaves 1e4x
# headroom, while a model that mixes batch rows or lets position t see t + 1 moves logits by O(0.1).
FLOAT64_REARRANGED = 1e-12

# Each attention row (tinyref in float32, the oracle in float64) must sum to 1. float32 softmax over
# 8 positions: exp, a length-8 sum and a division each round by <= 6e-8, so the row sum is off by
# ~8 * 6e-8 = 5e-7 at worst; 1e-5 leaves 20x headroom. A row left unnormalised, or the mask
# applied after the softmax (dropping the future's share), misses 1 by O(0.1).
PROBABILITY_SUM = 1e-5

# The key bias's gradient is exactly zero in exact arithmetic (softmax ignores a per-row shift).
# In the float64 oracle it is the rounding residue of softmax backward's row sums: measured at most
# 1.4e-15 of the largest c_attn.bias gradient (TIED, 20 seeds). 1e-12 of that scale leaves ~700x
# headroom; a softmax backward that forgets to subtract the row's weighted mean leaves O(1) there.
KEY_BIAS_GRADIENT_ZERO = 1e-12

# Causality's second half: changing token j must visibly change the output at position j (else
# the model ignores its own token, e.g. a mask shifted the other way). A model that ignores it
# computes bit-identical logits there (difference exactly 0); a real change of token moved them by
# at least 0.41 (oracle, TIED, 20 seeds x 8 positions). 1e-7 is above zero and ~4e6x below that.
MIN_VISIBLE_CHANGE = 1e-7

# RoPE's relative-position property in float64: a q.k score at positions (p, s) and at (p + d, s + d)
# differs only by the rounding of cos and sin at angles up to ~1050 rad (tests/test_rope.py's positions),
# which NumPy computes to ~1 ulp of the angle (~1e-13 absolute). Measured: at most 5.2e-14 of |q| |k| over
# 3000 random cases in the test's ranges. 1e-12 of |q| |k| leaves ~20x headroom; a position off by one or
# the other pairing moves the score by O(|q| |k|).
ROPE_RELATIVE = 1e-12

# RMSNorm is invariant to a positive rescaling of its input up to eps: rmsnorm(c x, eps) equals
# rmsnorm(x, eps / c^2) exactly in real arithmetic, so in float64 the two differ by rounding alone: a mean
# square, a square root and two products, each within 1.1e-16 relative; measured at most 2.9e-16 of the
# row's scale over 5000 of tests/test_layernorm.py's cases. 1e-13 leaves ~300x; a norm over the sum instead of the mean is
# still scale-invariant, so that bug is the agreement test's to catch, but one that centres the rows or
# adds eps after the square root moves the output by O(eps / mean square) or more.
RMSNORM_RESCALED = 1e-13

# The learning-rate schedule, tinyref.optim.lr_at vs oracle.lr_at: both pure Python float64 on the
# same formula (cos, a division), so results differ by a few ulps at most (~1e-16 relative). 1e-12
# relative leaves 1e4x headroom; an off-by-one warmup step changes lr by >= 1/warmup_steps (1e-2
# or more). The absolute 1e-18 only lets through lr values that both sides compute as ~0 (min_lr 0
# at the end of a cosine), where a relative test is meaningless.
LR_SCHEDULE_RTOL, LR_SCHEDULE_ATOL = 1e-12, 1e-18


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """``x`` rounded (to nearest even) to ``dtype`` and returned as float64, so the oracle sees the
    exact numbers the device holds and only computation error is measured."""
    if dtype == "bfloat16":  # NumPy has no bfloat16: keep the top 16 bits of float32, rounded
        bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
        return bits.view(np.float32).astype(np.float64)
    return np.asarray(x).astype({"float32": np.float32, "float16": np.float16}[dtype]).astype(np.float64)


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
                f"(rtol={self.tol.rtol:g}, atol={self.tol.atol:g} x scale, floor={self.tol.floor:g}; {self.tol.why})")


def compare(name: str, actual, expected, tol: Tolerance) -> Mismatch | None:
    """None when ``actual`` agrees with ``expected`` within ``tol``, else the worst element."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return Mismatch(f"{name} (shape {actual.shape} != expected {expected.shape})", (), float("nan"), float("nan"), 0.0, tol)
    if actual.size == 0:
        return None
    scale = max(float(np.abs(expected).max()), 1e-30)
    allowed = tol.atol * scale + tol.rtol * np.abs(expected) + tol.floor
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



# Reduced precision (float16, bfloat16), checked against the float64 oracle. Unit roundoff u of a
# format with p significand bits is 2^-p: float16 (p=11) 4.9e-4, bfloat16 (p=8) 3.9e-3. Estimate
# (typical case, not a worst-case bound; nothing in it is fitted to measurements):
#  * every stored intermediate is rounded to the format once: relative error <= u;
#  * tinygrad accumulates sums of 16-bit floats in float32 (dtypes.sum_acc_dtype), so a length-n
#    reduction adds no rounding of its own, but the u-sized errors of its n inputs add up; relative
#    to the result that is amplified by the sum's condition number sum|t_i| / |sum t_i|, ~sqrt(n)
#    for terms of random sign;
#  * D independent roundings along the longest path add in quadrature: sqrt(D). Counted on the
#    model: ~34 per decoder block (LayerNorm 6, attention 14, LayerNorm 6, MLP with tanh-GELU 8)
#    and 8 outside them (embedding sum, ln_f, head); the backward pass retraces the path: 2D.
# So error / scale ~ u * sqrt(n) * sqrt(D), n the longest reduction of the config. For the check
# case (n = 24, one block, D = 42) that is 32 u forward (1.6e-2 float16, 0.12 bfloat16) and 45 u
# for gradients. Measured (CPU float16): 4.6 u forward, 5.2 u gradients.
UNIT_ROUNDOFF = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}
ROUNDINGS_PER_BLOCK, ROUNDINGS_OUTSIDE_BLOCKS = 34, 8


def reduced_precision(dtype: str, cfg) -> tuple[Tolerance, Tolerance]:
    """(forward, gradient) tolerances for the model ``cfg`` computed in float16 or bfloat16."""
    u = UNIT_ROUNDOFF[dtype]
    n = max(cfg.d_model, cfg.d_ff, cfg.vocab_size, cfg.context_length)
    depth = ROUNDINGS_OUTSIDE_BLOCKS + ROUNDINGS_PER_BLOCK * cfg.n_layers
    forward = u * math.sqrt(n) * math.sqrt(depth)
    grad = u * math.sqrt(n) * math.sqrt(2 * depth)
    return (Tolerance(rtol=forward, atol=forward, why=f"{dtype}: u*sqrt(n={n})*sqrt(D={depth}) estimate"),
            Tolerance(rtol=grad, atol=grad, why=f"{dtype} gradients: u*sqrt(n={n})*sqrt(2D={2 * depth}) estimate"))


def tolerances_for(dtype: str, cfg) -> tuple[Tolerance, Tolerance]:
    """(forward, gradient) tolerance for the model ``cfg`` computed in ``dtype`` against the float64 oracle."""
    if dtype == "float64":
        return FLOAT64, FLOAT64
    return (FLOAT32, FLOAT32_GRAD) if dtype == "float32" else reduced_precision(dtype, cfg)


# --8<-- [start:mixed_precision]
# Mixed-precision training (tinyref.train.TrainStep with dtype float16 or bfloat16) keeps float32
# master weights, computes forward and backward in the low dtype on a copy rounded from them, and
# turns the low-precision gradients back into float32 master gradients: multiplied by the loss
# scale S on the way in, divided by k*S on the way out (k micro-batches), summed in float32. S is a
# power of two, so scaling and unscaling are exact (no rounding) as long as nothing overflows or
# underflows; the float32 sum of k terms adds ~k * 6e-8, nothing against u. The master gradient
# therefore carries exactly the error of one reduced-precision backward pass, and the gradient
# tolerance of reduced_precision() applies unchanged, against the oracle run on the weights
# rounded to the low dtype (the numbers the low-precision copy holds).
def mixed_precision_grad(dtype: str, cfg) -> Tolerance:
    """Tolerance of TrainStep's float32 master gradients computed in ``dtype`` vs the float64 oracle."""
    grad = reduced_precision(dtype, cfg)[1]
    return Tolerance(rtol=grad.rtol, atol=grad.atol, why=f"mixed precision, exact power-of-two loss scaling; {grad.why}")
# --8<-- [end:mixed_precision]
