"""Training: a jitted step (forward, loss, backward, AdamW) and the seed's demo, train_next_word_predictor()."""
from __future__ import annotations

import math
import time

import numpy as np
from tinygrad import Context, Tensor, TinyJit, dtypes
from tinygrad.nn.state import get_state_dict

from .config import GPTConfig
from .data import synthetic_batches
from .devices import DTYPES, describe_device, select_device
from .errors import UsageError
from .loss import cross_entropy
from .model import GPTStyleTransformer
from .optim import clip_grad_norm, global_grad_norm, make_optimizer, optimizer_lr_tensors


# --8<-- [start:train_step]
def make_train_step(model: GPTStyleTransformer, opt):
    """A TinyJit-compiled step: the first two calls trace and compile, later calls replay the kernels."""
    params = opt.params

    @TinyJit
    @Context(TRAINING=1)
    def step(x: Tensor, y: Tensor) -> Tensor:
        opt.zero_grad()
        loss = cross_entropy(model(x), y)      # (B, T) -> scalar
        loss.backward()
        opt.step()
        return loss.realize(*params)

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


# ---------------------------------------------------------------------------------------------
# Real training: text files, schedules, clipping, accumulation, mixed precision, checkpoints.

# float16 overflows above 65504 and flushes below 6e-8: multiplying the loss by a power of two
# lifts small gradients out of the underflow range without any rounding (unscaled exactly later).
# Gradients of a mean loss here are ~1e-6..1e-1, so 2^10 keeps them well inside float16's range.
DEFAULT_LOSS_SCALE = {"float32": 1.0, "bfloat16": 1.0, "float16": 1024.0}


def low_precision_copy(model: GPTStyleTransformer, dtype) -> GPTStyleTransformer:
    """A second model of the same config whose weights are ``dtype`` buffers (overwritten from the
    float32 master weights at every step)."""
    copy = GPTStyleTransformer(model.config)
    for t in get_state_dict(copy).values():
        t.replace(t.cast(dtype).contiguous())
    Tensor.realize(*get_state_dict(copy).values())
    return copy


# --8<-- [start:train_step_class]
class TrainStep:
    """One optimizer step over k micro-batches, compiled once by TinyJit and replayed after that.

    ``step(x, y, lr)``: x, y int32 (k, B, T); lr a float32 (1,) tensor (fed as data, so a new
    learning rate never recompiles). Returns a float32 (2,) tensor [mean loss, gradient norm before
    clipping]. The master weights are ``model``'s float32 tensors; with dtype float16 or bfloat16,
    forward and backward run on a low-precision copy and the gradients come back as float32.
    """

    def __init__(self, model: GPTStyleTransformer, opt, accum_steps: int = 1, grad_clip: float = 0.0,
                 dtype: str = "float32", loss_scale: float | None = None):
        self.model, self.opt, self.accum_steps, self.grad_clip = model, opt, accum_steps, grad_clip
        self.loss_scale = float(DEFAULT_LOSS_SCALE[dtype] if loss_scale is None else loss_scale)
        self.master = list(get_state_dict(model).values())                    # float32
        self.compute_model = model if dtype == "float32" else low_precision_copy(model, DTYPES[dtype])
        self.compute = list(get_state_dict(self.compute_model).values())      # what forward/backward use
        self.lr_tensors = optimizer_lr_tensors(opt)
        self.jitted = TinyJit(Context(TRAINING=1)(self.step))

    def __call__(self, x: Tensor, y: Tensor, lr: Tensor) -> Tensor:
        return self.jitted(x, y, lr)

    def gradients(self, x: Tensor, y: Tensor) -> Tensor:
        """Set each master weight's .grad to d(mean loss over the k micro-batches)/dw in float32; returns that loss."""
        if self.compute_model is not self.model:
            for low, master in zip(self.compute, self.master):
                low.assign(master.cast(low.dtype))                               # round the master weights once
            Tensor.realize(*self.compute)
        total, summed = None, None
        for i in range(self.accum_steps):
            for t in self.compute:
                t.grad = None
            loss = cross_entropy(self.compute_model(x[i]).float(), y[i])          # (B, T) -> scalar, float32
            (loss * self.loss_scale).backward()                                   # low-precision grads, times S
            grads = [t.grad.float() for t in self.compute]
            summed = grads if summed is None else [a + g for a, g in zip(summed, grads)]
            total = loss if total is None else total + loss
            Tensor.realize(total, *summed)          # free this micro-batch's activations before the next one
        for master, g in zip(self.master, summed):
            master.grad = g / (self.accum_steps * self.loss_scale)               # mean over micro-batches, unscaled
        return total / self.accum_steps

    def step(self, x: Tensor, y: Tensor, lr: Tensor) -> Tensor:
        for t in self.lr_tensors:
            t.assign(lr)
        loss = self.gradients(x, y)
        norm = clip_grad_norm(self.master, self.grad_clip) if self.grad_clip > 0 else global_grad_norm(self.master)
        self.opt.step()
        return Tensor.stack(loss, norm).realize()
# --8<-- [end:train_step_class]
