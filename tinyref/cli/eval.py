"""``tinyref eval``: a checkpoint's loss and perplexity on a text file."""
from __future__ import annotations

import argparse

from ..train.data import iter_text
from ..generation.evaluation import evaluate
from .generate import add_checkpoint_arguments, open_checkpoint


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_checkpoint_arguments(p)
    p.add_argument("--data", required=True, metavar="FILE", help="UTF-8 text file to evaluate on")
    p.add_argument("--batch-size", type=int, default=8, help="windows of context_length tokens per batch (default 8)")


def run(args: argparse.Namespace) -> int:
    text = "".join(iter_text(args.data))          # the same checks and messages as tinyref train --data
    ckpt = open_checkpoint(args)
    result = evaluate(ckpt.model, ckpt.tokenizer.encode(text), args.batch_size, progress=True)
    print(f"tokens predicted: {result['tokens']} in {result['windows']} windows of {ckpt.config.context_length}")
    print(f"loss: {result['loss']:.6f} nats/token")
    print(f"perplexity: {result['perplexity']:.6f}")
    return 0
