"""``tinyref attention``: heatmaps of a checkpoint's attention weights on a text."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..train.checkpoint import load_config
from ..train.runs import checkpoint_dir
from ..errors import UsageError
from .flags import COUNT
from .generate import add_checkpoint_arguments, open_checkpoint
from ..generation.attention_maps import attention_maps, check_layer_head, plot_attention, token_labels


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_checkpoint_arguments(p)
    p.add_argument("--text", required=True, help="text to run through the model (longer than the context: its end is kept)")
    p.add_argument("--out", required=True, metavar="FILE.png", help="where to write the PNG")
    p.add_argument("--layer", type=COUNT, default=0, metavar="L", help="which decoder block, from 0 (default 0)")
    p.add_argument("--head", type=COUNT, default=None, metavar="H", help="only this head (default: all heads in a grid)")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {args.out}: give a file name ending in .png")
    if not out.absolute().parent.is_dir():
        raise UsageError(f"--out {args.out}: the folder {out.absolute().parent} does not exist")
    config = load_config(checkpoint_dir(args.checkpoint, "--checkpoint"))   # cheap: check the flags before building the model
    check_layer_head(config.n_layers, config.n_heads, args.layer, args.head)
    ckpt = open_checkpoint(args)
    ids = ckpt.tokenizer.encode(args.text)
    T = ckpt.config.context_length
    if not ids:
        raise UsageError("--text is empty: give at least one token of text")
    if len(ids) > T:
        print(f"the text has {len(ids)} tokens; showing its last {T} (the model's context_length)")
        ids = ids[-T:]
    maps = attention_maps(ckpt.model, ids)
    plot_attention(maps, token_labels(ids, ckpt.tokenizer), out, args.layer, args.head,
                   title=f"{ckpt.path.name}: attention weights (row: query, column: key)")
    print(f"wrote {out} (layer {args.layer}, {'head ' + str(args.head) if args.head is not None else 'all heads'}, "
          f"{len(ids)} tokens)")
    return 0
