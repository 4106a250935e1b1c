"""Tokenizers: exact round trips on arbitrary Unicode, saving and loading, and clear errors."""
import functools
import itertools
import re
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyref.errors import CheckpointError, UsageError
from tinyref.train.tokenizer import (WHITESPACE, BPETokenizer, CharTokenizer, WordPieceTokenizer, WordTokenizer,
                                     count_unknown, load_tokenizer, train_tokenizer)

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


@pytest.mark.parametrize("kind", ["char", "word", "bpe", "wordpiece"])
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
    with pytest.raises(UsageError, match="--vocab-size >= 81"):        # 40 characters, each in two forms, and [UNK]
        train_tokenizer("wordpiece", CORPUS, vocab_size=80)
    with pytest.raises(UsageError, match="empty"):
        train_tokenizer("wordpiece", [" \t "], vocab_size=80)
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


# --- WordPiece: decode(encode(text)) is the documented normal form of text ----------------------------

WP_CORPUS = CORPUS + ["#include <stdio.h> /* 3.14 + 42 = 45.14; 'q' \"r\"? (a-b)*c ## ok! */\r\n"] * 10


@functools.cache
def wordpiece() -> WordPieceTokenizer:
    return train_tokenizer("wordpiece", WP_CORPUS, vocab_size=160)   # 59 characters: 119 + 41 pieces


def alphabet(tok: WordPieceTokenizer) -> set[str]:
    return {t for t in tok.hf.get_vocab() if len(t) == 1}


# --8<-- [start:normal_form]
def normal_form(text: str, alphabet: set[str]) -> str:
    """What a WordPiece round trip gives back, written from the rules on the tokenizers page."""
    words = []
    for blank, run in itertools.groupby(text, str.isspace):
        run = "".join(run)
        if blank:                                   # whitespace separates words; a line end is a word
            words += ["\n"] if "\n" in run else []
        else:                                       # a run of #s is spaced out: "a##b" -> "a#", "#b"
            words += re.split(r"(?<=#)(?=#)", run)
    words = ["[UNK]" if len(w) > 100 or not set(w) <= alphabet else w for w in words]
    return "".join(w if i == 0 or "\n" in (w, words[i - 1]) else " " + w for i, w in enumerate(words))
# --8<-- [end:normal_form]


KNOWN = sorted(set("".join(WP_CORPUS)))
texts = st.lists(st.one_of(
    st.text(st.sampled_from(KNOWN), max_size=12),                     # words of known characters
    st.text(st.sampled_from("0123456789.,"), min_size=1, max_size=8),  # numbers
    st.text(st.sampled_from("#.,;:!?-()'\"*/<>"), min_size=1, max_size=6),   # punctuation runs, ## among them
    st.text(st.sampled_from(WHITESPACE), min_size=1, max_size=4),     # every kind of whitespace, line ends
    st.characters(exclude_categories=("Cs",)),                         # any character, mostly unknown ones
    st.just("x" * 101), st.just("[UNK]")), max_size=20).map("".join)


# --8<-- [start:wordpiece_round_trip]
@given(texts)
def test_wordpiece_round_trip_gives_the_normal_form(s):
    tok = wordpiece()
    assert tok.decode(tok.encode(s)) == normal_form(s, alphabet(tok))
# --8<-- [end:wordpiece_round_trip]


def test_wordpiece_examples_and_unknown_counts():
    tok = wordpiece()
    text = "Grüße,  the café!\r\n\n  3.14 ## c# 🙂 ok\u2028fox ÿ"
    assert tok.decode(tok.encode(text)) == "Grüße, the café!\n3.14 # # c# 🙂 ok fox [UNK]"
    ids = tok.encode("the quick fox")
    assert any(tok.hf.id_to_token(i).startswith("##") for i in tok.encode("jumps quickly"))   # pieces inside words
    assert len(ids) < len("the quick fox") and count_unknown(tok, np.asarray(ids)) == 0
    assert count_unknown(tok, np.asarray(tok.encode("ÿ the Ω " + "x" * 101))) == 3
    assert count_unknown(CharTokenizer.train(["ab"]), np.asarray([0, 1])) is None


def test_wordpiece_keeps_every_character_in_both_forms_and_its_size():
    tok = wordpiece()
    vocab = tok.hf.get_vocab()
    assert tok.vocab_size == 160 and vocab["[UNK]"] == tok.unk_id == 0
    assert all("##" + c in vocab for c in alphabet(tok)), "a character without its continuation form"
    assert set(WHITESPACE) == {chr(c) for c in range(0x110000) if chr(c).isspace()}


def test_wordpiece_round_trip_catches_a_missing_rule():
    """Negative control: without the rule that spaces out ## runs, '##' reads as a continuation mark."""
    from tokenizers import pre_tokenizers
    tok = train_tokenizer("wordpiece", WP_CORPUS, vocab_size=160)
    tok.hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    assert tok.decode(tok.encode("ok ##ok")) != normal_form("ok ##ok", alphabet(tok))


def test_a_wordpiece_run_counts_unknown_words_and_serves_every_command(tmp_path, capsys):
    """train reports its [UNK] tokens in one line; generate, eval and attention read the checkpoint's
    WordPiece tokenizer, and a prompt with characters it never saw is [UNK], not an error."""
    from tinyref.cli import main
    from tinyref.train import TrainOptions, train
    data = tmp_path / "text.txt"
    data.write_text("".join(CORPUS) + "x" * 101 + "\n")           # one word longer than 100 characters
    lines = []
    run = train(TrainOptions(data=str(data), out=str(tmp_path / "run"), tokenizer="wordpiece", vocab_size=120,
                             context_length=8, d_model=16, n_heads=2, n_layers=1, batch_size=2, steps=2, eval_every=2,
                             eval_batches=1), log=lines.append, progress=False)
    unknown = [line for line in lines if "[UNK]" in line]
    assert len(unknown) == 1 and unknown[0].startswith("Unknown words: 1 [UNK] tokens ("), lines
    assert isinstance(run.tokenizer, WordPieceTokenizer) and run.tokenizer.vocab_size == 120
    ckpt = str(run.checkpoint)
    argvs = (["generate", "--checkpoint", ckpt, "--prompt", "Ωmega the fox", "--max-new-tokens", "5"],
             ["eval", "--checkpoint", ckpt, "--data", str(data), "--samples", "2", "--json"],
             ["attention", "--checkpoint", ckpt, "--text", "the lazy dog", "--out", str(tmp_path / "a.png")])
    for argv in argvs:
        assert main(argv) == 0, argv
    out = capsys.readouterr().out
    assert "[UNK] the fox" in out and '"repetition_2"' in out and (tmp_path / "a.png").exists()
