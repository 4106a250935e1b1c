"""The command line: a bad flag or value is one line 'tinyref: error: ...', exit 2, never a traceback."""
import subprocess
import sys
from pathlib import Path

import pytest

from tinyref.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv, message", [
    (["train", "--n-heads", "5"], "n_heads=5 must divide d_model=32"),
    (["train", "--d-model", "0"], "--d-model must be an integer >= 1, got 0"),
    (["train", "--d-ff", "-1"], "--d-ff must be an integer >= 1, got -1"),
    (["train", "--context-length", "0"], "--context-length must be an integer >= 1"),
    (["train", "--lr", "nan"], "lr must be a finite number > 0"),
    (["train", "--lr", "-0.1"], "lr must be a finite number > 0"),
    (["train", "--seed", "-1"], "--seed must be an integer >= 0 and <= 4294967295, got -1"),
    (["train", "--epochs", "0"], "--epochs must be an integer >= 1"),
    (["train", "--batch-size", "-2"], "--batch-size must be an integer >= 1"),
    (["train", "--device", "TPU"], "unknown device 'TPU': choose one of CPU"),
    (["train", "--vocab-size", "many"], "argument --vocab-size: invalid int value"),
    (["train", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["no-such-command"], "invalid choice: 'no-such-command'"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tinyref: error: ") and message in err, err


def run_cli(argv: list[str]) -> int:
    """tinyref's exit status for ``argv``, run in this process (argparse's usage errors exit via SystemExit)."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def test_no_command_prints_help_and_exit_2(capsys):
    assert main([]) == 2
    assert "train" in capsys.readouterr().out


def test_debug_shows_the_traceback():
    with pytest.raises(ValueError, match="n_heads=5 must divide"):
        main(["--debug", "train", "--n-heads", "5"])


def test_a_real_process_prints_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "tinyref", "train", "--n-heads", "3"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("tinyref: error: GPTConfig.n_heads=3 must divide d_model=32") and "Traceback" not in proc.stderr
