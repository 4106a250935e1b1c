"""Checkpoints: a directory of safetensors + JSON, written beside the target and swapped in whole.

    model.safetensors      the weights, under the state-dict keys of DESIGN.md (float32)
    optimizer.safetensors  AdamW moments m.<key>, v.<key> and each group's b1_t, b2_t (when saved)
    config.json            the GPTConfig
    tokenizer.json         the tokenizer (when one is used)
    state.json             step, RNG state, data position: whatever the trainer needs to resume

Loading checks every header (sizes, dtypes, shapes, byte ranges against config.json) before any
tensor is allocated, and every value for NaN and infinity, and reports a bad file as one
CheckpointError line. No pickle. A reader holds a shared lock on the folder around the checkpoint
while it reads the files, and a save swaps a new checkpoint in under the exclusive one, so a reader
running beside training sees one whole checkpoint, never files from two.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tinygrad import Tensor
from tinygrad.nn.state import get_state_dict

import oracle

from ..config import GPTConfig
from ..runtime.devices import use_device
from ..errors import CheckpointError, ConfigError
from ..model import GPTStyleTransformer
from ..optim import optimizer_groups
from .tensorfile import check_safetensors, read_safetensors, write_safetensors
from .tokenizer import Tokenizer, load_tokenizer

MODEL_FILE, OPTIMIZER_FILE = "model.safetensors", "optimizer.safetensors"
CONFIG_FILE, TOKENIZER_FILE, STATE_FILE = "config.json", "tokenizer.json", "state.json"


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


@contextlib.contextmanager
def swap_lock(checkpoint: Path, shared: bool):
    """flock on the folder that holds ``checkpoint``: readers share it while they read the files, a
    save takes it alone for the swap. No folder: nothing to lock (nothing can be saved there either)."""
    try:
        fd = os.open(Path(checkpoint).absolute().parent, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


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
        with swap_lock(target, shared=False):
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
    inode: int | None = None      # of the directory read: restore_optimizer() checks it was not replaced since

    def restore_optimizer(self, optimizer) -> None:
        """Copy the saved AdamW state into ``optimizer``, which must be built over ``self.model``'s
        parameters with the same groups (same weight-decay setting) as the one that was saved."""
        groups = optimizer_groups(optimizer)
        saved = saved_groups(self.path / OPTIMIZER_FILE, self.config)
        if saved != len(groups):
            raise CheckpointError(f"{self.path.name}/{OPTIMIZER_FILE} holds {saved} AdamW group(s), this optimizer has "
                                  f"{len(groups)}: resume with the weight decay setting it was saved with "
                                  "(> 0 gives two groups, 0 one)")
        with swap_lock(self.path, shared=True):
            if self.inode is not None and self.path.stat().st_ino != self.inode:
                raise CheckpointError(f"{self.path} was replaced by a newer save while it loaded (another process "
                                      "is training into it): load it again")
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
def read_checkpoint(path: Path):
    """(config, state, tokenizer, weights, inode of the folder) of the checkpoint at ``path``, all read
    from one save, checked; the optimizer's header only."""
    with swap_lock(path, shared=True):      # every file from the same save, even while a run saves beside us
        config = load_config(path)
        inode = path.stat().st_ino
        state = _read_json(path / STATE_FILE, "the trainer state")
        tokenizer = load_tokenizer(path / TOKENIZER_FILE) if (path / TOKENIZER_FILE).exists() else None
        if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
            raise CheckpointError(f"{path.name}/{TOKENIZER_FILE} has {tokenizer.vocab_size} tokens but the model only "
                                  f"{config.vocab_size}: the files come from different checkpoints")
        weights = read_safetensors(path / MODEL_FILE, oracle.param_shapes(config))
        if (path / OPTIMIZER_FILE).exists():    # header check only: fail now, not at restore time
            saved_groups(path / OPTIMIZER_FILE, config)
    return config, state, tokenizer, weights, inode


def load_checkpoint(path, device: str | None = None) -> Checkpoint:
    """Check every file of the checkpoint at ``path``, then build the model on ``device`` (default:
    the current one) and load its weights. Optimizer state stays on disk until restore_optimizer()."""
    path = Path(path)
    config, state, tokenizer, weights, inode = read_checkpoint(path)
    with use_device(device) if device else contextlib.nullcontext():
        model = GPTStyleTransformer(config)
        for k, t in get_state_dict(model).items():
            t.assign(Tensor(weights[k], device=t.device).cast(t.dtype))
        Tensor.realize(*get_state_dict(model).values())
    return Checkpoint(path, config, model, tokenizer, state, inode)
# --8<-- [end:load]
