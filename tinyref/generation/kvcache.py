"""Next-token logits for generation: recomputing the whole window, or a KV cache that is proved equal.

Without a cache every new token re-runs the model on the whole window, recomputing the keys and
values of every earlier position although they cannot change (causal attention: position s only
ever sees 0..s). With one, each layer keeps its keys and values, and a new token costs one
position's worth of work plus one attention row.

Every jitted function here has fixed shapes, so tinygrad compiles it once for all positions:
windows are padded to ``context_length`` (causality keeps the padding out of the real positions),
the cache always holds ``context_length`` slots, a new key/value is written into slot ``pos`` by a
mask, and slots after ``pos`` (empty, or stale padding) are hidden with -inf as the causal mask
does. The cached code reuses the model's own sub-layers and weights (``wte``, ``wpe``, ``ln_1``,
the attention's ``project`` (its ``c_attn`` split into heads, q and k rotated when rotary) and
``repeat_kv``, ``c_proj``, ``ln_2``, ``mlp``, ``ln_f``), so every variant of the model (RMSNorm,
gated MLPs) decodes through the same code. The cache holds ``n_kv_heads`` heads per layer; each
group of query heads reads its shared key/value head.

Once the window is full and slides, every cached key and value belongs to a different position (a
learned ``wpe`` row, or a rotation angle): the cache is refilled from the new window, which costs
one full forward, the same as decoding without a cache.
"""
from __future__ import annotations

import math

import numpy as np
from tinygrad import Tensor, TinyJit, Variable, dtypes

from ..runtime import cpugraph
from ..model import GPTStyleTransformer, check_token_ids


def _at(x: Tensor, pos) -> Tensor:
    """(B, T, D) -> (B, D): position ``pos`` (an int or a bound Variable), picked by a one-hot sum.
    Not ``x[:, pos]``: a jitted function that shrinks a computed tensor at a Variable replays with
    the position it was captured at (tinygrad 0.14; tests/test_kvcache.py would catch it)."""
    return (x * (Tensor.arange(x.shape[1]) == pos).reshape(1, -1, 1)).sum(1)


class RecomputeDecoder:
    """Decoding one sequence without a cache: each call runs the model's own forward on the whole window.

    ``prefill(ids)`` starts from a window of 1..context_length tokens; ``extend(token)`` appends one,
    sliding the window once it holds ``context_length`` tokens. Both return the next-token logits (V,).
    Positions and token ids enter the jitted functions as bound symbolic variables, so no input has
    to be uploaded for them.
    """

    def __init__(self, model: GPTStyleTransformer):
        cfg = model.config
        self.model, self.window = model, []                     # window: the tokens the logits are conditioned on
        self.last = Variable("last", 0, cfg.context_length - 1)
        self.pos = Variable("pos", 0, cfg.context_length - 1)
        self.tok = Variable("tok", 0, cfg.vocab_size - 1)
        self._forward = TinyJit(self._last_logits)
        cpugraph.install(model.wte.weight.device)               # on a CPU: replay each token's kernels from C

    def _last_logits(self, idx: Tensor, last) -> Tensor:
        """The model's own forward on the padded window (1, Tmax); the logits (V,) at position ``last``."""
        return _at(self.model(idx), last)[0].realize()

    def prefill(self, ids) -> Tensor:
        """Condition on a window of 1..context_length token ids; logits (V,) after its last token."""
        self.window = [int(t) for t in check_token_ids(np.asarray(ids).reshape(1, -1), self.model.config, "prompt tokens")[0]]
        padded = np.zeros((1, self.model.config.context_length), dtype=np.int32)
        padded[0, :len(self.window)] = self.window               # causality keeps the padding out of positions < T
        return self._run(Tensor(padded, dtype=dtypes.int32), self.last.bind(len(self.window) - 1))

    def _run(self, padded: Tensor, last) -> Tensor:
        return self._forward(padded, last)

    def extend(self, token: int) -> Tensor:
        """Append one token; logits (V,) after it. Past the context, the window slides."""
        return self.prefill((self.window + [token])[-self.model.config.context_length:])


class KVCache(RecomputeDecoder):
    """Cached decoding: ``prefill`` stores every layer's keys and values; ``extend`` adds one position."""

    def __init__(self, model: GPTStyleTransformer):
        super().__init__(model)
        cfg, dtype = model.config, model.wte.weight.dtype
        shape = (1, cfg.n_kv_heads, cfg.context_length, cfg.head_dim)        # (1, KV, Tmax, hd)
        self.k = [Tensor.zeros(*shape, dtype=dtype).contiguous().realize() for _ in model.h]
        self.v = [Tensor.zeros(*shape, dtype=dtype).contiguous().realize() for _ in model.h]
        self._prefill = TinyJit(self._prefill_window)
        self._step = TinyJit(self._step_one)

    def _run(self, padded: Tensor, last) -> Tensor:
        return self._prefill(padded, last)

    def extend(self, token: int) -> Tensor:
        pos = len(self.window)                                               # the new token's position
        if pos == self.model.config.context_length:
            return super().extend(token)                                     # the window slides: refill
        tok = int(check_token_ids(np.array([[token]]), self.model.config, "new token")[0, 0])
        self.window.append(tok)
        return self._step(self.tok.bind(tok), self.pos.bind(pos))

    # --8<-- [start:prefill]
    def _prefill_window(self, idx: Tensor, last) -> Tensor:
        """Run the padded window (1, Tmax) once, store every layer's keys and values, return the
        logits (V,) at position ``last``."""
        m = self.model
        x = m.embed(idx)                                                     # (1, Tmax, C)
        for block, k_cache, v_cache in zip(m.h, self.k, self.v):
            q, k, v = block.attn.project(block.ln_1(x))                      # (1, H, Tmax, hd), (1, KV, Tmax, hd) x 2
            k_cache.assign(k)
            v_cache.assign(v)
            x = x + self._attend(block, q, k, v, Tensor.arange(x.shape[1]).reshape(-1, 1))   # (1, Tmax, C)
            x = x + block.mlp(block.ln_2(x))                                 # (1, Tmax, C)
        return self._logits(_at(x, last)).realize(*self.k, *self.v)
    # --8<-- [end:prefill]

    # --8<-- [start:step]
    def _step_one(self, tok, pos) -> Tensor:
        """Token ``tok`` at position ``pos``: write its key and value into slot ``pos`` of each layer's
        cache, attend over slots 0..pos, return the next logits (V,). Rotary q and k turn by ``pos``."""
        m = self.model
        x = m.wte.weight[tok].reshape(1, 1, -1)                              # (1, 1, C)
        if m.config.positions == "learned":
            x = x + m.wpe.weight[pos].reshape(1, 1, -1)                      # (1, 1, C)
        position = Tensor(pos).reshape(1)                                    # (1,): the one query's position
        here = (Tensor.arange(m.config.context_length) == pos).reshape(1, 1, -1, 1)   # (1, 1, Tmax, 1)
        for block, k_cache, v_cache in zip(m.h, self.k, self.v):
            q, k, v = block.attn.project(block.ln_1(x), position)            # (1, H, 1, hd), (1, KV, 1, hd) x 2
            keys = k_cache.assign(here.where(k, k_cache))                    # (1, KV, Tmax, hd): slot pos <- k
            values = v_cache.assign(here.where(v, v_cache))                  # (1, KV, Tmax, hd): slot pos <- v
            x = x + self._attend(block, q, keys, values, pos)                # (1, 1, C)
            x = x + block.mlp(block.ln_2(x))                                 # (1, 1, C)
        return self._logits(x[:, 0]).realize(*self.k, *self.v)
    # --8<-- [end:step]

    @staticmethod
    def _attend(block, q: Tensor, k: Tensor, v: Tensor, query_pos) -> Tensor:
        """softmax(q k^T / sqrt(hd) + mask) v through the block's c_proj; k and v hold n_kv_heads heads,
        each shared by its group of query heads; the mask hides every key slot after its query's
        position (``query_pos``: (Tq, 1), or the one query's position)."""
        B, H, Tq, hd = q.shape
        k, v = block.attn.repeat_kv(k), block.attn.repeat_kv(v)            # (B, H, Tk, hd)
        scores = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(hd))           # (B, H, Tq, Tk)
        future = Tensor.arange(k.shape[2]).reshape(1, -1) > query_pos       # (Tq, Tk)
        att = future.where(float("-inf"), scores).softmax(-1)               # (B, H, Tq, Tk)
        y = (att @ v).transpose(1, 2).reshape(B, Tq, H * hd)                # (B, Tq, C): heads side by side
        return block.attn.c_proj(y)                                         # (B, Tq, C)

    def _logits(self, x: Tensor) -> Tensor:
        """(1, C) -> (V,) through ln_f and the (tied or separate) output head."""
        m = self.model
        head = m.wte.weight if m.config.tie_embeddings else m.lm_head.weight
        return (m.ln_f(x) @ head.T)[0]
