"""Tokenizers: text <-> token ids, saved as one ``tokenizer.json``.

``char`` and ``word`` are exact lookup tables of the symbols seen in the training text (a symbol
never seen cannot be encoded: UsageError). ``bpe`` is Hugging Face's byte-level BPE, trained here
on the same text: its alphabet is the 256 bytes, so it encodes any string and decodes it back.
``wordpiece`` is BERT's scheme, trained here too: words split into pieces, ``##`` marking a piece
inside a word; it decodes to a normal form of the text (whitespace tidied, unknown words [UNK]).
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, UsageError, require

TOKENIZERS = ("char", "word", "bpe", "wordpiece")
SIZED = ("bpe", "wordpiece")     # the tokenizers whose vocabulary size is chosen (--vocab-size)
DEFAULT_VOCAB = 512
BYTE_ALPHABET = 256          # byte-level BPE starts from one token per byte
FORMAT = "tinyref-tokenizer"  # marks tinyref's own JSON (char, word); BPE and WordPiece files are Hugging Face's


class VocabTokenizer:
    """A table of symbols: id i <-> ``symbols[i]``. Subclasses say how text splits into symbols."""

    kind = ""
    unk_id = None       # no unknown token: a symbol outside the table is an error

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


class HFTokenizer:
    """A Hugging Face ``tokenizers`` pipeline, trained locally; tokenizer.json is its own format."""

    kind = ""
    unk_id = None

    def __init__(self, hf_tokenizer):
        self.hf = hf_tokenizer

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:   # a lone surrogate, e.g. from undecodable bytes on the command line
            raise UsageError(f"the text holds {e.object[e.start]!r} at position {e.start}, which is not a Unicode "
                             "character: give UTF-8 text") from None
        return self.hf.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Many texts at once, in parallel threads (tokenizing a big corpus)."""
        return [e.ids for e in self.hf.encode_batch(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise UsageError(f"token id {bad[0]} is outside this {self.kind} tokenizer's vocabulary [0, {self.vocab_size})")
        return self.hf.decode(ids, skip_special_tokens=False)

    def to_json(self) -> str:
        return self.hf.to_str()

    def save(self, path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")


class BPETokenizer(HFTokenizer):
    """Byte-level BPE (GPT-2's scheme): the 256 bytes plus merges, so it encodes any string exactly."""

    kind = "bpe"

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


# --8<-- [start:wordpiece]
# WordPiece's normal form. Whitespace is what Python's str.isspace() accepts, spelled out so that
# Python's re and the regex engine of the tokenizers package agree on it.
WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200b))) + \
    "\u2028\u2029\u202f\u205f\u3000"
LINE_BREAK = f"[{WHITESPACE}]*\n[{WHITESPACE}]*"      # a run of whitespace holding a line end -> "\n"
BLANKS = f"[{WHITESPACE.replace(chr(10), '')}]+"       # any other run of whitespace separates two words
HASH_RUN = "(?<=#)#"        # "##" inside a word reads "# #": no word may begin with the continuation mark
UNK, PREFIX, MAX_WORD = "[UNK]", "##", 100             # a longer word is [UNK], as in BERT


def wordpiece_pipeline(hf, vocab: dict[str, int] | None = None):
    """A ``tokenizers.Tokenizer`` that splits text into words by the rules above and each word into
    pieces of ``vocab`` (longest first); decoding glues ``##`` pieces to the piece before them."""
    tok = hf.Tokenizer(hf.models.WordPiece(vocab, unk_token=UNK, continuing_subword_prefix=PREFIX,
                                           max_input_chars_per_word=MAX_WORD))
    tok.normalizer = hf.normalizers.Replace(hf.Regex(LINE_BREAK), "\n")
    split = hf.pre_tokenizers.Split
    tok.pre_tokenizer = hf.pre_tokenizers.Sequence([split(hf.Regex("\n"), "isolated"), split(hf.Regex(BLANKS), "removed"),
                                                    split(hf.Regex(HASH_RUN), "merged_with_next")])
    decoders = hf.decoders
    tok.decoder = decoders.Sequence([decoders.WordPiece(PREFIX, cleanup=False), decoders.Fuse(),   # words joined by " "
                                     decoders.Replace(" \n", "\n"), decoders.Replace("\n ", "\n")])
    return tok
# --8<-- [end:wordpiece]


class WordPieceTokenizer(HFTokenizer):
    """BERT's WordPiece, cased: words split into the longest pieces of the vocabulary, ``##`` marking a
    piece that continues a word. Every character of the training text is a piece both at the start
    of a word and inside one, so a word is [UNK] only for a character never seen (or if too long)."""

    kind = "wordpiece"

    @property
    def unk_id(self) -> int:
        return self.hf.token_to_id(UNK)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "WordPieceTokenizer":
        """Learn pieces on ``texts`` until ``vocab_size`` tokens (fewer if the text runs out of pairs)."""
        hf = require("tokenizers", "--tokenizer wordpiece")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
            raise UsageError(f"--vocab-size must be a positive integer, got {vocab_size!r}")
        tok = wordpiece_pipeline(hf)
        tok.train_from_iterator(texts, hf.trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=[UNK],
                                                                    continuing_subword_prefix=PREFIX, show_progress=False))
        learned = sorted(tok.get_vocab(), key=tok.token_to_id)               # [UNK], alphabet, then pieces as merged
        alphabet = sorted({t[-1] for t in learned if len(t) == 1 or (t.startswith(PREFIX) and len(t) == len(PREFIX) + 1)})
        if not alphabet:
            raise UsageError("cannot build a wordpiece tokenizer from empty text: give a non-empty --data file")
        base = [UNK, *alphabet, *(PREFIX + c for c in alphabet)]            # both forms of every character
        if len(base) > vocab_size:
            raise UsageError(f"the text has {len(alphabet)} distinct characters, so WordPiece needs {len(base)} tokens "
                             f"(each character at the start of a word and inside one, and [UNK]): give --vocab-size "
                             f">= {len(base)}")
        known = set(base)
        pieces = [t for t in learned if t not in known][:vocab_size - len(base)]   # the first pieces merged
        return cls(wordpiece_pipeline(hf, {t: i for i, t in enumerate(base + pieces)}))


Tokenizer = CharTokenizer | WordTokenizer | BPETokenizer | WordPieceTokenizer


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int | None = None) -> Tokenizer:
    """A new tokenizer of ``kind`` (one of TOKENIZERS) learned from ``texts``; vocab_size is the target of
    the SIZED kinds (ignored by the others, whose vocabulary is the text's symbols)."""
    if kind == "char":
        return CharTokenizer.train(texts)
    if kind == "word":
        return WordTokenizer.train(texts)
    if kind in SIZED:
        return (BPETokenizer if kind == "bpe" else WordPieceTokenizer).train(texts, vocab_size or DEFAULT_VOCAB)
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
    model_type = data["model"].get("type") if isinstance(data.get("model"), dict) else None
    if model_type in ("BPE", "WordPiece"):
        hf = require("tokenizers", f"reading the {model_type} tokenizer {where}")
        try:
            return (BPETokenizer if model_type == "BPE" else WordPieceTokenizer)(hf.Tokenizer.from_str(text))
        except Exception as e:  # noqa: BLE001 - the Rust parser raises bare Exceptions
            raise CheckpointError(f"{where} is not a valid Hugging Face {model_type} tokenizer "
                                  f"({str(e).splitlines()[0]})") from None
    raise CheckpointError(f"{where} is not a tinyref char/word tokenizer nor a Hugging Face BPE/WordPiece tokenizer")


def count_unknown(tokenizer: Tokenizer, ids: np.ndarray) -> int | None:
    """How many of ``ids`` are the [UNK] token (None for tokenizers without one), counted in slices."""
    if tokenizer.unk_id is None:
        return None
    step = 1 << 24
    return sum(int(np.count_nonzero(ids[s:s + step] == tokenizer.unk_id)) for s in range(0, len(ids), step))


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
