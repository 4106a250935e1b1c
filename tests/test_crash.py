"""Crash safety of real training: kill -9 at random moments, and a run that diverges.

Training runs as a real subprocess (`tinyref train --data ... --save-every 1`, so it is nearly always
in the middle of a save or a step) and is killed with SIGKILL at random moments, several times,
resuming each time. After every kill the checkpoint directory, if it exists, loads, its step is one
the run reached, and the next resume continues from it. Shapes are tests/helpers.py's TIED (vocabulary
11 from the 11 distinct characters of the text, batch 2, context 8), so the kernels are the suite's.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import TIED, TIED_BT
from tinyref.train.checkpoint import load_checkpoint
from tinyref.errors import TrainingError
from tinyref.train import TrainOptions, train

ROOT = Path(__file__).resolve().parents[1]
TEXT = "abcdefghij " * 400           # 11 distinct characters: TIED's vocabulary
MODEL_FLAGS = ["--tokenizer", "char", "--context-length", str(TIED.context_length), "--d-model", str(TIED.d_model),
               "--n-heads", str(TIED.n_heads), "--n-layers", str(TIED.n_layers), "--d-ff", str(TIED.d_ff),
               "--batch-size", str(TIED_BT[0])]
STEPS = 400


@pytest.fixture
def text_file(tmp_path) -> Path:
    path = tmp_path / "text.txt"
    path.write_text(TEXT)
    return path


def start_training(text_file: Path, out: Path, resume: bool) -> subprocess.Popen:
    args = ["--resume", str(out)] if resume else ["--data", str(text_file), "--out", str(out), *MODEL_FLAGS,
                                                   "--save-every", "1", "--eval-every", "50", "--eval-batches", "1"]
    return subprocess.Popen([sys.executable, "-m", "tinyref", "train", *args, "--steps", str(STEPS)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def saved_step(out: Path) -> int:
    """The step of the checkpoint in ``out``, after proving it loads whole (0 if none was written yet)."""
    if not (out / "checkpoint").exists():
        return 0
    ckpt = load_checkpoint(out / "checkpoint")
    weights = [t.numpy() for t in (ckpt.model.wte.weight, ckpt.model.h[-1].mlp.c_proj.weight)]
    assert all(np.isfinite(w).all() for w in weights)
    return ckpt.state["step"]


def test_kill_9_during_training_and_saving_never_breaks_the_checkpoint(text_file, tmp_path):
    out, rng, reached = tmp_path / "run", np.random.default_rng(0), 0
    for attempt in range(3):
        proc = start_training(text_file, out, resume=attempt > 0)
        try:
            deadline = time.monotonic() + 240
            while saved_step(out) <= reached + 2:           # let it save a few new checkpoints first
                assert proc.poll() is None, f"attempt {attempt}: training ended early: {proc.stderr.read()[-2000:]}"
                assert time.monotonic() < deadline, f"attempt {attempt}: no new checkpoint within 240 s"
                time.sleep(0.2)
            time.sleep(float(rng.uniform(0.0, 0.5)))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        step = saved_step(out)
        assert step > reached, f"attempt {attempt}: the checkpoint went back from step {reached} to {step}"
        reached = step
    finish = subprocess.run([sys.executable, "-m", "tinyref", "train", "--resume", str(out), "--steps", str(reached + 3)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert finish.returncode == 0, finish.stderr[-2000:]
    assert saved_step(out) == reached + 3
    steps = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines() if "train_loss" in l]
    assert steps[-1] == reached + 3


def test_a_diverging_run_stops_in_one_line_and_keeps_the_last_good_checkpoint(text_file, tmp_path):
    """A learning rate of 1e30 overflows the weights within a few steps: the run stops with a
    TrainingError naming the step, and the checkpoint on disk is the last finite one."""
    opts = dict(data=str(text_file), out=str(tmp_path / "run"), tokenizer="char", context_length=TIED.context_length,
                d_model=TIED.d_model, n_heads=TIED.n_heads, n_layers=TIED.n_layers, d_ff=TIED.d_ff,
                batch_size=TIED_BT[0], steps=50, save_every=1, eval_every=50, eval_batches=1, warmup_steps=0,
                lr_schedule="constant", grad_clip=0.0, weight_decay=0.0)
    with pytest.raises(TrainingError, match=r"training diverged at step (\d+) .*the last checkpoint in") as e:
        train(TrainOptions(**opts, lr=1e30), log=lambda *_: None, progress=False)
    assert "\n" not in str(e.value)
    diverged_at = int(e.value.args[0].split("step ")[1].split(" ")[0])
    assert saved_step(tmp_path / "run") == diverged_at - 1        # loads, finite, and the step before the bad one
