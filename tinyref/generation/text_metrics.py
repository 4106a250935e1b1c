"""Text-quality metrics: bits per character, and the variety and repetition of sampled text.

Perplexity is per token, so it cannot compare a character model with a BPE model; bits per
character can, as every tokenizer's loss is spread over the same characters. Perplexity also says
nothing about the model's own text: distinct-n (Li et al., 2016) is the share of distinct n-grams
among all n-grams of a set of samples (low: the samples say the same things), and the repetition
rate is the share of one sample's n-grams that already occurred earlier in it (high: a loop). Both
count words and punctuation marks of the decoded text, so every tokenizer is measured alike.
"""
from __future__ import annotations

import math
import re

UNITS = re.compile(r"\w+|[^\w\s]")        # a word or one punctuation mark
DISTINCT, REPETITION = (1, 2), 2          # distinct-1, distinct-2 and repetition of bigrams


# --8<-- [start:metrics]
def bits_per_character(total_nats: float, characters: int) -> float:
    """The summed loss of a text (nats) in bits, per character of that text."""
    return total_nats / math.log(2) / characters


def units(text: str) -> list[str]:
    """The words and punctuation marks of ``text``, in order."""
    return UNITS.findall(text)


def ngrams(seq: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]


def distinct_n(samples: list[list[str]], n: int) -> float | None:
    """Distinct n-grams / all n-grams, over all samples together (None: no n-gram at all)."""
    grams = [g for s in samples for g in ngrams(s, n)]
    return len(set(grams)) / len(grams) if grams else None


def repetition_rate(sample: list[str], n: int) -> float | None:
    """The share of the sample's n-grams that repeat an earlier one of the same sample (None: no n-gram)."""
    grams = ngrams(sample, n)
    return (len(grams) - len(set(grams))) / len(grams) if grams else None


def text_quality(texts: list[str]) -> dict:
    """distinct-1, distinct-2 over all ``texts``, and the mean repetition rate of one text."""
    samples = [units(t) for t in texts]
    rates = [r for r in (repetition_rate(s, REPETITION) for s in samples) if r is not None]
    return {**{f"distinct_{n}": distinct_n(samples, n) for n in DISTINCT},
            f"repetition_{REPETITION}": sum(rates) / len(rates) if rates else None}
# --8<-- [end:metrics]
