"""``tinyref generate``: continue a prompt with a trained checkpoint."""
from __future__ import annotations

import argparse
import sys

from ..train.checkpoint import TOKENIZER_FILE, Checkpoint, load_checkpoint
from ..train.runs import checkpoint_dir
from ..runtime.devices import describe_device, select_device
from ..errors import CheckpointError
from ..generation.sampling import generate
from .flags import COUNT, POSITIVE, SEED, number


def add_checkpoint_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="a run folder written by tinyref train --out, or the checkpoint folder inside it")
    p.add_argument("--device", default=None, help="tinygrad device: CPU, CPU:LLVM, CPU:X86, CL, PYTHON, CUDA, ... "
                                                  "(default: DEV, else a GPU, else CPU)")


def open_checkpoint(args: argparse.Namespace, log=print) -> Checkpoint:
    """Select the device (and say which), load the checkpoint; it must carry a tokenizer, as text goes in."""
    path = checkpoint_dir(args.checkpoint, "--checkpoint")          # is it a checkpoint at all? (cheap)
    if not (path / TOKENIZER_FILE).exists():                        # before building the model
        raise CheckpointError(f"{path.name} has no {TOKENIZER_FILE}, so text cannot be turned into tokens: "
                              "use a checkpoint trained on text with --tokenizer")
    device = select_device(args.device)
    log(f"device: {describe_device(device)}")
    return load_checkpoint(path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_checkpoint_arguments(p)
    p.add_argument("--prompt", required=True, help="text to continue (longer than the context: its end is kept)")
    p.add_argument("--max-new-tokens", type=COUNT, default=100, metavar="N", help="tokens to generate (default 100)")
    p.add_argument("--temperature", type=number(0), default=1.0, metavar="T",
                   help="divide the logits by T before sampling; 0 = greedy (default 1.0)")
    p.add_argument("--top-k", type=POSITIVE, default=None, metavar="K", help="sample only among the K most likely tokens")
    p.add_argument("--top-p", type=number(0, 1, lo_open=True), default=None, metavar="P",
                   help="sample only among the smallest set of most likely tokens whose probability reaches P, in (0, 1]")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the sampler: same seed, same text (default 0)")
    p.add_argument("--no-cache", action="store_true",
                   help="recompute the whole window for every token instead of using the KV cache (same text, slower)")


def run(args: argparse.Namespace) -> int:
    note = lambda message: print(f"tinyref: note: {message}", file=sys.stderr)   # noqa: E731
    ckpt = open_checkpoint(args, log=note)
    text = generate(ckpt.model, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                    args.seed, tokenizer=ckpt.tokenizer, use_cache=not args.no_cache, log=note)
    print(text)
    return 0
