"""LayerNorm and RMSNorm over the last axis, forward and backward."""
import numpy as np


# --8<-- [start:layernorm]
def layernorm_forward(x, p, eps=1e-5):
    w, b = p["weight"], p.get("bias")            # (C,), (C,) or None (bias=False)
    mean = x.mean(-1, keepdims=True)             # F1: (B, T, 1)
    xc = x - mean                                # F2: (B, T, C)
    var = (xc * xc).mean(-1, keepdims=True)      # F3: (B, T, 1), biased as in GPT-2
    rstd = 1.0 / np.sqrt(var + eps)              # F4: (B, T, 1)
    xhat = xc * rstd                             # F5: (B, T, C)
    out = xhat * w                               # F6: (B, T, C)
    if b is not None:
        out = out + b                            # F7
    return out, (xhat, rstd, w, b is not None)


def layernorm_backward(dout, cache):
    xhat, rstd, w, has_bias = cache
    axes = tuple(range(dout.ndim - 1))
    dp = {"weight": (dout * xhat).sum(axes)}     # from F6
    if has_bias:
        dp["bias"] = dout.sum(axes)              # from F7
    dxhat = dout * w                             # from F6
    # F1-F5 together: xhat is x centred and scaled by rstd, which depends on every x in the row
    dx = rstd * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))
    return dx, dp
# --8<-- [end:layernorm]


# --8<-- [start:rmsnorm]
def rmsnorm_forward(x, p, eps=1e-5):
    w = p["weight"]                              # (C,); RMSNorm has no bias
    ms = (x * x).mean(-1, keepdims=True)         # F1: (B, T, 1), the mean square (no centring)
    rstd = 1.0 / np.sqrt(ms + eps)               # F2: (B, T, 1)
    xhat = x * rstd                              # F3: (B, T, C)
    out = xhat * w                               # F4: (B, T, C)
    return out, (xhat, rstd, w)


def rmsnorm_backward(dout, cache):
    xhat, rstd, w = cache
    axes = tuple(range(dout.ndim - 1))
    dp = {"weight": (dout * xhat).sum(axes)}     # from F4
    dxhat = dout * w                             # from F4
    # F1-F3 together: d(x * rstd)/dx = rstd (I - xhat xhat^T / C), as LayerNorm's without the mean terms
    dx = rstd * (dxhat - xhat * (dxhat * xhat).mean(-1, keepdims=True))
    return dx, dp
# --8<-- [end:rmsnorm]


# --8<-- [start:norm]
# GPTConfig.norm -> the (forward, backward) pair of the normalisation
NORMS = {"layernorm": (layernorm_forward, layernorm_backward), "rmsnorm": (rmsnorm_forward, rmsnorm_backward)}


def norm_forward(x, p, eps=1e-5, norm="layernorm"):
    forward, backward = NORMS[norm]
    out, cache = forward(x, p, eps)
    return out, (backward, cache)                # the cache remembers which backward it needs


def norm_backward(dout, cache):
    backward, cache = cache
    return backward(dout, cache)
# --8<-- [end:norm]
