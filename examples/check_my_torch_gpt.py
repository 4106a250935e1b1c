"""Check the PyTorch GPT-2 in a model file of yours against tinyref's oracle, and see where it diverges.

    python examples/check_my_torch_gpt.py my_gpt.py                       # calls build_model() from my_gpt.py
    python examples/check_my_torch_gpt.py my_gpt.py --build make_small    # another function that builds it

Your file defines a function returning the ``torch.nn.Module`` to check (nanoGPT's ``GPT``, minGPT's,
Hugging Face's ``GPT2LMHeadModel``, or your own with GPT-2's parameter names), small enough to run
in float64 in seconds. Its weights do not matter: the check loads the oracle's. Exit status 0 when
the logits and every gradient agree, 1 with the report (the first submodule that diverges, then
each tensor that differs), 2 when the file or the function cannot be used.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from tinyref.errors import TinyrefError, UsageError
from tinyref.testing import ReferenceMismatch
from tinyref.testing.torch import check_torch_model


def load_builder(path: str, name: str):
    """The function ``name`` defined in the Python file ``path``."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    if spec is None or not Path(path).is_file():
        raise UsageError(f"{path} is not a Python file: pass the file that defines your model")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, name, None)):
        raise UsageError(f"{path} defines no function {name}(): add one returning your model, or pass --build NAME")
    return getattr(module, name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_file", help="a Python file defining a function that returns your model")
    parser.add_argument("--build", default="build_model", help="the function to call (default: build_model)")
    args = parser.parse_args(argv)
    try:
        # --8<-- [start:check]
        model = load_builder(args.model_file, args.build)()
        try:
            print(check_torch_model(model))        # the config it read off the model, worst error per tensor
        except ReferenceMismatch as e:
            print(e)                               # first divergence, then every tensor that differs
            return 1
        # --8<-- [end:check]
    except TinyrefError as e:
        print(f"tinyref: error: {e}", file=sys.stderr)
        return e.exit_status
    return 0


if __name__ == "__main__":
    sys.exit(main())
