"""Rotary position embeddings (RoPE): q and k of every head turned by an angle that grows with position.

Dimensions pair up, and pair j of the vector at position p turns by ``p * theta ** (-2j / hd)``. Two
rotations compose into one by the difference of their angles, so a q.k score depends only on the
distance between the two positions. ``style`` says which dimensions pair: "half" (Hugging Face's
rotate_half: j with j + hd/2) or "interleaved" (Meta's and llama2.c's: 2j with 2j + 1).
"""
import numpy as np


# --8<-- [start:angles]
def rope_angles(positions, head_dim, theta=10000.0, dtype=np.float64):
    """cos and sin of every (position, pair) angle, each (T, hd/2): pair j turns by p * theta^(-2j/hd)."""
    inv_freq = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)   # (hd/2,)
    angles = np.outer(np.asarray(positions, dtype=np.float64), inv_freq)            # (T, hd/2)
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)
# --8<-- [end:angles]


# --8<-- [start:pairs]
def rope_pairs(x, style="half"):
    """The two halves (a, b) of each rotated pair, as views of x (..., hd) -> 2 x (..., hd/2)."""
    if style == "half":
        half = x.shape[-1] // 2
        return x[..., :half], x[..., half:]      # pair j: (j, j + hd/2)
    return x[..., 0::2], x[..., 1::2]            # "interleaved", pair j: (2j, 2j + 1)
# --8<-- [end:pairs]


# --8<-- [start:rope]
def rope_forward(x, p=None, theta=10000.0, style="half", positions=None, out=None):
    """x (..., T, hd) -> x with every pair of each position p turned by p's angles (default p = 0..T-1);
    ``out=x`` turns x in place (a caller done with the unturned x saves an array)."""
    T, hd = x.shape[-2:]
    cos, sin = rope_angles(np.arange(T) if positions is None else positions, hd, theta, x.dtype)  # F1: (T, hd/2)
    a, b = rope_pairs(x, style)
    turned_a = a * cos - b * sin                  # F2: (a, b) turned by the angle ...
    turned_b = a * sin + b * cos                  # F3: ... a rotation of the plane of each pair
    out = np.empty_like(x) if out is None else out
    out_a, out_b = rope_pairs(out, style)
    out_a[...], out_b[...] = turned_a, turned_b   # written after both are computed: out may be x
    return out, (cos, sin, style)


def rope_backward(dout, cache):
    cos, sin, style = cache
    da_out, db_out = rope_pairs(dout, style)
    dx = np.empty_like(dout)
    da, db = rope_pairs(dx, style)
    da[...] = da_out * cos + db_out * sin         # from F2 and F3 w.r.t. a: the transposed rotation ...
    db[...] = -da_out * sin + db_out * cos        # from F2 and F3 w.r.t. b: ... turns back by the same angle
    return dx, {}
# --8<-- [end:rope]
