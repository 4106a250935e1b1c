"""Causal multi-head self-attention: each position mixes the values of itself and earlier positions.
Options: grouped-query attention (fewer key/value heads than query heads) and rotary positions."""
from __future__ import annotations

import math

from tinygrad import Tensor

from .linear import Linear, product, stored_gradient
from .rope import RotaryPositionalEmbedding


# --8<-- [start:causal_mask]
def causal_mask(T: int, device=None) -> Tensor:
    """(T, T) additive mask: 0 on and below the diagonal, -inf above it (position t sees 0..t).
    ``device``: the scores' device, a tuple when the batch is sharded (tinyref.runtime.parallel)."""
    return Tensor.full((T, T), float("-inf"), device=device).triu(1)
# --8<-- [end:causal_mask]


# --8<-- [start:stored_softmax]
def stored_softmax(x: Tensor) -> Tensor:
    """softmax over the last axis, as Tensor.softmax computes it, with exp(x - max) and the result each stored once:
    left lazy, the exponentials are recomputed by the sum, by the division and twice more by the backward.
    The max only shifts x (softmax(x - c) = softmax(x)), so no gradient flows through it."""
    e = (x - x.max(-1, keepdim=True).detach()).exp().contiguous()   # (..., T)
    return (e / e.sum(-1, keepdim=True)).contiguous()             # (..., T)
# --8<-- [end:stored_softmax]


# --8<-- [start:attention]
class MultiHeadSelfAttention:
    """softmax(q k^T / sqrt(hd) + mask) v for each of n_heads heads, concatenated and projected.
    ``n_kv_heads``: grouped-query attention, each key/value head shared by n_heads // n_kv_heads query heads
    (None: one each); ``rope``: rotates q and k by position (None: positions come from the embeddings)."""

    def __init__(self, d_model: int, n_heads: int, bias: bool = True, n_kv_heads: int | None = None,
                 rope: RotaryPositionalEmbedding | None = None):
        self.n_heads, self.n_kv_heads, self.rope = n_heads, n_kv_heads or n_heads, rope
        hd = d_model // n_heads
        self.c_attn = Linear(d_model, (n_heads + 2 * self.n_kv_heads) * hd, bias=bias)   # rows [q | k | v]
        self.c_proj = Linear(d_model, d_model, bias=bias)       # weight (C, C)

    def project(self, x: Tensor, positions: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """q (B, H, T, hd) and the n_kv_heads keys and values (B, KV, T, hd), q and k rotated when rotary."""
        B, T, C = x.shape
        H, KV, hd = self.n_heads, self.n_kv_heads, C // self.n_heads
        q, k, v = stored_gradient(self.c_attn(x)).split([H * hd, KV * hd, KV * hd], dim=2)
        # head h owns columns h*hd:(h+1)*hd. contiguous_backward(): store the gradient rather than recompute it
        # inside every matmul that reads it (the math is unchanged)
        q, k, v = [t.reshape(B, T, -1, hd).transpose(1, 2) for t in (q, k, v)]   # (B, H, T, hd), (B, KV, T, hd) x 2
        if self.rope is not None:
            q, k = self.rope(q, positions), self.rope(k, positions)
        return q, k, v

    def repeat_kv(self, t: Tensor) -> Tensor:
        """(B, KV, T, hd) -> (B, H, T, hd): kv head j serves query heads j*g..(j+1)*g-1 (Hugging Face's repeat_kv)."""
        B, KV, T, hd = t.shape
        g = self.n_heads // KV
        return t if g == 1 else t.reshape(B, KV, 1, T, hd).expand(B, KV, g, T, hd).reshape(B, KV * g, T, hd)

    def attention_weights(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The (B, H, T, T) attention probabilities and the (B, H, T, hd) values they mix."""
        q, k, v = self.project(x)
        q, k, v = [t.contiguous_backward() for t in (q, self.repeat_kv(k), self.repeat_kv(v))]   # (B, H, T, hd)
        T, hd = q.shape[2], q.shape[3]
        qk = product(q, k.transpose(-2, -1).contiguous(), k)   # (B, H, T, T) = q k^T, each product streaming
        scores = (qk * (1.0 / math.sqrt(hd))).contiguous_backward()           # (B, H, T, T)
        att = stored_softmax(scores + causal_mask(T, scores.device))    # (B, H, T, T), 0 above the diagonal
        return att, v

    def __call__(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        att, v = self.attention_weights(x)
        y = product(att, v, v.transpose(-2, -1).contiguous())        # (B, H, T, hd) = att v, each product streaming
        y = y.transpose(1, 2).contiguous().reshape(B, T, C)           # (B, T, C): heads side by side
        # stored as (B, T, H, hd): c_proj's forward and weight gradient then sum over one axis of C inputs, not over
        # heads and head dimensions of a transposed view (tinygrad's generic kernel)
        return self.c_proj(y)                                        # (B, T, C)
# --8<-- [end:attention]
