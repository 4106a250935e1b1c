"""The report tinyref.testing prints when your model has a bug: the PyTorch GPT of
``verify_torch_gpt.py`` with its causal mask forgotten, so each position also attends to later ones.

    python examples/buggy_torch_gpt.py      # exits 1 and names every tensor that disagrees

The whole-model, attention and block checks fail; layer norm, feed-forward and the loss still pass,
which points at attention. Each report line gives the tensor, its worst element's index, your value,
the oracle's, and the tolerance; the line above it says how to rebuild the same inputs.
"""
import sys

import verify_torch_gpt


def no_causal_mask(self, scores):
    return scores                 # the bug: every position sees the whole sequence, future included


verify_torch_gpt.CausalSelfAttention.causal_mask = no_causal_mask

if __name__ == "__main__":
    sys.exit(verify_torch_gpt.main())
