"""Run folders: every reader takes the run folder, one writer at a time (an OS lock, real processes,
kill -9), readers beside a running writer see whole checkpoints, and the memory estimate that refuses
a model too big for the machine.

Shapes are tests/helpers.py's TIED and UNTIED, so no test here compiles a kernel the suite does not.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import oracle
from helpers import TIED, TIED_BT, as_namespace, cli, model_with
from tinyref.errors import CheckpointError, TinyrefError, TrainingError, UsageError
from tinyref.generation.sampling import generate
from tinyref.runtime.memory import LIMIT_VARIABLE, check_training_memory, training_memory
from tinyref.train import TrainOptions, TrainStep, train
from tinyref.train import checkpoint as checkpoint_module
from tinyref.train.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from tinyref.train.runs import LOCK_FILE, RunLock, checkpoint_dir
from tinyref.train.tokenizer import CharTokenizer

ROOT = Path(__file__).resolve().parents[1]
TEXT = "abcdefghij " * 400           # 11 distinct characters: TIED's vocabulary
MODEL_FLAGS = ["--tokenizer", "char", "--context-length", str(TIED.context_length), "--d-model", str(TIED.d_model),
               "--n-heads", str(TIED.n_heads), "--n-layers", str(TIED.n_layers), "--d-ff", str(TIED.d_ff),
               "--batch-size", str(TIED_BT[0]), "--eval-every", "50", "--eval-batches", "1"]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("tinyref: error: ") and "Traceback" not in err, err
    assert not any(l.startswith("tinyref: error") for l in lines[:-1]), err
    return lines[-1]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder as tinyref train --out leaves it: RUN/checkpoint/ (TIED weights, a char tokenizer)."""
    params = oracle.init_params(as_namespace(TIED), np.random.default_rng(0))
    run = tmp_path_factory.mktemp("runs") / "run"
    run.mkdir()
    save_checkpoint(run / "checkpoint", model_with(TIED, params), tokenizer=CharTokenizer.train(["abcdefghij "]),
                    state={"step": 0})
    (tmp_path_factory.getbasetemp() / "eval.txt").write_text("a bad cab hid a big jade fig ")
    return run


# --- run folders everywhere ----------------------------------------------------------------------

def test_every_reader_takes_the_run_folder_or_the_checkpoint_folder(capsys, run_folder, tmp_path):
    data = run_folder.parent.parent / "eval.txt"
    for folder in (run_folder, run_folder / "checkpoint"):
        commands = {"generate": ["--prompt", "bad", "--max-new-tokens", 4, "--temperature", 0],
                    "eval": ["--data", data, "--batch-size", 2],
                    "attention": ["--text", "a big fig", "--out", tmp_path / "att.png"]}
        outputs = {}
        for name, extra in commands.items():
            status, out, err = cli(capsys, name, "--checkpoint", folder, *extra)
            assert status == 0, (name, folder, err)
            outputs[name] = out
        assert outputs["generate"].startswith("bad") and "perplexity:" in outputs["eval"]
    assert checkpoint_dir(run_folder, "--checkpoint") == checkpoint_dir(run_folder / "checkpoint") == run_folder / "checkpoint"


def test_a_folder_without_a_checkpoint_names_both_places_it_looked(capsys, tmp_path):
    status, _, err = cli(capsys, "generate", "--checkpoint", tmp_path, "--prompt", "a")
    assert status == 1 and f"--checkpoint {tmp_path}: no checkpoint there (expected {tmp_path}/checkpoint/config.json" \
        in one_line(err)


# --- one writer per run folder -------------------------------------------------------------------

def start_writer(data: Path, out: Path, steps: int = 100000) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tinyref", "train", "--data", str(data), "--out", str(out),
                             *MODEL_FLAGS, "--save-every", "1", "--steps", str(steps)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(proc: subprocess.Popen, out: Path, step: int = 2) -> None:
    deadline = time.monotonic() + 240
    while not (out / "checkpoint" / "state.json").exists() or load_checkpoint(out / "checkpoint").state["step"] < step:
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.2)


def test_a_second_writer_stops_at_once_and_a_killed_writer_frees_the_folder(capsys, tmp_path):
    data, out = tmp_path / "text.txt", tmp_path / "run"
    data.write_text(TEXT)
    writer = start_writer(data, out)
    try:
        wait_for_checkpoint(writer, out)
        assert (out / LOCK_FILE).read_text().strip() == str(writer.pid)
        second = subprocess.run([sys.executable, "-m", "tinyref", "train", "--data", str(data), "--out", str(out),
                                 *MODEL_FLAGS, "--steps", "5"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        line = one_line(second.stderr)
        assert second.returncode == 1 and f"--out {out} is being written by another tinyref train (pid {writer.pid})" \
            in line, second.stderr
        resume = subprocess.run([sys.executable, "-m", "tinyref", "train", "--resume", str(out), "--steps", "100001"],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert resume.returncode == 1 and f"(pid {writer.pid})" in one_line(resume.stderr)
        for _ in range(3):               # a reader keeps working beside the writer, through the run folder
            status, text, err = cli(capsys, "generate", "--checkpoint", out, "--prompt", "abc", "--max-new-tokens", 3)
            assert status == 0 and text.startswith("abc"), err
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    lock = RunLock()
    lock.acquire(out)                    # the kernel dropped the killed writer's lock
    lock.release()
    step = load_checkpoint(out / "checkpoint").state["step"]
    finish = subprocess.run([sys.executable, "-m", "tinyref", "train", "--resume", str(out), "--steps", str(step + 2)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert finish.returncode == 0, finish.stderr[-2000:]


def test_the_lock_is_held_within_one_process_too(tmp_path):
    first, second = RunLock(), RunLock()
    first.acquire(tmp_path)
    with pytest.raises(TrainingError, match=f"pid {os.getpid()}"):
        second.acquire(tmp_path)
    first.release()
    second.acquire(tmp_path)
    second.release()


WRITER = textwrap.dedent("""
    import sys, numpy as np, oracle
    from tinygrad import Tensor
    from tinygrad.nn.state import get_state_dict
    from helpers import UNTIED, as_namespace, model_with
    from tinyref.train.checkpoint import save_checkpoint
    model = model_with(UNTIED, {k: np.zeros_like(v) for k, v in
                                oracle.init_params(as_namespace(UNTIED), np.random.default_rng(0)).items()})
    weights = list(get_state_dict(model).values())
    for step in range(1, 100000):
        for w in weights:
            w.assign(w + 1)                  # every weight equals the step it is saved at
        Tensor.realize(*weights)
        save_checkpoint(sys.argv[1], model, state={"step": step})
""")


def torn_loads(path: Path, seconds: float) -> tuple[int, list[str]]:
    """Load ``path`` again and again while WRITER saves into it; (loads, the problems seen)."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT / "tests", stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}, text=True)
    problems, loads = [], 0
    try:
        deadline = time.monotonic() + 120
        while not (path / "state.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
            time.sleep(0.1)
        end = time.monotonic() + seconds
        while time.monotonic() < end and not problems:
            try:
                _, state, _, weights, _ = read_checkpoint(path)     # load_checkpoint's reading, without the model
            except CheckpointError as e:
                problems.append(str(e))
                continue
            loads += 1
            value, step = float(weights["wte.weight"][0, 0]), state["step"]
            if value != step:
                problems.append(f"weights of step {value:g} with the state of step {step}")
    finally:
        proc.kill()
        proc.wait()
    return loads, problems


def test_a_reader_beside_a_writer_sees_one_whole_checkpoint(tmp_path, monkeypatch):
    loads, problems = torn_loads(tmp_path / "ckpt", seconds=5)
    assert not problems and loads > 50, (loads, problems)
    # negative control: without the readers' shared lock the same loop sees files of two saves
    monkeypatch.setattr(checkpoint_module, "swap_lock", lambda path, shared: __import__("contextlib").nullcontext())
    _, problems = torn_loads(tmp_path / "ckpt2", seconds=30)
    assert problems, "negative control: loading without the lock never saw a torn checkpoint"


# --- bad values: NaN weights, non-finite logits --------------------------------------------------

def test_non_finite_weights_are_refused_and_non_finite_logits_stop_generation(tmp_path):
    params = oracle.init_params(as_namespace(TIED), np.random.default_rng(0))
    params["h.1.mlp.c_fc.weight"][3, 2] = np.nan
    model = model_with(TIED, params)
    path = save_checkpoint(tmp_path / "ckpt", model, tokenizer=CharTokenizer.train(["abcdefghij "]), state={"step": 0})
    with pytest.raises(CheckpointError, match=r"ckpt/model.safetensors: tensor h.1.mlp.c_fc.weight holds 1 NaN") as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)
    with pytest.raises(TinyrefError, match="next-token logits hold 11 NaN or infinite values"):
        generate(model, [1, 2, 3], 4, temperature=0)


def test_seed_out_of_range_is_one_line(capsys):
    for argv in (["train", "--seed", "-1"], ["generate", "--checkpoint", "x", "--prompt", "a", "--seed", str(2**32)],
                 ["check", "--seed", "-1"]):
        status, _, err = cli(capsys, *argv)
        assert status == 2 and "--seed must be an integer >= 0 and <= 4294967295" in one_line(err), err
    with pytest.raises(UsageError, match="seed must be an integer >= 0"):
        generate(model_with(TIED, oracle.init_params(as_namespace(TIED), np.random.default_rng(0))), [1], 1, seed=-1)


# --- memory --------------------------------------------------------------------------------------

def test_a_model_too_big_for_the_machine_is_refused_before_anything_is_built(capsys, monkeypatch):
    status, out, err = cli(capsys, "train", "--d-model", 2**17, "--n-heads", 8, "--n-layers", 8)    # ~24 TiB
    assert status == 2 and "training this model needs about 24" in one_line(err) and not out
    monkeypatch.setenv(LIMIT_VARIABLE, "6G")
    status, out, err = cli(capsys, "train", "--d-model", 8192, "--n-heads", 8, "--n-layers", 8)    # ~97 GiB
    assert status == 2 and "needs about 97.0 GiB (weights 24.0 GiB, gradients 24.0 GiB, AdamW 48.0 GiB" in one_line(err)
    assert "room under TINYREF_MEMORY_LIMIT=6.0 GiB" in err and "reduce --d-model (8192) or --n-layers (8), then " \
        "--batch-size (8) or --context-length (16)" in err and not out
    status, _, err = cli(capsys, "train", "--d-model", 1024, "--n-heads", 8, "--n-layers", 8, "--batch-size", 512)
    assert status == 2 and "reduce --batch-size (512) or --context-length (16), then" in one_line(err), err
    monkeypatch.setenv(LIMIT_VARIABLE, "lots")
    status, _, err = cli(capsys, "train", "--epochs", 1)
    assert status == 2 and "TINYREF_MEMORY_LIMIT='lots': give a size" in one_line(err)


def test_the_limit_can_be_passed_as_an_argument():
    cfg = GPTConfig_M = __import__("tinyref").GPTConfig(vocab_size=65, context_length=64, d_model=128, n_heads=4, n_layers=4)
    need = sum(training_memory(cfg, 16).values())
    assert "to train" in check_training_memory(GPTConfig_M, 16, limit=2**40)
    with pytest.raises(UsageError, match="training this model needs about"):
        check_training_memory(cfg, 16, limit=need // 2)


MEASURE = textwrap.dedent("""
    import json, sys, numpy as np
    from tinygrad import Tensor, dtypes
    from tinygrad.helpers import GlobalCounters
    from helpers import LLAMA, TIED, TIED_BT, UNTIED, UNTIED_BT
    from tinyref import GPTStyleTransformer
    from tinyref.optim import make_optimizer
    from tinyref.runtime.devices import select_device
    from tinyref.runtime.memory import reset_peak, peak_resident_mib, training_memory
    from tinyref.train import TrainStep
    select_device(None)   # as tinyref train does: the suite's device, compiled work kept on disk (and reused here)
    cfg, (B, T) = {"TIED": (TIED, TIED_BT), "UNTIED": (UNTIED, UNTIED_BT), "LLAMA": (LLAMA, TIED_BT)}[sys.argv[1]]
    start, buffers = reset_peak(), GlobalCounters.mem_used
    model = GPTStyleTransformer(cfg)
    step = TrainStep(model, make_optimizer(model, lr=1e-3))
    x, y = (Tensor(np.random.default_rng(s).integers(0, cfg.vocab_size, (1, B, cfg.context_length)), dtype=dtypes.int32)
            for s in (0, 1))
    for _ in range(3):
        step(x, y, Tensor([1e-3], dtype=dtypes.float32)).tolist()
    print(json.dumps({"buffers": GlobalCounters.mem_used - buffers, "rss": (peak_resident_mib() - start) * 2**20,
                      "estimate": sum(training_memory(cfg, B).values())}))
""")
BUFFER_FACTOR = 1.5          # tinygrad's own count of the bytes the step holds, against the estimate
RUNTIME_OVERHEAD = 2**30     # the peak resident size also holds the compiler's working memory


@pytest.mark.parametrize("name", ["TIED", "UNTIED", "LLAMA"])
def test_the_estimate_matches_what_a_step_holds(name):
    """Measured in a fresh process: tinygrad's allocated buffers within BUFFER_FACTOR of the estimate,
    and the growth of the peak resident size at least those buffers and at most the estimate plus
    RUNTIME_OVERHEAD. (UNTIED is trained at a full context here: the estimate assumes T = context.)"""
    proc = subprocess.run([sys.executable, "-c", MEASURE, name], cwd=ROOT / "tests", capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 1 / BUFFER_FACTOR <= m["buffers"] / m["estimate"] <= BUFFER_FACTOR, m
    assert m["buffers"] <= m["rss"] <= m["estimate"] + RUNTIME_OVERHEAD, m


def tied_options(data: Path, out: Path, **options) -> TrainOptions:
    """A run of TIED's shapes on a char tokenizer (the suite's kernels)."""
    return TrainOptions(data=str(data), out=str(out), tokenizer="char", context_length=TIED.context_length,
                        d_model=TIED.d_model, n_heads=TIED.n_heads, n_layers=TIED.n_layers, d_ff=TIED.d_ff,
                        batch_size=TIED_BT[0], eval_every=50, eval_batches=1, **options)


def interrupt_at_call(monkeypatch, calls: int) -> None:
    """Ctrl-C (SIGINT's KeyboardInterrupt) arrives during TrainStep's call number ``calls`` + 1."""
    real_call = TrainStep.__call__

    def interrupted(self, *args):
        if self.calls == calls:
            raise KeyboardInterrupt
        self.calls += 1
        return real_call(self, *args)
    monkeypatch.setattr(TrainStep, "calls", 0, raising=False)
    monkeypatch.setattr(TrainStep, "__call__", interrupted)


def test_ctrl_c_names_the_kept_step_and_the_command_that_continues_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("text.txt").write_text(TEXT)
    interrupt_at_call(monkeypatch, 3)                   # steps 1-3 done, saved at 2; Ctrl-C during step 4
    status, _, err = cli(capsys, "train", "--data", "text.txt", "--out", "runs/x", *MODEL_FLAGS, "--steps", "6",
                         "--save-every", "2")
    assert status == 130 and one_line(err) == ("tinyref: error: interrupted at step 4 of 6: the checkpoint in runs/x "
                                               "holds step 2; continue it with 'tinyref train --resume runs/x --steps 6'")
    assert load_checkpoint(Path("runs/x/checkpoint")).state["step"] == 2
    monkeypatch.undo()                                  # the quoted command, run as given, finishes the run
    monkeypatch.chdir(tmp_path)
    status, _, err = cli(capsys, *shlex.split(one_line(err).split("'")[1])[1:])
    assert status == 0, err
    assert load_checkpoint(Path("runs/x/checkpoint")).state["step"] == 6


def test_ctrl_c_before_the_first_save_or_into_another_out_says_so(tmp_path, monkeypatch):
    data, a, b = tmp_path / "text.txt", tmp_path / "a", tmp_path / "b"
    data.write_text(TEXT)
    quiet = dict(log=lambda *_: None, progress=False)
    train(tied_options(data, a, steps=2), **quiet)                      # a's checkpoint holds step 2
    interrupt_at_call(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt, match="^" + re.escape(
            f"interrupted at step 4 of 5: the checkpoint in {a} holds step 2; continue it with "
            f"'tinyref train --resume {a} --out {b} --steps 5'") + "$"):
        train(TrainOptions(resume=str(a), out=str(b), steps=5), **quiet)
    monkeypatch.undo()
    interrupt_at_call(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt, match="^interrupted at step 2 of 4, before the first checkpoint: nothing "
                                                "was saved; run the same command again"):
        train(tied_options(data, tmp_path / "c", steps=4, save_every=3), **quiet)


def test_running_out_of_memory_mid_run_is_one_line_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    real_call = TrainStep.__call__

    def failing(self, *args):
        if self.calls == 3:
            raise OSError(12, "Cannot allocate memory")          # what tinygrad's mmap raises (ENOMEM)
        self.calls += 1
        return real_call(self, *args)
    monkeypatch.setattr(TrainStep, "calls", 0, raising=False)
    monkeypatch.setattr(TrainStep, "__call__", failing)
    opts = tied_options(data, tmp_path / "run", steps=10, save_every=1)
    with pytest.raises(TrainingError, match=r"out of memory \(\[Errno 12\] Cannot allocate memory\); the last "
                                            r"checkpoint in .*run/checkpoint is kept: reduce --batch-size") as e:
        train(opts, log=lambda *_: None, progress=False)
    assert "\n" not in str(e.value)
    assert load_checkpoint(tmp_path / "run" / "checkpoint").state["step"] == 3
    RunLock().acquire(tmp_path / "run")        # released although train() raised
