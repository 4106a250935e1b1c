"""AdamW, learning-rate schedule and gradient clipping around tinygrad's optimizer."""
from __future__ import annotations

import math

from tinygrad import Tensor
from tinygrad.nn.optim import AdamW, OptimizerGroup
from tinygrad.nn.state import get_state_dict


# --8<-- [start:decay]
def decayed_keys(model) -> list[str]:
    """Weight decay applies to matrices only (embeddings, linear weights, the gate of a gated MLP), never to biases
    or the gains of LayerNorm and RMSNorm."""
    return [k for k, t in get_state_dict(model).items() if t.ndim >= 2]
# --8<-- [end:decay]


# --8<-- [start:optimizer]
def make_optimizer(model, lr: float, weight_decay: float = 0.0, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
    """tinygrad AdamW over every parameter; with weight_decay > 0, two groups so that only matrices decay."""
    state = get_state_dict(model)

    def adamw(params, decay_rate):   # fused=False even under FUSE_OPTIM: one m and v per parameter, as checkpoints store
        return AdamW(params, lr=lr, b1=b1, b2=b2, eps=eps, weight_decay=decay_rate, fused=False)

    if weight_decay == 0.0:
        return adamw(list(state.values()), 0.0)
    decay = set(decayed_keys(model))
    return OptimizerGroup(adamw([t for k, t in state.items() if k in decay], weight_decay),
                          adamw([t for k, t in state.items() if k not in decay], 0.0))
# --8<-- [end:optimizer]


def optimizer_lr_tensors(opt) -> list[Tensor]:
    """The learning-rate tensors of ``opt`` (one per group), to assign a scheduled value before a step."""
    return [o.lr for o in optimizer_groups(opt)]


# --8<-- [start:schedule]
def lr_at(step: int, lr: float, warmup_steps: int = 0, total_steps: int = 1, schedule: str = "constant",
          min_lr: float = 0.0) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up, then constant or cosine decay to min_lr."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    decay_steps = total_steps - warmup_steps
    progress = min(1.0, (step - warmup_steps) / decay_steps) if decay_steps > 0 else 1.0   # past the end: min_lr
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
# --8<-- [end:schedule]


# --8<-- [start:clip]
def global_grad_norm(params: list[Tensor]) -> Tensor:
    """sqrt(sum of every squared gradient element), as a float32 scalar tensor."""
    return sum((p.grad.float() ** 2).sum() for p in params).sqrt()


def clip_grad_norm(params: list[Tensor], max_norm: float) -> Tensor:
    """Scale every gradient by min(1, max_norm / global_norm), in the graph (no host sync); returns the norm."""
    norm = global_grad_norm(params)
    scale = (max_norm / (norm + 1e-6)).minimum(1.0)
    for p in params:
        p.grad = p.grad * scale.cast(p.grad.dtype)
    return norm
# --8<-- [end:clip]


def optimizer_state(opt) -> list[Tensor]:
    """Every state tensor of ``opt``: learning rates, AdamW's moments and running b1^t, b2^t."""
    return [t for o in optimizer_groups(opt) for t in (o.lr, o.b1_t, o.b2_t, *o.m, *o.v)]


def optimizer_groups(opt) -> list:
    """The AdamW optimizers inside ``opt`` (itself, or the groups of an OptimizerGroup)."""
    return list(opt.optimizers) if isinstance(opt, OptimizerGroup) else [opt]
