"""Training data: the demo's synthetic sequences with learnable patterns."""
from __future__ import annotations

import numpy as np


# --8<-- [start:synthetic]
def synthetic_sequences(n: int, length: int, vocab_size: int, rng: np.random.Generator,
                        strides: tuple[int, ...] = (1, 2, 3)) -> np.ndarray:
    """(n, length) int32 arithmetic progressions modulo vocab_size: x_t = (start + stride * t) % V.

    A model that has seen two tokens knows the stride, so every later token is predictable;
    only the first target of each sequence is a guess among the strides.
    """
    start = rng.integers(0, vocab_size, size=(n, 1))
    stride = rng.choice(np.asarray(strides), size=(n, 1))
    return ((start + stride * np.arange(length)) % vocab_size).astype(np.int32)
# --8<-- [end:synthetic]


def synthetic_batches(n_batches: int, batch_size: int, context_length: int, vocab_size: int,
                      seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The demo's fixed dataset: (inputs, targets) pairs of shape (batch_size, context_length), targets shifted by one."""
    rng = np.random.default_rng(seed)
    seqs = synthetic_sequences(n_batches * batch_size, context_length + 1, vocab_size, rng)
    seqs = seqs.reshape(n_batches, batch_size, context_length + 1)
    return [(s[:, :-1], s[:, 1:]) for s in seqs]
