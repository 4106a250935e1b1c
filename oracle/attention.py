"""Causal multi-head self-attention (and the softmax inside it), forward and backward; with grouped-query
attention (fewer key/value heads than query heads) and rotary positions as options."""
import math

import numpy as np

from .linear import linear_backward, linear_forward
from .params import sub_params, with_prefix
from .rope import rope_backward, rope_forward


# --8<-- [start:softmax]
def softmax_forward(x, p=None, out=None):
    """Softmax over the last axis; ``out=x`` writes it over ``x`` (a caller done with ``x`` saves an array)."""
    y = np.subtract(x, x.max(-1, keepdims=True), out=out)   # F1: subtracting the row max changes nothing but avoids overflow
    np.exp(y, out=y)                                          # F2: exp(-inf) is exactly 0
    y /= y.sum(-1, keepdims=True)                             # F3
    return y, y


def softmax_backward(dout, cache, out=None):
    """``out=dout`` writes the gradient over ``dout``, as ``softmax_forward``'s ``out`` does."""
    y = cache
    row_dot = np.einsum("...i,...i->...", dout, y)[..., None]   # sum_i dout_i y_i of each row, (..., 1)
    dx = np.subtract(dout, row_dot, out=out)                     # from F1-F3: the Jacobian diag(y) - y y^T applied to dout
    dx *= y                                                      # ... is y * (dout - row_dot)
    return dx, {}
# --8<-- [end:softmax]


# --8<-- [start:attention]
def attention_forward(x, p, n_heads, n_kv_heads=None, rope=None):
    """``n_kv_heads``: grouped-query attention, each key/value head shared by n_heads // n_kv_heads query
    heads (None: one each); ``rope``: (theta, style) to rotate q and k by position (None: no rotation)."""
    B, T, C = x.shape
    H, hd = n_heads, C // n_heads
    KV = n_kv_heads or H
    qkv, c_attn = linear_forward(x, sub_params(p, "c_attn."))          # F1: (B, T, (H + 2 KV) hd)
    q, k, v = np.split(qkv, [H * hd, (H + KV) * hd], axis=-1)            # F2: [q | k | v], H hd, KV hd, KV hd wide
    q, k, v = [t.reshape(B, T, -1, hd).transpose(0, 2, 1, 3) for t in (q, k, v)]   # F3: (B, H, T, hd), k, v (B, KV, T, hd)
    rq = rk = None
    if rope is not None:
        q, rq = rope_forward(q, None, *rope, out=q)                      # F3r: q and k turned by their positions,
        k, rk = rope_forward(k, None, *rope, out=k)                      # in place (over qkv, not needed again)
    g = H // KV                                                          # F3g: kv head j serves query heads j*g..(j+1)*g-1
    qg = q.reshape(B, KV, g, T, hd)                                      # (HF's repeat_kv), so group the query heads and
    kg, vg = k[:, :, None], v[:, :, None]                                # broadcast k, v (B, KV, 1, T, hd) over each group
    scale = 1.0 / math.sqrt(hd)                                         # a Python float: keeps x's dtype
    scores = ((qg * scale) @ kg.transpose(0, 1, 2, 4, 3)).reshape(B, H, T, T)   # F4: scaling q is cheaper than scaling scores
    future = np.triu(np.ones((T, T), dtype=bool), k=1)                   # position t must not see s > t
    np.copyto(scores, -np.inf, where=future)                             # F5: in place (scores is not needed again)
    att, sm = softmax_forward(scores, out=scores)                        # F6: rows sum to 1, zeros above the diagonal (over scores)
    y = att.reshape(B, KV, g, T, T) @ vg                                 # F7: (B, KV, g, T, hd), i.e. (B, H, T, hd)
    merged = y.reshape(B, H, T, hd).transpose(0, 2, 1, 3).reshape(B, T, C)   # F8: heads side by side
    out, c_proj = linear_forward(merged, sub_params(p, "c_proj."))      # F9
    cache = {"q": q, "k": k, "v": v, "att": att, "scale": scale, "sm": sm, "rope_q": rq, "rope_k": rk,
             "c_attn": c_attn, "c_proj": c_proj, "n_heads": n_heads, "n_kv_heads": KV}
    return out, cache


def attention_backward(dout, cache):
    q, k, v, att, scale = cache["q"], cache["k"], cache["v"], cache["att"], cache["scale"]
    B, H, T, hd = q.shape
    KV = cache["n_kv_heads"]
    dmerged, dproj = linear_backward(dout, cache["c_proj"])              # from F9
    g = H // KV
    kg, vg = k[:, :, None], v[:, :, None]                                # (B, KV, 1, T, hd), as in F3g
    dy = dmerged.reshape(B, T, KV, g, hd).transpose(0, 2, 3, 1, 4)       # from F8: (B, KV, g, T, hd)
    attg = att.reshape(B, KV, g, T, T)
    datt = (dy @ vg.transpose(0, 1, 2, 4, 3)).reshape(B, H, T, T)        # from F7, w.r.t. att
    dv = (attg.transpose(0, 1, 2, 4, 3) @ dy).sum(2)                     # from F7 and F3g, w.r.t. v: summed over v's query group
    dmasked, _ = softmax_backward(datt, cache["sm"], out=datt)           # from F6 (over datt, not needed again)
    dscores = dmasked.reshape(B, KV, g, T, T)                            # from F5: masked scores get no gradient; dmasked is 0 there already (att = 0)
    dq = ((dscores @ kg) * scale).reshape(B, H, T, hd)                   # from F4, w.r.t. q
    dk = (dscores.transpose(0, 1, 2, 4, 3) @ q.reshape(B, KV, g, T, hd)).sum(2) * scale   # from F4 and F3g, w.r.t. k
    if cache["rope_q"] is not None:
        dq, _ = rope_backward(dq, cache["rope_q"])                       # from F3r
        dk, _ = rope_backward(dk, cache["rope_k"])
    dq, dk, dv = [t.transpose(0, 2, 1, 3).reshape(B, T, -1) for t in (dq, dk, dv)]   # from F3
    dqkv = np.concatenate([dq, dk, dv], axis=-1)                         # from F2
    dx, dattn = linear_backward(dqkv, cache["c_attn"])                   # from F1
    return dx, {**with_prefix("c_attn.", dattn), **with_prefix("c_proj.", dproj)}
# --8<-- [end:attention]
