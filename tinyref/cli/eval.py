"""``tinyref eval``: a checkpoint's loss, perplexity and bits per character on a text file, and with
--samples the variety and repetition of sampled continuations next to the text's own."""
from __future__ import annotations

import argparse
import json
import sys

from ..train.data import iter_text
from ..generation.evaluation import evaluate, sample_quality
from ..generation.text_metrics import bits_per_character
from .flags import POSITIVE, SEED, number
from .generate import add_checkpoint_arguments, open_checkpoint


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_checkpoint_arguments(p)
    p.add_argument("--data", required=True, metavar="FILE", help="UTF-8 text file to evaluate on")
    p.add_argument("--batch-size", type=POSITIVE, default=8, help="windows of context_length tokens per batch (default 8)")
    p.add_argument("--samples", type=POSITIVE, default=None, metavar="N",
                   help="also sample N continuations of prompts from the text and report distinct-1/2 and "
                        "repetition, with the text's own continuations as the yardstick")
    p.add_argument("--sample-tokens", type=POSITIVE, default=None, metavar="L",
                   help="tokens per sampled continuation (default: half the context, after a prompt of the other half)")
    p.add_argument("--temperature", type=number(0), default=1.0, metavar="T", help="sampling temperature (default 1.0)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the sampler: same seed, same samples (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def run(args: argparse.Namespace) -> int:
    text = "".join(iter_text(args.data))          # the same checks and messages as tinyref train --data
    ckpt = open_checkpoint(args, log=(lambda m: print(m, file=sys.stderr)) if args.json else print)
    ids = ckpt.tokenizer.encode(text)
    samples = None if args.samples is None else {        # first: a text too short for them fails before the eval
        "count": args.samples, "temperature": args.temperature, "seed": args.seed,
        **sample_quality(ckpt.model, ckpt.tokenizer, ids, args.samples, args.sample_tokens, args.temperature, args.seed)}
    result = evaluate(ckpt.model, ids, args.batch_size, progress=True)
    result.update(characters=len(text), bits_per_character=bits_per_character(result["loss"] * result["tokens"], len(text)))
    if samples is not None:
        result["samples"] = samples
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"tokens predicted: {result['tokens']} in {result['windows']} windows of {ckpt.config.context_length}")
    print(f"loss: {result['loss']:.6f} nats/token")
    print(f"perplexity: {result['perplexity']:.6f}")
    print(f"bits per character: {result['bits_per_character']:.4f} ({len(text):,} characters)")
    if "samples" in result:
        s = result["samples"]
        print(f"samples: {s['count']} continuations of {s['new_tokens']} tokens after {s['prompt_tokens']}-token "
              f"prompts (temperature {s['temperature']:g}, seed {s['seed']}); held-out: the text's own continuations")
        print(f"{'':14}{'samples':>10}{'held-out':>10}")
        for key in s["generated"]:
            if key != "texts":
                row = [s[k][key] for k in ("generated", "held_out")]
                print(f"{key.replace('_', '-'):14}" + "".join(f"{'n/a' if v is None else f'{v:.3f}':>10}" for v in row))
        print(f"first sample: {s['generated']['texts'][0]!r}")
    return 0
