"""The PyTorch side of ``tinyref bench --compare``: the same GPT-2 architecture, for timing only.

It lives here, outside tinyref's model path, and is imported only when ``--compare`` asks for it
(torch is the optional ``bench`` extra). It takes its weights from the same NumPy dict as tinyref
and the oracle, under the same keys and in the same (out, in) layout, and tests/test_bench.py
checks that it computes the oracle's loss, so the comparison times the same math.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x)); attention through PyTorch's fused causal kernel."""

    def __init__(self, cfg):
        super().__init__()
        C, F_ = cfg.d_model, cfg.d_ff
        self.n_heads, self.eps = cfg.n_heads, cfg.layer_norm_eps
        self.ln_1, self.ln_2 = nn.LayerNorm(C, eps=self.eps), nn.LayerNorm(C, eps=self.eps)
        self.c_attn, self.attn_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.c_fc, self.mlp_proj = nn.Linear(C, F_), nn.Linear(F_, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        H = self.n_heads
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)                      # 3 x (B, T, C)
        q, k, v = [t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v)]  # (B, H, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / math.sqrt(C // H))
        x = x + self.attn_proj(y.transpose(1, 2).reshape(B, T, C))              # (B, T, C)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class TorchGPT(nn.Module):
    """logits = head(ln_f(blocks(wte[idx] + wpe[0:T]))), as tinyref.GPTStyleTransformer."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.context_length, cfg.d_model)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe.weight[:T]                                  # (B, T, C)
        for block in self.h:
            x = block(x)
        head = self.wte.weight if self.lm_head is None else self.lm_head.weight
        return self.ln_f(x) @ head.T                                             # (B, T, V)

    def tinyref_names(self) -> dict[str, str]:
        """torch parameter name -> tinyref state-dict key (attn_proj/mlp_proj are tinyref's c_proj's)."""
        return {name: name.replace("attn_proj", "attn.c_proj").replace("mlp_proj", "mlp.c_proj")
                .replace("c_attn", "attn.c_attn").replace("c_fc", "mlp.c_fc") for name, _ in self.named_parameters()}

    def load_numpy(self, params: dict[str, np.ndarray]) -> "TorchGPT":
        """Copy a tinyref state dict (GPT-2 keys, (out, in) layout) into this module."""
        torch_names = self.tinyref_names()
        if set(params) != set(torch_names.values()):
            raise KeyError(f"parameter keys differ: {sorted(set(params) ^ set(torch_names.values()))}")
        own = dict(self.named_parameters())
        with torch.no_grad():
            for name, p in own.items():
                p.copy_(torch.from_numpy(np.asarray(params[torch_names[name]])).to(p.dtype))
        return self

    def numpy_state(self) -> dict[str, np.ndarray]:
        """This module's parameters under tinyref's keys (float64 copies), e.g. to compare with the oracle."""
        own = dict(self.named_parameters())
        return {key: own[name].detach().double().numpy().copy() for name, key in self.tinyref_names().items()}


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over all B*T positions."""
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def adamw(model: nn.Module, lr: float) -> torch.optim.AdamW:
    """tinyref's default optimizer (make_optimizer with weight_decay=0) in PyTorch."""
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)


def train_step(forward: nn.Module, opt, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Forward, loss, backward, AdamW update; returns the loss before the update."""
    opt.zero_grad(set_to_none=True)
    loss = loss_of(forward, x, y)
    loss.backward()
    opt.step()
    return loss.detach()


def make_torch_step(cfg, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, lr: float, compile: bool = False):
    """One float32 training step on a fixed batch, as a no-argument function (for bench.time_steps)."""
    model = TorchGPT(cfg).load_numpy(params)
    opt = adamw(model, lr)
    forward = torch.compile(model) if compile else model
    xt, yt = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))
    return lambda: train_step(forward, opt, xt, yt)
