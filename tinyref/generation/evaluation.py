"""Evaluation: the mean next-token loss of a model on a text, and its perplexity exp(loss).

The text is cut into non-overlapping windows of ``context_length`` predictions (each window's
inputs are tokens s..s+T-1, its targets s+1..s+T), so every token after the first is predicted
exactly once, from the tokens of its own window only. The last window is padded and its padding
masked out (causal attention keeps the padding from changing the real positions), and windows go
in batches of a fixed size, so one jitted function with one shape serves the whole text.

``sample_quality`` continues prompts taken from the same text and measures the samples with
``text_metrics``, next to the text's own continuations of those prompts as the yardstick.
"""
from __future__ import annotations

import math

import numpy as np
from tinygrad import Tensor, TinyJit, dtypes

from ..errors import UsageError
from ..model import GPTStyleTransformer, check_token_ids
from .sampling import check_count, generate_ids, make_decoder
from .text_metrics import text_quality


# --8<-- [start:windows]
def eval_windows(ids, context_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, targets, mask), each (N, context_length): window w predicts tokens
    w*T+1 .. w*T+T from tokens w*T .. w*T+T-1; mask is 1 on real positions, 0 on the last one's padding."""
    ids, T = np.asarray(ids, dtype=np.int64).reshape(-1), context_length
    if len(ids) < 2:
        raise UsageError(f"evaluation needs at least 2 tokens (one to predict from, one to predict), got {len(ids)}")
    n = len(ids) - 1                                          # predictions to make
    N = math.ceil(n / T)
    inputs, targets, mask = (np.zeros((N, T), dtype=np.int32) for _ in range(3))
    for w in range(N):
        segment = ids[w * T: w * T + T + 1]                   # T + 1 tokens (fewer in the last window)
        L = len(segment) - 1
        inputs[w, :L], targets[w, :L], mask[w, :L] = segment[:-1], segment[1:], 1
    return inputs, targets, mask
# --8<-- [end:windows]


def evaluate(model: GPTStyleTransformer, ids, batch_size: int = 8, progress: bool = False) -> dict:
    """Mean cross-entropy (nats per token) of ``model`` predicting ``ids`` and the perplexity exp(loss).

    Returns {"loss", "perplexity", "tokens" (predictions counted), "windows"}. ``progress`` shows a
    tqdm bar on stderr."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    inputs, targets, mask = eval_windows(ids, model.config.context_length)
    check_token_ids(np.concatenate([inputs, targets]), model.config, "evaluation tokens")
    N = len(inputs)
    pad = -N % batch_size                                     # whole batches: one shape, one compile
    inputs, targets, mask = (np.concatenate([a, np.zeros((pad, a.shape[1]), a.dtype)]) for a in (inputs, targets, mask))
    summed_loss = make_summed_loss(model)
    batches = range(0, len(inputs), batch_size)
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc="eval", unit="batch", leave=False)
    total = 0.0
    for s in batches:
        x, y, m = (Tensor(a[s:s + batch_size], dtype=dt) for a, dt in
                   ((inputs, dtypes.int32), (targets, dtypes.int32), (mask, dtypes.float32)))
        total += float(summed_loss(x, y, m).item())           # accumulate the batch sums in float64
    tokens = int(mask.sum())
    loss = total / tokens
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": tokens, "windows": N}


# --8<-- [start:summed_loss]
def make_summed_loss(model: GPTStyleTransformer):
    """A jitted sum of -log p(target) over the unmasked positions of a (B, T) batch."""
    @TinyJit
    def summed_loss(x: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        logp = model(x).log_softmax(-1)                       # (B, T, V)
        picked = logp.gather(-1, y.unsqueeze(-1)).squeeze(-1) # (B, T): log p(target)
        return -(picked * mask).sum().realize()
    return summed_loss
# --8<-- [end:summed_loss]


def continuation_text(tokenizer, prompt: list[int], continuation: list[int]) -> str:
    """The text ``continuation`` adds after ``prompt`` (decoded together: a ## piece or a byte of a
    character joins what came before, as it would in the whole text)."""
    head, whole = tokenizer.decode(prompt), tokenizer.decode(prompt + continuation)
    return whole[len(head):] if whole.startswith(head) else tokenizer.decode(continuation)


# --8<-- [start:sample_quality]
def sample_quality(model: GPTStyleTransformer, tokenizer, ids, samples: int, new_tokens: int | None = None,
                   temperature: float = 1.0, seed: int = 0) -> dict:
    """``samples`` prompts of context_length // 2 tokens, evenly spread over ``ids``, each continued by
    ``new_tokens`` sampled tokens (default: the rest of the context; sample i uses seed + i) and by the
    text's own next tokens. Returns {"generated": metrics, "held_out": metrics} (see text_quality), each
    with its "texts"; the same arguments give the same result."""
    check_count("samples", samples)
    P = max(1, model.config.context_length // 2)
    L = model.config.context_length - P if new_tokens is None else new_tokens
    check_count("new_tokens", L)
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if samples < 1 or L < 1 or len(ids) < P + L:
        raise UsageError(f"sampling needs at least one sample of at least one token, and a text of at least "
                         f"{P} + {L} tokens (prompt + continuation); got {samples} samples of {L} tokens and "
                         f"{len(ids)} tokens: use a longer text or fewer new tokens")
    decoder = make_decoder(model)
    texts = {"generated": [], "held_out": []}
    for i, s in enumerate(np.linspace(0, len(ids) - P - L, samples).round().astype(np.int64)):
        prompt = ids[s:s + P].tolist()
        sampled = generate_ids(decoder, prompt, L, temperature, seed=seed + i)[P:]
        texts["generated"].append(continuation_text(tokenizer, prompt, sampled))
        texts["held_out"].append(continuation_text(tokenizer, prompt, ids[s + P:s + P + L].tolist()))
    return {"prompt_tokens": P, "new_tokens": L, **{k: {**text_quality(t), "texts": t} for k, t in texts.items()}}
# --8<-- [end:sample_quality]
