"""Position-wise feed-forward network: the same two-layer MLP (or gated MLP) applied to every position."""
import math

from tinygrad import Tensor

from .linear import Linear, stored_gradient, stored_padded

# --8<-- [start:feedforward]
GELU_2C = 2 * math.sqrt(2 / math.pi)


def gelu_tanh(x: Tensor) -> Tensor:
    """GPT-2's GELU, 0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3), written as x * sigmoid(2u):
    the same function, since (1 + tanh u) / 2 = sigmoid(2u). tinygrad's Tensor.gelu() builds tanh as
    2 sigmoid(2u) - 1 and x^3 as a power, whose derivative divides by x; this form's backward kernel does one
    division per element instead of three (on the CPU, half the time of tinygrad's)."""
    return x * (GELU_2C * (x + 0.044715 * (x * x * x))).sigmoid()


def gelu_exact(x: Tensor) -> Tensor:
    """The exact 0.5 x (1 + erf(x / sqrt 2)) with tinygrad's Tensor.erf, Abramowitz & Stegun 7.1.26: |error| <=
    1.5e-7, about 2.5 float32 ulps of 1, and autograd differentiates that formula. Measured in float32 against the
    float64 oracle over [-10, 10]: 4.7e-7 on GELU (half an ulp at 10: rounding, not the approximation) and 6.4e-7
    on its derivative, over 40x below the float32 tolerances (2e-5 and 1e-4 of scale) and 700x below the 4.7e-4
    between the exact and the tanh GELU, so it needs no replacement."""
    return x.gelu(approximate="none")


def silu(x: Tensor) -> Tensor:
    """x * sigmoid(x), the Llama family's gate activation (SwiGLU = SiLU + a gated MLP)."""
    return x * x.sigmoid().contiguous()


ACTIVATIONS = {"gelu_tanh": gelu_tanh, "gelu": gelu_exact, "silu": silu}   # GPTConfig.activation -> the function


class PositionWiseFeedForward:
    """c_proj(act(c_fc(x))): expand to d_ff, apply the activation (GPT-2's tanh GELU, the exact erf GELU with
    ``activation="gelu"``, or SiLU), project back. ``gated=True``: c_proj(act(c_gate(x)) * c_fc(x)), a second
    expansion whose activation scales each hidden unit (SwiGLU, GeGLU). ``bias=False``: no linear layer has a bias."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu_tanh", bias: bool = True, gated: bool = False):
        self.act, self.gated = ACTIVATIONS[activation], gated
        self.c_fc = Linear(d_model, d_ff, bias=bias)       # weight (F, C)
        if gated:
            self.c_gate = Linear(d_model, d_ff, bias=bias)  # weight (F, C)
        self.c_proj = Linear(d_ff, d_model, bias=bias)     # weight (C, F)

    def hidden(self, x: Tensor) -> Tensor:
        """(B, T, F): act(c_fc(x)), or act(c_gate(x)) * c_fc(x) when gated."""
        up = stored_gradient(self.c_fc(x))
        if self.gated:
            return self.act(stored_gradient(self.c_gate(x.contiguous_backward()))) * up
        return self.act(up)

    def __call__(self, x: Tensor) -> Tensor:
        # (B, T, F). contiguous(), contiguous_backward(): store h, its gradient and the gradients of the
        # expansions' outputs instead of recomputing them inside each matmul that reads them (h's gradient stored
        # alone keeps the activation's derivative out of c_proj's input-gradient matmul, which can then use
        # register tiles)
        h = stored_padded(self.hidden(x))
        return self.c_proj(h)                                 # (B, T, C)
# --8<-- [end:feedforward]
