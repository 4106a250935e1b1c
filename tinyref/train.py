"""Training: a jitted step (forward, loss, backward, AdamW) and the seed's demo, train_next_word_predictor()."""
from __future__ import annotations

import math
import time

import numpy as np
from tinygrad import Context, Tensor, TinyJit, dtypes
from tinygrad.nn.state import get_state_dict

from .config import GPTConfig
from .data import synthetic_batches
from .devices import describe_device, select_device
from .errors import UsageError
from .loss import cross_entropy
from .model import GPTStyleTransformer
from .optim import make_optimizer, optimizer_state


# --8<-- [start:train_step]
def make_train_step(model: GPTStyleTransformer, opt):
    """A TinyJit-compiled step: the first call traces, compiles and captures the kernels; later calls replay them."""
    params = opt.params
    Tensor.realize(*params, *optimizer_state(opt))   # nothing one-time (zero moments) may hide in the captured step

    @TinyJit
    @Context(TRAINING=1)
    def step(x: Tensor, y: Tensor) -> Tensor:
        opt.zero_grad()
        loss = cross_entropy(model(x), y)      # (B, T) -> scalar
        loss.backward()
        opt.step()
        return loss.realize(*params)

    step.cnt = 1   # capture on the first call: TinyJit's default uncaptured first run would schedule the step twice
    return step
# --8<-- [end:train_step]


def check_positive(name: str, value, kind=int) -> None:
    """UsageError unless ``value`` is a finite number > 0 of the right kind (flags and function arguments)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok:
        raise UsageError(f"{name} must be a {'positive integer' if kind is int else 'finite number > 0'}, got {value!r}")


def train_next_word_predictor(vocab_size: int = 52, context_length: int = 16, d_model: int = 32, n_heads: int = 4,
                              n_layers: int = 2, d_ff: int | None = None, batch_size: int = 8, epochs: int = 30,
                              lr: float = 5e-3, seed: int = 0, device: str | None = None, batches_per_epoch: int = 8,
                              log=print):
    """The seed demo: learn to continue arithmetic progressions; prints its progress and returns (model, losses).

    ``losses`` holds the mean training loss of every epoch. Same seed and device: same losses.
    """
    cfg = GPTConfig(vocab_size=vocab_size, context_length=context_length, d_model=d_model, n_heads=n_heads,
                    n_layers=n_layers, d_ff=d_ff)
    for name, value in (("batch_size", batch_size), ("epochs", epochs), ("batches_per_epoch", batches_per_epoch)):
        check_positive(name, value)
    check_positive("lr", lr, float)
    device = select_device(device)

    Tensor.manual_seed(seed)
    model = GPTStyleTransformer(cfg)
    opt = make_optimizer(model, lr=lr)
    step = make_train_step(model, opt)
    data = [(Tensor(x, dtype=dtypes.int32).realize(), Tensor(y, dtype=dtypes.int32).realize())
            for x, y in synthetic_batches(batches_per_epoch, batch_size, context_length, vocab_size, seed)]
    n_scalars, n_tensors = model.num_parameters(), len(get_state_dict(model))

    log("=" * 64)
    log("GPT-style transformer: next-word prediction on synthetic sequences")
    log("=" * 64)
    log(f"Device: {describe_device(device)}")
    log(f"Vocabulary size: {vocab_size}")
    log(f"Embedding dimension: {d_model}")
    log(f"Number of layers: {n_layers}")
    log(f"Number of heads: {n_heads}")
    log(f"Feed-forward width: {cfg.d_ff}")
    log(f"Input shape: {data[0][0].shape}")
    log(f"Target shape: {data[0][1].shape}")
    log(f"Total parameters to learn: {n_scalars:,} ({n_tensors} tensors)")
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
    return model, losses
