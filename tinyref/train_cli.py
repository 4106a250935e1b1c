"""``tinyref train``: the demo's flags (more options arrive with real-data training)."""
from __future__ import annotations

import argparse

from .train import train_next_word_predictor


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--vocab-size", type=int, default=52, help="vocabulary size (default 52)")
    g.add_argument("--context-length", type=int, default=16, help="sequence length T (default 16)")
    g.add_argument("--d-model", type=int, default=32, help="embedding width C (default 32)")
    g.add_argument("--n-heads", type=int, default=4, help="attention heads, must divide d-model (default 4)")
    g.add_argument("--n-layers", type=int, default=2, help="decoder blocks (default 2)")
    g.add_argument("--d-ff", type=int, default=None, help="feed-forward width (default 4 * d-model)")
    g = p.add_argument_group("training")
    g.add_argument("--batch-size", type=int, default=8, help="sequences per step (default 8)")
    g.add_argument("--epochs", type=int, default=30, help="passes over the demo data (default 30)")
    g.add_argument("--lr", type=float, default=5e-3, help="AdamW learning rate (default 5e-3)")
    g.add_argument("--seed", type=int, default=0, help="seed for weights and data (default 0)")
    g.add_argument("--device", default=None, help="tinygrad device: CPU, CPU:LLVM, CPU:X86, CL, PYTHON, CUDA, ... (default: tinygrad's choice)")


def run(args: argparse.Namespace) -> int:
    train_next_word_predictor(vocab_size=args.vocab_size, context_length=args.context_length, d_model=args.d_model,
                              n_heads=args.n_heads, n_layers=args.n_layers, d_ff=args.d_ff,
                              batch_size=args.batch_size, epochs=args.epochs, lr=args.lr, seed=args.seed,
                              device=args.device)
    return 0
