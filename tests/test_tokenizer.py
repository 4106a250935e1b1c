"""Tokenizers: exact round trips on arbitrary Unicode, saving and loading, and clear errors."""
import functools
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyref.errors import CheckpointError, UsageError
from tinyref.train.tokenizer import BPETokenizer, CharTokenizer, WordTokenizer, load_tokenizer, train_tokenizer

CORPUS = ["The quick brown fox jumps over the lazy dog.\n", "Grüße, 世界! naïve café — 🙂\n"] * 20


@functools.cache
def bpe() -> BPETokenizer:
    return train_tokenizer("bpe", CORPUS, vocab_size=300)


@given(st.text(min_size=1))
def test_char_round_trip_on_arbitrary_unicode(s):
    tok = CharTokenizer.train([s])
    assert tok.decode(tok.encode(s)) == s
    assert tok.vocab_size == len(set(s))


@given(st.text())
def test_bpe_round_trip_on_arbitrary_unicode(s):
    """Byte-level BPE encodes any string, also characters it never saw in training."""
    assert bpe().decode(bpe().encode(s)) == s


@given(st.text(min_size=1))
def test_word_round_trip_on_its_training_text(s):
    tok = WordTokenizer.train([s])
    assert tok.decode(tok.encode(s)) == s


def test_round_trip_catches_a_lossy_tokenizer():
    """Negative control: the same property fails for a BPE whose normalizer lower-cases its input."""
    from tokenizers import normalizers
    lossy = train_tokenizer("bpe", CORPUS, vocab_size=300)
    lossy.hf.normalizer = normalizers.Lowercase()
    assert lossy.decode(lossy.encode("The Fox")) != "The Fox"


def test_bpe_learns_merges_up_to_vocab_size():
    tok = bpe()
    assert 256 < tok.vocab_size <= 300
    assert len(tok.encode(CORPUS[0])) < len(CORPUS[0].encode())   # merges shorten the byte stream


def test_word_tokenizer_splits_words_spaces_and_punctuation():
    tok = WordTokenizer.train(["hi there, you\n"])
    assert tok.symbols == ["\n", " ", ",", "hi", "there", "you"]
    assert tok.encode("you there") == [5, 1, 4]


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_save_and_load_give_the_same_ids(tmp_path, kind):
    tok = train_tokenizer(kind, CORPUS, vocab_size=300)
    tok.save(tmp_path / "tokenizer.json")
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    assert type(loaded) is type(tok) and loaded.vocab_size == tok.vocab_size
    assert loaded.encode(CORPUS[1]) == tok.encode(CORPUS[1])


def test_unknown_symbols_unknown_kinds_and_bad_sizes_are_usage_errors():
    with pytest.raises(UsageError, match="cannot encode 'z'"):
        CharTokenizer.train(["abc"]).encode("abz")
    with pytest.raises(UsageError, match="outside"):
        CharTokenizer.train(["abc"]).decode([3])
    with pytest.raises(UsageError, match="unknown tokenizer 'sentencepiece'"):
        train_tokenizer("sentencepiece", CORPUS)
    with pytest.raises(UsageError, match=">= 256"):
        train_tokenizer("bpe", CORPUS, vocab_size=100)
    with pytest.raises(UsageError, match="empty"):
        train_tokenizer("char", [""])


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", '{"format": "tinyref-tokenizer", "type": "char", "symbols": []}',
                                     '{"format": "tinyref-tokenizer", "type": "morse", "symbols": ["a"]}',
                                     '{"model": {"type": "BPE"}}', '{"hello": 1}',
                                     # found by tests/test_fuzz.py: an unhashable type crashed the lookup
                                     '{"format": "tinyref-tokenizer", "type": [], "symbols": null}'])
def test_garbage_tokenizer_files_are_checkpoint_errors(tmp_path, content):
    (tmp_path / "tokenizer.json").write_text(content)
    with pytest.raises(CheckpointError) as e:
        load_tokenizer(tmp_path / "tokenizer.json")
    assert "\n" not in str(e.value)


def test_missing_tokenizer_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_tokenizer(tmp_path / "nope.json")


def test_bpe_without_hugging_face_tokenizers_says_what_to_install(monkeypatch):
    """A base install (no 'train' extra) gets one line naming the extra, not an ImportError traceback."""
    monkeypatch.setitem(sys.modules, "tokenizers", None)          # makes 'import tokenizers' fail
    with pytest.raises(UsageError, match=r"--tokenizer bpe needs the Python package 'tokenizers'.*pip install 'tinyref\[train\]'"):
        train_tokenizer("bpe", ["some text"], 300)
