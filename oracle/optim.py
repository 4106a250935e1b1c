"""AdamW with the update rule, bias correction and decoupled weight decay of tinygrad's AdamW."""
import numpy as np


# --8<-- [start:adamw]
def adamw_step(params, grads, state=None, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01):
    """One step on every key of ``params``; returns (new_params, new_state). ``state=None`` starts fresh."""
    if state is None:
        state = {"t": 0, "m": {k: np.zeros_like(v) for k, v in params.items()},
                 "v": {k: np.zeros_like(v) for k, v in params.items()}}
    t = state["t"] + 1
    new_params, m_new, v_new = {}, {}, {}
    for k, p in params.items():
        g = grads[k]
        m_new[k] = b1 * state["m"][k] + (1.0 - b1) * g          # first moment
        v_new[k] = b2 * state["v"][k] + (1.0 - b2) * (g * g)    # second moment
        m_hat = m_new[k] / (1.0 - b1 ** t)                      # bias correction: m starts at 0
        v_hat = v_new[k] / (1.0 - b2 ** t)
        update = m_hat / (np.sqrt(v_hat) + eps) + weight_decay * p   # decoupled decay, scaled by lr below
        new_params[k] = p - lr * update
    return new_params, {"t": t, "m": m_new, "v": v_new}
# --8<-- [end:adamw]


# --8<-- [start:schedule]
def lr_at(step, lr, warmup_steps=0, total_steps=1, schedule="constant", min_lr=0.0):
    """The learning rate of 0-based optimizer step ``step``, phase by phase.

    warm-up   (step < W):  lr * (step + 1) / W             the first step already moves, by lr / W
    constant  (step >= W): lr
    cosine    (step >= W): min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2,  p = (step - W) / (S - W),
                           p capped at 1 so steps past the end stay at min_lr
    """
    W, S = warmup_steps, total_steps
    if step < W:
        return lr * (step + 1) / W
    if schedule == "constant":
        return lr
    if S <= W:                                   # no decay phase left: already at the end
        p = 1.0
    else:
        p = min(1.0, (step - W) / (S - W))
    return float(min_lr + (lr - min_lr) * (1.0 + np.cos(np.pi * p)) / 2.0)
# --8<-- [end:schedule]


# --8<-- [start:clip]
def clip_grad_norm(grads, max_norm):
    """Scale all gradients together so their global L2 norm is at most ``max_norm``; returns (grads, norm).

    norm = sqrt(sum over every parameter of sum(g^2)); scale = min(1, max_norm / (norm + 1e-6)).
    """
    norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values()))
    scale = min(1.0, float(max_norm / (norm + 1e-6)))              # a Python float: keeps each g's dtype
    return {k: g * scale for k, g in grads.items()}, float(norm)
# --8<-- [end:clip]


# --8<-- [start:accumulate]
def accumulate_gradients(micro_grads):
    """The gradient of the mean loss over k equal micro-batches: the mean of their gradients.

    loss = (1/k) sum_i loss_i, each loss_i a mean over B*T positions, so it equals the mean loss of
    the whole k*B batch, and d loss / d p = (1/k) sum_i d loss_i / d p.
    """
    k = len(micro_grads)
    return {key: sum(g[key] for g in micro_grads) / k for key in micro_grads[0]}
# --8<-- [end:accumulate]
