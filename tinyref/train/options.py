"""The options of a real-text run: defaults, what a resumed run keeps, and the checks of every value."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import MODEL_PRESETS, VARIANT_FIELDS, GPTConfig, preset_fields
from ..errors import UsageError, check_seed
from ..runtime.devices import DTYPES
from .tokenizer import SIZED, TOKENIZERS


def check_positive(name: str, value, kind=int) -> None:
    """UsageError unless ``value`` is a finite number > 0 of the right kind (flags and function arguments)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok:
        raise UsageError(f"{name} must be a {'positive integer' if kind is int else 'finite number > 0'}, got {value!r}")


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
    model: str | None = None                # a preset of the variant fields below: "gpt2" or "llama"
    activation: str | None = None
    bias: bool | None = None
    tie_embeddings: bool | None = None
    positions: str | None = None
    rope_theta: float | None = None
    rope_style: str | None = None
    norm: str | None = None
    gated_mlp: bool | None = None
    n_kv_heads: int | None = None
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
                      seed=0, model="gpt2")       # the variant fields: the --model preset's
# what fixes the model and its data: a resumed run must keep them
SHAPE_FIELDS = ("context_length", "d_model", "n_heads", "n_layers", "d_ff", "model", *VARIANT_FIELDS, "tokenizer",
                "vocab_size")
# runs saved before GPTConfig had the variant fields trained GPT-2
GPT2_VARIANT = dict(model="gpt2", **preset_fields("gpt2"))
# what belongs to one invocation, not to the run: never taken from a checkpoint
RUN_FIELDS = ("out", "resume", "device", "plot")
SCHEDULES = ("cosine", "constant")


def resolve_options(opts: TrainOptions, saved: dict | None) -> TrainOptions:
    """Fill the unset fields (from the checkpoint when resuming, else the defaults) and check them all."""
    given = {k: v for k, v in asdict(opts).items() if v is not None}
    if saved is not None:
        saved = {**GPT2_VARIANT, **saved}
        saved["n_kv_heads"] = saved["n_kv_heads"] or saved["n_heads"]
        for k in SHAPE_FIELDS:
            if k in given and given[k] != saved.get(k):
                raise UsageError(f"--{k.replace('_', '-')} {given[k]} does not match the checkpoint's "
                                 f"{saved.get(k)}: a resumed run keeps its model and tokenizer; drop the flag or "
                                 "start a new run with another --out")
        base = {k: v for k, v in saved.items() if k not in RUN_FIELDS}
    else:
        base = dict(TRAIN_DEFAULTS)
    o = TrainOptions(**{**base, **given})
    if o.model not in MODEL_PRESETS:
        raise UsageError(f"unknown --model {o.model!r}: choose one of {', '.join(MODEL_PRESETS)}")
    for k, v in preset_fields(o.model, asdict(o)).items():
        setattr(o, k, v)
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
    check_seed("--seed", o.seed)
    for name in ("warmup_steps", "weight_decay", "grad_clip", "min_lr"):
        value = getattr(o, name)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise UsageError(f"--{name.replace('_', '-')} must be a number >= 0, got {value!r}")
    if o.loss_scale is not None:
        check_positive("--loss-scale", o.loss_scale, float)
    if not (isinstance(o.val_fraction, (int, float)) and 0.0 < o.val_fraction < 1.0):
        raise UsageError(f"--val-fraction must lie strictly between 0 and 1, got {o.val_fraction!r}")
    if o.tokenizer not in SIZED and "vocab_size" in given and saved is None:
        raise UsageError(f"--vocab-size sets the BPE or WordPiece vocabulary; the {o.tokenizer} tokenizer takes its "
                         "vocabulary from the data: drop --vocab-size or use --tokenizer bpe or wordpiece")
    model_config(o, o.vocab_size)        # a model these sizes and variant fields cannot describe fails here
    o.n_kv_heads = o.n_kv_heads or o.n_heads
    o.decay_steps = o.decay_steps or o.steps
    o.min_lr = 0.1 * o.lr if o.min_lr is None else o.min_lr
    o.save_every = o.save_every or o.eval_every
    o.data = str(Path(o.data).absolute())
    return o


def check_architecture(sizes: dict) -> None:
    """UsageError naming the flags of a combination no model has (``sizes``: d_model, n_heads, n_kv_heads and
    positions, as the flags set them), before GPTConfig's own checks of each field."""
    n_heads, n_kv_heads = sizes["n_heads"], sizes.get("n_kv_heads")
    if n_kv_heads is not None and n_heads % n_kv_heads:
        divisors = ", ".join(str(k) for k in range(1, n_heads + 1) if n_heads % k == 0)
        raise UsageError(f"--n-kv-heads {n_kv_heads} must divide --n-heads {n_heads} (each key/value head serves a "
                         f"group of query heads): choose one of {divisors}")
    head_dim = sizes["d_model"] // n_heads
    if sizes.get("positions") == "rope" and sizes["d_model"] % n_heads == 0 and head_dim % 2:
        raise UsageError(f"rotary positions (--positions rope, also the llama preset's) turn pairs of dimensions, "
                         f"but the head size --d-model {sizes['d_model']} / --n-heads {n_heads} = {head_dim} is odd: "
                         "change --d-model or --n-heads, or use --positions learned")


def model_config(o: TrainOptions, vocab_size: int) -> GPTConfig:
    """The GPTConfig that options ``o`` (resolved) train, for a tokenizer of ``vocab_size`` tokens."""
    check_architecture(asdict(o))
    return GPTConfig(vocab_size=vocab_size, context_length=o.context_length, d_model=o.d_model, n_heads=o.n_heads,
                     n_layers=o.n_layers, d_ff=o.d_ff, **{k: getattr(o, k) for k in VARIANT_FIELDS})
