"""Training: a jitted step (forward, loss, backward, AdamW) and the seed's demo, train_next_word_predictor()."""
from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from tinygrad import Context, Tensor, TinyJit, dtypes
from tinygrad.nn.state import get_state_dict
from tqdm import tqdm

from . import cpugraph
from .checkpoint import CONFIG_FILE, STATE_FILE, load_checkpoint, load_state, save_checkpoint
from .config import GPTConfig
from .data import (BatchSampler, check_data_file, split_tokens, synthetic_batches, text_pieces, tokenize_to_file,
                   validation_windows)
from .devices import DTYPES, describe_device, dtype_support, select_device
from .errors import CheckpointError, DeviceError, TrainingError, UsageError
from .loss import cross_entropy
from .memory import peak_resident_mib
from .model import GPTStyleTransformer
from .optim import (clip_grad_norm, global_grad_norm, lr_at, make_optimizer, optimizer_lr_tensors,
                    optimizer_state)
from .tokenizer import TOKENIZERS, train_tokenizer
from .visualize import pyplot


# --8<-- [start:train_step]
def jit_training_step(step, opt) -> TinyJit:
    """``step`` under TinyJit: the first call traces, compiles and captures the kernels; later calls replay them."""
    Tensor.realize(*opt.params, *optimizer_state(opt))   # nothing one-time (zero moments) may hide in the capture
    cpugraph.install(opt.params[0].device)               # on a CPU: replay the captured kernels from C (tinyref.cpugraph)
    jitted = TinyJit(step)
    jitted.cnt = 1   # capture on the first call: TinyJit's default uncaptured first run would schedule the step twice
    return jitted


def make_train_step(model: GPTStyleTransformer, opt):
    """One jitted training step on a (B, T) batch: forward, loss, backward, AdamW; returns the loss."""
    @Context(TRAINING=1)
    def step(x: Tensor, y: Tensor) -> Tensor:
        opt.zero_grad()
        loss = cross_entropy(model(x), y)      # (B, T) -> scalar
        loss.backward()
        Tensor.realize(loss, *(p.grad for p in opt.params))   # before the update: a loss realized after it reads new weights
        opt.step()
        return loss

    return jit_training_step(step, opt)
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

    ``train_step(x, y, lr)``: x, y int32 (k, B, T); lr a float32 (1,) tensor (fed as data, so a new
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
        self.jitted = jit_training_step(self.step, opt)

    def __call__(self, x: Tensor, y: Tensor, lr: Tensor) -> Tensor:
        return self.jitted(x, y, lr)

    def gradients(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Set each master weight's .grad to d(mean loss over the k micro-batches)/dw in float32, clipped
        to the global norm grad_clip (when > 0); returns (mean loss, gradient norm before clipping)."""
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
        norm = clip_grad_norm(self.master, self.grad_clip) if self.grad_clip > 0 else global_grad_norm(self.master)
        Tensor.realize(norm, *(master.grad for master in self.master))
        return total / self.accum_steps, norm

    @Context(TRAINING=1)
    def step(self, x: Tensor, y: Tensor, lr: Tensor) -> Tensor:
        """The step without TinyJit: what the first jitted call captures and later calls replay."""
        for t in self.lr_tensors:
            t.assign(lr)                                                          # a buffer write, not a recompile
        loss, norm = self.gradients(x, y)
        self.opt.step()
        return Tensor.stack(loss, norm).realize()
# --8<-- [end:train_step_class]


@dataclass
class TrainOptions:
    """Everything ``train()`` needs. None means: the value saved in the checkpoint when resuming,
    else the default in TRAIN_DEFAULTS."""

    data: str | None = None
    out: str | None = None
    resume: str | None = None
    steps: int | None = None
    decay_steps: int | None = None
    batch_size: int | None = None
    context_length: int | None = None
    d_model: int | None = None
    n_heads: int | None = None
    n_layers: int | None = None
    d_ff: int | None = None
    tokenizer: str | None = None
    vocab_size: int | None = None
    val_fraction: float | None = None
    lr: float | None = None
    min_lr: float | None = None
    warmup_steps: int | None = None
    lr_schedule: str | None = None
    weight_decay: float | None = None
    grad_clip: float | None = None
    accum_steps: int | None = None
    dtype: str | None = None
    loss_scale: float | None = None
    eval_every: int | None = None
    eval_batches: int | None = None
    save_every: int | None = None
    seed: int | None = None
    device: str | None = None
    plot: str | None = None


TRAIN_DEFAULTS = dict(out="out", steps=1000, batch_size=16, context_length=64, d_model=128, n_heads=4, n_layers=4,
                      tokenizer="bpe", vocab_size=1024, val_fraction=0.1, lr=1e-3, warmup_steps=0, lr_schedule="cosine",
                      weight_decay=0.1, grad_clip=1.0, accum_steps=1, dtype="float32", eval_every=100, eval_batches=8,
                      seed=0)
# what fixes the model and its data: a resumed run must keep them
SHAPE_FIELDS = ("context_length", "d_model", "n_heads", "n_layers", "d_ff", "tokenizer", "vocab_size")
# what belongs to one invocation, not to the run: never taken from a checkpoint
RUN_FIELDS = ("out", "resume", "device", "plot")
SCHEDULES = ("cosine", "constant")
CHECKPOINT_DIR, METRICS_FILE = "checkpoint", "metrics.jsonl"


@dataclass
class TrainResult:
    model: GPTStyleTransformer
    tokenizer: object
    step: int
    metrics: list[dict]
    out: Path
    checkpoint: Path


def checkpoint_dir(path) -> Path:
    """--resume accepts a checkpoint directory or the --out directory that holds one."""
    path = Path(path)
    if (path / CHECKPOINT_DIR / CONFIG_FILE).is_file():
        return path / CHECKPOINT_DIR
    if (path / CONFIG_FILE).is_file():
        return path
    raise CheckpointError(f"--resume {path}: no checkpoint there (expected {path}/{CHECKPOINT_DIR}/{CONFIG_FILE} "
                          f"or {path}/{CONFIG_FILE})")


def resolve_options(opts: TrainOptions, saved: dict | None) -> TrainOptions:
    """Fill the unset fields (from the checkpoint when resuming, else the defaults) and check them all."""
    given = {k: v for k, v in asdict(opts).items() if v is not None}
    if saved is not None:
        for k in SHAPE_FIELDS:
            if k in given and given[k] != saved.get(k):
                raise UsageError(f"--{k.replace('_', '-')} {given[k]} does not match the checkpoint's "
                                 f"{saved.get(k)}: a resumed run keeps its model and tokenizer; drop the flag or "
                                 "start a new run with another --out")
        base = {k: v for k, v in saved.items() if k not in RUN_FIELDS}
    else:
        base = dict(TRAIN_DEFAULTS)
    o = TrainOptions(**{**base, **given})
    if o.data is None:
        raise UsageError("training needs --data FILE (a UTF-8 text file), or --resume DIR")
    if o.tokenizer not in TOKENIZERS:
        raise UsageError(f"unknown tokenizer {o.tokenizer!r}: choose one of {', '.join(TOKENIZERS)}")
    if o.lr_schedule not in SCHEDULES:
        raise UsageError(f"unknown --lr-schedule {o.lr_schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if o.dtype not in DTYPES:
        raise UsageError(f"unknown --dtype {o.dtype!r}: choose one of {', '.join(DTYPES)}")
    for name in ("steps", "batch_size", "context_length", "accum_steps", "eval_every", "eval_batches"):
        check_positive(f"--{name.replace('_', '-')}", getattr(o, name))
    for name in ("decay_steps", "save_every"):
        if getattr(o, name) is not None:
            check_positive(f"--{name.replace('_', '-')}", getattr(o, name))
    check_positive("--lr", o.lr, float)
    for name in ("warmup_steps", "weight_decay", "grad_clip", "min_lr"):
        value = getattr(o, name)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise UsageError(f"--{name.replace('_', '-')} must be a number >= 0, got {value!r}")
    if o.loss_scale is not None:
        check_positive("--loss-scale", o.loss_scale, float)
    if not (isinstance(o.val_fraction, (int, float)) and 0.0 < o.val_fraction < 1.0):
        raise UsageError(f"--val-fraction must lie strictly between 0 and 1, got {o.val_fraction!r}")
    if o.tokenizer != "bpe" and "vocab_size" in given and saved is None:
        raise UsageError(f"--vocab-size sets the BPE vocabulary; the {o.tokenizer} tokenizer takes its vocabulary "
                         "from the data: drop --vocab-size or use --tokenizer bpe")
    o.decay_steps = o.decay_steps or o.steps
    o.min_lr = 0.1 * o.lr if o.min_lr is None else o.min_lr
    o.save_every = o.save_every or o.eval_every
    o.data = str(Path(o.data).absolute())
    return o


def prepare_out(out: Path, resuming: bool) -> None:
    """Create --out and prove it writable before any work; refuse to overwrite another run's checkpoint."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise CheckpointError(f"cannot write to --out {out}: {e.strerror or e}; choose a writable folder") from None
    if not resuming and (out / CHECKPOINT_DIR).exists():
        raise UsageError(f"--out {out} already holds a checkpoint: continue it with --resume {out}, "
                         "or choose another --out")


def read_metrics(path: Path, up_to_step: int | None = None) -> list[dict]:
    """The records of metrics.jsonl (those at or before ``up_to_step`` when given)."""
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if up_to_step is None or r["step"] <= up_to_step]


def plot_metrics(records: list[dict], path) -> Path:
    """Train and validation loss against the optimizer step, as a PNG (matplotlib, no display needed)."""
    plt = pyplot()
    train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if train:
        ax.plot(*zip(*train), lw=0.8, alpha=0.7, label="train (each step)")
    if val:
        ax.plot(*zip(*val), "o-", lw=1.5, label="validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    try:
        fig.savefig(path)
    except OSError as e:
        raise UsageError(f"cannot write --plot {path}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return path


def make_eval(model: GPTStyleTransformer):
    """A jitted forward pass returning the mean loss of one batch (no gradients, float32 weights)."""
    @TinyJit
    def eval_loss(x: Tensor, y: Tensor) -> Tensor:
        return cross_entropy(model(x), y).realize()
    return eval_loss


# --8<-- [start:train]
def train(opts: TrainOptions, log=print, progress: bool = True) -> TrainResult:
    """Train on a text file (or continue a checkpoint); returns the model, its tokenizer and the metrics.

    Same options, device and seed: the same weights, bit for bit, whether the run was interrupted
    and resumed or not (weights, AdamW moments, step and the data sampler's state are checkpointed).
    """
    ckpt_in = checkpoint_dir(opts.resume) if opts.resume else None
    saved_state = load_train_state(ckpt_in) if ckpt_in else None
    o = resolve_options(opts, saved_state["options"] if saved_state else None)
    check_data_file(o.data)
    out = Path(opts.out or (ckpt_in.parent if ckpt_in and ckpt_in.name == CHECKPOINT_DIR else TRAIN_DEFAULTS["out"]))
    out = out.absolute()
    device = select_device(o.device)
    reason = dtype_support(device, o.dtype)
    if reason is not None:
        raise DeviceError(f"--dtype {o.dtype}: {reason}; use --dtype float32 or another --device")
    if ckpt_in:
        ckpt = load_checkpoint(ckpt_in, device=device)
        tokenizer, start = ckpt.tokenizer, int(saved_state["step"])
        if start >= o.steps:
            raise UsageError(f"the checkpoint is at step {start} already: give --steps more than {start}")
    else:                  # reads the whole text once: a bad file fails here, before anything is written
        pieces = (line for lines in text_pieces(o.data) for line in lines)
        tokenizer = train_tokenizer(o.tokenizer, pieces, o.vocab_size if o.tokenizer == "bpe" else None)
        if o.tokenizer != "bpe":
            o.vocab_size = tokenizer.vocab_size
        config = GPTConfig(vocab_size=tokenizer.vocab_size, context_length=o.context_length, d_model=o.d_model,
                           n_heads=o.n_heads, n_layers=o.n_layers, d_ff=o.d_ff)
        start = 0
    prepare_out(out, resuming=ckpt_in is not None and ckpt_in.absolute() == (out / CHECKPOINT_DIR).absolute())
    if ckpt_in:
        model = ckpt.model
    else:
        Tensor.manual_seed(o.seed)
        model = GPTStyleTransformer(config)
    tokens = tokenize_to_file(o.data, tokenizer, out)
    train_tokens, val_tokens = split_tokens(tokens, o.val_fraction, o.context_length)
    sampler = BatchSampler(train_tokens, o.context_length, o.seed)
    opt = make_optimizer(model, lr=o.lr, weight_decay=o.weight_decay)
    if ckpt_in:
        ckpt.restore_optimizer(opt)
        sampler.state = saved_state["sampler"]
    step_fn = TrainStep(model, opt, o.accum_steps, o.grad_clip, o.dtype, o.loss_scale)
    eval_fn = make_eval(model)
    vx, vy = validation_windows(val_tokens, o.eval_batches * o.batch_size, o.context_length)
    val_batches = [(Tensor(a, dtype=dtypes.int32).realize(), Tensor(b, dtype=dtypes.int32).realize())
                   for a, b in zip(np.split(vx, o.eval_batches), np.split(vy, o.eval_batches))]

    def evaluate(step: int) -> dict:
        loss = float(np.mean([eval_fn(x, y).item() for x, y in val_batches]))
        return {"step": step, "val_loss": loss, "val_perplexity": math.exp(min(loss, 700.0))}

    metrics_path = out / METRICS_FILE
    records = read_metrics(metrics_path, start) if ckpt_in else []
    metrics_path.write_text("".join(json.dumps(r) + "\n" for r in records))   # drop what followed the checkpoint
    metrics_file = open(metrics_path, "a")
    ckpt_out = out / CHECKPOINT_DIR
    tokens_per_step = o.accum_steps * o.batch_size * o.context_length

    log(f"Device: {describe_device(device)}; dtype {o.dtype}"
        + (f" (float32 master weights, loss scale {step_fn.loss_scale:g})" if o.dtype != "float32" else ""))
    log(f"Data: {o.data}: {len(tokens):,} {o.tokenizer} tokens (vocabulary {tokenizer.vocab_size}), "
        f"{len(train_tokens):,} train / {len(val_tokens):,} validation")
    log(f"Model: {model.num_parameters():,} parameters, d_model {o.d_model}, {o.n_layers} layers, {o.n_heads} heads, "
        f"context {o.context_length}")
    log(f"Steps {start} -> {o.steps}: batch {o.batch_size} x {o.accum_steps} micro-batches = {tokens_per_step:,} "
        f"tokens/step, lr {o.lr:g} ({o.lr_schedule}, warm-up {o.warmup_steps}, min {o.min_lr:g}), "
        f"weight decay {o.weight_decay:g}, clip {o.grad_clip:g}")
    if start == 0:
        records.append(evaluate(0))
        metrics_file.write(json.dumps(records[-1]) + "\n")
        log(f"step 0: val loss {records[-1]['val_loss']:.4f} (perplexity {records[-1]['val_perplexity']:.1f})")

    with metrics_file, tqdm(total=o.steps, initial=start, unit="step", disable=not progress, dynamic_ncols=True) as bar:
        say = bar.write if progress else log
        timed_from, timed_tokens, t0 = start + 2, 0, time.perf_counter()   # step 1 compiles and captures the jit; time from step 3
        for step in range(start, o.steps):
            lr = lr_at(step, o.lr, o.warmup_steps, o.decay_steps, o.lr_schedule, o.min_lr)
            x, y = sampler.sample(o.accum_steps * o.batch_size)                 # (k*B, T)
            shape = (o.accum_steps, o.batch_size, o.context_length)
            out_t = step_fn(Tensor(x.reshape(shape), dtype=dtypes.int32), Tensor(y.reshape(shape), dtype=dtypes.int32),
                            Tensor([lr], dtype=dtypes.float32))
            loss, norm = out_t.tolist()                                          # the one host sync per step
            if not (math.isfinite(loss) and math.isfinite(norm)):     # raised before this step is ever saved
                raise TrainingError(f"training diverged at step {step + 1} (loss {loss}, gradient norm {norm}); "
                                    f"the last checkpoint in "
                                    f"{ckpt_out} is kept: lower --lr" + (", or --loss-scale" if o.dtype == "float16" else ""))
            if step + 1 == timed_from:
                t0 = time.perf_counter()
            elif step + 1 > timed_from:
                timed_tokens += tokens_per_step
            rate = timed_tokens / max(time.perf_counter() - t0, 1e-9) if timed_tokens else 0.0
            record = {"step": step + 1, "train_loss": loss, "lr": lr, "grad_norm": norm, "tokens_per_s": rate}
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{rate:,.0f}", refresh=False)
            bar.update()
            new = [record]
            if (step + 1) % o.eval_every == 0 or step + 1 == o.steps:
                new.append(evaluate(step + 1))
                say(f"step {step + 1}: train loss {loss:.4f}, val loss {new[-1]['val_loss']:.4f} "
                    f"(perplexity {new[-1]['val_perplexity']:.1f}), {rate:,.0f} tokens/s")
            records += new
            metrics_file.write("".join(json.dumps(r) + "\n" for r in new))
            if (step + 1) % o.save_every == 0 or step + 1 == o.steps:
                metrics_file.flush()
                state = {"step": step + 1, "sampler": sampler.state, "options": asdict(o)}
                save_checkpoint(ckpt_out, model, opt, tokenizer, state)
    log(f"Saved checkpoint at step {o.steps}: {ckpt_out}")
    if timed_tokens:
        log(f"Speed: {timed_tokens / (time.perf_counter() - t0):,.0f} tokens/s after compiling; "
            f"peak memory (RSS) {peak_resident_mib() or 0:,.0f} MiB")
    if o.plot:
        log(f"Plot: {plot_metrics(read_metrics(metrics_path), o.plot)}")
    return TrainResult(model, tokenizer, o.steps, records, out, ckpt_out)
# --8<-- [end:train]


def load_train_state(path: Path) -> dict:
    """state.json of a checkpoint written by train(), checked for the fields resuming needs."""
    state = load_state(path)
    ok = (isinstance(state.get("step"), int) and isinstance(state.get("sampler"), dict)
          and isinstance(state.get("options"), dict) and set(state["options"]) <= {f.name for f in fields(TrainOptions)})
    if not ok:
        raise CheckpointError(f"{path.name}/{STATE_FILE} lacks the trainer state (step, sampler, options) that "
                              "--resume needs: it was not written by 'tinyref train --data'")
    return state
