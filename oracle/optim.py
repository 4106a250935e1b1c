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
