"""GELU (tanh approximation) and the position-wise feed-forward network, forward and backward."""
import math

import numpy as np

from .linear import linear_backward, linear_forward

GELU_C = math.sqrt(2.0 / math.pi)   # a Python float, so float32 inputs stay float32


# --8<-- [start:gelu]
def gelu_forward(x, p=None):
    u = GELU_C * (x + 0.044715 * x ** 3)         # F1
    t = np.tanh(u)                               # F2
    out = 0.5 * x * (1.0 + t)                    # F3
    return out, (x, t)


def gelu_backward(dout, cache):
    x, t = cache
    du_dx = GELU_C * (1.0 + 3 * 0.044715 * x ** 2)                # from F1
    dt_du = 1.0 - t * t                                           # from F2: tanh' = 1 - tanh^2
    dx = dout * (0.5 * (1.0 + t) + 0.5 * x * dt_du * du_dx)       # from F3, product rule through F2 and F1
    return dx, {}
# --8<-- [end:gelu]


# --8<-- [start:feedforward]
def feedforward_forward(x, p):
    h, fc = linear_forward(x, {"weight": p["c_fc.weight"], "bias": p["c_fc.bias"]})         # F1: (B, T, F)
    a, act = gelu_forward(h)                                                                # F2
    out, proj = linear_forward(a, {"weight": p["c_proj.weight"], "bias": p["c_proj.bias"]})  # F3: (B, T, C)
    return out, (fc, act, proj)


def feedforward_backward(dout, cache):
    fc, act, proj = cache
    da, dproj = linear_backward(dout, proj)      # from F3
    dh, _ = gelu_backward(da, act)               # from F2
    dx, dfc = linear_backward(dh, fc)            # from F1
    dp = {"c_fc.weight": dfc["weight"], "c_fc.bias": dfc["bias"],
          "c_proj.weight": dproj["weight"], "c_proj.bias": dproj["bias"]}
    return dx, dp
# --8<-- [end:feedforward]
