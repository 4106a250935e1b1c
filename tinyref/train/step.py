"""The jitted training step: forward, loss, backward and AdamW, captured once by TinyJit and replayed."""
from __future__ import annotations

import numpy as np
from tinygrad import Context, Tensor, TinyJit, dtypes
from tinygrad.device import Buffer
from tinygrad.nn.state import get_state_dict

from ..loss import cross_entropy
from ..model import GPTStyleTransformer
from ..optim import clip_grad_norm, global_grad_norm, optimizer_lr_tensors, optimizer_state
from ..runtime import cpugraph, kernelopts
from ..runtime.devices import DTYPES


# --8<-- [start:train_step]
def jit_training_step(step, opt) -> TinyJit:
    """``step`` under TinyJit: the first call traces, compiles and captures the kernels; later calls replay them."""
    Tensor.realize(*opt.params, *optimizer_state(opt))   # nothing one-time (zero moments) may hide in the capture
    cpugraph.install(opt.params[0].device)               # on a CPU: replay the captured kernels from C (tinyref.runtime.cpugraph)
    kernelopts.install()                                 # and register-tile its matmuls (tinyref.runtime.kernelopts)
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


# --8<-- [start:overwrite]
def overwrite(t: Tensor, values: np.ndarray) -> None:
    """Copy ``values`` (of ``t``'s size and dtype) into realized tensor ``t``'s buffer, in place: through the
    buffer's own memory where its allocator maps it to the host (tinygrad's CPU devices; 0.01 ms), else as a copy
    from a host buffer (0.2 ms on a CPU)."""
    buffer = t.uop.buffer
    if hasattr(buffer.allocator, "_as_buffer"):         # the test Buffer.as_memoryview makes for a zero-copy view
        np.frombuffer(buffer.as_memoryview(force_zero_copy=True), dtype=values.dtype)[:] = values.ravel()
    else:
        buffer.copy_from(Buffer("PYTHON", buffer.size, buffer.dtype,
                                opaque=memoryview(bytearray(values.tobytes()))).ensure_allocated())
# --8<-- [end:overwrite]


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
        self.inputs: tuple[Tensor, ...] = ()    # from_host's device buffers, made at its first call

    def __call__(self, x: Tensor, y: Tensor, lr: Tensor) -> Tensor:
        return self.jitted(x, y, lr)

    def from_host(self, x: np.ndarray, y: np.ndarray, lr: float) -> Tensor:
        """``self(x, y, lr)`` on host arrays, written into three device buffers kept across steps: the jit replays
        on the same buffers, where three new tensors a step cost a schedule and a copy kernel each (on the CPU,
        4 ms a step: four times the demo's whole step)."""
        values = (np.asarray(x, np.int32), np.asarray(y, np.int32), np.array([lr], np.float32))
        if not self.inputs:
            device = self.master[0].device
            self.inputs = tuple(Tensor.zeros(*v.shape, dtype=d, device=device).contiguous().realize()
                                for v, d in zip(values, (dtypes.int32, dtypes.int32, dtypes.float32)))
        for t, v in zip(self.inputs, values):
            overwrite(t, v)
        return self(*self.inputs)

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
