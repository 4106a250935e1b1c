"""Two small PyTorch GPT-2s as people write them, for tinyref.testing.torch's tests: one laid out like
nanoGPT (``transformer.`` prefix, tied head, optional biases, ``nn.GELU``, ``forward(idx, targets)``
returning the last position only without targets), one like minGPT (untied head, a hand-written
tanh GELU, an MLP held in a ``ModuleDict`` that is never called as a module).

``bug`` plants one mistake, in block ``bug_layer`` only (None: every block), so the checker's
report can be tested against a known first divergence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

BUGS = ("no_mask", "scale", "eps", "no_residual", "tanh_gelu", "erf_gelu", "no_ln_f", "detached_wpe")


@dataclass
class NanoConfig:
    block_size: int = 8
    vocab_size: int = 11
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 16
    bias: bool = True
    exact_gelu: bool = False      # nn.GELU() (erf) instead of nn.GELU(approximate="tanh")


def attend(q, k, v, no_mask=False, scale_power=0.5):
    """Causal softmax attention over (B, H, T, hd) heads."""
    T = q.size(-2)
    scores = q @ k.transpose(-2, -1) / k.size(-1) ** scale_power            # (B, H, T, T)
    if not no_mask:
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(-1) @ v                                           # (B, H, T, hd)


class BiasOptionalLayerNorm(nn.Module):
    """LayerNorm whose bias can be left out (torch's own has no such switch everywhere)."""

    def __init__(self, n, bias, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n)) if bias else None
        self.hard_coded_eps = eps      # no `eps` attribute: the checker cannot read it, assumes GPT-2's

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.hard_coded_eps)


class NanoAttention(nn.Module):
    def __init__(self, cfg, bug=None):
        super().__init__()
        self.n_head, self.bug = cfg.n_head, bug
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.register_buffer("bias", torch.ones(cfg.block_size, cfg.block_size).tril())   # a buffer, not a parameter

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in self.c_attn(x).split(C, dim=-1))
        y = attend(q, k, v, no_mask=self.bug == "no_mask", scale_power=1.0 if self.bug == "scale" else 0.5)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class NanoMLP(nn.Module):
    def __init__(self, cfg, bug=None):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        exact = cfg.exact_gelu != (bug == "erf_gelu")
        self.gelu = nn.GELU() if exact else nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.bug = bug

    def forward(self, x):
        h = self.c_fc(x)
        # a bug that the module's declared nn.GELU does not show
        return self.c_proj(F.gelu(h, approximate="tanh") if self.bug == "tanh_gelu" else self.gelu(h))


class NanoBlock(nn.Module):
    def __init__(self, cfg, bug=None):
        super().__init__()
        self.ln_1 = BiasOptionalLayerNorm(cfg.n_embd, cfg.bias, eps=1e-3 if bug == "eps" else 1e-5)
        self.attn = NanoAttention(cfg, bug)
        self.ln_2 = BiasOptionalLayerNorm(cfg.n_embd, cfg.bias)
        self.mlp = NanoMLP(cfg, bug)
        self.residual = bug != "no_residual"

    def forward(self, x):
        x = x + self.attn(self.ln_1(x)) if self.residual else self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoStyleGPT(nn.Module):
    def __init__(self, cfg: NanoConfig, bug=None, bug_layer=None):
        super().__init__()
        self.config, self.bug = cfg, bug
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            h=nn.ModuleList(NanoBlock(cfg, bug if bug_layer in (None, i) else None)
                            for i in range(cfg.n_layer)),
            ln_f=BiasOptionalLayerNorm(cfg.n_embd, cfg.bias)))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight           # tied: one Parameter, two names

    def forward(self, idx, targets=None):
        t = self.transformer
        pos = t.wpe(torch.arange(idx.size(1)))
        x = t.wte(idx) + (pos.detach() if self.bug == "detached_wpe" else pos)   # (B, T, C)
        for block in t.h:
            x = block(x)
        x = x if self.bug == "no_ln_f" else t.ln_f(x)
        if targets is None:
            return self.lm_head(x[:, -1:]), None                    # generation: the last position only
        logits = self.lm_head(x)                                    # (B, T, V)
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())


class TanhGELU(nn.Module):
    def __init__(self, erf=False):
        super().__init__()
        self.erf = erf

    def forward(self, x):
        if self.erf:
            return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


class MinBlock(nn.Module):
    def __init__(self, cfg, bug=None):
        super().__init__()
        C = cfg.n_embd
        self.ln_1, self.ln_2 = nn.LayerNorm(C, eps=1e-3 if bug == "eps" else 1e-5), nn.LayerNorm(C)
        self.attn = NanoAttention(cfg, bug)
        self.mlp = nn.ModuleDict(dict(c_fc=nn.Linear(C, 4 * C), c_proj=nn.Linear(4 * C, C),
                                      act=TanhGELU(erf=bug == "erf_gelu")))
        m = self.mlp
        self.mlpf = lambda x: m.c_proj(m.act(m.c_fc(x)))           # the ModuleDict itself is never called

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlpf(self.ln_2(x))


class MinStyleGPT(nn.Module):
    def __init__(self, cfg: NanoConfig, bug=None, bug_layer=None):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd), wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            h=nn.ModuleList(MinBlock(cfg, bug if bug_layer in (None, i) else None)
                            for i in range(cfg.n_layer)),
            ln_f=nn.LayerNorm(cfg.n_embd)))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)   # untied

    def forward(self, idx, targets=None):
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(idx.size(1)))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss
