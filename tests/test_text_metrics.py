"""Text-quality metrics on hand-made texts, each value worked out by hand in the test, and a planted
bug the same checks must catch."""
import math

import pytest

from tinyref.generation import text_metrics
from tinyref.generation.text_metrics import bits_per_character, distinct_n, repetition_rate, text_quality, units


def test_units_are_words_and_punctuation_marks():
    assert units("Hi, you... 3.5\nok") == ["Hi", ",", "you", ".", ".", ".", "3", ".", "5", "ok"]
    assert units("  \n") == []


def test_bits_per_character_by_hand():
    # A character model that spreads its mass evenly over 4 symbols loses ln 4 nats on each of 10
    # characters: 10 * 2 bits over 10 characters.
    assert bits_per_character(10 * math.log(4), 10) == pytest.approx(2.0, rel=1e-15)
    # A BPE model that predicts 2 tokens, each 1 of 16 equally likely, over the same 8 characters:
    # 2 * 4 bits / 8 characters.
    assert bits_per_character(2 * math.log(16), 8) == pytest.approx(1.0, rel=1e-15)


# (sample(s), n, expected, how it is worked out)
DISTINCT = [
    ([["a", "b", "a", "b"], ["a", "c"]], 1, 3 / 6, "a b a b a c: 6 words, 3 distinct"),
    ([["a", "b", "a", "b"], ["a", "c"]], 2, 3 / 4, "ab ba ab | ac: 4 bigrams (none across samples), 3 distinct"),
    ([["x"], ["x"]], 2, None, "no bigram at all"),
    ([["la"] * 5], 1, 1 / 5, "one word five times"),
]
REPETITION = [
    (["the", "cat", "sat", "on", "the", "cat"], 2, 1 / 5, "the-cat cat-sat sat-on on-the the-cat: the 5th repeats the 1st"),
    (["a", "b", "a", "b"], 2, 1 / 3, "ab ba ab: the 3rd repeats the 1st"),
    (["la"] * 4, 2, 2 / 3, "la-la three times: the 2nd and 3rd repeat"),
    (["a", "b", "c"], 2, 0.0, "no bigram repeats"),
    (["a"], 2, None, "a single word has no bigram"),
]


def mismatches(distinct, repetition) -> list[str]:
    """The hand-made cases that ``distinct`` and ``repetition`` get wrong."""
    bad = [why for s, n, want, why in DISTINCT if distinct(s, n) != pytest.approx(want)]
    return bad + [why for s, n, want, why in REPETITION if repetition(s, n) != pytest.approx(want)]


def test_distinct_and_repetition_by_hand():
    assert mismatches(distinct_n, repetition_rate) == []


def test_the_hand_made_cases_catch_a_planted_bug():
    """Negative control: counting every occurrence of a repeated bigram (the first one too) as a
    repetition, and distinct-n over n-grams that run across the end of one sample into the next."""
    def repeated_including_first(sample, n):
        grams = text_metrics.ngrams(sample, n)
        return sum(grams.count(g) > 1 for g in grams) / len(grams) if grams else None

    def across_samples(samples, n):
        return distinct_n([[w for s in samples for w in s]], n)

    assert mismatches(distinct_n, repeated_including_first) == [REPETITION[0][3], REPETITION[1][3], REPETITION[2][3]]
    assert mismatches(across_samples, repetition_rate) == [DISTINCT[1][3], DISTINCT[2][3]]


def test_text_quality_of_a_loop_and_of_prose():
    """A looping text scores what its counts say; varied prose repeats nothing."""
    loop = text_quality(["la la la la", "la la"])     # 6 words, 1 distinct; bigrams la-la x3 + x1, 1 distinct
    assert loop == pytest.approx({"distinct_1": 1 / 6, "distinct_2": 1 / 4, "repetition_2": (2 / 3 + 0) / 2})
    prose = text_quality(["The cat sat.", "A dog ran."])   # 8 units, 7 distinct ('.' twice); 6 bigrams, all distinct
    assert prose == pytest.approx({"distinct_1": 7 / 8, "distinct_2": 1.0, "repetition_2": 0.0})
    assert text_quality(["", "one"]) == {"distinct_1": 1.0, "distinct_2": None, "repetition_2": None}
