"""Run folders: where a run writes (checkpoint, metrics.jsonl), how it is found again, the lock that
lets one run at a time write it, its loss plot."""
from __future__ import annotations

import fcntl
import json
import os
from dataclasses import fields
from pathlib import Path

from ..errors import CheckpointError, TrainingError, UsageError, pyplot
from .checkpoint import CONFIG_FILE, STATE_FILE, load_state
from .options import TrainOptions

CHECKPOINT_DIR, METRICS_FILE, LOCK_FILE = "checkpoint", "metrics.jsonl", "writer.lock"


# --8<-- [start:checkpoint_dir]
def checkpoint_dir(path, flag: str = "--resume") -> Path:
    """Every command that reads a checkpoint (``flag``: --resume, --checkpoint) takes the run folder
    written by ``tinyref train --out`` or the checkpoint folder inside it."""
    path = Path(path)
    if (path / CHECKPOINT_DIR / CONFIG_FILE).is_file():
        return path / CHECKPOINT_DIR
    if (path / CONFIG_FILE).is_file():
        return path
    raise CheckpointError(f"{flag} {path}: no checkpoint there (expected {path}/{CHECKPOINT_DIR}/{CONFIG_FILE} "
                          f"or {path}/{CONFIG_FILE})")
# --8<-- [end:checkpoint_dir]


# --8<-- [start:lock]
class RunLock:
    """One writer per run folder: an exclusive flock on OUT/writer.lock, which holds the writer's pid.
    The kernel drops the lock when the process ends, however it ends (kill -9 included), so a
    folder is never left locked; readers (generate, eval, attention) never take it."""

    def __init__(self):
        self.fd, self.out = None, None

    def acquire(self, out: Path) -> None:
        if self.fd is not None:
            return
        try:
            fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise CheckpointError(f"cannot write to --out {out}: {e.strerror or e}; choose a writable folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise TrainingError(f"--out {out} is being written by another tinyref train (pid {holder}): wait for it "
                                "to end, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd, self.out = fd, out

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
# --8<-- [end:lock]


def prepare_out(out: Path, resuming: bool, lock: RunLock) -> None:
    """Create --out and lock it (which proves it writable) before any work; refuse to overwrite
    another run's checkpoint."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot write to --out {out}: {e.strerror or e}; choose a writable folder") from None
    lock.acquire(out)
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


def load_train_state(path: Path) -> dict:
    """state.json of a checkpoint written by train(), checked for the fields resuming needs."""
    state = load_state(path)
    ok = (isinstance(state.get("step"), int) and isinstance(state.get("sampler"), dict)
          and isinstance(state.get("options"), dict) and set(state["options"]) <= {f.name for f in fields(TrainOptions)})
    if not ok:
        raise CheckpointError(f"{path.name}/{STATE_FILE} lacks the trainer state (step, sampler, options) that "
                              "--resume needs: it was not written by 'tinyref train --data'")
    return state
