"""The PyTorch side of ``tinyref bench --compare``: the same architecture (GPT-2's, or the Llama family's
options), for timing only.

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


def make_norm(cfg) -> nn.Module:
    """tinyref's ``make_norm``: RMSNorm (no bias) or LayerNorm (a bias when the model has biases)."""
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.d_model, eps=cfg.layer_norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, style: str) -> torch.Tensor:
    """Rotary positions: each pair (a, b) of x (B, H, T, hd) turned by its angle; cos, sin (T, hd/2)."""
    if style == "half":
        a, b = x.chunk(2, dim=-1)                                               # pair j: (j, j + hd/2)
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)
    a, b = x[..., 0::2], x[..., 1::2]                                           # "interleaved", pair j: (2j, 2j + 1)
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


class Block(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x)); attention through PyTorch's fused causal kernel. With the
    Llama family's options: RMSNorm, rotary positions, key/value heads shared by groups of query heads, a
    SiLU-gated MLP."""

    def __init__(self, cfg):
        super().__init__()
        C, F_, hd = cfg.d_model, cfg.d_ff, cfg.d_model // cfg.n_heads
        self.n_heads, self.n_kv_heads, self.rope_style = cfg.n_heads, cfg.n_kv_heads, cfg.rope_style
        self.ln_1, self.ln_2 = make_norm(cfg), make_norm(cfg)
        self.c_attn = nn.Linear(C, (cfg.n_heads + 2 * cfg.n_kv_heads) * hd, bias=cfg.bias)   # [q | k | v]
        self.attn_proj = nn.Linear(C, C, bias=cfg.bias)
        self.c_fc, self.mlp_proj = nn.Linear(C, F_, bias=cfg.bias), nn.Linear(F_, C, bias=cfg.bias)
        self.c_gate = nn.Linear(C, F_, bias=cfg.bias) if cfg.gated_mlp else None
        self.act = F.silu if cfg.activation == "silu" else lambda h: F.gelu(h, approximate="tanh")

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        B, T, C = x.shape
        H, KV = self.n_heads, self.n_kv_heads
        hd = C // H
        q, k, v = self.c_attn(self.ln_1(x)).split([H * hd, KV * hd, KV * hd], dim=2)
        q, k, v = [t.view(B, T, -1, hd).transpose(1, 2) for t in (q, k, v)]     # (B, H, T, hd), k, v (B, KV, T, hd)
        if rope is not None:
            q, k = rotate(q, *rope, self.rope_style), rotate(k, *rope, self.rope_style)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / math.sqrt(hd), enable_gqa=KV != H)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(B, T, C))              # (B, T, C)
        m = self.ln_2(x)
        h = self.act(self.c_gate(m)) * self.c_fc(m) if self.c_gate is not None else self.act(self.c_fc(m))
        return x + self.mlp_proj(h)


class TorchGPT(nn.Module):
    """logits = head(ln_f(blocks(wte[idx] + wpe[0:T]))), as tinyref.GPTStyleTransformer; rotary models have no
    wpe and turn q and k in each block instead."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.context_length, cfg.d_model) if cfg.positions == "learned" else None
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = make_norm(cfg)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.positions == "rope":                    # pair j of position p turns by p * theta^(-2j/hd), in float64
            hd = cfg.d_model // cfg.n_heads
            inv_freq = cfg.rope_theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
            angles = torch.outer(torch.arange(cfg.context_length, dtype=torch.float64), inv_freq)   # (context, hd/2)
            self.register_buffer("rope_cos", angles.cos(), persistent=False)
            self.register_buffer("rope_sin", angles.sin(), persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.wte(idx)                                                        # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe.weight[:T]
        rope = None if self.wpe is not None else (self.rope_cos[:T].to(x.dtype), self.rope_sin[:T].to(x.dtype))
        for block in self.h:
            x = block(x, rope)
        head = self.wte.weight if self.lm_head is None else self.lm_head.weight
        return self.ln_f(x) @ head.T                                             # (B, T, V)

    def tinyref_names(self) -> dict[str, str]:
        """torch parameter name -> tinyref state-dict key (attn_proj/mlp_proj are tinyref's c_proj's)."""
        return {name: name.replace("attn_proj", "attn.c_proj").replace("mlp_proj", "mlp.c_proj")
                .replace("c_attn", "attn.c_attn").replace("c_fc", "mlp.c_fc").replace("c_gate", "mlp.c_gate")
                for name, _ in self.named_parameters()}

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
