"""Position-wise feed-forward network: the same two-layer MLP applied to every position."""
from tinygrad import Tensor, nn


# --8<-- [start:feedforward]
class PositionWiseFeedForward:
    """c_proj(gelu_tanh(c_fc(x))): expand to d_ff, apply GELU (tanh approximation, as GPT-2), project back."""

    def __init__(self, d_model: int, d_ff: int):
        self.c_fc = nn.Linear(d_model, d_ff)       # weight (F, C)
        self.c_proj = nn.Linear(d_ff, d_model)     # weight (C, F)

    def __call__(self, x: Tensor) -> Tensor:
        # (B, T, F); Tensor.gelu() is the tanh approximation. contiguous(), contiguous_backward(): store h and the
        # gradient of c_fc's output instead of recomputing them inside each matmul that reads them
        h = self.c_fc(x).contiguous_backward().gelu().contiguous()
        return self.c_proj(h)                      # (B, T, C)
# --8<-- [end:feedforward]
