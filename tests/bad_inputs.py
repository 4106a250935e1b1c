"""A folder of broken inputs: the files tests/test_reliability.py and docs/reliability.md's table use.

Every entry is made here, from nothing: a good checkpoint and copies of it with one thing wrong,
and data files that are not training text. No file is downloaded.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

import oracle
from helpers import UNTIED, as_namespace, load_params
from tinyref import GPTConfig, GPTStyleTransformer
from tinyref.train.checkpoint import CONFIG_FILE, MODEL_FILE, STATE_FILE, TOKENIZER_FILE, save_checkpoint
from tinyref.train.tokenizer import train_tokenizer


def copy_with(root: Path, name: str, change) -> None:
    shutil.copytree(root / "ckpt", root / name)
    change(root / name)


def make_bad_inputs(root: Path) -> None:
    """Write the broken inputs into ``root``."""
    model = GPTStyleTransformer(UNTIED)
    params = oracle.init_params(as_namespace(UNTIED), np.random.default_rng(0))
    load_params(model, params)
    save_checkpoint(root / "ckpt", model, None, train_tokenizer("char", ["abcdefg"]), {"step": 0})
    save_checkpoint(root / "ckpt-words", model, None, train_tokenizer("word", ["paris is the capital of france"]),
                    {"step": 0})                                  # 7 tokens: 6 words and the space
    save_checkpoint(root / "ckpt-pieces", model, None, train_tokenizer("wordpiece", ["ab ba"], vocab_size=7),
                    {"step": 0})                                  # WordPiece: 'aab' is three pieces
    params["h.0.mlp.c_fc.weight"][1, 2] = np.nan                  # what a diverged run would have saved
    load_params(model, params)
    save_checkpoint(root / "ckpt-nan", model, None, train_tokenizer("char", ["abcdefg"]), {"step": 0})
    weights = (root / "ckpt" / MODEL_FILE).read_bytes()
    copy_with(root, "ckpt-truncated", lambda p: (p / MODEL_FILE).write_bytes(weights[: len(weights) // 2]))
    copy_with(root, "ckpt-lying-header", lambda p: (p / MODEL_FILE).write_bytes((2**40).to_bytes(8, "little") + weights[8:]))
    copy_with(root, "ckpt-no-weights", lambda p: (p / MODEL_FILE).unlink())
    copy_with(root, "ckpt-garbage-config", lambda p: (p / CONFIG_FILE).write_text("{not json"))
    copy_with(root, "ckpt-other-shape", lambda p: (p / CONFIG_FILE).write_text(json.dumps({**UNTIED.to_dict(), "d_model": 16})))
    llama = GPTConfig.llama(UNTIED.vocab_size, UNTIED.context_length, UNTIED.d_model, UNTIED.n_heads, UNTIED.n_layers,
                            d_ff=UNTIED.d_ff)
    save_checkpoint(root / "ckpt-llama-as-gpt2", GPTStyleTransformer(llama), None, train_tokenizer("char", ["abcdefg"]))
    (root / "ckpt-llama-as-gpt2" / CONFIG_FILE).write_text(json.dumps({**llama.to_dict(), "positions": "learned"}))
    copy_with(root, "ckpt-garbage-tokenizer", lambda p: (p / TOKENIZER_FILE).write_text('{"hello": 1}'))
    copy_with(root, "ckpt-no-tokenizer", lambda p: (p / TOKENIZER_FILE).unlink())
    copy_with(root, "ckpt-garbage-state", lambda p: (p / STATE_FILE).write_text("[1, 2]"))
    (root / "run").mkdir()
    shutil.copytree(root / "ckpt", root / "run" / "checkpoint")    # an --out that already holds a checkpoint
    (root / "not-a-checkpoint").mkdir()
    (root / "run-empty").mkdir()                                  # a run folder before its first save
    (root / "empty.txt").write_bytes(b"")
    (root / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (root / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (root / "folder").mkdir()
    os.mkfifo(root / "pipe")                                     # opening it for reading would wait for a writer
    (root / "text.txt").write_text("abcdefggfedcba" * 40)      # only symbols the char tokenizer knows
    (root / "golden").mkdir()
    (root / "golden" / "keep.txt").write_text("already here\n")
