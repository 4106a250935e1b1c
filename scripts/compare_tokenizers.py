"""Train the same small model with each tokenizer on the same text and print the figures of the
tokenizers table in docs/components/training.md: tokens per word, vocabulary use, and validation
bits per character (comparable across tokenizers, unlike perplexity per token).

    python scripts/compare_tokenizers.py [--steps 300] [--out runs/tokenizers]

The text is the license texts every Debian system ships, in WordPiece's normal form (whitespace
runs collapsed, line ends kept), so that all four tokenizers encode it exactly."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from tinyref.generation.evaluation import evaluate
from tinyref.train import TrainOptions, train
from tinyref.train.data import split_tokens, tokenize_to_file
from tinyref.train.tokenizer import TOKENIZERS, train_tokenizer

LICENSES = Path("/usr/share/common-licenses")
MODEL = dict(d_model=64, n_heads=4, n_layers=2, context_length=64, batch_size=8, lr=2e-3, warmup_steps=20,
             val_fraction=0.1, eval_batches=4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--vocab-size", type=int, default=1024, help="of bpe and wordpiece")
    p.add_argument("--out", default="runs/tokenizers")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = "".join(f.read_text(encoding="utf-8") for f in sorted(LICENSES.rglob("*")) if f.is_file() and not f.is_symlink())
    wordpiece = train_tokenizer("wordpiece", raw.splitlines(keepends=True), args.vocab_size)
    text = wordpiece.decode(wordpiece.encode(raw))
    data = out / "licenses.txt"
    data.write_text(text, encoding="utf-8")
    words = len(text.split())
    print(f"{len(raw):,} characters of license text, {len(text):,} in WordPiece's normal form, {words:,} words; "
          f"{args.steps} steps of {MODEL['batch_size']} x {MODEL['context_length']} tokens each")
    print("| tokenizer | vocabulary | used | tokens per word | validation loss (nats/token) | bits per character |")
    print("|---|---|---|---|---|---|")
    for kind in TOKENIZERS:
        opts = TrainOptions(data=str(data), out=str(out / kind), tokenizer=kind, steps=args.steps,
                            eval_every=args.steps, **MODEL, **({"vocab_size": args.vocab_size} if kind in ("bpe", "wordpiece") else {}))
        run = train(opts, log=lambda s: None, progress=False)
        tokens = tokenize_to_file(data, run.tokenizer, run.out)             # the stream train() used
        _, val = split_tokens(tokens, MODEL["val_fraction"], MODEL["context_length"])
        loss = evaluate(run.model, val)
        chars = len(run.tokenizer.decode(val))                              # exact: every kind is lossless here
        bpc = loss["loss"] * loss["tokens"] / math.log(2) / chars
        used = len(set(tokens.tolist()))
        print(f"| {kind} | {run.tokenizer.vocab_size:,} | {used / run.tokenizer.vocab_size:.0%} | "
              f"{len(tokens) / words:.2f} | {loss['loss']:.3f} | {bpc:.3f} |", flush=True)


if __name__ == "__main__":
    main()
