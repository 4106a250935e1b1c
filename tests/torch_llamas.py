"""Two small PyTorch Llamas for tinyref.testing.torch's tests: Hugging Face's ``LlamaForCausalLM`` built
from a small ``LlamaConfig`` (random init, no download), and one written here the way Meta's
llama/model.py is (``tok_embeddings``, ``layers.{i}.attention.wq``, ``feed_forward.w1/w2/w3``,
``attention_norm``, ``ffn_norm``, ``norm``, ``output``; RoPE as complex numbers on interleaved pairs;
its ``ModelArgs`` kept as ``model.params``). Meta's file casts to float32 in its RMSNorm, RoPE and
softmax; this one computes in its input's dtype throughout (complex128 in float64), so in float64 it
is an exact float64 formulation of the same model. It has no KV cache (training-style, like
llama2.c's model.py).

``bug`` plants one mistake in the Meta-style model, in block ``bug_layer`` only (None: every block),
so the checker's report can be tested against a known first divergence. The ``hf_*`` context
managers plant them in Hugging Face's code instead (eager attention).
"""
from __future__ import annotations

import contextlib
import math
import types
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama import modeling_llama

BUGS = ("half_rope", "tiled_kv", "rms_sum", "no_mask", "q_ahead")


@dataclass
class ModelArgs:
    dim: int = 16
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = 2
    vocab_size: int = 11
    multiple_of: int = 8          # the MLP's hidden size is rounded up to a multiple of this
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 8
    tie: bool = False             # Meta's Llamas are untied; tied to test that layout too


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6, bug=None):
        super().__init__()
        self.eps, self.bug = eps, bug
        self.weight = nn.Parameter(torch.ones(dim))

    def _norm(self, x):
        ms = x.pow(2).sum(-1, keepdim=True) if self.bug == "rms_sum" else x.pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(ms + self.eps)

    def forward(self, x):
        return self._norm(x) * self.weight


def precompute_freqs_cis(dim: int, end: int, theta: float = 10000.0):
    """e^{i p theta^(-2j/dim)} for every position p < end and pair j, (end, dim/2) complex128."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim))
    angles = torch.outer(torch.arange(end, dtype=torch.float64), freqs)
    return torch.polar(torch.ones_like(angles), angles)


def rotate(x, freqs_cis, style="interleaved"):
    """x (B, T, H, hd) turned by freqs_cis (T, hd/2): Meta's pairs (2j, 2j + 1) as complex numbers, or
    (the planted bug) Hugging Face's rotate_half pairs (j, j + hd/2)."""
    freqs_cis = freqs_cis.to(torch.complex128 if x.dtype == torch.float64 else torch.complex64)[None, :, None, :]
    if style == "half":
        cos, sin = torch.cat([freqs_cis.real] * 2, -1), torch.cat([freqs_cis.imag] * 2, -1)
        a, b = x.chunk(2, -1)
        return x * cos + torch.cat([-b, a], -1) * sin
    x_ = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(x_ * freqs_cis).flatten(3).type_as(x)


def repeat_kv(x, n_rep: int, tiled=False):
    """(B, T, KV, hd) -> (B, T, KV * n_rep, hd), each kv head repeated in place (or tiled: the planted bug)."""
    if tiled:
        return x.repeat(1, 1, n_rep, 1)
    bs, slen, n_kv_heads, head_dim = x.shape
    return x[:, :, :, None, :].expand(bs, slen, n_kv_heads, n_rep, head_dim).reshape(bs, slen, n_kv_heads * n_rep, head_dim)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs, bug=None):
        super().__init__()
        self.n_kv_heads = args.n_heads if args.n_kv_heads is None else args.n_kv_heads
        self.n_local_heads, self.n_local_kv_heads = args.n_heads, self.n_kv_heads
        self.n_rep = self.n_local_heads // self.n_local_kv_heads
        self.head_dim = args.dim // args.n_heads
        self.rope_theta, self.bug = args.rope_theta, bug
        self.wq = nn.Linear(args.dim, args.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * self.head_dim, args.dim, bias=False)

    def forward(self, x, start_pos, freqs_cis, mask):
        bsz, seqlen, _ = x.shape
        xq = self.wq(x).view(bsz, seqlen, self.n_local_heads, self.head_dim)
        xk = self.wk(x).view(bsz, seqlen, self.n_local_kv_heads, self.head_dim)
        xv = self.wv(x).view(bsz, seqlen, self.n_local_kv_heads, self.head_dim)
        style = "half" if self.bug == "half_rope" else "interleaved"
        if self.bug == "q_ahead":     # queries turned for the next position, keys for their own
            freqs_q = precompute_freqs_cis(self.head_dim, start_pos + seqlen + 1, self.rope_theta)[start_pos + 1:]
        xq, xk = rotate(xq, freqs_q if self.bug == "q_ahead" else freqs_cis, style), rotate(xk, freqs_cis, style)
        keys = repeat_kv(xk, self.n_rep, tiled=self.bug == "tiled_kv")
        values = repeat_kv(xv, self.n_rep, tiled=self.bug == "tiled_kv")
        xq, keys, values = xq.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2)     # (B, H, T, hd)
        scores = torch.matmul(xq, keys.transpose(2, 3)) / math.sqrt(self.head_dim)
        if mask is not None and self.bug != "no_mask":
            scores = scores + mask
        output = torch.matmul(F.softmax(scores, dim=-1), values)                                 # (B, H, T, hd)
        return self.wo(output.transpose(1, 2).contiguous().view(bsz, seqlen, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, multiple_of: int):
        super().__init__()
        hidden_dim = int(2 * hidden_dim / 3)
        hidden_dim = multiple_of * ((hidden_dim + multiple_of - 1) // multiple_of)
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, layer_id: int, args: ModelArgs, bug=None):
        super().__init__()
        self.attention = Attention(args, bug)
        self.feed_forward = FeedForward(args.dim, 4 * args.dim, args.multiple_of)
        self.layer_id = layer_id
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps, bug=bug)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)

    def forward(self, x, start_pos, freqs_cis, mask):
        h = x + self.attention(self.attention_norm(x), start_pos, freqs_cis, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class MetaStyleLlama(nn.Module):
    def __init__(self, params: ModelArgs, bug=None, bug_layer=None):
        super().__init__()
        torch.manual_seed(0)
        self.params = params
        self.tok_embeddings = nn.Embedding(params.vocab_size, params.dim)
        self.layers = nn.ModuleList(TransformerBlock(i, params, bug if bug_layer in (None, i) else None)
                                    for i in range(params.n_layers))
        self.norm = RMSNorm(params.dim, eps=params.norm_eps)
        self.output = nn.Linear(params.dim, params.vocab_size, bias=False)
        if params.tie:
            self.output.weight = self.tok_embeddings.weight
        self.freqs_cis = precompute_freqs_cis(params.dim // params.n_heads, params.max_seq_len * 2, params.rope_theta)

    def forward(self, tokens, start_pos: int = 0):
        _bsz, seqlen = tokens.shape
        h = self.tok_embeddings(tokens)                                                          # (B, T, C)
        freqs_cis = self.freqs_cis[start_pos: start_pos + seqlen]
        mask = None
        if seqlen > 1:     # no KV cache, so no columns of zeros for cached positions before start_pos
            mask = torch.triu(torch.full((seqlen, seqlen), float("-inf")), diagonal=1).type_as(h)
        for layer in self.layers:
            h = layer(h, start_pos, freqs_cis, mask)
        return self.output(self.norm(h))                                                        # (B, T, V)


def hf_llama(tie=False, attn="eager", **overrides) -> LlamaForCausalLM:
    """HF's LlamaForCausalLM with the llama preset's sizes (vocab 11, ctx 8, d_model 16, 4 heads, 2 kv heads,
    2 layers, d_ff 24), random init."""
    torch.manual_seed(0)
    fields = dict(vocab_size=11, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=8, rms_norm_eps=1e-5, tie_word_embeddings=tie,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    return LlamaForCausalLM._from_config(LlamaConfig(**{**fields, **overrides}), attn_implementation=attn)


# --- HF's Llama, in float64 throughout or with a bug planted (each replaces HF's code while in use) ----

def _rmsnorm_float64(self, hidden_states):
    """LlamaRMSNorm.forward without its cast to float32."""
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


def _rotary_float64(self, x, position_ids):
    """LlamaRotaryEmbedding.forward with the inverse frequencies and angles in float64 instead of float32."""
    base, dim = self.config.rope_parameters["rope_theta"], self.config.head_dim
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    freqs = position_ids[..., None].double() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def _eager_attention(softmax_dtype=None, tiled=False):
    """HF's eager_attention_forward, its softmax in ``softmax_dtype`` (HF: float32; None: the input's), its
    kv heads repeated in place or (the planted bug) tiled."""
    def attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        n_rep = module.num_key_value_groups
        key, value = ((t.repeat(1, n_rep, 1, 1) if tiled else modeling_llama.repeat_kv(t, n_rep)) for t in (key, value))
        attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
        if attention_mask is not None:
            attn_weights = attn_weights + attention_mask
        attn_weights = F.softmax(attn_weights, dim=-1, dtype=softmax_dtype).to(query.dtype)
        return torch.matmul(attn_weights, value).transpose(1, 2).contiguous(), attn_weights
    return attention


@contextlib.contextmanager
def _replaced(*replacements):
    """(owner, attribute, value) set while in use, restored afterwards."""
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in replacements]
    try:
        for owner, name, value in replacements:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def hf_float64():
    """HF's Llama with its three float32 casts (RMSNorm, rotary angles, eager softmax) removed."""
    return _replaced((modeling_llama.LlamaRMSNorm, "forward", _rmsnorm_float64),
                     (modeling_llama.LlamaRotaryEmbedding, "forward", _rotary_float64),
                     (modeling_llama, "eager_attention_forward", _eager_attention()))


def _interleaved_rotary(q, k, cos, sin, unsqueeze_dim=1):
    """apply_rotary_pos_emb on Meta's pairs (2j, 2j + 1): the wrong style for HF's weights."""
    cos, sin = cos.unsqueeze(unsqueeze_dim)[..., : cos.shape[-1] // 2], sin.unsqueeze(unsqueeze_dim)[..., : sin.shape[-1] // 2]

    def turn(x):
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2)
    return turn(q), turn(k)


def hf_bug(model: LlamaForCausalLM, bug: str):
    """One of BUGS planted in HF's code (q_ahead has no place there: HF rotates q and k with the same angles)."""
    if bug == "half_rope":
        return _replaced((modeling_llama, "apply_rotary_pos_emb", _interleaved_rotary))
    if bug == "tiled_kv":
        return _replaced((modeling_llama, "eager_attention_forward", _eager_attention(torch.float32, tiled=True)))
    if bug == "no_mask":
        return _replaced((modeling_llama, "create_causal_mask", lambda *args, **kwargs: None))
    if bug == "rms_sum":
        norm = model.model.layers[0].input_layernorm
        return _replaced((norm, "forward", types.MethodType(
            lambda self, x: self.weight * (x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + self.variance_epsilon)), norm)))
    raise ValueError(bug)
