"""Training on a text file: tokenize, sample batches, step, evaluate, checkpoint, resume bit for bit."""
from __future__ import annotations

import json
import math
import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tinygrad import Tensor, TinyJit, dtypes
from tqdm import tqdm

from ..config import describe_variant
from ..errors import DeviceError, TrainingError, UsageError
from ..loss import cross_entropy
from ..model import GPTStyleTransformer
from ..optim import lr_at, make_optimizer
from ..runtime.devices import describe_device, dtype_support, select_device
from ..runtime.memory import check_training_memory, is_out_of_memory, peak_resident_mib
from .checkpoint import load_checkpoint, load_config, save_checkpoint
from .data import BatchSampler, check_data_file, split_tokens, text_pieces, tokenize_to_file, validation_windows
from .options import TRAIN_DEFAULTS, TrainOptions, model_config, resolve_options
from .runs import (CHECKPOINT_DIR, METRICS_FILE, RunLock, checkpoint_dir, load_train_state, plot_metrics, prepare_out,
                   read_metrics)
from .step import TrainStep
from .tokenizer import SIZED, count_unknown, train_tokenizer


@dataclass
class TrainResult:
    model: GPTStyleTransformer
    tokenizer: object
    step: int
    metrics: list[dict]
    out: Path
    checkpoint: Path


@dataclass
class KeptCheckpoint:
    """The checkpoint an interrupted run leaves, as the user named its folders: what Ctrl-C reports."""
    out: Path | None = None            # --out as given
    steps: int = 0                     # --steps of the run
    step_now: int = 0                  # the step being taken
    resume: Path | None = None         # the folder to --resume from (None: nothing saved yet)
    step: int = 0                      # the step that checkpoint holds
    same_out: bool = True              # it is --out's own checkpoint (else --out must be named to continue)

    def found(self, resume: Path, step: int, same_out: bool) -> None:
        self.resume, self.step, self.same_out = resume, step, same_out

    def interrupted(self) -> str:
        """One line: where the run stopped, what the kept checkpoint holds, the command that continues it."""
        if self.out is None:
            return "interrupted before training started: nothing was written"
        at = f"interrupted at step {self.step_now} of {self.steps}" if self.step_now else "interrupted"
        if self.resume is None:
            return f"{at}, before the first checkpoint: nothing was saved; run the same command again to start over"
        out = "" if self.same_out else f" --out {shlex.quote(str(self.out))}"
        return (f"{at}: the checkpoint in {self.resume} holds step {self.step}; continue it with "
                f"'tinyref train --resume {shlex.quote(str(self.resume))}{out} --steps {self.steps}'")


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
    While it runs, it alone writes its --out folder (RunLock); running out of memory ends it with one line.
    """
    lock, kept = RunLock(), KeptCheckpoint()
    try:
        return _train(opts, log, progress, lock, kept)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(kept.interrupted()) from None
    except (MemoryError, OSError) as e:
        if not is_out_of_memory(e):
            raise
        where = f"; the last checkpoint in {lock.out / CHECKPOINT_DIR} is kept" if lock.fd is not None else ""
        raise TrainingError(f"out of memory ({' '.join(str(e).split())}){where}: reduce --batch-size, --context-length, "
                            "--d-model or --n-layers") from None
    finally:
        lock.release()


def _train(opts: TrainOptions, log, progress: bool, lock: RunLock, kept: KeptCheckpoint) -> TrainResult:
    """The run itself; ``lock`` is taken as soon as --out is known to exist, else once it is created;
    ``kept`` follows the checkpoint a Ctrl-C would leave."""
    ckpt_in = checkpoint_dir(opts.resume) if opts.resume else None
    saved_state = load_train_state(ckpt_in) if ckpt_in else None
    o = resolve_options(opts, saved_state["options"] if saved_state else None)
    check_data_file(o.data)
    out_arg = Path(opts.out or (ckpt_in.parent if ckpt_in and ckpt_in.name == CHECKPOINT_DIR else TRAIN_DEFAULTS["out"]))
    out = out_arg.absolute()
    kept.out, kept.steps = out_arg, o.steps
    if ckpt_in:
        kept.found(Path(opts.resume), int(saved_state["step"]), same_out=ckpt_in.absolute() == out / CHECKPOINT_DIR)
    if out.is_dir():
        lock.acquire(out)              # a second writer stops here, before any work
    device = select_device(o.device)
    reason = dtype_support(device, o.dtype)
    if reason is not None:
        raise DeviceError(f"--dtype {o.dtype}: {reason}; use --dtype float32 or another --device")
    if ckpt_in:
        config, start = load_config(ckpt_in), int(saved_state["step"])
        if start >= o.steps:
            raise UsageError(f"the checkpoint is at step {start} already: give --steps more than {start}")
    else:                  # reads the whole text once: a bad file fails here, before anything is written
        pieces = (line for lines in text_pieces(o.data) for line in lines)
        tokenizer = train_tokenizer(o.tokenizer, pieces, o.vocab_size if o.tokenizer in SIZED else None)
        if o.tokenizer not in SIZED:
            o.vocab_size = tokenizer.vocab_size
        config = model_config(o, tokenizer.vocab_size)
        start = 0
    memory = check_training_memory(config, o.batch_size, o.dtype)      # before anything is built
    if ckpt_in:
        ckpt = load_checkpoint(ckpt_in, device=device)
        tokenizer = ckpt.tokenizer
    prepare_out(out, resuming=ckpt_in is not None and ckpt_in.absolute() == (out / CHECKPOINT_DIR).absolute(), lock=lock)
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
    unknown = count_unknown(tokenizer, tokens)
    if unknown is not None:
        log(f"Unknown words: {unknown:,} [UNK] tokens ({unknown / max(len(tokens), 1):.2%}): words longer than "
            "100 characters or with a character the tokenizer never saw")
    log(f"Model: {model.num_parameters():,} parameters, d_model {o.d_model}, {o.n_layers} layers, {o.n_heads} heads, "
        f"context {o.context_length}; memory: {memory}")
    if describe_variant(config):
        log(f"Architecture ({o.model} preset and flags): {describe_variant(config)}")
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
            kept.step_now = step + 1
            lr = lr_at(step, o.lr, o.warmup_steps, o.decay_steps, o.lr_schedule, o.min_lr)
            x, y = sampler.sample(o.accum_steps * o.batch_size)                 # (k*B, T)
            shape = (o.accum_steps, o.batch_size, o.context_length)
            out_t = step_fn.from_host(x.reshape(shape), y.reshape(shape), lr)
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
                kept.found(out_arg, step + 1, same_out=True)
    log(f"Saved checkpoint at step {o.steps}: {ckpt_out}")
    if timed_tokens:
        log(f"Speed: {timed_tokens / (time.perf_counter() - t0):,.0f} tokens/s after compiling; "
            f"peak memory (RSS) {peak_resident_mib() or 0:,.0f} MiB")
    if o.plot:
        log(f"Plot: {plot_metrics(read_metrics(metrics_path), o.plot)}")
    return TrainResult(model, tokenizer, o.steps, records, out, ckpt_out)
# --8<-- [end:train]
