"""Verify a tiny PyTorch GPT against tinyref's NumPy oracle with ``tinyref.testing``.

    python examples/verify_torch_gpt.py                    # float64, tolerance FLOAT64
    python examples/verify_torch_gpt.py --dtype float32    # float32, tolerances FLOAT32 / FLOAT32_GRAD

The model is written the plain PyTorch way, with nanoGPT's module names, so its
``state_dict()`` keys are tinyref's (``h.0.attn.c_attn.weight``, ...; ``nn.Linear`` stores
``(out, in)`` like tinygrad). tinyref.testing hands it weights and inputs as NumPy arrays, runs
the float64 oracle on the same numbers, and compares the outputs and every gradient (from torch
autograd): the whole model, the loss, then each component on its own. Exit status 0 when all
agree; otherwise the report names each tensor that differs, its worst element and both values.
The model covers every GPTConfig field (the Llama family too), so it is also the independent float64 twin
that tests/test_golden.py checks the golden vectors against. Runs on the CPU in a few seconds.
"""
from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tinyref.testing import ReferenceMismatch, assert_component_matches, assert_loss_matches, assert_matches_reference
from tinyref.verify.tolerances import FLOAT32, FLOAT32_GRAD, FLOAT64


# --- the model under test: a GPT-2 in PyTorch (with nanoGPT's exact-GELU and bias-free variants, and the Llama
# family's fields: rotary positions, RMSNorm, SiLU, a gated MLP, grouped-query attention) -------------------------

def llama_field(cfg, name):
    """A Llama-family field of ``cfg``, GPT-2's value when the config object predates it."""
    defaults = {"positions": "learned", "rope_theta": 10000.0, "rope_style": "half", "norm": "layernorm",
                "gated_mlp": False, "n_kv_heads": None}
    return getattr(cfg, name, defaults[name])


def rotate(x, theta, style):
    """x (B, H, T, hd) turned by position: Hugging Face's rotate_half form for "half", Meta's complex-number
    form for "interleaved" (pairs (2j, 2j + 1) as the real and imaginary parts of one complex number)."""
    T, hd = x.shape[-2:]
    inv_freq = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    angles = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)          # (T, hd/2)
    if style == "half":
        cos, sin = (torch.cat([f(angles)] * 2, dim=-1).to(x.dtype) for f in (torch.cos, torch.sin))   # (T, hd)
        rotated_half = torch.cat([-x[..., hd // 2:], x[..., :hd // 2]], dim=-1)
        return x * cos + rotated_half * sin
    turns = torch.polar(torch.ones_like(angles), angles)                         # e^(i angle), (T, hd/2)
    pairs = torch.view_as_complex(x.to(torch.float64).reshape(*x.shape[:-1], hd // 2, 2).contiguous())
    return torch.view_as_real(pairs * turns).flatten(-2).to(x.dtype)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_heads, self.n_kv_heads = cfg.n_heads, llama_field(cfg, "n_kv_heads") or cfg.n_heads
        self.rope = (llama_field(cfg, "rope_theta"), llama_field(cfg, "rope_style")) \
            if llama_field(cfg, "positions") == "rope" else None
        hd = cfg.d_model // cfg.n_heads
        self.c_attn = nn.Linear(cfg.d_model, (self.n_heads + 2 * self.n_kv_heads) * hd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)

    def forward(self, x):
        B, T, C = x.shape
        hd, KV = C // self.n_heads, self.n_kv_heads
        q, k, v = self.c_attn(x).split([C, KV * hd, KV * hd], dim=2)          # (B, T, C), 2 x (B, T, KV hd)
        q, k, v = (t.view(B, T, -1, hd).transpose(1, 2) for t in (q, k, v))   # (B, H, T, hd), 2 x (B, KV, T, hd)
        if self.rope is not None:
            q, k = rotate(q, *self.rope), rotate(k, *self.rope)
        k, v = (t.repeat_interleave(self.n_heads // KV, dim=1) for t in (k, v))   # kv head j for query heads j*g..
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))            # (B, H, T, T)
        att = F.softmax(self.causal_mask(scores), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)                        # heads side by side
        return self.c_proj(y)

    def causal_mask(self, scores):
        """Position t may not look at positions after t."""
        T = scores.size(-1)
        future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        return scores.masked_fill(future, float("-inf"))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        activation = getattr(cfg, "activation", "gelu_tanh")
        self.act = nn.SiLU() if activation == "silu" else nn.GELU("tanh" if activation == "gelu_tanh" else "none")
        self.c_fc = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.c_gate = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias) if llama_field(cfg, "gated_mlp") else None
        self.c_proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)

    def forward(self, x):
        if self.c_gate is None:
            return self.c_proj(self.act(self.c_fc(x)))
        return self.c_proj(self.act(self.c_gate(x)) * self.c_fc(x))


def norm(cfg):
    if llama_field(cfg, "norm") == "rmsnorm":
        return nn.RMSNorm(cfg.d_model, eps=cfg.layer_norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        learned = llama_field(cfg, "positions") == "learned"
        self.wpe = nn.Embedding(cfg.context_length, cfg.d_model) if learned else None   # rotary: none
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = norm(cfg)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(self, idx):
        x = self.wte(idx)                                                    # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(idx.size(1)))
        for block in self.h:
            x = block(x)
        x = self.ln_f(x)
        return x @ self.wte.weight.T if self.lm_head is None else self.lm_head(x)   # (B, T, V)


# --- tinyref.testing's calling convention, for any of the modules above -----------------------

# --8<-- [start:numpy_functions]
def numpy_functions(build):
    """``forward(x, params, cfg)`` and ``backward(x, params, dout, cfg) -> (dx, grads)`` on NumPy
    arrays, for the module ``build(cfg)`` loaded with ``params`` (its own state-dict keys)."""
    def run(x, params, cfg):
        float64 = any(a.dtype == np.float64 for a in (x, *params.values()))
        module = build(cfg).to(torch.float64 if float64 else torch.float32)
        module.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()}, strict=True)
        x = torch.from_numpy(x)
        if x.is_floating_point():
            x.requires_grad_()
        return module, x, module(x)

    def forward(x, params, cfg):
        return run(x, params, cfg)[2].detach().numpy()

    def backward(x, params, dout, cfg):
        module, x, out = run(x, params, cfg)
        out.backward(torch.from_numpy(dout))
        dx = None if x.grad is None else x.grad.numpy()
        return dx, {k: p.grad.numpy() for k, p in module.named_parameters()}

    return forward, backward
# --8<-- [end:numpy_functions]


def loss_functions():
    """Mean cross-entropy and its gradient with respect to the logits, via autograd."""
    def loss(logits, targets):
        return F.cross_entropy(torch.from_numpy(logits).flatten(0, 1), torch.from_numpy(targets).flatten()).item()

    def dlogits(logits, targets):
        x = torch.from_numpy(logits).requires_grad_()
        F.cross_entropy(x.flatten(0, 1), torch.from_numpy(targets).flatten()).backward()
        return x.grad.numpy()

    return loss, dlogits


class Rotary(nn.Module):
    """``rotate`` as a module, for the "rope" component check: cfg's theta and pairing style."""

    def __init__(self, cfg):
        super().__init__()
        self.theta, self.style = llama_field(cfg, "rope_theta"), llama_field(cfg, "rope_style")

    def forward(self, x):
        return rotate(x, self.theta, self.style)


COMPONENT_MODULES = {"layernorm": lambda cfg: nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias),
                     "rmsnorm": lambda cfg: nn.RMSNorm(cfg.d_model, eps=cfg.layer_norm_eps), "rope": Rotary,
                     "attention": CausalSelfAttention, "feedforward": MLP, "block": Block}


def verify(dtype: str = "float64") -> dict:
    """Every check; returns {check: its worst error per tensor}; raises ReferenceMismatch listing the checks that fail."""
    np_dtype = np.float64 if dtype == "float64" else np.float32
    tol, grad_tol = (FLOAT64, FLOAT64) if dtype == "float64" else (FLOAT32, FLOAT32_GRAD)
    forward, backward = numpy_functions(GPT)

    def model_grads(idx, params, dlogits, cfg):
        return backward(idx, params, dlogits, cfg)[1]

    checks = {"whole model": lambda: assert_matches_reference(forward, backward=model_grads, dtype=np_dtype,
                                                              tol=tol, grad_tol=grad_tol),
              "loss": lambda: assert_loss_matches(*loss_functions(), dtype=np_dtype, tol=tol, grad_tol=grad_tol)}
    for name, build in COMPONENT_MODULES.items():
        checks[name] = lambda name=name, build=build: assert_component_matches(
            name, *numpy_functions(build), dtype=np_dtype, tol=tol, grad_tol=grad_tol)
    errors, failures = {}, []
    for name, check in checks.items():
        try:
            errors[name] = check()
        except ReferenceMismatch as e:
            failures.append(f"{name}: {e}")
    if failures:
        raise ReferenceMismatch("\n".join(failures))
    return errors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        errors = verify(args.dtype)
    except ReferenceMismatch as e:
        print(f"FAIL: the PyTorch GPT disagrees with tinyref's oracle ({args.dtype}):\n{e}")
        return 1
    for check, worst in errors.items():
        name, err = max(worst.items(), key=lambda kv: kv[1])
        print(f"  {check:12s} {len(worst):3d} tensors agree; worst {err:.2g} of scale ({name})")
    overall = max(max(w.values()) for w in errors.values())
    print(f"PASS: the PyTorch GPT matches tinyref's oracle ({args.dtype}): forward and backward, "
          f"{len(errors)} checks, worst error {overall:.2g} of scale")
    return 0


if __name__ == "__main__":
    sys.exit(main())
