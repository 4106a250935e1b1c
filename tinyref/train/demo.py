"""The seed's demo, train_next_word_predictor(): a small model learns arithmetic sequences."""
from __future__ import annotations

import time

import numpy as np
from tinygrad import Tensor, dtypes
from tinygrad.nn.state import get_state_dict

from ..config import VARIANT_FIELDS, GPTConfig, describe_variant, preset_fields
from ..model import GPTStyleTransformer
from ..optim import make_optimizer
from ..errors import UsageError, check_seed
from ..runtime.devices import describe_device, select_device
from ..runtime.memory import check_training_memory
from .data import synthetic_batches
from .options import check_positive
from .step import make_train_step


def train_next_word_predictor(vocab_size: int = 52, context_length: int = 16, d_model: int = 32, n_heads: int = 4,
                              n_layers: int = 2, d_ff: int | None = None, batch_size: int = 8, epochs: int = 30,
                              lr: float = 5e-3, seed: int = 0, device: str | None = None, batches_per_epoch: int = 8,
                              log=print, model: str = "gpt2", **variant):
    """The seed demo: learn to continue arithmetic progressions; prints its progress and returns (model, losses).

    ``model``: the preset of the variant fields ("gpt2" or "llama"); ``variant``: GPTConfig variant fields
    (activation, bias, positions, n_kv_heads, ...) that replace the preset's. ``losses`` holds the mean
    training loss of every epoch. Same seed and device: same losses.
    """
    unknown = sorted(set(variant) - set(VARIANT_FIELDS))
    if unknown:
        raise UsageError(f"unknown model field(s) {unknown}: the variant fields are {', '.join(VARIANT_FIELDS)}")
    cfg = GPTConfig(vocab_size=vocab_size, context_length=context_length, d_model=d_model, n_heads=n_heads,
                    n_layers=n_layers, d_ff=d_ff, **preset_fields(model, variant))
    for name, value in (("batch_size", batch_size), ("epochs", epochs), ("batches_per_epoch", batches_per_epoch)):
        check_positive(name, value)
    check_positive("lr", lr, float)
    check_seed("seed", seed)
    memory = check_training_memory(cfg, batch_size)      # before anything is built
    device = select_device(device)

    Tensor.manual_seed(seed)
    net = GPTStyleTransformer(cfg)
    opt = make_optimizer(net, lr=lr)
    step = make_train_step(net, opt)
    data = [(Tensor(x, dtype=dtypes.int32).realize(), Tensor(y, dtype=dtypes.int32).realize())
            for x, y in synthetic_batches(batches_per_epoch, batch_size, context_length, vocab_size, seed)]
    n_scalars, n_tensors = net.num_parameters(), len(get_state_dict(net))

    log("=" * 64)
    log("GPT-style transformer: next-word prediction on synthetic sequences")
    log("=" * 64)
    log(f"Device: {describe_device(device)}")
    log(f"Vocabulary size: {vocab_size}")
    log(f"Embedding dimension: {d_model}")
    log(f"Number of layers: {n_layers}")
    log(f"Number of heads: {n_heads}")
    log(f"Feed-forward width: {cfg.d_ff}")
    if describe_variant(cfg):
        log(f"Architecture ({model} preset and flags): {describe_variant(cfg)}")
    log(f"Input shape: {data[0][0].shape}")
    log(f"Target shape: {data[0][1].shape}")
    log(f"Total parameters to learn: {n_scalars:,} ({n_tensors} tensors)")
    log(f"Memory: {memory}")
    log(f"Training: {epochs} epochs x {batches_per_epoch} batches, AdamW lr={lr:g}, seed={seed}")

    losses, epoch_times = [], []
    t0 = time.perf_counter()
    first = step(*data[0]).item()   # compiles every kernel of the step
    warmup = time.perf_counter() - t0
    log(f"Warm-up (first step, includes compiling the kernels): {warmup:.2f} s")
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        batch_losses = [step(x, y) for x, y in (data[1:] if epoch == 1 else data)]
        epoch_loss = float(np.mean([loss.item() for loss in batch_losses] + ([first] if epoch == 1 else [])))
        epoch_times.append(time.perf_counter() - t0)
        losses.append(epoch_loss)
        if epoch % 5 == 0 or epoch == 1:
            log(f"Epoch {epoch} | Loss: {epoch_loss:.4f}")
    steady = epoch_times[1:] or epoch_times
    log(f"Final loss: {losses[-1]:.4f} (first epoch {losses[0]:.4f}; {losses[-1] / losses[0]:.0%} of it)")
    log(f"Time per epoch after warm-up: {1000 * float(np.median(steady)):.1f} ms "
        f"({1000 * float(np.median(steady)) / batches_per_epoch:.2f} ms per step)")
    return net, losses
