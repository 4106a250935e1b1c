"""Training data: the demo's synthetic sequences, and real text stored once as a memory-mapped token stream."""
from __future__ import annotations

import codecs
import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np

from ..errors import DataError, UsageError


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


# ---------------------------------------------------------------------------------------------
# Real text: read a UTF-8 file in chunks, tokenize it once into a memory-mapped token file, and
# sample (input, target) windows from it with a seeded generator whose state a checkpoint keeps.

# 1 MiB of text per read: memory stays bounded whatever the corpus size. The tokenizer's per-line
# results for one chunk are what peaks (measured on a 10 MB corpus with BPE: 220 MB peak RSS at
# 1 MiB, 510 MB at 4 MiB, the same speed).
CHUNK_BYTES = 1 << 20


def special_file_kind(mode: int) -> str:
    """What a path that is not a regular file is, in words (/dev/zero: "a character device")."""
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket")]
    return next((name for test, name in kinds if test(mode)), "a special file")


def check_data_file(path) -> Path:
    """The data file as a Path, or DataError saying why it cannot be training text."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise DataError(f"data file {path} does not exist: give --data a UTF-8 text file") from None
    except OSError as e:
        raise DataError(f"cannot read data file {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(info.st_mode):    # before opening it: opening a FIFO waits for a writer; /dev/zero never ends
        raise DataError(f"data file {path} is {special_file_kind(info.st_mode)}, not a regular file: give --data "
                        "a UTF-8 text file")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise DataError(f"cannot read data file {path}: {e.strerror or e}") from None
    if info.st_size == 0:
        raise DataError(f"data file {path} is empty: give --data a file with some text")
    return path


# --8<-- [start:read_text]
def iter_text(path, chunk_bytes: int = CHUNK_BYTES):
    """Yield the UTF-8 text of ``path`` in pieces of about ``chunk_bytes``, each ending at a line end
    where possible (so a tokenizer sees whole lines). DataError on NUL bytes (a binary file) or on
    bytes that are not UTF-8, naming the byte offset."""
    path = check_data_file(path)
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset, carry = 0, ""
    with open(path, "rb") as f:
        while True:
            raw = f.read(chunk_bytes)
            nul = raw.find(b"\0")
            if nul >= 0:
                raise DataError(f"data file {path} holds a NUL byte at byte offset {offset + nul}: it is binary, "
                                "not text; give --data a UTF-8 text file")
            pending = len(decoder.getstate()[0])   # bytes of a character cut by the previous read
            try:
                text = carry + decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                bad = offset - pending + e.start
                raise DataError(f"data file {path} is not UTF-8: invalid byte 0x{e.object[e.start]:02x} at byte "
                                f"offset {max(bad, 0)}; convert it (iconv -t UTF-8) or pick another file") from None
            offset += len(raw)
            if not raw:
                if text:
                    yield text
                return
            cut = text.rfind("\n") + 1
            if cut == 0:                        # no line end in this piece: take it whole
                cut = len(text)
            if cut:
                yield text[:cut]
            carry = text[cut:]
# --8<-- [end:read_text]


def text_pieces(path, chunk_bytes: int = CHUNK_BYTES):
    """The lines of ``path`` in batches (one list per chunk read): what tokenizers train on and encode,
    so training and encoding split the text the same way."""
    for chunk in iter_text(path, chunk_bytes):
        yield chunk.splitlines(keepends=True)


TOKENS_FILE, TOKENS_META = "tokens.bin", "tokens.json"


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned integer that holds every id (nanoGPT's uint16 .bin for vocabularies <= 65536)."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def source_identity(path: Path, tokenizer) -> dict:
    """What the token file was made from: the text file (path, size, mtime) and the tokenizer (hash)."""
    st = path.stat()
    return {"source": str(path.absolute()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "tokenizer_sha256": hashlib.sha256(tokenizer.to_json().encode()).hexdigest(),
            "dtype": token_dtype(tokenizer.vocab_size).name}


# --8<-- [start:token_file]
def tokenize_to_file(path, tokenizer, out_dir, chunk_bytes: int = CHUNK_BYTES) -> np.memmap:
    """The token stream of ``path`` as a read-only memory map of ``out_dir/tokens.bin``.

    The text is encoded once, chunk by chunk, and appended to the file, so neither the text nor
    its tokens ever sit in memory whole; later runs (and resumes) on the same text and tokenizer
    map the existing file (tokens.json records what it was made from)."""
    path, out_dir = Path(path), Path(out_dir)
    meta_path, bin_path = out_dir / TOKENS_META, out_dir / TOKENS_FILE
    identity = source_identity(check_data_file(path), tokenizer)
    dtype = token_dtype(tokenizer.vocab_size)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        meta = None
    if not (isinstance(meta, dict) and {k: meta.get(k) for k in identity} == identity and bin_path.is_file()
            and bin_path.stat().st_size == meta.get("n_tokens", -1) * dtype.itemsize):
        tmp = bin_path.with_name(f".{TOKENS_FILE}.tmp-{os.getpid()}")
        n_tokens = 0
        try:
            with open(tmp, "wb") as f:
                for lines in text_pieces(path, chunk_bytes):
                    ids = np.fromiter((i for seq in tokenizer.encode_batch(lines) for i in seq), dtype=np.int64)
                    f.write(ids.astype(dtype).tobytes())
                    n_tokens += len(ids)
            os.replace(tmp, bin_path)
        finally:
            tmp.unlink(missing_ok=True)
        meta_path.write_text(json.dumps({**identity, "n_tokens": n_tokens}, indent=2) + "\n")
    n_tokens = json.loads(meta_path.read_text())["n_tokens"]
    return np.memmap(bin_path, dtype=dtype, mode="r", shape=(n_tokens,))
# --8<-- [end:token_file]


# --8<-- [start:split]
def split_tokens(tokens: np.ndarray, val_fraction: float, context_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation): the tail ``val_fraction`` of the stream is held out, so validation text
    was never trained on. Each part must hold at least one window of context_length + 1 tokens."""
    if not (isinstance(val_fraction, (int, float)) and 0.0 < val_fraction < 1.0):
        raise UsageError(f"--val-fraction must lie strictly between 0 and 1, got {val_fraction!r}")
    n_val = int(round(len(tokens) * val_fraction))
    train, val = tokens[:len(tokens) - n_val], tokens[len(tokens) - n_val:]
    for name, part in (("training", train), ("validation", val)):
        if len(part) < context_length + 1:
            raise DataError(f"the {name} part of the data has {len(part)} tokens, fewer than context_length + 1 = "
                            f"{context_length + 1}: use a longer text, a smaller --context-length, or another "
                            "--val-fraction")
    return train, val
# --8<-- [end:split]


# --8<-- [start:sampler]
class BatchSampler:
    """Random windows of a token stream: x = tokens[s : s+T], y = tokens[s+1 : s+T+1] for starts s drawn
    from a seeded NumPy generator. Its ``state`` goes into the checkpoint, so a resumed run draws
    exactly the batches the uninterrupted run would have drawn."""

    def __init__(self, tokens: np.ndarray, context_length: int, seed: int):
        self.tokens, self.context_length = tokens, context_length
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n windows as int32 arrays x, y of shape (n, T)."""
        T = self.context_length
        starts = self.rng.integers(0, len(self.tokens) - T, size=n)
        window = np.asarray(self.tokens[starts[:, None] + np.arange(T + 1)], dtype=np.int32)  # (n, T+1)
        return window[:, :-1], window[:, 1:]

    @property
    def state(self) -> dict:
        return self.rng.bit_generator.state

    @state.setter
    def state(self, value: dict) -> None:
        self.rng.bit_generator.state = value
# --8<-- [end:sampler]


def validation_windows(tokens: np.ndarray, n: int, context_length: int) -> tuple[np.ndarray, np.ndarray]:
    """n windows spread evenly over ``tokens`` (no randomness: every evaluation sees the same text)."""
    T = context_length
    starts = np.linspace(0, len(tokens) - T - 1, n).round().astype(np.int64)
    window = np.asarray(tokens[starts[:, None] + np.arange(T + 1)], dtype=np.int32)
    return window[:, :-1], window[:, 1:]
