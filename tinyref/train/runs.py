"""Run folders: where a run writes (checkpoint, metrics.jsonl), how it is found again, its loss plot."""
from __future__ import annotations

import json
import tempfile
from dataclasses import fields
from pathlib import Path

from ..errors import CheckpointError, UsageError, pyplot
from .checkpoint import CONFIG_FILE, STATE_FILE, load_state
from .options import TrainOptions

CHECKPOINT_DIR, METRICS_FILE = "checkpoint", "metrics.jsonl"


def checkpoint_dir(path) -> Path:
    """--resume accepts a checkpoint directory or the --out directory that holds one."""
    path = Path(path)
    if (path / CHECKPOINT_DIR / CONFIG_FILE).is_file():
        return path / CHECKPOINT_DIR
    if (path / CONFIG_FILE).is_file():
        return path
    raise CheckpointError(f"--resume {path}: no checkpoint there (expected {path}/{CHECKPOINT_DIR}/{CONFIG_FILE} "
                          f"or {path}/{CONFIG_FILE})")


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


def load_train_state(path: Path) -> dict:
    """state.json of a checkpoint written by train(), checked for the fields resuming needs."""
    state = load_state(path)
    ok = (isinstance(state.get("step"), int) and isinstance(state.get("sampler"), dict)
          and isinstance(state.get("options"), dict) and set(state["options"]) <= {f.name for f in fields(TrainOptions)})
    if not ok:
        raise CheckpointError(f"{path.name}/{STATE_FILE} lacks the trainer state (step, sampler, options) that "
                              "--resume needs: it was not written by 'tinyref train --data'")
    return state
