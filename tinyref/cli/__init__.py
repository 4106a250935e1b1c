"""The ``tinyref`` command line: one sub-command per module, errors as one line, never a traceback."""
from __future__ import annotations

import argparse
import importlib
import re
import sys

from ..errors import TinyrefError
from ..runtime.memory import is_out_of_memory

# name -> (module that defines add_arguments(parser) and run(args), one-line help)
COMMANDS = {
    "train": ("tinyref.cli.train", "train a model (no arguments: the classic demo)"),
    "check": ("tinyref.cli.check", "check agreement with the NumPy oracle on every available device"),
    "export-golden": ("tinyref.cli.export_golden", "write the oracle's golden vectors (safetensors + manifest.json)"),
    "generate": ("tinyref.cli.generate", "continue a prompt with a trained checkpoint (KV-cached sampling)"),
    "attention": ("tinyref.cli.attention", "draw a checkpoint's attention weights on a text as heatmaps (PNG)"),
    "eval": ("tinyref.cli.eval", "a checkpoint's loss, perplexity and bits per character on a text file; "
                                 "with --samples, distinct-n and repetition of sampled text"),
    "embeddings": ("tinyref.cli.embeddings", "a checkpoint's words as vectors: nearest words, analogies (B - A + C), "
                                             "a 2-D map by PCA (PNG)"),
    "corpus": ("tinyref.cli.corpus", "write a generated text to train on (capitals: countries, capitals, languages, "
                                     "currencies)"),
    "bench": ("tinyref.cli.bench", "time training steps (and generation), against PyTorch and the oracle with --compare"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line ``tinyref: error: ...`` and exit status 2."""

    def error(self, message):
        message = re.sub(r"^argument (\S+): must ", r"\1 must ", message)   # a range (tinyref.cli.flags): "--lr must be ..."
        sys.stderr.write(f"tinyref: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="tinyref", description="A GPT-style transformer in tinygrad, checked against a NumPy oracle.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.set_defaults(module=module)
        importlib.import_module(module).add_arguments(cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return importlib.import_module(args.module).run(args) or 0
    except TinyrefError as e:
        if args.debug:
            raise
        sys.stderr.write(f"tinyref: error: {e}\n")
        return e.exit_status
    except (MemoryError, OSError) as e:
        if args.debug or not is_out_of_memory(e):
            raise
        sys.stderr.write(f"tinyref: error: out of memory ({' '.join(str(e).split())}): use a smaller model, batch or text\n")
        return 1
    except KeyboardInterrupt as e:          # train's says where the run stopped and how to continue it
        sys.stderr.write(f"tinyref: error: {e or 'interrupted'}\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
