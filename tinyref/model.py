"""GPTStyleTransformer: embeddings, a stack of decoder blocks, a final LayerNorm and the output head."""
from __future__ import annotations

import math

import numpy as np
from tinygrad import Tensor, dtypes
from tinygrad.nn.state import get_state_dict

from .block import TransformerDecoderBlock
from .config import GPTConfig
from .embedding import LearnedPositionalEmbeddings, TokenEmbedding
from .errors import UsageError
from .layernorm import make_norm
from .linear import Linear, linear


def check_token_ids(idx: np.ndarray, cfg: GPTConfig, what: str = "token ids") -> np.ndarray:
    """Return ``idx`` as an int32 (B, T) array, or raise UsageError saying what is wrong with it."""
    idx = np.asarray(idx)
    if idx.dtype.kind not in "iu":
        raise UsageError(f"{what} must be integers, got dtype {idx.dtype}")
    if idx.ndim != 2:
        raise UsageError(f"{what} must have shape (batch, time), got shape {idx.shape}")
    if idx.shape[0] == 0 or not 1 <= idx.shape[1] <= cfg.context_length:
        raise UsageError(f"{what} shape {idx.shape} needs batch >= 1 and 1 <= time <= context_length={cfg.context_length}")
    if idx.size and (idx.min() < 0 or idx.max() >= cfg.vocab_size):
        bad = idx[(idx < 0) | (idx >= cfg.vocab_size)].flat[0]
        raise UsageError(f"{what} must lie in [0, vocab_size={cfg.vocab_size}), found {int(bad)}")
    return idx.astype(np.int32)


# --8<-- [start:model]
class GPTStyleTransformer:
    """logits = head(ln_f(blocks(wte[idx] + wpe[0:T]))), with GPT-2's parameter names (rotary models: no wpe,
    positions enter each attention's q and k)."""

    def __init__(self, cfg: GPTConfig):
        self.config = cfg
        self.wte = TokenEmbedding(cfg.vocab_size, cfg.d_model)                  # (V, C)
        if cfg.positions == "learned":                                          # rotary: q, k turned in attention
            self.wpe = LearnedPositionalEmbeddings(cfg.context_length, cfg.d_model)  # (context_length, C)
        self.h = [TransformerDecoderBlock(cfg) for _ in range(cfg.n_layers)]
        self.ln_f = make_norm(cfg.d_model, cfg.layer_norm_eps, cfg.norm, cfg.bias)
        if not cfg.tie_embeddings:
            self.lm_head = Linear(cfg.d_model, cfg.vocab_size, bias=False)   # (V, C)
        init_gpt2_weights(self)

    def __call__(self, idx) -> Tensor:
        """idx: integer (B, T), T <= context_length -> logits (B, T, vocab_size)."""
        if not isinstance(idx, Tensor):
            idx = Tensor(check_token_ids(idx, self.config), dtype=dtypes.int32)
        elif not dtypes.is_int(idx.dtype) or idx.ndim != 2 or idx.shape[1] > self.config.context_length:
            raise UsageError(f"idx must be an integer (batch, time<={self.config.context_length}) tensor, "
                             f"got {idx.dtype} {idx.shape}")
        x = self.embed(idx).contiguous_backward()   # (B, T, C); its gradient stored once, not per token id
        for block in self.h:
            x = block(x)                         # (B, T, C)
        x = self.ln_f(x)                         # (B, T, C)
        head = self.wte.weight if self.config.tie_embeddings else self.lm_head.weight
        return linear(x, head.contiguous_backward())   # (B, T, C) @ (C, V) -> (B, T, V); its gradient a matmul of its own

    def embed(self, idx: Tensor) -> Tensor:
        """The residual stream's start (B, T, C): wte[idx] + wpe[0:T], or wte[idx] alone for rotary positions."""
        x = self.wte(idx)                        # (B, T, C)
        return self.wpe(x) if self.config.positions == "learned" else x
# --8<-- [end:model]

    def parameters(self) -> list[Tensor]:
        return list(get_state_dict(self).values())

    def num_parameters(self) -> int:
        """Trainable scalars (a tied head is counted once, as it is one tensor)."""
        return sum(t.numel() for t in self.parameters())


# --8<-- [start:init]
def init_gpt2_weights(model: GPTStyleTransformer) -> None:
    """GPT-2's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm gains, and the
    residual projections (attn.c_proj, mlp.c_proj) scaled by 1/sqrt(2 * n_layers) so the
    residual stream's variance does not grow with depth. Draws from tinygrad's global RNG,
    so ``Tensor.manual_seed`` makes it reproducible."""
    residual_std = 0.02 / math.sqrt(2 * model.config.n_layers)
    for name, t in get_state_dict(model).items():
        if name.endswith(".bias"):
            new = Tensor.zeros(*t.shape)
        elif ".ln_" in f".{name}":
            new = Tensor.ones(*t.shape)
        else:
            std = residual_std if name.endswith("c_proj.weight") else 0.02
            new = Tensor.normal(*t.shape, mean=0.0, std=std)
        t.assign(new.cast(t.dtype).contiguous())
    Tensor.realize(*get_state_dict(model).values())
# --8<-- [end:init]
