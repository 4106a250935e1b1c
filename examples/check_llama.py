"""Check two small Llamas against tinyref's oracle, offline: Hugging Face's ``LlamaForCausalLM`` (random
weights, built from a small ``LlamaConfig``, no download) and a Meta-style one (the names of Meta's
llama/model.py, its RoPE on complex numbers); then the Meta-style one with its key/value heads tiled
instead of repeated in place, to see the report name the layer.

    python examples/check_llama.py

Prints the three reports. Exit status 0 when both correct models pass and the tiled one is caught.
The Meta-style model is tinyref's own test model (tests/torch_llamas.py), imported from there.
"""
from __future__ import annotations

import sys
from pathlib import Path

from transformers import LlamaConfig, LlamaForCausalLM

from tinyref.testing import ReferenceMismatch
from tinyref.testing.torch import check_torch_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from torch_llamas import MetaStyleLlama, ModelArgs  # noqa: E402


def main() -> int:
    # --8<-- [start:hf]
    config = LlamaConfig(vocab_size=11, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8)
    hf = LlamaForCausalLM(config)        # random weights: the check loads the oracle's
    hf_result = check_torch_model(hf)    # rope_style 'half' detected; float32 precision only, and from where
    print(hf_result, end="\n\n")
    # --8<-- [end:hf]
    # --8<-- [start:meta]
    meta_result = check_torch_model(MetaStyleLlama(ModelArgs(n_kv_heads=2)))   # 'interleaved' detected, float64
    print(meta_result, end="\n\n")
    try:
        check_torch_model(MetaStyleLlama(ModelArgs(n_kv_heads=2), bug="tiled_kv"))
    except ReferenceMismatch as e:
        print(e)                         # first divergence: layers.0.attention output (layers.0.attention_norm agrees)
        caught = True
    else:
        caught = False
    # --8<-- [end:meta]
    return 0 if caught and hf_result.float32_from and meta_result.float32_from is None else 1


if __name__ == "__main__":
    sys.exit(main())
