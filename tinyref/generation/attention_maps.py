"""Attention maps: the (H, T, T) attention probabilities of every layer, and heatmaps of them."""
from __future__ import annotations

import math

import numpy as np
from tinygrad import Tensor, dtypes

from ..errors import UsageError, pyplot
from ..model import GPTStyleTransformer, check_token_ids


def token_ids(tokens, tokenizer=None) -> list[int]:
    """``tokens`` as a list of ids: a string is encoded with ``tokenizer`` (needed then)."""
    if isinstance(tokens, str):
        if tokenizer is None:
            raise UsageError("a text needs a tokenizer: pass tokenizer=... or give token ids")
        return tokenizer.encode(tokens)
    return [int(t) for t in np.asarray(tokens).reshape(-1)]


# --8<-- [start:attention_maps]
def attention_maps(model: GPTStyleTransformer, tokens, tokenizer=None) -> list[np.ndarray]:
    """One (H, T, T) array per layer: row t is how position t spreads its attention over 0..t
    (rows sum to 1, exact zeros above the diagonal). ``tokens``: ids, or text with ``tokenizer``."""
    ids = token_ids(tokens, tokenizer)
    idx = Tensor(check_token_ids(np.asarray(ids).reshape(1, -1), model.config, "tokens"), dtype=dtypes.int32)
    x = model.embed(idx)                                      # (1, T, C)
    maps = []
    for block in model.h:
        att, _ = block.attn.attention_weights(block.ln_1(x))  # (1, H, T, T): what the block computes inside
        maps.append(att[0])
        x = block(x)                                          # (1, T, C)
    Tensor.realize(*maps)
    return [a.numpy().astype(np.float64) for a in maps]
# --8<-- [end:attention_maps]


VISIBLE = {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5", "\r": "\u240d"}


def token_labels(ids: list[int], tokenizer=None) -> list[str]:
    """Axis labels: each token's own text (whitespace made visible), or its id without a tokenizer."""
    if tokenizer is None:
        return [str(i) for i in ids]
    return ["".join(VISIBLE.get(ch, ch) for ch in tokenizer.decode([i])) or f"<{i}>" for i in ids]


def check_layer_head(n_layers: int, n_heads: int, layer: int, head: int | None) -> None:
    """UsageError unless layer (and head, if given) exist in a model of that size."""
    if not 0 <= layer < n_layers:
        raise UsageError(f"--layer must lie in [0, {n_layers}): the model has {n_layers} layers")
    if head is not None and not 0 <= head < n_heads:
        raise UsageError(f"--head must lie in [0, {n_heads}): each layer has {n_heads} heads")


def plot_attention(maps: list[np.ndarray], labels: list[str], path, layer: int = 0, head: int | None = None,
                   title: str = "") -> None:
    """A PNG of layer ``layer``'s heads in a grid (or only ``head``): rows are queries, columns keys;
    the future (above the diagonal) is left blank, not drawn as zero."""
    plt = pyplot()
    check_layer_head(len(maps), maps[0].shape[0], layer, head)
    H, T, _ = maps[layer].shape
    heads = range(H) if head is None else [head]
    cols = math.ceil(math.sqrt(len(heads)))
    rows = math.ceil(len(heads) / cols)
    size = max(3.0, 0.28 * T + 1.5)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size + 1.2, rows * size + 0.6), squeeze=False, layout="constrained")
    cmap = plt.colormaps["viridis"].with_extremes(bad="white")
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    for ax in axes.flat[len(heads):]:
        ax.axis("off")
    for ax, h in zip(axes.flat, heads):
        image = ax.imshow(np.ma.masked_where(future, maps[layer][h]), cmap=cmap, vmin=0.0, vmax=1.0)
        ax.set_title(f"layer {layer}, head {h}")
        ax.set_xticks(range(T), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(T), labels, fontsize=8)
        ax.set_xlabel("key (attended to)")
        ax.set_ylabel("query")
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="attention weight")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
