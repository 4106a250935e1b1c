"""Rotary position embeddings (RoPE): q and k of every head turned by an angle that grows with position.

Dimensions pair up, and pair j of the vector at position p turns by ``p * theta ** (-2j / hd)``. Two
rotations compose into one by the difference of their angles, so a q.k score depends only on the
distance between the two positions. ``style`` says which dimensions pair: "half" (Hugging Face's
rotate_half: j with j + hd/2) or "interleaved" (Meta's and llama2.c's: 2j with 2j + 1). No parameters:
the angles are computed inside the kernels that use them, so nothing is stored or uploaded.
"""
from tinygrad import Tensor


# --8<-- [start:rope]
class RotaryPositionalEmbedding:
    """Turns each (..., T, hd) q or k by its positions' angles; ``positions`` defaults to 0..T-1."""

    def __init__(self, head_dim: int, theta: float = 10000.0, style: str = "half"):
        self.head_dim, self.theta, self.style = head_dim, theta, style

    def angles(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """cos and sin of every (position, pair) angle, each (T, hd/2): pair j turns by p * theta^(-2j/hd)."""
        inv_freq = self.theta ** (Tensor.arange(0, self.head_dim, 2) * (-1.0 / self.head_dim))   # (hd/2,)
        angles = positions.float().reshape(-1, 1) * inv_freq.reshape(1, -1)                           # (T, hd/2)
        return angles.cos(), angles.sin()

    def __call__(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        T, hd = x.shape[-2], x.shape[-1]
        cos, sin = self.angles(Tensor.arange(T) if positions is None else positions)
        cos, sin = cos.cast(x.dtype), sin.cast(x.dtype)
        if self.style == "half":
            a, b = x[..., :hd // 2], x[..., hd // 2:]                       # pair j: (j, j + hd/2)
            turned = (a * cos - b * sin).cat(a * sin + b * cos, dim=-1)     # (..., T, hd)
        else:
            pairs = x.reshape(*x.shape[:-1], hd // 2, 2)                    # "interleaved", pair j: (2j, 2j + 1)
            a, b = pairs[..., 0], pairs[..., 1]
            turned = (a * cos - b * sin).stack(a * sin + b * cos, dim=-1).reshape(x.shape)   # (..., T, hd)
        # stored once: left lazy, the turn (cos and sin included) is recomputed inside every matmul that reads it,
        # for each of the T scores a q or k element meets (the math is unchanged)
        return turned.contiguous()
# --8<-- [end:rope]
