"""Training data: reading text files (and refusing bad ones), the memory-mapped token file, the split, the sampler."""
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyref.train.data import (TOKENS_FILE, BatchSampler, iter_text, split_tokens, text_pieces, token_dtype,
                          tokenize_to_file, validation_windows)
from tinyref.errors import DataError, UsageError
from tinyref.train.tokenizer import train_tokenizer

BAD_FILES = {
    "missing": (None, "does not exist"),
    "empty": (b"", "is empty"),
    "binary": (b"hello\n" * 10 + b"\x00\x01\x02", "NUL byte at byte offset 60"),
    "latin-1": ("caf\u00e9 au lait\n".encode("utf-8") * 3 + "na\u00efve".encode("latin-1"), "byte offset 44"),
    "cut multibyte at the end": ("\u00e9".encode() * 5 + "\u20ac".encode()[:2], "byte offset 10"),
}


@pytest.mark.parametrize("case", BAD_FILES)
@pytest.mark.parametrize("chunk_bytes", [3, 1 << 22])
def test_bad_files_are_one_line_data_errors_with_the_offset(tmp_path, case, chunk_bytes):
    content, message = BAD_FILES[case]
    path = tmp_path / "data.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message) as e:
        list(iter_text(path, chunk_bytes))
    assert "\n" not in str(e.value)


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        list(iter_text(tmp_path))


@given(text=st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1),
       chunk_bytes=st.integers(1, 40))
def test_reading_in_chunks_gives_back_the_whole_text(tmp_path_factory, text, chunk_bytes):
    """Chunks cut anywhere, even inside a multi-byte character, join to the file's text; every chunk
    but the last ends at a line end unless a line is longer than a chunk."""
    path = tmp_path_factory.mktemp("t") / "data.txt"
    path.write_bytes(text.encode("utf-8"))
    chunks = list(iter_text(path, chunk_bytes))
    assert "".join(chunks) == text.encode("utf-8").decode("utf-8")   # no newline translation
    assert all(c for c in chunks)


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_token_file_holds_the_encoded_text_and_is_reused(tmp_path, kind):
    text = "the cat sat on the mat.\nla plume de ma tante \u00e9t\u00e9\n" * 40
    path = tmp_path / "data.txt"
    path.write_text(text, encoding="utf-8")
    tok = train_tokenizer(kind, [line for lines in text_pieces(path) for line in lines], 300 if kind == "bpe" else None)
    tokens = tokenize_to_file(path, tok, tmp_path, chunk_bytes=50)
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
    assert tok.decode(tokens) == text
    if kind != "bpe":        # char and word pieces never cross a line end: chunked == whole
        assert tokens.tolist() == tok.encode(text)
    stamp = (tmp_path / TOKENS_FILE).stat().st_mtime_ns
    again = tokenize_to_file(path, tok, tmp_path)
    assert (tmp_path / TOKENS_FILE).stat().st_mtime_ns == stamp and np.array_equal(again, tokens)
    other = train_tokenizer("char", [text + "!"])              # another tokenizer: encoded afresh
    assert tokenize_to_file(path, other, tmp_path).tolist() == other.encode(text)


def test_token_dtype_is_the_narrowest_that_fits():
    assert token_dtype(256) == np.uint16 and token_dtype(2**16) == np.uint16 and token_dtype(2**16 + 1) == np.uint32


def test_split_holds_out_the_tail():
    tokens = np.arange(100, dtype=np.uint16)
    train, val = split_tokens(tokens, 0.1, context_length=8)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_val_fraction_outside_zero_one_is_a_usage_error(fraction):
    with pytest.raises(UsageError, match="--val-fraction"):
        split_tokens(np.arange(100), fraction, context_length=8)


def test_too_little_text_for_one_window_is_a_data_error():
    with pytest.raises(DataError, match="validation part of the data has 5 tokens"):
        split_tokens(np.arange(50), 0.1, context_length=8)


def test_sampler_windows_are_shifted_slices_of_the_stream():
    tokens = (np.arange(1000) * 7 % 1000).astype(np.uint16)
    x, y = BatchSampler(tokens, 16, seed=0).sample(32)
    assert x.shape == y.shape == (32, 16) and x.dtype == np.int32
    for row_x, row_y in zip(x, y):
        start = int(np.flatnonzero(tokens == row_x[0])[0])
        assert np.array_equal(row_x, tokens[start:start + 16]) and np.array_equal(row_y, tokens[start + 1:start + 17])


def test_sampler_state_round_trips_through_json():
    """What a checkpoint stores: a fresh sampler given the saved state draws the same batches."""
    tokens = np.arange(500, dtype=np.uint16)
    a = BatchSampler(tokens, 8, seed=3)
    a.sample(4)
    saved = json.loads(json.dumps(a.state))
    b = BatchSampler(tokens, 8, seed=99)
    b.state = saved
    for _ in range(3):
        assert all(np.array_equal(p, q) for p, q in zip(a.sample(4), b.sample(4)))
    restarted = BatchSampler(tokens, 8, seed=3)              # negative control: the seed alone replays old batches
    assert not np.array_equal(restarted.sample(4)[0], b.sample(4)[0])


def test_validation_windows_are_fixed_and_cover_the_split():
    tokens = np.arange(100, dtype=np.uint16)
    x, y = validation_windows(tokens, 4, 8)
    assert x[0, 0] == 0 and y[-1, -1] == 99 and np.array_equal(validation_windows(tokens, 4, 8)[0], x)
