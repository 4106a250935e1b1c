"""Oracle agreement on one device: forward, causal mask, every gradient and an AdamW step, as numbers.

``run_case`` builds one small model on a device, runs it once, and returns tinygrad's results next to
the float64 oracle's; ``tinyref check`` and the per-device tests both judge those same numbers, so
each backend compiles its kernels once. The causal check rides in the same forward pass: the batch
is doubled with copies whose later tokens are changed, and the earlier positions' logits must come
out bit for bit the same.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
from tinygrad import Context, Tensor, dtypes
from tinygrad.nn.state import get_state_dict

import oracle

from ..config import GPTConfig
from ..runtime import kernelopts
from ..runtime.devices import DTYPES, captured_stderr, dtype_support, failure_reason, normalize_device, probe_device, use_device
from .golden import PRESETS
from ..loss import cross_entropy
from ..model import GPTStyleTransformer
from ..optim import decayed_keys, make_optimizer
from .tolerances import FLOAT32, Mismatch, compare, max_error, round_to, tolerances_for


@dataclass(frozen=True)
class CheckCase:
    """A model and batch shape: every device compiles one kernel set for it."""

    config: GPTConfig
    batch: int
    seq: int


# --8<-- [start:cases]
# One layer, four heads, T < context_length (unused wpe rows must get zero gradient), d_ff != 4C. The MLP is
# wide enough, and the doubled batch (2B x T = 256 rows) long enough, for the kernels that tinyref's CPU kernel
# optimisations (tinyref.runtime.kernelopts) rewrite in training to be rewritten here too: its register tile
# (the MLP's products, 2^20 points: with 16-lane vectors, the tile sized for them that M's and L's products
# take), its column sum (the MLP's bias gradient, 256 columns) and its 8-lane elementwise kernels (the MLP's
# activation) each take some kernels of this case.
CHECK_CASE = CheckCase(GPTConfig(vocab_size=11, context_length=16, d_model=16, n_heads=4, n_layers=1, d_ff=256), 16, 8)
# PYTHON emulates every kernel in Python: the same structure at the smallest sizes that keep it.
EMULATOR_CASE = CheckCase(GPTConfig(vocab_size=5, context_length=4, d_model=4, n_heads=2, n_layers=1, d_ff=6), 1, 3)
# Thorough mode adds the suite's two-layer shape (several layers, tied head) on every device.
THOROUGH_CASE = CheckCase(PRESETS["small"].config, 2, 8)
# The models ``tinyref check --model`` runs in the device's case: GPT-2, nanoGPT's bias=False model, and a Llama
# (rotary positions, RMSNorm, SwiGLU, no biases, an untied head; 2 kv heads: grouped for 4 query heads).
MODELS = {"gpt2": {}, "nanogpt": {"activation": "gelu", "bias": False},
          "llama": {"positions": "rope", "norm": "rmsnorm", "activation": "silu", "gated_mlp": True, "bias": False,
                    "tie_embeddings": False, "n_kv_heads": 2}}
# --8<-- [end:cases]

# The optimizer step the check takes (decoupled weight decay on matrices only, as make_optimizer).
ADAMW = dict(lr=1e-2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.1)


def case_for(device: str, model: str = "gpt2") -> CheckCase:
    case = EMULATOR_CASE if normalize_device(device) == "PYTHON" else CHECK_CASE
    return replace(case, config=replace(case.config, **MODELS[model]))


@dataclass
class CaseInputs:
    """Weights (exact in the dtype), tokens, and the same tokens with positions >= ``split`` changed."""

    params: dict
    idx: np.ndarray
    targets: np.ndarray
    idx_future: np.ndarray
    split: int
    adamw_grads: dict


def make_inputs(case: CheckCase, dtype: str = "float32", seed: int = 0) -> CaseInputs:
    cfg, B, T = case.config, case.batch, case.seq
    rng = np.random.default_rng(seed)
    params = {k: round_to(v, dtype) for k, v in oracle.init_params(cfg, rng).items()}
    idx = rng.integers(0, cfg.vocab_size, (B, T))
    targets = rng.integers(0, cfg.vocab_size, (B, T))
    split = T // 2
    idx_future = idx.copy()
    idx_future[:, split:] = (idx[:, split:] + rng.integers(1, cfg.vocab_size, (B, T - split))) % cfg.vocab_size
    # gradients to feed AdamW: float32-exact random values spanning several orders of magnitude
    grads = {k: round_to(rng.standard_normal(v.shape) * 10.0 ** rng.uniform(-4, 0, v.shape), "float32")
             for k, v in params.items()}
    return CaseInputs(params, idx, targets, idx_future, split, grads)


# --8<-- [start:run_tinygrad]
def run_tinygrad(device: str, dtype: str, case: CheckCase, inputs: CaseInputs, adamw_step: bool) -> tuple[dict, list[str]]:
    """tinyref's logits, loss, parameter gradients (and AdamW-updated weights) on ``device`` as float64,
    and the keys the optimizer decays."""
    B = case.batch
    with Context(DEV="NULL"):   # tinygrad's no-op device: every weight is replaced below, so its init compiles nothing
        model = GPTStyleTransformer(case.config)
    with use_device(device):
        state = get_state_dict(model)
        for k, t in state.items():   # the dtype's exact values, put on the device
            t.replace(Tensor(inputs.params[k].astype(np.float32)).cast(DTYPES[dtype]).contiguous())
        Tensor.realize(*state.values())
        tokens = Tensor(np.concatenate([inputs.idx, inputs.idx_future]), dtype=dtypes.int32)
        logits = model(tokens)                                                    # (2B, T, V)
        loss = cross_entropy(logits[:B], Tensor(inputs.targets, dtype=dtypes.int32))  # the loss sees the first B rows
        loss.backward()
        Tensor.realize(logits, loss, *[t.grad for t in state.values()])
        out = {"logits": logits.float().numpy(), "loss": np.array(loss.float().item())}
        out.update({f"grad {k}": t.grad.float().numpy() for k, t in state.items()})
        if adamw_step:   # one step from given gradients, so Adam's sign-like first step sees no gradient noise
            opt = make_optimizer(model, **ADAMW)
            for k, t in state.items():
                t.grad = Tensor(inputs.adamw_grads[k].astype(np.float32)).cast(t.dtype)
            with Context(TRAINING=1):
                opt.step()
            out.update({f"adamw {k}": t.float().numpy() for k, t in state.items()})
        return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}, decayed_keys(model)
# --8<-- [end:run_tinygrad]


def run_oracle(case: CheckCase, inputs: CaseInputs, adamw_step: bool, decayed: list[str]) -> dict:
    """The same quantities from the float64 oracle."""
    B, p = case.batch, inputs.params
    logits, cache = oracle.gpt_forward(np.concatenate([inputs.idx, inputs.idx_future]), p, case.config)
    loss, lcache = oracle.cross_entropy_forward(logits[:B], inputs.targets)
    dlogits = np.zeros_like(logits)
    dlogits[:B] = oracle.cross_entropy_backward(lcache)
    out = {"logits": logits, "loss": np.array(loss)}
    out.update({f"grad {k}": g for k, g in oracle.gpt_backward(dlogits, cache).items()})
    if adamw_step:
        for keys, wd in ((decayed, ADAMW["weight_decay"]), ([k for k in p if k not in decayed], 0.0)):
            new, _ = oracle.adamw_step({k: p[k] for k in keys}, inputs.adamw_grads, None, **{**ADAMW, "weight_decay": wd})
            out.update({f"adamw {k}": v for k, v in new.items()})
    return out


@dataclass
class CaseResult:
    """What one device computed for one case and dtype, beside the oracle: the suite judges these."""

    device: str
    dtype: str
    case: CheckCase
    inputs: CaseInputs
    actual: dict
    expected: dict
    seconds: float
    mismatches: list[Mismatch] = field(default_factory=list)

    def causal_leak(self) -> float:
        """Largest change of a logit at a position before ``split`` when only later tokens changed (0 when causal)."""
        B, s = self.case.batch, self.inputs.split
        logits = self.actual["logits"]
        return float(np.abs(logits[B:, :s] - logits[:B, :s]).max())

    def errors(self, prefix: str) -> float:
        """Worst error relative to scale over the quantities whose name starts with ``prefix``."""
        return max(max_error(self.actual[k], self.expected[k]) for k in self.actual if k.startswith(prefix))


def judge(device: str, dtype: str, cfg, actual: dict, expected: dict) -> list[Mismatch]:
    """Every quantity that disagrees with the oracle beyond the dtype's tolerance."""
    forward_tol, grad_tol = tolerances_for(dtype, cfg)
    tol = {"logits": forward_tol, "loss": forward_tol, "grad": grad_tol, "adamw": FLOAT32}
    found = [compare(f"{device} {dtype} {k}", actual[k], expected[k], tol[k.split(" ")[0]]) for k in expected]
    return [m for m in found if m]


def run_case(device: str, dtype: str = "float32", case: CheckCase | None = None, seed: int = 0,
             adamw_step: bool = True) -> CaseResult:
    """Run ``case`` (default: the device's check case) on ``device`` in ``dtype`` and compare with the oracle."""
    device = normalize_device(device)
    case = case or case_for(device)
    inputs = make_inputs(case, dtype, seed)
    adamw_step = adamw_step and dtype == "float32"   # the optimizer keeps float32 state: checked in float32
    t0 = time.perf_counter()
    actual, decayed = run_tinygrad(device, dtype, case, inputs, adamw_step)
    seconds = time.perf_counter() - t0
    expected = run_oracle(case, inputs, adamw_step, decayed)
    return CaseResult(device, dtype, case, inputs, actual, expected, seconds, judge(device, dtype, case.config, actual, expected))


@dataclass
class CheckRow:
    """One line of ``tinyref check``: ``ok`` is None when the device or dtype could not run here."""

    device: str
    dtype: str
    forward_max_err: float | None = None
    grad_max_err: float | None = None
    causal_ok: bool | None = None
    seconds: float | None = None
    ok: bool | None = None
    reason: str | None = None
    model: str = "gpt2"
    kernel_opts: str | None = None   # the CPU kernel optimisations in force where it ran: kernelopts.RULE or "tinygrad"


def kernel_opts() -> str:
    """The choice of CPU kernel optimisations in force in this process: tinyref's rule (``kernelopts.RULE``), as
    in train and bench, or ``"tinygrad"``'s own heuristic."""
    return kernelopts.RULE if kernelopts.installed() else "tinygrad"


def row_from(result: CaseResult) -> CheckRow:
    """Judge a run: it agrees when nothing exceeds its tolerance and no earlier logit moved."""
    causal_ok = result.causal_leak() == 0.0
    problems = [str(m) for m in result.mismatches]
    if not causal_ok:
        problems.insert(0, f"causal mask leaks: a logit before position {result.inputs.split} moved by "
                           f"{result.causal_leak():.3g} when only later tokens changed")
    return CheckRow(result.device, result.dtype, max(result.errors("logits"), result.errors("loss")), result.errors("grad"),
                    causal_ok, round(result.seconds, 2), not problems, "; ".join(problems) or None, kernel_opts=kernel_opts())


def check_one(device: str, dtype: str, seed: int = 0, model: str = "gpt2") -> CheckRow:
    """Run the check case of ``model`` (a key of MODELS) on ``device`` in ``dtype``; a device or dtype not usable
    here gives ok=None and the reason."""
    reason = probe_device(device) or dtype_support(device, dtype)
    if reason is not None:
        return CheckRow(device, dtype, reason=reason, model=model)
    t0 = time.perf_counter()
    with captured_stderr() as compiler_error:
        try:
            case = None if model == "gpt2" else case_for(device, model)
            return replace(row_from(run_case(device, dtype, case, seed=seed)), model=model)
        except Exception as e:  # noqa: BLE001 - a device that crashes on the model disagrees; say how
            return CheckRow(device, dtype, seconds=round(time.perf_counter() - t0, 2), ok=False,
                            reason=f"crashed: {failure_reason(e, compiler_error())}"[:400], model=model,
                            kernel_opts=kernel_opts())
