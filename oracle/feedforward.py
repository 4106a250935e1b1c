"""GELU (tanh approximation and exact erf) and the position-wise feed-forward network, forward and backward."""
import math

import numpy as np

from .linear import linear_backward, linear_forward
from .params import sub_params, with_prefix

GELU_C = math.sqrt(2.0 / math.pi)   # a Python float, so float32 inputs stay float32


# --8<-- [start:gelu]
def gelu_forward(x, p=None):
    u = GELU_C * (x + 0.044715 * (x * x * x))    # F1: x * x * x, not x ** 3 (a slow general power)
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


# --8<-- [start:gelu_erf]
# NumPy has no erf; math.erf is correctly rounded to ~1 ulp of float64, element by element
_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu_erf_forward(x, p=None):
    phi_cdf = 0.5 * (1.0 + _erf(x / math.sqrt(2.0)).astype(x.dtype))   # F1: Φ(x), the standard normal CDF
    out = x * phi_cdf                                                   # F2
    return out, (x, phi_cdf)


def gelu_erf_backward(dout, cache):
    x, phi_cdf = cache
    phi_pdf = np.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))   # from F1: Φ'(x) = φ(x), the normal density
    dx = dout * (phi_cdf + x * phi_pdf)                                 # from F2, product rule: Φ(x) + x φ(x)
    return dx, {}
# --8<-- [end:gelu_erf]


# --8<-- [start:activation]
# GPTConfig.activation -> the (forward, backward) pair of its GELU
ACTIVATIONS = {"gelu_tanh": (gelu_forward, gelu_backward), "gelu": (gelu_erf_forward, gelu_erf_backward)}


def activation_forward(x, p=None, activation="gelu_tanh"):
    forward, backward = ACTIVATIONS[activation]
    out, cache = forward(x)
    return out, (backward, cache)                # the cache remembers which backward it needs


def activation_backward(dout, cache):
    backward, cache = cache
    return backward(dout, cache)
# --8<-- [end:activation]


# --8<-- [start:feedforward]
def feedforward_forward(x, p, activation="gelu_tanh"):
    h, fc = linear_forward(x, sub_params(p, "c_fc."))         # F1: (B, T, F)
    a, act = activation_forward(h, None, activation)          # F2
    out, proj = linear_forward(a, sub_params(p, "c_proj."))   # F3: (B, T, C)
    return out, (fc, act, proj)


def feedforward_backward(dout, cache):
    fc, act, proj = cache
    da, dproj = linear_backward(dout, proj)      # from F3
    dh, _ = activation_backward(da, act)         # from F2
    dx, dfc = linear_backward(dh, fc)            # from F1
    return dx, {**with_prefix("c_fc.", dfc), **with_prefix("c_proj.", dproj)}
# --8<-- [end:feedforward]
