"""GELU (tanh approximation and exact erf), SiLU, and the position-wise feed-forward network (plain or gated),
forward and backward."""
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


# --8<-- [start:silu]
def silu_forward(x, p=None):
    s = 1.0 / (1.0 + np.exp(-x))                 # F1: sigmoid(x)
    out = x * s                                  # F2
    return out, (out, s)                         # out, not x: a gated MLP keeps out anyway, so x can go


def silu_backward(dout, cache):
    out, s = cache
    dx = dout * (s + out * (1.0 - s))            # from F2, product rule s + x s (1 - s), with x s = out; from F1: sigmoid' = s (1 - s)
    return dx, {}
# --8<-- [end:silu]


# --8<-- [start:activation]
# GPTConfig.activation -> the (forward, backward) pair of its function
ACTIVATIONS = {"gelu_tanh": (gelu_forward, gelu_backward), "gelu": (gelu_erf_forward, gelu_erf_backward),
               "silu": (silu_forward, silu_backward)}


def activation_forward(x, p=None, activation="gelu_tanh"):
    forward, backward = ACTIVATIONS[activation]
    out, cache = forward(x)
    return out, (backward, cache)                # the cache remembers which backward it needs


def activation_backward(dout, cache):
    backward, cache = cache
    return backward(dout, cache)
# --8<-- [end:activation]


# --8<-- [start:feedforward]
def feedforward_forward(x, p, activation="gelu_tanh", gated_mlp=False):
    if gated_mlp:
        return gated_feedforward_forward(x, p, activation)
    h, fc = linear_forward(x, sub_params(p, "c_fc."))         # F1: (B, T, F)
    a, act = activation_forward(h, None, activation)          # F2
    out, proj = linear_forward(a, sub_params(p, "c_proj."))   # F3: (B, T, C)
    return out, (fc, act, proj)


def feedforward_backward(dout, cache):
    if isinstance(cache, dict):                  # the gated MLP's cache
        return gated_feedforward_backward(dout, cache)
    fc, act, proj = cache
    da, dproj = linear_backward(dout, proj)      # from F3
    dh, _ = activation_backward(da, act)         # from F2
    dx, dfc = linear_backward(dh, fc)            # from F1
    return dx, {**with_prefix("c_fc.", dfc), **with_prefix("c_proj.", dproj)}
# --8<-- [end:feedforward]


# --8<-- [start:gated]
def gated_feedforward_forward(x, p, activation="silu"):
    g, gate = linear_forward(x, sub_params(p, "c_gate."))     # F1: (B, T, F), the gate's input
    u, fc = linear_forward(x, sub_params(p, "c_fc."))         # F2: (B, T, F), the "up" projection
    a, act = activation_forward(g, None, activation)          # F3: act(gate)
    h = a * u                                                 # F4: the gate scales each hidden unit
    out, proj = linear_forward(h, sub_params(p, "c_proj."))   # F5: (B, T, C)
    return out, {"gate": gate, "fc": fc, "act": act, "a": a, "u": u, "proj": proj}


def gated_feedforward_backward(dout, cache):
    gate, fc, act, a, u, proj = (cache[k] for k in ("gate", "fc", "act", "a", "u", "proj"))
    dh, dproj = linear_backward(dout, proj)      # from F5
    da, du = dh * u, dh * a                      # from F4, w.r.t. a and u
    dg, _ = activation_backward(da, act)         # from F3
    dx_up, dfc = linear_backward(du, fc)         # from F2
    dx_gate, dgate = linear_backward(dg, gate)   # from F1
    dx = dx_up + dx_gate                         # x feeds both F1 and F2
    return dx, {**with_prefix("c_fc.", dfc), **with_prefix("c_gate.", dgate), **with_prefix("c_proj.", dproj)}
# --8<-- [end:gated]
