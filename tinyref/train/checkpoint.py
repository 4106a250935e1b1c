"""Checkpoints: a directory of safetensors + JSON, written beside the target and swapped in whole.

    model.safetensors      the weights, under the state-dict keys of DESIGN.md (float32)
    optimizer.safetensors  AdamW moments m.<key>, v.<key> and each group's b1_t, b2_t (when saved)
    config.json            the GPTConfig
    tokenizer.json         the tokenizer (when one is used)
    state.json             step, RNG state, data position: whatever the trainer needs to resume

Loading checks every header (sizes, dtypes, shapes, byte ranges against config.json) before any
tensor is allocated, and reports a bad file as one CheckpointError line. No pickle.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import safetensors
import safetensors.numpy
from tinygrad import Tensor
from tinygrad.nn.state import get_state_dict

import oracle

from ..config import GPTConfig
from ..runtime.devices import use_device
from ..errors import CheckpointError, ConfigError
from ..model import GPTStyleTransformer
from ..optim import optimizer_groups
from .tokenizer import Tokenizer, load_tokenizer

MODEL_FILE, OPTIMIZER_FILE = "model.safetensors", "optimizer.safetensors"
CONFIG_FILE, TOKENIZER_FILE, STATE_FILE = "config.json", "tokenizer.json", "state.json"
MAX_HEADER = 100 * 2**20   # a header is ~100 bytes per tensor; anything near this is not a checkpoint
DTYPE = "F32"              # tinyref stores float32 master weights and optimizer state


# --8<-- [start:safetensors]
def write_safetensors(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """float32 arrays in the safetensors format (written by the format's reference package), synced to disk."""
    blob = safetensors.numpy.save({k: np.asarray(a, dtype="<f4", order="C") for k, a in arrays.items()})
    with open(path, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
# --8<-- [end:safetensors]


def check_safetensors(path: Path, expected: dict[str, tuple] | None = None):
    """Check the header of ``path`` against ``expected`` {key: shape} (None: take the keys from the
    header, still checking dtypes and byte ranges); returns (header, data offset, data size)."""
    name = f"{path.parent.name}/{path.name}"
    if not path.is_file():
        raise CheckpointError(f"{name} is missing: the checkpoint is incomplete; save it again or pick another")
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little") if size >= 8 else -1
        if not 2 <= n <= min(size - 8, MAX_HEADER):
            raise CheckpointError(f"{name} is not a safetensors file (header length {n} for a {size}-byte file)")
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise CheckpointError(f"{name} has a corrupt safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{name} has a corrupt safetensors header (not a JSON object)")
    header.pop("__metadata__", None)
    if expected is None:
        expected = {k: tuple(v.get("shape") or ()) if isinstance(v, dict) else () for k, v in header.items()}
    missing, extra = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{name} does not match config.json: missing {missing[:3]}, unexpected {extra[:3]}")
    data_size, spans = size - 8 - n, []
    for k, shape in expected.items():
        info = header[k]
        want = 4 * math.prod(shape)
        ok = isinstance(info, dict) and info.get("dtype") == DTYPE and info.get("shape") == list(shape)
        offsets = info.get("data_offsets") if ok else None
        ok = ok and isinstance(offsets, list) and len(offsets) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in offsets)
        start, end = offsets if ok else (None, None)
        if not (ok and 0 <= start and end - start == want and end <= data_size):
            raise CheckpointError(f"{name}: tensor {k} should be {DTYPE} {tuple(shape)} ({want} bytes inside the "
                                  f"{data_size}-byte data), header says {info}")
        spans.append((start, end, k))
    spans.sort()
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start < end:
            raise CheckpointError(f"{name}: tensors {a} and {b} overlap")
    return {k: (s, e, expected[k]) for s, e, k in spans}, 8 + n, data_size


def read_safetensors(path: Path, expected: dict[str, tuple]) -> dict[str, np.ndarray]:
    """The tensors of ``path``; nothing beyond the header is read until check_safetensors() passes."""
    check_safetensors(path, expected)
    try:
        with safetensors.safe_open(path, framework="np") as f:
            return {k: f.get_tensor(k) for k in expected}
    except (safetensors.SafetensorError, OSError) as e:
        raise CheckpointError(f"{path.parent.name}/{path.name} cannot be read as safetensors ({e})") from None


def optimizer_arrays(optimizer, model) -> dict[str, np.ndarray]:
    """AdamW's state by parameter name: m.<key>, v.<key>, and group.<i>.b1_t / b2_t (the running b^t)."""
    names = {id(t): k for k, t in get_state_dict(model).items()}
    if any(id(p) not in names for p in optimizer.params):
        raise CheckpointError("the optimizer does not update this model's parameters: build it over the model you save")
    out = {}
    for g, opt in enumerate(optimizer_groups(optimizer)):
        out[f"group.{g}.b1_t"], out[f"group.{g}.b2_t"] = opt.b1_t.numpy(), opt.b2_t.numpy()
        for p, m, v in zip(opt.params, opt.m, opt.v):
            out[f"m.{names[id(p)]}"], out[f"v.{names[id(p)]}"] = m.numpy(), v.numpy()
    return out


def optimizer_shapes(config: GPTConfig, n_groups: int) -> dict[str, tuple]:
    """The keys and shapes of optimizer.safetensors for ``config`` and ``n_groups`` AdamW groups."""
    shapes = {f"group.{g}.{b}": (1,) for g in range(n_groups) for b in ("b1_t", "b2_t")}
    for k, shape in oracle.param_shapes(config).items():
        shapes[f"m.{k}"] = shapes[f"v.{k}"] = tuple(shape)
    return shapes


def saved_groups(path: Path, config: GPTConfig) -> int:
    """How many AdamW groups optimizer.safetensors holds, after checking its whole header."""
    spans, _, _ = check_safetensors(path)
    n_groups = sum(k.startswith("group.") and k.endswith(".b1_t") for k in spans)
    check_safetensors(path, optimizer_shapes(config, n_groups))
    return n_groups


def _swap_into_place(new: Path, target: Path) -> None:
    """Make ``new`` appear at ``target`` in one step. Linux renameat2(RENAME_EXCHANGE) swaps two
    directories atomically; elsewhere the old one is renamed aside first (a crash in between leaves
    it as ``.<name>.old-<pid>``, complete)."""
    if not target.exists():
        os.rename(new, target)
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        AT_FDCWD, RENAME_EXCHANGE = -100, 2
        if libc.renameat2(AT_FDCWD, os.fsencode(new), AT_FDCWD, os.fsencode(target), RENAME_EXCHANGE) == 0:
            shutil.rmtree(new)     # now holds the old checkpoint
            return
    except (AttributeError, OSError):
        pass
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old)


def _remove_stale_temporaries(target: Path) -> None:
    """Temporary siblings left by writers that were killed (their process no longer exists)."""
    for p in target.parent.glob(f".{target.name}.tmp-*"):
        try:
            os.kill(int(p.name.rsplit("-", 1)[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (ValueError, PermissionError):
            pass


# --8<-- [start:save]
def save_checkpoint(path, model: GPTStyleTransformer, optimizer=None, tokenizer: Tokenizer | None = None,
                    state: dict | None = None) -> Path:
    """Write a complete checkpoint to a temporary sibling of ``path``, then swap it into place, so
    ``path`` always holds either the old checkpoint or the new one, never a mix."""
    target = Path(path).absolute()
    if not target.parent.is_dir():
        raise CheckpointError(f"cannot save a checkpoint to {target}: the folder {target.parent} does not exist")
    _remove_stale_temporaries(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        write_safetensors(tmp / MODEL_FILE, {k: t.float().numpy() for k, t in get_state_dict(model).items()})
        if optimizer is not None:
            write_safetensors(tmp / OPTIMIZER_FILE, optimizer_arrays(optimizer, model))
        (tmp / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
        if tokenizer is not None:
            tokenizer.save(tmp / TOKENIZER_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(state or {}, indent=2) + "\n")
        dir_fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        _swap_into_place(tmp, target)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"cannot save a checkpoint to {target}: {e.strerror or e}; "
                              "choose a writable folder with free space") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
# --8<-- [end:save]


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (weights in place), its config, tokenizer and trainer state."""

    path: Path
    config: GPTConfig
    model: GPTStyleTransformer
    tokenizer: Tokenizer | None
    state: dict = field(default_factory=dict)

    def restore_optimizer(self, optimizer) -> None:
        """Copy the saved AdamW state into ``optimizer``, which must be built over ``self.model``'s
        parameters with the same groups (same weight-decay setting) as the one that was saved."""
        groups = optimizer_groups(optimizer)
        saved = saved_groups(self.path / OPTIMIZER_FILE, self.config)
        if saved != len(groups):
            raise CheckpointError(f"{self.path.name}/{OPTIMIZER_FILE} holds {saved} AdamW group(s), this optimizer has "
                                  f"{len(groups)}: resume with the weight decay setting it was saved with "
                                  "(> 0 gives two groups, 0 one)")
        arrays = read_safetensors(self.path / OPTIMIZER_FILE, optimizer_shapes(self.config, len(groups)))
        names = {id(t): k for k, t in get_state_dict(self.model).items()}
        for g, opt in enumerate(groups):
            opt.b1_t.assign(Tensor(arrays[f"group.{g}.b1_t"], device=opt.b1_t.device))
            opt.b2_t.assign(Tensor(arrays[f"group.{g}.b2_t"], device=opt.b2_t.device))
            for p, m, v in zip(opt.params, opt.m, opt.v):
                m.assign(Tensor(arrays[f"m.{names[id(p)]}"], device=m.device))
                v.assign(Tensor(arrays[f"v.{names[id(p)]}"], device=v.device))
        Tensor.realize(*[t for opt in groups for t in (opt.b1_t, opt.b2_t, *opt.m, *opt.v)])


def _read_json(path: Path, what: str):
    name = f"{path.parent.name}/{path.name}"
    if not path.is_file():
        raise CheckpointError(f"{name} is missing: the checkpoint is incomplete; save it again or pick another")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{name} is not valid JSON ({e}); it should hold {what}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{name} should hold {what} as a JSON object, got {type(data).__name__}")
    return data


def load_config(path) -> GPTConfig:
    """The GPTConfig of the checkpoint at ``path`` (reads only config.json)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a directory")
    try:
        return GPTConfig.from_dict(_read_json(path / CONFIG_FILE, "the model config"))
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{path.name}/{CONFIG_FILE} does not describe a model: {e}") from None


def load_state(path) -> dict:
    """The trainer state (state.json) of the checkpoint at ``path``."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a directory")
    return _read_json(path / STATE_FILE, "the trainer state")


# --8<-- [start:load]
def load_checkpoint(path, device: str | None = None) -> Checkpoint:
    """Check every file of the checkpoint at ``path``, then build the model on ``device`` (default:
    the current one) and load its weights. Optimizer state stays on disk until restore_optimizer()."""
    path = Path(path)
    config = load_config(path)
    state = _read_json(path / STATE_FILE, "the trainer state")
    tokenizer = load_tokenizer(path / TOKENIZER_FILE) if (path / TOKENIZER_FILE).exists() else None
    if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(f"{path.name}/{TOKENIZER_FILE} has {tokenizer.vocab_size} tokens but the model only "
                              f"{config.vocab_size}: the files come from different checkpoints")
    weights = read_safetensors(path / MODEL_FILE, oracle.param_shapes(config))
    if (path / OPTIMIZER_FILE).exists():    # header check only: fail now, not at restore time
        saved_groups(path / OPTIMIZER_FILE, config)
    with use_device(device) if device else contextlib.nullcontext():
        model = GPTStyleTransformer(config)
        for k, t in get_state_dict(model).items():
            t.assign(Tensor(weights[k], device=t.device).cast(t.dtype))
        Tensor.realize(*get_state_dict(model).values())
    return Checkpoint(path, config, model, tokenizer, state)
# --8<-- [end:load]
