"""``tinyref corpus``: write a small generated text to train on (the capitals corpus of the Learn pages)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UsageError
from ..train.corpus import DEFAULT_PARAGRAPHS, capitals_corpus, shuffled_words
from .flags import POSITIVE, SEED

CORPORA = {"capitals": capitals_corpus}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=sorted(CORPORA), help="capitals: paragraphs about 20 countries, their capitals, "
                                                          "languages and currencies")
    p.add_argument("--out", required=True, metavar="FILE", help="the text file to write (never overwritten)")
    p.add_argument("--paragraphs", type=POSITIVE, default=DEFAULT_PARAGRAPHS, metavar="N",
                   help=f"lines of text, each about one country (default {DEFAULT_PARAGRAPHS})")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the generator: same seed, same text (default 0)")
    p.add_argument("--shuffled", action="store_true",
                   help="the negative control: the same words with their order shuffled across the whole text")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out {args.out} is a folder: give a file name")
    if out.exists():
        raise UsageError(f"--out {args.out} already exists: choose another name or delete it first")
    if not out.absolute().parent.is_dir():
        raise UsageError(f"--out {args.out}: the folder {out.absolute().parent} does not exist")
    text = CORPORA[args.name](args.paragraphs, args.seed)
    if args.shuffled:
        text = shuffled_words(text, args.seed)
    with open(out, "x", encoding="utf-8") as f:          # "x": fail rather than replace a file made meanwhile
        f.write(text)
    print(f"wrote {out}: {args.paragraphs:,} paragraphs, {len(text.split()):,} words"
          + (", word order shuffled" if args.shuffled else ""))
    return 0
