"""Memory: this process's resident size, read from Linux's /proc/self (what tinyref train reports,
what tinyref bench measures per run, what the soak test watches; None where /proc is not there), and
the estimate of a training run's memory that train and bench check against what the machine has."""
from __future__ import annotations

import errno
import math
import os

import oracle


def status_kib(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status: VmRSS (resident now) or VmHWM (peak resident)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    except (OSError, StopIteration, ValueError):
        return None


def resident_mib() -> float | None:
    kib = status_kib("VmRSS")
    return None if kib is None else kib / 1024


def peak_resident_mib() -> float | None:
    """The high-water mark since the process started, or since the last ``reset_peak()``."""
    kib = status_kib("VmHWM")
    return None if kib is None else kib / 1024


def reset_peak() -> float | None:
    """Reset the high-water mark to the current resident size (Linux clear_refs 5); return that size."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return resident_mib()


# ---- will a training run fit? ---------------------------------------------------------------------

GIB = 2**30
LIMIT_VARIABLE = "TINYREF_MEMORY_LIMIT"   # e.g. 6G: train and bench plan as if the process could use only this


def is_out_of_memory(e: BaseException) -> bool:
    """tinygrad's failed allocations: MemoryError, or the OSError ENOMEM of a failed mmap."""
    return isinstance(e, MemoryError) or (isinstance(e, OSError) and e.errno == errno.ENOMEM)


# --8<-- [start:estimate]
def parameter_count(config) -> int:
    """P: the scalars of every state-dict key (oracle.param_shapes, so bias=False counts no biases)."""
    return sum(math.prod(shape) for shape in oracle.param_shapes(config).values())


def training_memory(config, batch_size: int, dtype: str = "float32") -> dict[str, int]:
    """Bytes one training step holds, by part, from the model's shapes (B = batch_size, T = context,
    C = d_model, F = d_ff, H = heads, V = vocabulary, L = layers, P = parameters):

    weights, gradients: 4P each (float32 master copies); AdamW: 8P (m and v).
    activations: what the backward pass reads, per layer 5BTC + BT(H + 2KV)hd + 2BTF + 2BHT^2 values
    (ln_1 and ln_2 outputs; the attention output, c_proj's output and the residual stream; q, k, v with
    KV = n_kv_heads key/value heads of hd = C/H; c_fc's output before and after the activation; the
    attention scores before and after softmax), plus BT(H + KV)hd for rotary positions (q and k turned)
    and 2BTF for a gated MLP (c_gate's output before and after the activation); plus 2BTC (embedding
    sum, ln_f) and 3BTV (logits, their softmax, their gradient); twice over, as the captured step keeps
    a buffer for each of their gradients too; 4 bytes each, or the dtype's 2 with float16/bfloat16,
    which also adds the low-precision weights and their gradients (2P each).
    Not counted: the Python process, tinygrad's compiler (a few hundred MiB while a step compiles), the data.
    """
    B, T, C, F = batch_size, config.context_length, config.d_model, config.d_ff
    H, V, L, P = config.n_heads, config.vocab_size, config.n_layers, parameter_count(config)
    fam, hd = oracle.family(config), C // H
    KV = fam["n_kv_heads"]
    low = dtype != "float32"
    per_value = 2 if low else 4
    attention = 5 * B * T * C + B * T * (H + 2 * KV) * hd + 2 * B * H * T * T
    if fam["positions"] == "rope":
        attention += B * T * (H + KV) * hd
    mlp = (4 if fam["gated_mlp"] else 2) * B * T * F
    values = L * (attention + mlp) + 2 * B * T * C + 3 * B * T * V
    return {"weights": 4 * P + (2 * P if low else 0), "gradients": 4 * P + (2 * P if low else 0), "AdamW": 8 * P,
            "activations": 2 * per_value * values}
# --8<-- [end:estimate]


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None          # "max" (no limit) reads as None


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup memory limit (v2 memory.max, v1 limit_in_bytes), None if unlimited."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = [line.strip().split(":", 2) for line in f]
    except OSError:
        return None
    rooms = []
    for _, controllers, path in (l for l in lines if len(l) == 3):
        if controllers == "":
            limit, used = f"/sys/fs/cgroup{path}/memory.max", f"/sys/fs/cgroup{path}/memory.current"
        elif "memory" in controllers.split(","):
            limit, used = (f"/sys/fs/cgroup/memory{path}/memory.{n}" for n in ("limit_in_bytes", "usage_in_bytes"))
        else:
            continue
        limit_bytes, used_bytes = _read_int(limit), _read_int(used)
        if limit_bytes is not None and used_bytes is not None and limit_bytes < 2**60:
            rooms.append(limit_bytes - used_bytes)
    return min(rooms) if rooms else None


def parse_size(text: str) -> int:
    """'6G', '512M', '1.5G' or plain bytes -> bytes (UsageError otherwise)."""
    from ..errors import UsageError
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in units else ""
    try:
        value = float(t[:len(t) - len(unit)])
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(f"{LIMIT_VARIABLE}={text!r}: give a size such as 6G, 512M or a number of bytes")
    return int(value * units[unit])


def available_bytes(limit: int | None = None) -> tuple[int | None, str]:
    """(bytes this process can still allocate, where that figure comes from): /proc/meminfo's
    MemAvailable, lowered by a cgroup limit and by ``limit`` (default: $TINYREF_MEMORY_LIMIT), a cap on
    this process's whole resident size. (None, "") where none of them can be read."""
    if limit is None and os.environ.get(LIMIT_VARIABLE):
        limit = parse_size(os.environ[LIMIT_VARIABLE])
    candidates = []
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        candidates.append((kib * 1024, "available memory"))
    except (OSError, StopIteration, ValueError):
        pass
    room = _cgroup_room()
    if room is not None:
        candidates.append((room, "room under the cgroup memory limit"))
    if limit is not None:
        candidates.append((limit - int((resident_mib() or 0) * 2**20), f"room under {LIMIT_VARIABLE}={limit / GIB:.1f} GiB"))
    return min(candidates) if candidates else (None, "")


def describe_bytes(n: int) -> str:
    return f"{n / GIB:,.1f} GiB" if n >= GIB else f"{n / 2**20:,.1f} MiB"


def check_training_memory(config, batch_size: int, dtype: str = "float32", limit: int | None = None) -> str:
    """Refuse (UsageError, one line) a run whose estimate exceeds what is available; otherwise return
    the estimate as a line to print beside the model's size."""
    from ..errors import UsageError
    parts = training_memory(config, batch_size, dtype)
    total = sum(parts.values())
    detail = ", ".join(f"{k} {describe_bytes(v)}" for k, v in parts.items())
    room, source = available_bytes(limit)
    if room is not None and total > room:
        weights_first = parts["activations"] < total / 2
        model = f"--d-model ({config.d_model}) or --n-layers ({config.n_layers})"
        step = f"--batch-size ({batch_size}) or --context-length ({config.context_length})"
        raise UsageError(f"training this model needs about {describe_bytes(total)} ({detail}) but the "
                         f"{source} is {describe_bytes(max(room, 0))}: reduce "
                         f"{model if weights_first else step}, then {step if weights_first else model}")
    return f"about {describe_bytes(total)} to train ({detail})" + (f"; {describe_bytes(room)} {source}" if room else "")
