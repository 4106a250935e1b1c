"""Causal multi-head self-attention: each position mixes the values of itself and earlier positions."""
import math

from tinygrad import Tensor, nn


# --8<-- [start:causal_mask]
def causal_mask(T: int, device=None) -> Tensor:
    """(T, T) additive mask: 0 on and below the diagonal, -inf above it (position t sees 0..t).
    ``device``: the scores' device, a tuple when the batch is sharded (tinyref.runtime.parallel)."""
    return Tensor.full((T, T), float("-inf"), device=device).triu(1)
# --8<-- [end:causal_mask]


# --8<-- [start:attention]
class MultiHeadSelfAttention:
    """softmax(q k^T / sqrt(hd) + mask) v for each of n_heads heads, concatenated and projected."""

    def __init__(self, d_model: int, n_heads: int, bias: bool = True):
        self.n_heads = n_heads
        self.c_attn = nn.Linear(d_model, 3 * d_model, bias=bias)   # weight (3C, C): rows [q | k | v]
        self.c_proj = nn.Linear(d_model, d_model, bias=bias)       # weight (C, C)

    def attention_weights(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The (B, H, T, T) attention probabilities and the (B, H, T, hd) values they mix."""
        B, T, C = x.shape
        H, hd = self.n_heads, C // self.n_heads
        q, k, v = self.c_attn(x).contiguous_backward().split(C, dim=2)   # 3 x (B, T, C)
        # (B, H, T, hd): head h owns columns h*hd:(h+1)*hd. contiguous(): store the tensor, contiguous_backward():
        # store its gradient, rather than recompute them inside every matmul that reads them (the math is unchanged)
        q, k, v = [t.reshape(B, T, H, hd).transpose(1, 2).contiguous_backward() for t in (q, k, v)]
        scores = (q @ k.transpose(-2, -1) * (1.0 / math.sqrt(hd))).contiguous_backward()    # (B, H, T, T)
        att = (scores + causal_mask(T, scores.device)).softmax(-1).contiguous()    # (B, H, T, T), 0 above the diagonal
        return att, v

    def __call__(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        att, v = self.attention_weights(x)
        y = att @ v                                                  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, C)                       # (B, T, C): heads side by side
        return self.c_proj(y)                                        # (B, T, C)
# --8<-- [end:attention]
