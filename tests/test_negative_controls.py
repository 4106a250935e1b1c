"""Negative controls: plant each classic bug in a copy of the computation and show the agreement checks catch it.

The checks are the very functions the agreement tests call (helpers.component_mismatches,
model_mismatches, adamw_mismatches, causality_violation, batch_permutation_mismatches,
prefix_mismatches, finite_difference checks, test_loss.cross_entropy_mismatches). Each bug goes
into a copy of an oracle function, swapped in with monkeypatch, so no new tinygrad kernels compile:
the tinyref side is the real, correct code, and the checks must report the planted difference.
"""
import math
import types

import numpy as np
import pytest
from tinygrad import Context, Tensor, TinyJit

import oracle
import oracle.attention
import oracle.block
import oracle.feedforward
import oracle.model
from helpers import (LLAMA, TIED, TIED_BT, adamw_mismatches, adamw_run, as_namespace, batch_permutation_mismatches, causality_violation,
                     component_mismatches, finite_difference_mismatches, model_mismatches, oracle_component_fd,
                     prefix_mismatches, random_inputs, step_loss_mismatches, tinyref_adamw)
from test_attention import attention_params
from test_feedforward import Gelu
from test_layernorm import layernorm_case
from tinyref import LayerNorm, MultiHeadSelfAttention, cross_entropy
from tinyref.verify.tolerances import FLOAT64, compare


REAL_ATTENTION_FORWARD = oracle.attention.attention_forward   # before any test swaps it out


def attention_forward_with_bug(bug):
    """A copy of oracle.attention_forward's math with one planted bug, returning the real cache layout."""
    def forward(x, p, n_heads, n_kv_heads=None, rope=None):   # GPT-2's attention: no kv groups, no rotation
        B, T, C = x.shape
        H, hd = n_heads, C // n_heads
        qkv = x @ p["c_attn.weight"].T + p["c_attn.bias"]
        q, k, v = np.split(qkv, 3, axis=-1)
        if bug == "heads split along the wrong axis":
            q, k, v = [t.reshape(B, T, hd, H).transpose(0, 3, 1, 2) for t in (q, k, v)]
        elif bug == "batch and time axes swapped in the head split":
            q, k, v = [t.reshape(T, B, H, hd).transpose(1, 2, 0, 3) for t in (q, k, v)]
        else:
            q, k, v = [t.reshape(B, T, H, hd).transpose(0, 2, 1, 3) for t in (q, k, v)]
        if bug == "q and k swapped":
            q, k = k, q
        scale = 1.0 / hd if bug == "scale 1/hd instead of 1/sqrt(hd)" else 1.0 / math.sqrt(hd)
        scores = (q @ k.transpose(0, 1, 3, 2)) * scale
        future = np.triu(np.ones((T, T), dtype=bool), k=2 if bug == "mask off by one" else 1)
        if bug != "mask removed":
            scores = np.where(future, -np.inf, scores)
        att, _ = oracle.softmax_forward(scores)
        merged = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
        w_proj = p["c_proj.weight"] if bug == "c_proj weight transposed" else p["c_proj.weight"].T
        out = merged @ w_proj + p["c_proj.bias"]
        _, cache = REAL_ATTENTION_FORWARD(x, p, n_heads)   # backward is not what is tested here
        return out, cache
    return forward


ATTENTION_BUGS = ["mask removed", "mask off by one", "scale 1/hd instead of 1/sqrt(hd)",
                  "heads split along the wrong axis", "q and k swapped", "c_proj weight transposed"]


@pytest.mark.parametrize("bug", ATTENTION_BUGS)
def test_attention_check_catches(bug, monkeypatch):
    rng = np.random.default_rng(0)
    x, dout = rng.standard_normal((2, 8, 16)), rng.standard_normal((2, 8, 16))
    monkeypatch.setattr(oracle.attention, "attention_forward", attention_forward_with_bug(bug))
    found = component_mismatches(MultiHeadSelfAttention(16, 4), oracle.attention.attention_forward,
                                 oracle.attention_backward, attention_params(rng, 16), x, dout, 4)
    assert any(m.name == "out" for m in found), f"the attention check missed: {bug}"


@pytest.mark.parametrize("bug", ATTENTION_BUGS)
def test_model_check_catches(bug, monkeypatch):
    """The same bugs, planted inside the whole oracle model: the model agreement check fails on logits."""
    from test_model import built
    cfg = as_namespace(TIED)
    rng = np.random.default_rng(1)
    params = oracle.init_params(cfg, rng)
    idx, targets = random_inputs(rng, cfg, *TIED_BT)
    monkeypatch.setattr(oracle.block, "attention_forward", attention_forward_with_bug(bug))
    found = model_mismatches(built("tied"), params, cfg, idx, targets)
    assert any(m.name == "logits" for m in found), f"the model check missed: {bug}"


@pytest.mark.parametrize("bug", ["mask removed", "mask off by one"])
def test_causality_property_catches(bug):
    cfg = as_namespace(TIED)
    rng = np.random.default_rng(2)
    params = oracle.init_params(cfg, rng)
    idx = rng.integers(0, cfg.vocab_size, TIED_BT)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(oracle.block, "attention_forward", attention_forward_with_bug(bug))
        violation = causality_violation(lambda i: oracle.gpt_forward(i, params, cfg)[0], idx, 3, (idx[0, 3] + 1) % 11)
    assert violation is not None and "earlier position" in violation


def test_layernorm_check_catches_wrong_eps(monkeypatch):
    """eps 1e-6 instead of 1e-5: invisible on unit-variance rows, caught on the small-variance rows the test draws."""
    x, params, dout = layernorm_case(np.random.default_rng(3), (2, 8, 16))
    real = oracle.layernorm_forward
    found = component_mismatches(LayerNorm(16, eps=1e-5), lambda x, p, eps: real(x, p, eps / 10),
                                 oracle.layernorm_backward, params, x, dout, 1e-5)
    assert any(m.name == "out" for m in found)


def test_block_check_catches_a_dropped_residual(monkeypatch):
    from test_block import block_params
    from tinyref import TransformerDecoderBlock
    real = oracle.block.feedforward_forward
    rng = np.random.default_rng(4)
    x, dout = rng.standard_normal((2, 8, 16)), rng.standard_normal((2, 8, 16))

    def block_without_attention_residual(x, p, n_heads, eps=1e-5):
        a, _ = oracle.layernorm_forward(x, oracle.sub_params(p, "ln_1."), eps)
        x1, _ = oracle.attention_forward(a, oracle.sub_params(p, "attn."), n_heads)   # BUG: x1 = attn(...) without + x
        m, _ = oracle.layernorm_forward(x1, oracle.sub_params(p, "ln_2."), eps)
        f, _ = real(m, oracle.sub_params(p, "mlp."))
        return x1 + f, oracle.block_forward(x, p, n_heads, eps)[1]
    found = component_mismatches(TransformerDecoderBlock(TIED), block_without_attention_residual, oracle.block_backward,
                                 block_params(rng, TIED), x, dout, TIED.n_heads, TIED.layer_norm_eps)
    assert any(m.name == "out" for m in found)


def test_gelu_check_catches_exact_erf_gelu():
    erf_gelu = np.vectorize(lambda v: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))))
    x = np.linspace(-4, 4, 2 * 8 * 16).reshape(2, 8, 16)
    dout = np.random.default_rng(0).standard_normal(x.shape)
    found = component_mismatches(Gelu(), lambda x, p: (erf_gelu(x), oracle.gelu_forward(x)[1]),
                                 oracle.gelu_backward, {}, x, dout)
    assert any(m.name == "out" for m in found)


def test_exact_gelu_check_catches_tanh_gelu():
    """The reverse: tinyref's exact GELU checked against an oracle that computes the tanh one."""
    x = np.linspace(-4, 4, 2 * 8 * 16).reshape(2, 8, 16)
    dout = np.random.default_rng(0).standard_normal(x.shape)
    found = component_mismatches(Gelu("gelu"), lambda x, p: (oracle.gelu_forward(x)[0], oracle.gelu_erf_forward(x)[1]),
                                 oracle.gelu_erf_backward, {}, x, dout)
    assert any(m.name == "out" for m in found)


def oracle_of_the_other_variant(planted: str):
    """oracle.gpt_forward computing the other variant than ``cfg`` says: the other GELU, or GPT-2's biases
    dropped, or random biases added to a bias-free model (gradients reported for the model's own keys)."""
    real = oracle.model.gpt_forward

    def forward(idx, params, cfg):
        other = types.SimpleNamespace(**vars(cfg))
        if planted == "activation":
            other.activation = "gelu_tanh" if cfg.activation == "gelu" else "gelu"
            return real(idx, params, other)
        other.bias = not cfg.bias
        biases = {k: v for k, v in oracle.init_params(other, np.random.default_rng(0)).items() if k.endswith(".bias")}
        kept = {**params, **biases} if other.bias else {k: v for k, v in params.items() if not k.endswith(".bias")}
        logits, cache = real(idx, kept, other)
        cache["keys"] = [k for k in params if k in kept]
        return logits, cache
    return forward


@pytest.mark.parametrize("model", ["tied", "nanogpt"])
@pytest.mark.parametrize("planted", ["activation", "bias"])
def test_each_variants_model_check_catches_the_other_variant(model, planted, monkeypatch):
    """GPT-2 (tanh GELU, biases) and nanoGPT's variant (exact GELU, no biases): the agreement check of each
    fails on logits when the oracle computes the other variant's activation, or the other variant's biases."""
    from test_model import MODELS, built
    cfg = as_namespace(MODELS[model][0])
    rng = np.random.default_rng(13)
    params = oracle.init_params(cfg, rng)
    idx, targets = random_inputs(rng, cfg, *TIED_BT)
    monkeypatch.setattr(oracle, "gpt_forward", oracle_of_the_other_variant(planted))   # helpers.oracle is this module
    found = model_mismatches(built(model), params, cfg, idx, targets)
    assert any(m.name == "logits" for m in found), f"the {model} check missed the other {planted}"


def test_model_check_catches_a_dropped_tied_embedding_gradient(monkeypatch):
    """gpt_backward that forgets the output head's share of wte's gradient."""
    from test_model import built
    real = oracle.model.gpt_backward

    def backward_without_head_share(dlogits, cache):
        grads = real(dlogits, cache)
        V, C = cache["head"].shape
        grads["wte.weight"] = grads["wte.weight"] - dlogits.reshape(-1, V).T @ cache["xf"].reshape(-1, C)
        return grads
    monkeypatch.setattr(oracle, "gpt_backward", backward_without_head_share)   # helpers.oracle is this same module
    cfg = as_namespace(TIED)
    rng = np.random.default_rng(5)
    params = oracle.init_params(cfg, rng)
    idx, targets = random_inputs(rng, cfg, *TIED_BT)
    found = model_mismatches(built("tied"), params, cfg, idx, targets)
    assert [m.name for m in found] == ["grad wte.weight"]


def test_adamw_check_catches_missing_bias_correction():
    def adamw_without_bias_correction(params, grads, state=None, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01):
        state = state or {"t": 0, "m": {k: np.zeros_like(v) for k, v in params.items()},
                          "v": {k: np.zeros_like(v) for k, v in params.items()}}
        new, m, v = {}, {}, {}
        for k, p in params.items():
            m[k] = b1 * state["m"][k] + (1 - b1) * grads[k]
            v[k] = b2 * state["v"][k] + (1 - b2) * grads[k] ** 2
            new[k] = p - lr * (m[k] / (np.sqrt(v[k]) + eps) + weight_decay * p)   # BUG: no m_hat, v_hat
        return new, {"t": state["t"] + 1, "m": m, "v": v}
    assert adamw_mismatches(adamw_without_bias_correction)


def test_step_loss_check_catches_a_loss_read_after_the_update():
    """The planted bug: a step that realizes its loss only with (or after) the updated weights, so part of the
    loss is computed from the new weights. This one is a real tinyref step, so its kernels compile."""
    def make_step_reading_updated_weights(model, opt):
        @TinyJit
        @Context(TRAINING=1)
        def step(x: Tensor, y: Tensor) -> Tensor:
            opt.zero_grad()
            loss = cross_entropy(model(x), y)
            loss.backward()
            opt.step()                        # BUG: the update is realized before the loss
            return loss.realize()
        return step
    losses, _ = adamw_run(make_step_reading_updated_weights)
    assert step_loss_mismatches(losses)
    assert not step_loss_mismatches(tinyref_adamw()[0])   # and the real step passes the same check


def test_finite_difference_check_catches_a_wrong_backward_line(monkeypatch):
    """The oracle's own gradient check: LayerNorm backward without the mean term fails it."""
    x, params, dout = layernorm_case(np.random.default_rng(6), (1, 2, 4))

    def layernorm_backward_without_mean_term(dout, cache):
        xhat, rstd, w = cache[:3]
        dxhat = dout * w
        dx = rstd * (dxhat - xhat * (dxhat * xhat).mean(-1, keepdims=True))   # BUG: dropped - mean(dxhat)
        return dx, oracle.layernorm_backward(dout, cache)[1]
    found = oracle_component_fd(oracle.layernorm_forward, layernorm_backward_without_mean_term, x, params, dout, 1e-5)
    assert [m.name for m in found] == ["dx (finite differences)"]


def test_finite_difference_check_catches_a_wrong_sign():
    """The check test_loss.py runs on the oracle: cross-entropy backward adding the one-hot instead of subtracting it."""
    rng = np.random.default_rng(7)
    logits, targets = rng.standard_normal((2, 3, 5)) * 3, rng.integers(0, 5, (2, 3))

    def cross_entropy_backward_with_wrong_sign(cache):
        probs, t, shape = cache
        dz = probs.copy()
        dz[np.arange(len(t)), t] += 1.0                                # BUG: += instead of -=
        return (dz / len(t)).reshape(shape)
    dlogits = cross_entropy_backward_with_wrong_sign(oracle.cross_entropy_forward(logits, targets)[1])
    found = finite_difference_mismatches(lambda: oracle.cross_entropy_forward(logits, targets)[0],
                                         {"logits": logits}, {"logits": dlogits})
    assert [m.name for m in found] == ["dlogits (finite differences)"]


def cross_entropy_forward_with_bug(bug):
    """A copy of oracle.cross_entropy_forward's math with one planted bug, returning the real cache layout."""
    def forward(logits, targets):
        B, T, V = logits.shape
        z = logits.reshape(B * T, V)
        z = z - z.max(-1, keepdims=True)
        e = np.exp(z)
        total = e.sum(-1, keepdims=True)
        t = np.asarray(targets).reshape(B * T)
        if bug == "targets off by one":
            t = (t + 1) % V
        picked = np.log(total[:, 0]) - z[np.arange(B * T), t]
        loss = picked.sum() if bug == "sum instead of mean" else picked.mean()
        return float(loss), (e / total, t, logits.shape)
    return forward


@pytest.mark.parametrize("bug, caught", [("sum instead of mean", {"loss"}), ("targets off by one", {"loss", "dlogits"})])
def test_cross_entropy_check_catches(bug, caught):
    from test_loss import cross_entropy_case, cross_entropy_mismatches
    found = cross_entropy_mismatches(*cross_entropy_case(8), forward=cross_entropy_forward_with_bug(bug))
    assert {m.name for m in found} == caught, f"the cross-entropy check missed: {bug}"


def embedding_forward_with_bug(bug):
    """A copy of oracle.embedding_forward with one planted bug (T < context_length, so wpe[1:T+1] exists)."""
    def forward(idx, p):
        wte, wpe = p["wte.weight"], p["wpe.weight"]
        T = idx.shape[1]
        if bug == "positions shifted by one":
            out = wte[idx] + wpe[1:T + 1]
        elif bug == "positional embedding dropped":
            out = wte[idx]
        else:
            out = wte[idx] + wpe[:T]
        return out, (idx, wte.shape, wpe.shape)
    return forward


@pytest.mark.parametrize("bug", ["positions shifted by one", "positional embedding dropped"])
def test_embedding_check_catches(bug):
    from test_embedding import Embeddings, embedding_case
    idx, params, dout = embedding_case(np.random.default_rng(9), 11, 8, 16, 2, 5)   # the agreement test's T=5 shape
    found = component_mismatches(Embeddings(11, 8, 16), embedding_forward_with_bug(bug), oracle.embedding_backward,
                                 params, idx, dout, x_is_tokens=True)
    assert [m.name for m in found] == ["out"], f"the embedding check missed: {bug}"


def feedforward_forward_with_bug(bug):
    """A copy of oracle.feedforward_forward's math with one planted bug, returning the real cache layout."""
    def forward(x, p):
        h = x @ p["c_fc.weight"].T + (0.0 if bug == "c_fc bias dropped" else p["c_fc.bias"])
        a = np.maximum(h, 0.0) if bug == "ReLU instead of GELU" else oracle.gelu_forward(h)[0]
        out = a @ p["c_proj.weight"].T + p["c_proj.bias"]
        return out, oracle.feedforward_forward(x, p)[1]
    return forward


@pytest.mark.parametrize("bug", ["c_fc bias dropped", "ReLU instead of GELU"])
def test_feedforward_check_catches(bug):
    from test_feedforward import ffn_params
    from tinyref import PositionWiseFeedForward
    rng = np.random.default_rng(10)
    x, dout = rng.standard_normal((2, 8, 16)), rng.standard_normal((2, 8, 16))
    found = component_mismatches(PositionWiseFeedForward(16, 24), feedforward_forward_with_bug(bug),
                                 oracle.feedforward_backward, ffn_params(rng, 16, 24, 0.3), x, dout)
    assert any(m.name == "out" for m in found), f"the feed-forward check missed: {bug}"


def test_batch_permutation_property_catches_rows_mixed_in_attention(monkeypatch):
    """The check test_properties.py runs on tinyref, on an oracle whose head split reads (B, T) as (T, B)."""
    cfg = as_namespace(TIED)
    rng = np.random.default_rng(11)
    params = oracle.init_params(cfg, rng)
    idx = rng.integers(0, cfg.vocab_size, TIED_BT)
    idx[1] = idx[0][::-1]
    monkeypatch.setattr(oracle.block, "attention_forward", attention_forward_with_bug("batch and time axes swapped in the head split"))
    found = batch_permutation_mismatches(lambda i: oracle.gpt_forward(i, params, cfg)[0], idx, [1, 0])
    assert [m.name for m in found] == ["logits of the permuted batch"]


def test_prefix_property_catches_a_non_causal_model(monkeypatch):
    """The check test_properties.py runs on tinyref, on an oracle without the causal mask."""
    cfg = as_namespace(TIED)
    rng = np.random.default_rng(12)
    params = oracle.init_params(cfg, rng)
    idx = rng.integers(0, cfg.vocab_size, TIED_BT)
    monkeypatch.setattr(oracle.block, "attention_forward", attention_forward_with_bug("mask removed"))
    found = prefix_mismatches(lambda i: oracle.gpt_forward(i, params, cfg)[0], idx, 5)
    assert [m.name for m in found] == ["logits of the 5-token prefix"]


# --- the Llama family --------------------------------------------------------------------------------

def llama_model_check(monkeypatch, seed, **planted):
    """The LLAMA model check (tinyref vs the oracle) with ``planted`` monkeypatches (module, name, value)."""
    from test_model import built
    rng = np.random.default_rng(seed)
    params = oracle.init_params(LLAMA, rng)
    idx, targets = random_inputs(rng, LLAMA, *TIED_BT)
    for module, name, value in planted.values():
        monkeypatch.setattr(module, name, value)
    return model_mismatches(built("llama"), params, LLAMA, idx, targets)


def test_rope_check_catches_the_other_pairing_style():
    """tinyref's half-style rotation against an oracle that pairs (2j, 2j + 1)."""
    from tinyref import RotaryPositionalEmbedding
    rng = np.random.default_rng(14)
    x, dout = rng.standard_normal((2, 2, 4, 8, 4))
    found = component_mismatches(RotaryPositionalEmbedding(4, 2.0, "half"), oracle.rope_forward, oracle.rope_backward,
                                 {}, x, dout, 2.0, "interleaved")
    assert any(m.name == "out" for m in found)


def test_llama_model_check_catches_the_other_rope_style(monkeypatch):
    real = oracle.model.gpt_forward
    other_style = lambda idx, p, cfg: real(idx, p, types.SimpleNamespace(**{**vars(cfg), "rope_style": "interleaved"}))  # noqa: E731
    found = llama_model_check(monkeypatch, 15, style=(oracle, "gpt_forward", other_style))
    assert any(m.name == "logits" for m in found)


def test_llama_model_check_catches_kv_heads_tiled_instead_of_repeated(monkeypatch):
    """Query head h reading kv head h % n_kv_heads ([k0, k1, k0, k1]) instead of h // (n_heads // n_kv_heads)
    ([k0, k0, k1, k1]): planted as multi-head attention whose k and v rows are tiled that way."""
    real = oracle.attention.attention_forward

    def tiled(x, p, n_heads, n_kv_heads=None, rope=None):
        C = x.shape[-1]
        hd, KV = C // n_heads, n_kv_heads or n_heads
        q, k, v = np.split(p["c_attn.weight"], [n_heads * hd, (n_heads + KV) * hd])
        tile = lambda w: np.tile(w.reshape(KV, hd, C), (n_heads // KV, 1, 1)).reshape(n_heads * hd, C)  # noqa: E731
        out, _ = real(x, {**p, "c_attn.weight": np.concatenate([q, tile(k), tile(v)])}, n_heads, None, rope)
        return out, real(x, p, n_heads, n_kv_heads, rope)[1]
    found = llama_model_check(monkeypatch, 16, attention=(oracle.block, "attention_forward", tiled))
    assert any(m.name == "logits" for m in found)


def test_rmsnorm_check_catches_the_sum_instead_of_the_mean():
    """x / sqrt(sum(x^2) + eps): the same direction, C^(-1/2) times the size."""
    from test_layernorm import layernorm_case
    from tinyref import RMSNorm
    x, params, dout = layernorm_case(np.random.default_rng(17), (2, 8, 16), bias=False)

    def rms_over_the_sum(x, p, eps):
        out = x / np.sqrt((x * x).sum(-1, keepdims=True) + eps) * p["weight"]
        return out, oracle.rmsnorm_forward(x, p, eps)[1]
    found = component_mismatches(RMSNorm(16, 1e-5), rms_over_the_sum, oracle.rmsnorm_backward, params, x, dout, 1e-5)
    assert any(m.name == "out" for m in found)


def test_kv_cache_check_catches_a_query_rotated_one_position_late(monkeypatch):
    """The oracle's cached decoder turning each new query by position t + 1 while its key is stored at t. (Both
    turned one late would be no bug: scores depend only on distances.) The same check as test_kvcache's property."""
    import oracle.kvcache
    params = oracle.init_params(LLAMA, np.random.default_rng(18))
    tokens = list(np.random.default_rng(19).integers(0, LLAMA.vocab_size, 2 * LLAMA.context_length + 3))
    expected = oracle.recomputed_logits(tokens, params, LLAMA)
    assert compare("logits", oracle.incremental_logits(tokens, params, LLAMA), expected, FLOAT64) is None
    real = oracle.kvcache.rope_forward

    def query_one_late(x, p, theta, style, positions):
        is_query = x.shape[0] == LLAMA.n_heads          # q has n_heads heads, k has n_kv_heads = 2
        return real(x, p, theta, style, [positions[0] + is_query])
    monkeypatch.setattr(oracle.kvcache, "rope_forward", query_one_late)
    assert compare("logits", oracle.incremental_logits(tokens, params, LLAMA), expected, FLOAT64)
