"""A small structured corpus in which words-as-vectors can be seen: sentences about countries, their
capitals, languages and currencies, drawn from varied templates with a seeded generator.

Each kind of word fills its own slots, and a country and its capital share their language and
currency sentences, so the text holds both what sorts words by kind and what pairs a capital with
its country; the analogy questions ask for the pairing (docs/learn/words-as-vectors.md measures how
much of each a small model learns). The model never trains on a question; "held out" means the
questions whose answer pair is one of HELD_OUT_COUNTRIES were set aside while the templates were
designed (on the other, development questions). Every word they use does appear in the text (a
word never seen has no trained vector).
"""
from __future__ import annotations

import itertools

import numpy as np

from ..errors import UsageError

# --8<-- [start:facts]
# (country, capital, language, currency): every value belongs to one country only, so each relation
# is one-to-one and an analogy has one right answer.
FACTS = (
    ("france", "paris", "french", "euro"), ("japan", "tokyo", "japanese", "yen"),
    ("china", "beijing", "chinese", "yuan"), ("russia", "moscow", "russian", "ruble"),
    ("india", "delhi", "hindi", "rupee"), ("korea", "seoul", "korean", "won"),
    ("thailand", "bangkok", "thai", "baht"), ("vietnam", "hanoi", "vietnamese", "dong"),
    ("turkey", "ankara", "turkish", "lira"), ("poland", "warsaw", "polish", "zloty"),
    ("sweden", "stockholm", "swedish", "krona"), ("norway", "oslo", "norwegian", "krone"),
    ("hungary", "budapest", "hungarian", "forint"), ("brazil", "brasilia", "portuguese", "real"),
    ("indonesia", "jakarta", "indonesian", "rupiah"), ("iran", "tehran", "persian", "rial"),
    ("britain", "london", "english", "pound"), ("czechia", "prague", "czech", "koruna"),
    ("ukraine", "kyiv", "ukrainian", "hryvnia"), ("kenya", "nairobi", "swahili", "shilling"),
)
CATEGORIES = ("country", "capital", "language", "currency")     # the columns of FACTS

TEMPLATES = (
    "{capital} is the capital of {country} .",
    "the capital of {country} is {capital} .",
    "{country} has its capital in {capital} .",
    "people in {place} speak {language} .",
    "{language} is spoken in {place} .",
    "in {place} the people speak {language} .",
    "the currency of {place} is the {currency} .",
    "in {place} you pay with the {currency} .",
    "the {currency} is the money of {place} .",
    "{capital} is a big city .",
    "{country} is a country .",
    "we flew from {capital} to {other_capital} .",
    "{country} is far from {other_country} .",
)
# --8<-- [end:facts]
HELD_OUT_COUNTRIES = ("korea", "poland", "hungary", "indonesia", "ukraine", "kenya")
# analogy relations: a : b :: c : d with (a, b) and (c, d) the same two columns of two countries
RELATIONS = (("capital", "country"), ("country", "language"), ("country", "currency"))
SENTENCES = 4          # per paragraph
DEFAULT_PARAGRAPHS = 1500


def facts_by_category() -> dict[str, list[str]]:
    """Each category's words, in FACTS order: {'country': ['france', ...], 'capital': [...], ...}."""
    return {name: [row[i] for row in FACTS] for i, name in enumerate(CATEGORIES)}


# --8<-- [start:corpus]
def capitals_corpus(paragraphs: int = DEFAULT_PARAGRAPHS, seed: int = 0) -> str:
    """``paragraphs`` lines, each about one country: SENTENCES templates filled with its facts (and
    another country's, for the templates that name two), countries and templates drawn uniformly by a
    seeded generator. A paragraph keeps to one country, as a text keeps to its topic, so the words
    that stand near each other are the facts of one country."""
    if isinstance(paragraphs, bool) or not isinstance(paragraphs, int) or paragraphs < 1:
        raise UsageError(f"paragraphs must be an integer >= 1, got {paragraphs!r}")
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(paragraphs):
        i = rng.integers(len(FACTS))
        sentences = []
        for template in rng.choice(TEMPLATES, size=SENTENCES, replace=False):
            j = (i + rng.integers(1, len(FACTS))) % len(FACTS)        # another country
            words = dict(zip(CATEGORIES, FACTS[i]), place=FACTS[i][rng.integers(2)], other_country=FACTS[j][0],
                         other_capital=FACTS[j][1])
            sentences.append(template.format(**words))
        lines.append(" ".join(sentences))
    return "\n".join(lines) + "\n"
# --8<-- [end:corpus]


def shuffled_words(text: str, seed: int = 0) -> str:
    """The negative control: the same words, as often, with their order shuffled across the whole text
    (line lengths kept), so no sentence says anything any more."""
    lines = [line.split() for line in text.splitlines()]
    words = np.array([w for line in lines for w in line])
    words = words[np.random.default_rng(seed).permutation(len(words))]
    cuts = np.cumsum([len(line) for line in lines])[:-1]
    return "\n".join(" ".join(chunk) for chunk in np.split(words, cuts)) + "\n"


# --8<-- [start:questions]
def analogy_questions(held_out: bool = True) -> list[tuple[str, str, str, str]]:
    """(a, b, c, d) quadruples "a is to b as c is to d" for every relation of RELATIONS and every
    ordered pair of two countries; held_out: those whose answer d belongs to HELD_OUT_COUNTRIES,
    else the others (the development questions)."""
    columns = {name: i for i, name in enumerate(CATEGORIES)}
    questions = []
    for left, right in RELATIONS:
        l, r = columns[left], columns[right]
        for first, second in itertools.permutations(FACTS, 2):
            if (second[0] in HELD_OUT_COUNTRIES) == held_out:
                questions.append((first[l], first[r], second[l], second[r]))
    return questions
# --8<-- [end:questions]
