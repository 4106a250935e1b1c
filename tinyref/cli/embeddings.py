"""``tinyref embeddings``: a checkpoint's words as vectors: nearest neighbours, analogies, a 2-D map."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CheckpointError, UsageError
from ..generation.embeddings import TOP, analogy, embeddings_of, nearest, pca_2d, plot_map
from ..train.checkpoint import TOKENIZER_FILE, read_checkpoint
from ..train.runs import checkpoint_dir
from .flags import POSITIVE

MAP_WORDS = 150         # the map labels at most this many words unless --words names them


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="a run folder written by tinyref train --out, or the checkpoint folder inside it")
    p.add_argument("--word", metavar="W", help="print W's nearest words by cosine similarity")
    p.add_argument("--analogy", nargs=3, metavar=("A", "B", "C"),
                   help="'A is to B as C is to ?': the words nearest to B - A + C (A, B and C excluded)")
    p.add_argument("--plot", metavar="FILE.png", help="draw the words on the plane of the embeddings' first two "
                                                      "principal components (PCA) to this PNG")
    p.add_argument("--words", nargs="+", metavar="W", help=f"the words --plot labels (default: every word, "
                                                          f"the first {MAP_WORDS} if there are more)")
    p.add_argument("--top", type=POSITIVE, default=None, metavar="N",
                   help=f"how many words to list (default {TOP}, or all there are if fewer)")


def check_plot_path(path: str) -> Path:
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--plot {path}: give a file name ending in .png")
    if not out.absolute().parent.is_dir():
        raise UsageError(f"--plot {path}: the folder {out.absolute().parent} does not exist")
    return out


def run(args: argparse.Namespace) -> int:
    if args.words and not args.plot:
        raise UsageError("--words names the words of the map: give --plot FILE.png with it")
    if not (args.word or args.analogy or args.plot):
        raise UsageError("say what to show: --word W, --analogy A B C or --plot FILE.png")
    out = check_plot_path(args.plot) if args.plot else None
    path = checkpoint_dir(args.checkpoint, "--checkpoint")
    if not (path / TOKENIZER_FILE).exists():
        raise CheckpointError(f"{path.name} has no {TOKENIZER_FILE}, so its embedding rows have no words: use a "
                              "checkpoint trained on text with --tokenizer")
    _, _, tokenizer, weights, _ = read_checkpoint(path)       # every file checked; no model is built
    emb = embeddings_of(weights["wte.weight"], tokenizer)
    if args.word:
        rows = nearest(emb, args.word, args.top)
        print(f"nearest to {args.word!r} by cosine similarity ({len(emb.words)} words in the vocabulary):")
        print_rows(rows)
    if args.analogy:
        a, b, c = args.analogy
        rows = analogy(emb, a, b, c, args.top)
        print(f"{a} is to {b} as {c} is to: {rows[0][0]} (cosine to {b} - {a} + {c}):")
        print_rows(rows)
    if out is not None:
        labels = args.words or [emb.tokens[i] for i in emb.words][:MAP_WORDS]
        where = {i: k for k, i in enumerate(emb.words)}           # token id -> row of the word vectors
        for word in labels:
            if emb.index(word) not in where:
                raise UsageError(f"--words {word!r} is not a word (no letter or digit in it): the map shows words only")
        points, variance = pca_2d(emb.vectors[emb.words])
        plot_map(points[[where[emb.index(w)] for w in labels]], labels, out, title=f"{path.parent.name if path.name == 'checkpoint' else path.name}: "
                 "input embeddings (wte), PCA", variance=variance)
        print(f"wrote {out}: {len(labels)} of {len(emb.words)} words on the embeddings' first two principal "
              f"components ({variance[0]:.0%} and {variance[1]:.0%} of the variance)")
    return 0


def print_rows(rows: list[tuple[str, float]]) -> None:
    width = max(len(w) for w, _ in rows)
    for rank, (word, score) in enumerate(rows, 1):
        print(f"{rank:4}. {word:<{width}}  {score:+.3f}")
