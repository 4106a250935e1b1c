"""Autoregressive generation: pick a next token from the logits, append it, repeat.

Sampling happens on the host in float64 with a NumPy generator seeded by the caller, so the same
seed gives the same tokens on every run. The order of the filters is Hugging Face's: divide by the
temperature, keep the top k, then keep the smallest set whose probability reaches top_p.
"""
from __future__ import annotations

import math
import time

import numpy as np

from ..errors import TinyrefError, UsageError, check_seed
from .kvcache import KVCache, RecomputeDecoder
from ..model import GPTStyleTransformer


def check_sampling(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> None:
    """UsageError unless temperature >= 0, top_k >= 1 and 0 < top_p <= 1 (None switches a filter off)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature < 0:
        raise UsageError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise UsageError(f"top_k must be an integer >= 1 (or None for no top-k filter), got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise UsageError(f"top_p must lie in (0, 1] (or None for no top-p filter), got {top_p!r}")


# --8<-- [start:filters]
def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    """Keep exactly min(k, V) logits, set the rest to -inf. Ties at the k-th value are broken towards
    the lower token id (a stable sort), so the count is always exactly k."""
    order = np.argsort(-logits, kind="stable")                  # (V,): best first, lower id first among equals
    out = np.full_like(logits, -np.inf)
    out[order[:k]] = logits[order[:k]]
    return out


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose probability reaches p (nucleus sampling);
    the most likely token always stays. Ties are ordered by token id, as in top_k_filter."""
    order = np.argsort(-logits, kind="stable")
    mass = np.cumsum(softmax(logits)[order])                   # (V,): mass of the best 1, 2, ... tokens
    n = min(int(np.searchsorted(mass, p)) + 1, len(logits))    # first n with mass[n-1] >= p
    out = np.full_like(logits, -np.inf)
    out[order[:n]] = logits[order[:n]]
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())                          # exp(-inf) = 0: filtered tokens get no mass
    return e / e.sum()


def sampling_distribution(logits, temperature: float = 1.0, top_k: int | None = None,
                          top_p: float | None = None) -> np.ndarray:
    """The probabilities (V,) the sampler draws from: softmax(logits / temperature) after the filters.
    temperature 0 is the limit: all mass on the argmax (the lowest id among equal maxima)."""
    check_sampling(temperature, top_k, top_p)
    logits = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return np.eye(len(logits))[int(np.argmax(logits))]
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return softmax(logits)
# --8<-- [end:filters]


def sample_token(logits, rng: np.random.Generator, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None) -> int:
    """One token id drawn from ``sampling_distribution`` (greedy when temperature is 0). Logits that
    are not all finite stop generation: no distribution can be drawn from them."""
    if not np.isfinite(logits).all():
        raise TinyrefError(f"the model's next-token logits hold {np.size(logits) - np.isfinite(logits).sum()} NaN or "
                           "infinite values: its weights are broken (a run that diverged?); use another checkpoint")
    probs = sampling_distribution(logits, temperature, top_k, top_p)
    return int(np.argmax(probs)) if temperature == 0 else int(rng.choice(len(probs), p=probs))


def check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise UsageError(f"{name} must be an integer >= 0, got {value!r}")


def make_decoder(model: GPTStyleTransformer, use_cache: bool = True) -> RecomputeDecoder:
    """A KV cache, or plain recomputation of the window. Reusing one across calls skips re-capturing its jit."""
    return (KVCache if use_cache else RecomputeDecoder)(model)


# --8<-- [start:generate_ids]
def generate_ids(decoder: RecomputeDecoder, prompt: list[int], max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int = 0, log=None) -> list[int]:
    """The prompt's token ids followed by ``max_new_tokens`` generated ones (``decoder``: ``make_decoder``).

    A prompt longer than the context keeps only its last ``context_length`` tokens (``log`` is told
    once); generation past the context slides the window, as the model never saw longer inputs.
    """
    check_count("max_new_tokens", max_new_tokens)
    check_sampling(temperature, top_k, top_p)
    check_seed("seed", seed)
    ids = [int(t) for t in prompt]
    if not ids:
        raise UsageError("the prompt is empty: give at least one token")
    T = decoder.model.config.context_length
    if len(ids) > T:
        if log:
            log(f"the prompt has {len(ids)} tokens; keeping its last {T} (the model's context_length)")
        ids = ids[-T:]
    rng = np.random.default_rng(seed)
    logits = decoder.prefill(ids)                              # (V,): the next token's logits
    for i in range(max_new_tokens):
        ids.append(sample_token(logits.numpy(), rng, temperature, top_k, top_p))
        if i + 1 < max_new_tokens:
            logits = decoder.extend(ids[-1])                 # cached: one position; else the whole window
    return ids
# --8<-- [end:generate_ids]


def generate(model: GPTStyleTransformer, prompt, max_new_tokens: int = 50, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int = 0, tokenizer=None,
             use_cache: bool = True, log=None):
    """Continue ``prompt``: a string (then ``tokenizer`` is needed and the result is text) or token ids
    (then the result is the list of ids). Greedy when temperature is 0; same seed, same result."""
    text = isinstance(prompt, str)
    if text and tokenizer is None:
        raise UsageError("a text prompt needs a tokenizer: pass tokenizer=... or give token ids")
    ids = generate_ids(make_decoder(model, use_cache), tokenizer.encode(prompt) if text else prompt,
                       max_new_tokens, temperature, top_k, top_p, seed, log)
    return tokenizer.decode(ids) if text else ids


def generation_speed(model: GPTStyleTransformer, new_tokens: int, use_cache: bool = True, prompt_length: int = 1,
                     repeats: int = 3) -> dict:
    """Tokens per second of greedy generation of ``new_tokens`` after a ``prompt_length`` prompt (for
    ``tinyref bench``). A first untimed run compiles and captures the jitted kernels; the best of
    ``repeats`` timed runs is reported. Past the context the window slides (and the cache refills)."""
    check_count("new_tokens", new_tokens)
    prompt = [t % model.config.vocab_size for t in range(prompt_length)]
    decoder = make_decoder(model, use_cache)
    for _ in range(2):                                         # TinyJit captures on a function's second call:
        generate_ids(decoder, prompt, 3, temperature=0)        # compile, then capture prefill and step alike
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        generate_ids(decoder, prompt, new_tokens, temperature=0)
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {"use_cache": use_cache, "new_tokens": new_tokens, "prompt_length": prompt_length,
            "seconds": best, "tokens_per_s": new_tokens / best if best > 0 else float("inf")}
