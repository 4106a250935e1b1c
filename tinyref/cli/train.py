"""``tinyref train``: no --data, the seed's demo; with --data (or --resume), real training on a text file."""
from __future__ import annotations

import argparse

from ..config import ACTIVATIONS, MODEL_PRESETS, NORMS, POSITIONS, ROPE_STYLES, VARIANT_FIELDS, preset_fields
from ..errors import UsageError
from .flags import COUNT, INT32_MAX, POSITIVE, SEED, integer, number
from ..train import TrainOptions, train, train_next_word_predictor
from ..train.options import check_architecture
from ..train.tokenizer import TOKENIZERS

# The demo's defaults (the seed's): used when neither --data nor --resume is given.
DEMO = dict(vocab_size=52, context_length=16, d_model=32, n_heads=4, n_layers=2, d_ff=None, batch_size=8, epochs=30,
            lr=5e-3, seed=0, model="gpt2")
SHARED = ("vocab_size", "context_length", "d_model", "n_heads", "n_layers", "d_ff", "model", *VARIANT_FIELDS,
          "batch_size", "lr", "seed", "device")
DATA_ONLY = [f for f in TrainOptions.__dataclass_fields__ if f not in SHARED and f not in ("data", "resume")]


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--vocab-size", type=integer(1, INT32_MAX), default=None,
                   help="vocabulary size: demo 52; with --data the BPE or WordPiece vocabulary to learn (default "
                        "1024; char and word tokenizers take theirs from the text)")
    g.add_argument("--context-length", type=POSITIVE, default=None, help="sequence length T (demo 16, --data 64)")
    g.add_argument("--d-model", type=POSITIVE, default=None, help="embedding width C (demo 32, --data 128)")
    g.add_argument("--n-heads", type=POSITIVE, default=None, help="attention heads, must divide d-model (default 4)")
    g.add_argument("--n-layers", type=POSITIVE, default=None, help="decoder blocks (demo 2, --data 4)")
    g.add_argument("--d-ff", type=POSITIVE, default=None, help="feed-forward width (default 4 * d-model)")
    g.add_argument("--model", choices=tuple(MODEL_PRESETS), default=None,
                   help="architecture preset: gpt2 (default) or llama (rotary positions, RMSNorm, SwiGLU, no biases, "
                        "untied head); the flags below replace single fields of it")
    g.add_argument("--positions", choices=POSITIONS, default=None,
                   help="learned (a wpe table, GPT-2) or rope (q and k rotated by position, llama)")
    g.add_argument("--rope-theta", type=number(0, lo_open=True), default=None,
                   help="rotary base: pair j turns by position * theta^(-2j/head size) (default 10000)")
    g.add_argument("--rope-style", choices=ROPE_STYLES, default=None,
                   help="rotary pairs: half (Hugging Face's rotate_half, default) or interleaved (Meta's, llama2.c's)")
    g.add_argument("--norm", choices=NORMS, default=None, help="layernorm (GPT-2) or rmsnorm (llama, no bias)")
    g.add_argument("--activation", choices=ACTIVATIONS, default=None,
                   help="feed-forward activation: gelu_tanh (GPT-2's tanh approximation), gelu (exact erf, "
                        "PyTorch's nn.GELU() as in nanoGPT) or silu (llama)")
    g.add_argument("--gated-mlp", action=argparse.BooleanOptionalAction, default=None,
                   help="gated feed-forward c_proj(act(c_gate(x)) * c_fc(x)) (llama's SwiGLU with silu)")
    g.add_argument("--n-kv-heads", type=POSITIVE, default=None,
                   help="key/value heads, must divide --n-heads: grouped-query attention (default --n-heads)")
    g.add_argument("--bias", action=argparse.BooleanOptionalAction, default=None,
                   help="a bias in every linear layer and LayerNorm (gpt2), or none (--no-bias: nanoGPT's bias=False, llama)")
    g.add_argument("--tie-embeddings", action=argparse.BooleanOptionalAction, default=None,
                   help="the output head is wte (gpt2), or its own lm_head (--no-tie-embeddings, llama)")
    g = p.add_argument_group("training (demo and --data)")
    g.add_argument("--batch-size", type=POSITIVE, default=None, help="sequences per (micro-)batch (demo 8, --data 16)")
    g.add_argument("--lr", type=number(0, lo_open=True), default=None, help="AdamW learning rate (demo 5e-3, --data peak 1e-3)")
    g.add_argument("--seed", type=SEED, default=None, help="seed for weights and data order (default 0)")
    g.add_argument("--device", default=None, help="tinygrad device: CPU, CPU:LLVM, CPU:X86, CL, PYTHON, CUDA, ... (default: DEV, else a GPU, else CPU)")
    g = p.add_argument_group("demo only")
    g.add_argument("--epochs", type=POSITIVE, default=None, help="passes over the demo data (default 30)")
    g = p.add_argument_group("real data (--data FILE or --resume DIR; unset flags of a resumed run keep their saved values)")
    g.add_argument("--data", metavar="FILE", help="UTF-8 text file to train on (tokenized once into OUT/tokens.bin)")
    g.add_argument("--tokenizer", choices=TOKENIZERS, help="char, word, byte-level bpe or wordpiece (default bpe)")
    g.add_argument("--val-fraction", type=number(0, 1, lo_open=True, hi_open=True), help="tail fraction of the text held out for validation, in (0, 1) (default 0.1)")
    g.add_argument("--steps", type=POSITIVE, help="total optimizer steps, counted from the start of the run (default 1000)")
    g.add_argument("--decay-steps", type=POSITIVE, help="length of the learning-rate schedule (default --steps); "
                                                   "later steps use --min-lr")
    g.add_argument("--warmup-steps", type=COUNT, help="linear warm-up steps (default 0)")
    g.add_argument("--lr-schedule", choices=("cosine", "constant"), help="after warm-up: cosine decay to --min-lr, or constant (default cosine)")
    g.add_argument("--min-lr", type=number(0), help="learning rate at the end of the cosine decay (default lr / 10)")
    g.add_argument("--weight-decay", type=number(0), help="AdamW decoupled weight decay of matrices (default 0.1)")
    g.add_argument("--grad-clip", type=number(0), help="clip the global gradient norm to this; 0 turns clipping off (default 1.0)")
    g.add_argument("--accum-steps", type=POSITIVE, help="micro-batches per optimizer step, gradients averaged (default 1)")
    g.add_argument("--dtype", choices=("float32", "float16", "bfloat16"),
                   help="compute dtype; float16/bfloat16 keep float32 master weights (default float32)")
    g.add_argument("--loss-scale", type=number(0, lo_open=True), help="static loss scale for float16 (default 1024; 1 for the others)")
    g.add_argument("--eval-every", type=POSITIVE, help="steps between validation loss/perplexity evaluations (default 100)")
    g.add_argument("--eval-batches", type=POSITIVE, help="validation batches per evaluation (default 8)")
    g.add_argument("--save-every", type=POSITIVE, help="steps between checkpoints (default --eval-every; always at the end)")
    g.add_argument("--out", metavar="DIR", help="output folder: checkpoint/, metrics.jsonl, tokens.bin (default ./out)")
    g.add_argument("--resume", metavar="DIR", help="continue the checkpoint in DIR (an --out folder or its checkpoint/)")
    g.add_argument("--plot", metavar="FILE.png", help="draw train and validation loss to this PNG at the end")


def demo_settings(values: dict) -> dict:
    """The demo's keyword arguments: each flag given, else the demo's default (the variant fields: the preset's)."""
    return {**{k: DEMO[k] if values[k] is None else values[k] for k in DEMO},
            **{k: values[k] for k in VARIANT_FIELDS if values[k] is not None}}


def check_demo_model(settings: dict) -> None:
    """A combination of the demo's flags that no model has: one usage line naming the flags, before any work."""
    check_architecture({**settings, **preset_fields(settings["model"], settings)})


def run(args: argparse.Namespace) -> int:
    values = vars(args)
    if args.data is None and args.resume is None:
        extra = [f"--{k.replace('_', '-')}" for k in DATA_ONLY if values.get(k) is not None]
        if extra:
            raise UsageError(f"{', '.join(extra)} need --data FILE (or --resume DIR); without them "
                             "'tinyref train' runs the demo")
        settings = demo_settings(values)
        check_demo_model(settings)
        train_next_word_predictor(**settings, device=args.device)
        return 0
    if args.epochs is not None:
        raise UsageError("--epochs is the demo's; with --data give --steps (optimizer steps)")
    train(TrainOptions(**{k: values[k] for k in TrainOptions.__dataclass_fields__}))
    return 0
