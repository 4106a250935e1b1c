"""Words as vectors: a model's input embeddings (the rows of ``wte.weight``), compared by cosine
similarity, combined by vector arithmetic (analogies) and drawn in two dimensions by PCA.

Only whole-word tokens (those with a letter or digit in them) are candidates for a neighbour or an
answer: spaces and punctuation have vectors too, but "the nearest word" means a word.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from tinygrad.nn.state import get_state_dict

from ..errors import UsageError, pyplot


@dataclass
class Embeddings:
    """One vector per token: ``vectors[i]`` is the input embedding of the token whose text is ``tokens[i]``."""

    vectors: np.ndarray          # (V, C)
    tokens: list[str]
    kind: str = "word"           # the tokenizer's kind, for the messages
    tokenizer: object = None     # to explain a word that splits into several tokens

    @cached_property
    def words(self) -> list[int]:
        """The ids of the whole-word tokens, the candidates of every search."""
        return [i for i, t in enumerate(self.tokens) if re.search(r"\w", t)]

    @cached_property
    def ids(self) -> dict[str, int]:
        """Each token's id, by its text."""
        return {t: i for i, t in enumerate(self.tokens)}

    def unit(self) -> np.ndarray:
        """Every vector scaled to length 1, so a dot product is a cosine similarity."""
        norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
        return self.vectors / np.maximum(norms, 1e-12)

    def index(self, word: str) -> int:
        """The id of the token whose text is ``word``, or a UsageError that says why there is none."""
        if word in self.ids:
            return self.ids[word]
        near = difflib.get_close_matches(word, [self.tokens[i] for i in self.words], n=5, cutoff=0.6)
        close = ", ".join(near) + (" (Ġ marks a word after a space)" if any(w[0] == "Ġ" for w in near) else "")
        pieces = self._pieces(word)
        if len(pieces) > 1:
            shown = ", ".join(repr(p) for p in pieces[:6]) + (", ..." if len(pieces) > 6 else "")
            raise UsageError(f"{word!r} is not one token of this {self.kind} tokenizer but {len(pieces)} pieces "
                             f"({shown}), and only single tokens have a vector: ask for a piece"
                             + (f", or a close token: {close}" if close else "")
                             + "; or train with --tokenizer word, which gives every word its own")
        raise UsageError(f"{word!r} is not in the vocabulary of this {self.kind} tokenizer ({len(self.tokens)} "
                         "tokens); " + (f"close: {close}" if close else "no token is close; list them with --plot"))

    def _pieces(self, word: str) -> list[str]:
        """The tokens ``word`` encodes to ([] if the tokenizer cannot encode it)."""
        if self.tokenizer is None:
            return []
        try:
            return [self.tokens[i] for i in self.tokenizer.encode(word)]
        except UsageError:
            return []


def token_texts(tokenizer, vocab_size: int) -> list[str]:
    """The text of every token id: a char or word tokenizer's symbol, a BPE or WordPiece token as its
    vocabulary spells it ('Ġparis' for a BPE word after a space, '##is' for a WordPiece continuation)."""
    if hasattr(tokenizer, "symbols"):
        texts = list(tokenizer.symbols)
    else:
        texts = [tokenizer.hf.id_to_token(i) or "" for i in range(tokenizer.vocab_size)]
    return texts + [f"<{i}>" for i in range(len(texts), vocab_size)]     # ids the tokenizer never gives


def embeddings_of(wte: np.ndarray, tokenizer) -> Embeddings:
    """The rows of ``wte.weight`` (V, C) named by ``tokenizer``'s tokens."""
    if tokenizer is None:
        raise UsageError("this checkpoint has no tokenizer.json, so its rows have no words: use a checkpoint "
                         "trained on text with --tokenizer")
    return Embeddings(np.asarray(wte, dtype=np.float64), token_texts(tokenizer, len(wte)), tokenizer.kind, tokenizer)


def load_embeddings(checkpoint) -> Embeddings:
    """The input embeddings of a loaded checkpoint (``tinyref.train.checkpoint.load_checkpoint``, or
    anything with ``.model`` and ``.tokenizer``)."""
    return embeddings_of(get_state_dict(checkpoint.model)["wte.weight"].float().numpy(), checkpoint.tokenizer)


TOP = 10     # how many words a search lists unless told (fewer if the vocabulary has fewer)


def check_top(top: int | None, emb: Embeddings, excluded: int) -> int:
    """``top`` if 1 <= top <= the number of candidates left (None: TOP or all of them), else UsageError."""
    available = len(emb.words) - excluded
    if top is None:
        return min(TOP, available)
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= available:
        raise UsageError(f"--top must lie in [1, {available}]: the vocabulary has {available} other "
                         f"word{'s' * (available != 1)}, got {top!r}")
    return top


# --8<-- [start:nearest]
def nearest(emb: Embeddings, word: str, top: int | None = None) -> list[tuple[str, float]]:
    """The ``top`` (default TOP) words whose vectors point most nearly the same way as ``word``'s:
    cos(u, v) = u . v / (|u| |v|), highest first."""
    i = emb.index(word)
    top = check_top(top, emb, excluded=int(i in emb.words))
    unit = emb.unit()
    return ranked(unit @ unit[i], emb, exclude={i}, top=top)


def analogy(emb: Embeddings, a: str, b: str, c: str, top: int | None = None) -> list[tuple[str, float]]:
    """"a is to b as c is to ?": the words nearest to b - a + c (unit vectors, as word2vec's test
    does), a, b and c themselves excluded; with their cosine to that point."""
    ids = [emb.index(w) for w in (a, b, c)]
    top = check_top(top, emb, excluded=len(set(ids) & set(emb.words)))
    unit = emb.unit()
    target = unit[ids[1]] - unit[ids[0]] + unit[ids[2]]            # (C,)
    target /= max(np.linalg.norm(target), 1e-12)
    return ranked(unit @ target, emb, exclude=set(ids), top=top)
# --8<-- [end:nearest]


def ranked(scores: np.ndarray, emb: Embeddings, exclude: set[int], top: int) -> list[tuple[str, float]]:
    """The ``top`` highest-scoring words not in ``exclude``; ties go to the lower id."""
    candidates = [i for i in emb.words if i not in exclude]
    order = sorted(candidates, key=lambda i: (-scores[i], i))[:top]
    return [(emb.tokens[i], float(scores[i])) for i in order]


def answer_analogies(emb: Embeddings, questions) -> list[str]:
    """The top answer to each (a, b, c, d) question (d is ignored), as ``analogy(...)[0]``, in one matrix product."""
    unit = emb.unit()
    ids = np.array([[emb.index(w) for w in q[:3]] for q in questions])          # (Q, 3)
    target = unit[ids[:, 1]] - unit[ids[:, 0]] + unit[ids[:, 2]]                # (Q, C)
    scores = target @ unit.T                                                    # (Q, V): ranking only, no need to normalise
    allowed = np.full(len(emb.tokens), -np.inf)
    allowed[emb.words] = 0.0
    scores = scores + allowed
    scores[np.arange(len(ids))[:, None], ids] = -np.inf
    return [emb.tokens[i] for i in np.argmax(scores, axis=1)]


def analogy_accuracy(emb: Embeddings, questions) -> float:
    """The fraction of (a, b, c, d) questions whose top answer is d."""
    answers = answer_analogies(emb, questions)
    return float(np.mean([answer == q[3] for answer, q in zip(answers, questions)]))


def cluster_cosines(emb: Embeddings, groups: dict[str, list[str]]) -> tuple[float, float]:
    """(mean cosine between two different words of the same group, mean cosine between words of
    different groups): the first above the second when the vectors sort words by kind."""
    unit = emb.unit()
    label = {emb.index(w): g for g, words in groups.items() for w in words}
    ids = list(label)
    cos = unit[ids] @ unit[ids].T
    same = np.array([[label[i] == label[j] for j in ids] for i in ids])
    off_diagonal = ~np.eye(len(ids), dtype=bool)
    return float(cos[same & off_diagonal].mean()), float(cos[~same].mean())


# --8<-- [start:pca]
def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(points (N, 2), the share of the variance each of the two axes keeps): the vectors centred,
    then projected on the two directions along which they vary most, the first two right singular
    vectors of the centred matrix (X = U S V^T, so X V[:, :2] = U[:, :2] S[:2])."""
    X = vectors - vectors.mean(axis=0)                              # (N, C)
    _, S, Vt = np.linalg.svd(X, full_matrices=False)                # Vt: (C, C), rows = directions
    largest = Vt[np.arange(len(Vt)), np.abs(Vt).argmax(axis=1)]
    Vt = Vt * np.where(largest < 0, -1.0, 1.0)[:, None]             # a direction's sign is arbitrary: fix it
    variance = S**2 / max(float(np.sum(S**2)), 1e-300)
    return X @ Vt[:2].T, variance[:2]
# --8<-- [end:pca]


def plot_map(points: np.ndarray, labels: list[str], path, title: str = "", groups: dict[str, list[str]] | None = None,
             variance=None) -> None:
    """A PNG of 2-D points, each with its label; ``groups`` colours the labels it names (one colour per group)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 8), layout="constrained")
    colour = {}
    for k, (name, words) in enumerate((groups or {}).items()):
        colour.update({w: f"C{k}" for w in words})
        ax.scatter([], [], color=f"C{k}", label=name)
    for (x, y), label in zip(points, labels):
        ax.scatter([x], [y], s=12, color=colour.get(label, "0.4"))
        ax.annotate(label, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=8, color=colour.get(label, "0.2"))
    if groups:
        ax.legend(loc="best")
    share = [f" ({v:.0%} of the variance)" for v in variance] if variance is not None else ["", ""]
    ax.set_xlabel(f"first principal component{share[0]}")
    ax.set_ylabel(f"second principal component{share[1]}")
    if title:
        ax.set_title(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
