"""Incremental decoding with a key/value cache, in NumPy: the reference for tinyref/generation/kvcache.py.

``decode_step`` runs one new token through the model: each layer computes the new position's
query, key and value, appends the key and value to that layer's cache, and attends over the
cache, which holds exactly the positions 0..t the token may see (so no mask is needed). Built
only from the oracle's own component functions, so its agreement with ``gpt_forward`` is a
statement about the cache, not about a second copy of the model.
"""
import math

import numpy as np

from .attention import softmax_forward
from .feedforward import feedforward_forward
from .layernorm import norm_forward
from .linear import linear_forward
from .model import block_options, gpt_forward
from .params import family, sub_params
from .rope import rope_forward


def empty_cache(cfg, dtype=np.float64):
    """One {"k", "v"} pair of (n_kv_heads, 0, hd) arrays of ``dtype`` per layer: no position seen yet."""
    hd, KV = cfg.d_model // cfg.n_heads, family(cfg)["n_kv_heads"]
    return [{"k": np.zeros((KV, 0, hd), dtype), "v": np.zeros((KV, 0, hd), dtype)} for _ in range(cfg.n_layers)]


# --8<-- [start:decode_step]
def decode_step(token, params, cfg, cache):
    """Token ``token`` at position t = the cache's length -> next-token logits (V,); appends to ``cache``."""
    t, C, H = cache[0]["k"].shape[1], cfg.d_model, cfg.n_heads
    hd, opts, eps = C // H, block_options(cfg), cfg.layer_norm_eps
    KV, norm = opts["n_kv_heads"], opts["norm"]
    x = params["wte.weight"][token]                                                    # (C,)
    if opts["rope"] is None:
        x = x + params["wpe.weight"][t]                                                # learned positions
    for i, layer in enumerate(cache):
        p = sub_params(params, f"h.{i}.")
        a, _ = norm_forward(x, sub_params(p, "ln_1."), eps, norm)                     # (C,)
        qkv, _ = linear_forward(a, sub_params(p, "attn.c_attn."))                      # ((H + 2 KV) hd,): [q | k | v]
        q, k, v = [u.reshape(-1, 1, hd) for u in np.split(qkv, [H * hd, (H + KV) * hd])]   # (H, 1, hd), (KV, 1, hd) x 2
        if opts["rope"] is not None:                                                   # q and k turned by position t
            q, _ = rope_forward(q, None, *opts["rope"], positions=[t])
            k, _ = rope_forward(k, None, *opts["rope"], positions=[t])
        layer["k"] = np.concatenate([layer["k"], k], axis=1)                           # (KV, t+1, hd): positions 0..t
        layer["v"] = np.concatenate([layer["v"], v], axis=1)
        keys, values = (np.repeat(layer[n], H // KV, axis=0) for n in ("k", "v"))      # (H, t+1, hd): each kv head for its group
        scores = q @ keys.transpose(0, 2, 1) / math.sqrt(hd)                           # (H, 1, t+1): no future in the cache
        att, _ = softmax_forward(scores)
        y = (att @ values).reshape(C)                                                  # (C,): heads side by side
        out, _ = linear_forward(y, sub_params(p, "attn.c_proj."))
        x = x + out                                                                    # (C,)
        m, _ = norm_forward(x, sub_params(p, "ln_2."), eps, norm)
        f, _ = feedforward_forward(m, sub_params(p, "mlp."), opts["activation"], opts["gated_mlp"])
        x = x + f                                                                      # (C,)
    xf, _ = norm_forward(x, sub_params(params, "ln_f."), eps, norm)
    head = params["wte.weight" if cfg.tie_embeddings else "lm_head.weight"]            # (V, C)
    return xf @ head.T, cache                                                          # (V,)
# --8<-- [end:decode_step]


# --8<-- [start:incremental_logits]
def incremental_logits(tokens, params, cfg, step=decode_step):
    """(N, V): the logits after each of ``tokens``, decoded one position at a time with the cache.

    A window that slides moves every token to a new position (a learned wpe row, or a rotation angle),
    so once ``context_length`` tokens are cached the cache is rebuilt from the last context_length - 1
    tokens before the next one goes in (``step`` is replaceable to test the test).
    """
    T, out, cache = cfg.context_length, [], empty_cache(cfg, params["wte.weight"].dtype)
    for i, token in enumerate(tokens):
        if cache[0]["k"].shape[1] == T:                                  # full: slide by one
            cache = empty_cache(cfg, params["wte.weight"].dtype)
            for earlier in tokens[i - T + 1:i]:
                _, cache = step(earlier, params, cfg, cache)
        logits, cache = step(token, params, cfg, cache)
        out.append(logits)
    return np.stack(out)


def recomputed_logits(tokens, params, cfg):
    """(N, V): the same logits by brute force, a full ``gpt_forward`` of the window ending at each token."""
    T = cfg.context_length
    return np.stack([gpt_forward(np.asarray(tokens[max(0, i + 1 - T):i + 1]).reshape(1, -1), params, cfg)[0][0, -1]
                     for i in range(len(tokens))])
# --8<-- [end:incremental_logits]
