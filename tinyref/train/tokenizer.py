"""Tokenizers: text <-> token ids, saved as one ``tokenizer.json``.

``char`` and ``word`` are exact lookup tables of the symbols seen in the training text (a symbol
never seen cannot be encoded: UsageError). ``bpe`` is Hugging Face's byte-level BPE, trained here
on the same text: its alphabet is the 256 bytes, so it encodes any string and decodes it back.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from ..errors import CheckpointError, UsageError, require

TOKENIZERS = ("char", "word", "bpe")
BYTE_ALPHABET = 256          # byte-level BPE starts from one token per byte
FORMAT = "tinyref-tokenizer"  # marks tinyref's own JSON (char, word); BPE files are Hugging Face's format


class VocabTokenizer:
    """A table of symbols: id i <-> ``symbols[i]``. Subclasses say how text splits into symbols."""

    kind = ""

    def __init__(self, symbols: list[str]):
        self.symbols = list(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    @staticmethod
    def split(text: str) -> list[str]:
        raise NotImplementedError

    @classmethod
    def train(cls, texts: Iterable[str]) -> "VocabTokenizer":
        """Every distinct symbol of ``texts``, sorted, so the same text always gives the same ids."""
        seen = set()
        for text in texts:
            seen.update(cls.split(text))
        if not seen:
            raise UsageError(f"cannot build a {cls.kind} tokenizer from empty text: give a non-empty --data file")
        return cls(sorted(seen))

    def encode(self, text: str) -> list[int]:
        try:
            return [self.index[s] for s in self.split(text)]
        except KeyError as e:
            raise UsageError(f"the {self.kind} tokenizer cannot encode {e.args[0]!r}: it is not among the "
                             f"{self.vocab_size} symbols of its training text (use --tokenizer bpe, "
                             "which encodes any text)") from None

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise UsageError(f"token id {bad[0]} is outside this {self.kind} tokenizer's vocabulary [0, {self.vocab_size})")
        return "".join(self.symbols[i] for i in ids)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "type": self.kind, "symbols": self.symbols}, indent=0)

    def save(self, path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")


class CharTokenizer(VocabTokenizer):
    """One token per Unicode code point (nanoGPT's shakespeare_char)."""

    kind = "char"

    @staticmethod
    def split(text: str) -> list[str]:
        return list(text)


# A word, one whitespace character, or one other character: every character is in exactly one piece,
# so "".join(pieces) == text, and splitting line by line gives the same pieces as the whole text.
WORD_PIECES = re.compile(r"\w+|\s|[^\w\s]")


class WordTokenizer(VocabTokenizer):
    """One token per word, whitespace character or punctuation mark (a vocabulary of whole words)."""

    kind = "word"

    @staticmethod
    def split(text: str) -> list[str]:
        return WORD_PIECES.findall(text)


class BPETokenizer:
    """Byte-level BPE (GPT-2's scheme) from Hugging Face ``tokenizers``, trained locally."""

    kind = "bpe"

    def __init__(self, hf_tokenizer):
        self.hf = hf_tokenizer

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "BPETokenizer":
        """Learn merges on ``texts`` until ``vocab_size`` tokens (fewer if the text runs out of pairs)."""
        hf = require("tokenizers", "--tokenizer bpe")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < BYTE_ALPHABET:
            raise UsageError(f"--vocab-size for BPE must be an integer >= {BYTE_ALPHABET} (one token per byte "
                             f"plus merges), got {vocab_size!r}")
        tok = hf.Tokenizer(hf.models.BPE())
        tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = hf.decoders.ByteLevel()
        trainer = hf.trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(),
                                         show_progress=False)
        tok.train_from_iterator(texts, trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Many texts at once, in parallel threads (tokenizing a big corpus)."""
        return [e.ids for e in self.hf.encode_batch(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise UsageError(f"token id {bad[0]} is outside this BPE tokenizer's vocabulary [0, {self.vocab_size})")
        return self.hf.decode(ids, skip_special_tokens=False)

    def to_json(self) -> str:
        return self.hf.to_str()

    def save(self, path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")


Tokenizer = CharTokenizer | WordTokenizer | BPETokenizer


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int | None = None) -> Tokenizer:
    """A new tokenizer of ``kind`` (char, word, bpe) learned from ``texts``; vocab_size is BPE's target."""
    if kind == "char":
        return CharTokenizer.train(texts)
    if kind == "word":
        return WordTokenizer.train(texts)
    if kind == "bpe":
        return BPETokenizer.train(texts, 512 if vocab_size is None else vocab_size)
    raise UsageError(f"unknown tokenizer {kind!r}: choose one of {', '.join(TOKENIZERS)}")


def tokenizer_from_json(text: str, where: str = "tokenizer.json") -> Tokenizer:
    """Rebuild a tokenizer from ``to_json()`` output; CheckpointError naming ``where`` if it is not one."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise CheckpointError(f"{where} is not valid JSON ({e}); restore it from a good checkpoint") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{where} must hold a JSON object, got {type(data).__name__}")
    if data.get("format") == FORMAT:
        classes = {c.kind: c for c in (CharTokenizer, WordTokenizer)}
        symbols = data.get("symbols")
        if not isinstance(data.get("type"), str) or data["type"] not in classes:
            raise CheckpointError(f"{where} has unknown tokenizer type {data.get('type')!r}: expected char or word")
        if (not isinstance(symbols, list) or not symbols or not all(isinstance(s, str) and s for s in symbols)
                or len(set(symbols)) != len(symbols)):
            raise CheckpointError(f"{where}: 'symbols' must be a non-empty list of distinct non-empty strings")
        return classes[data["type"]](symbols)
    if isinstance(data.get("model"), dict) and data["model"].get("type") == "BPE":
        hf = require("tokenizers", f"reading the BPE tokenizer {where}")
        try:
            return BPETokenizer(hf.Tokenizer.from_str(text))
        except Exception as e:  # noqa: BLE001 - the Rust parser raises bare Exceptions
            raise CheckpointError(f"{where} is not a valid Hugging Face BPE tokenizer ({str(e).splitlines()[0]})") from None
    raise CheckpointError(f"{where} is not a tinyref char/word tokenizer nor a Hugging Face BPE tokenizer")


def load_tokenizer(path) -> Tokenizer:
    """The tokenizer saved at ``path`` (a tokenizer.json), checked before use."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"tokenizer file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read tokenizer file {path}: {e}") from None
    return tokenizer_from_json(text, str(path))
