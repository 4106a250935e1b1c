"""Rotary position embeddings (RoPE): q and k of every head turned by an angle that grows with position.

Dimensions pair up, and pair j of the vector at position p turns by ``p * theta ** (-2j / hd)``. Two
rotations compose into one by the difference of their angles, so a q.k score depends only on the
distance between the two positions. ``style`` says which dimensions pair: "half" (Hugging Face's
rotate_half: j with j + hd/2) or "interleaved" (Meta's and llama2.c's: 2j with 2j + 1). No parameters:
for positions 0..T-1 the cos and sin of the angles are computed once per sequence length and device
and kept (outside the state dict); other positions (a decode step's) compute theirs in place.
"""
import numpy as np
from tinygrad import Tensor


# --8<-- [start:rope]
class RotaryPositionalEmbedding:
    """Turns each (..., T, hd) q or k by its positions' angles; ``positions`` defaults to 0..T-1."""
    # (head_dim, theta, T, device) -> stored (cos, sin), shared by every layer and model. Left lazy, cos and
    # sin are recomputed (a range reduction and a polynomial each) for every element that the backward turns back
    tables: dict[tuple, tuple[Tensor, Tensor]] = {}

    def __init__(self, head_dim: int, theta: float = 10000.0, style: str = "half"):
        self.head_dim, self.theta, self.style = head_dim, theta, style

    def angles(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """cos and sin of every (position, pair) angle, each (T, hd/2): pair j turns by p * theta^(-2j/hd)."""
        inv_freq = self.theta ** (Tensor.arange(0, self.head_dim, 2) * (-1.0 / self.head_dim))   # (hd/2,)
        angles = positions.float().reshape(-1, 1) * inv_freq.reshape(1, -1)                           # (T, hd/2)
        return angles.cos(), angles.sin()

    def table(self, T: int, device) -> tuple[Tensor, Tensor]:
        """cos and sin for positions 0..T-1, each (T, hd/2) float32, copied to ``device`` (a tuple: to each); the
        angles in float64, as the oracle's, rounded once. A copy, not a kernel: nothing to compile per length."""
        key = (self.head_dim, self.theta, T, device)
        if key not in self.tables:
            inv_freq = self.theta ** (np.arange(0, self.head_dim, 2) * (-1.0 / self.head_dim))    # (hd/2,)
            angles = np.arange(T).reshape(-1, 1) * inv_freq.reshape(1, -1)                       # (T, hd/2)
            home = device if isinstance(device, str) else device[0]
            self.tables[key] = tuple(Tensor(f(angles).astype(np.float32), device=home).to(device).realize()
                                     for f in (np.cos, np.sin))
        return self.tables[key]

    def __call__(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        T, hd = x.shape[-2], x.shape[-1]
        cos, sin = self.table(T, x.device) if positions is None else self.angles(positions)
        cos, sin = cos.cast(x.dtype), sin.cast(x.dtype)
        if self.style == "half":
            a, b = x[..., :hd // 2], x[..., hd // 2:]                       # pair j: (j, j + hd/2)
            turned = (a * cos - b * sin).cat(a * sin + b * cos, dim=-1)     # (..., T, hd)
        else:
            pairs = x.reshape(*x.shape[:-1], hd // 2, 2)                    # "interleaved", pair j: (2j, 2j + 1)
            a, b = pairs[..., 0], pairs[..., 1]
            turned = (a * cos - b * sin).stack(a * sin + b * cos, dim=-1).reshape(x.shape)   # (..., T, hd)
        # stored once: left lazy, the turn is recomputed inside every matmul that reads it, for each of the T scores
        # a q or k element meets (the math is unchanged)
        return turned.contiguous()
# --8<-- [end:rope]
