"""docs/reliability.md's table, run: each bad input gives the documented one-line error and exit status,
and no file that already existed is changed.

The table is the single list of bad-input classes; this test runs every row in-process, in a folder of
broken inputs made by tests/bad_inputs.py, so the page cannot promise a message the code does not give.
"""
from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path

import pytest

from bad_inputs import make_bad_inputs
from tinyref.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| (?P<what>[^|]+?) \| `tinyref (?P<args>[^`]+)` \| (?P<status>[12]) \| `(?P<message>[^`]+)` \|$", re.M)
ROWS = [m.groupdict() for m in ROW.finditer((ROOT / "docs" / "reliability.md").read_text())]


def fingerprint(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the hash of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad-inputs")
    make_bad_inputs(root)
    return root


def test_the_table_has_rows_for_every_command():
    commands = {row["args"].split()[0] for row in ROWS}
    assert set(COMMANDS) <= commands, f"docs/reliability.md has no row for {sorted(set(COMMANDS) - commands)}"
    assert len(ROWS) >= 30


def row_problem(row: dict, inputs: Path, capsys) -> str | None:
    """Run one table row in ``inputs``; None when tinyref does what the row documents, else what differs.
    The documented message is a prefix of the real one; "…" in it stands for any text (a full path)."""
    before = fingerprint(inputs)
    try:
        status = main(shlex.split(row["args"]))
    except SystemExit as e:
        status = e.code
    err = capsys.readouterr().err
    errors = [l for l in err.splitlines() if l.startswith("tinyref: error: ")]
    if status != int(row["status"]):
        return f"exit status {status}, documented {row['status']}: {err}"
    if len(errors) != 1 or errors[0] != err.splitlines()[-1] or "Traceback" in err:
        return f"not exactly one final error line and no traceback:\n{err}"
    if not re.match(re.escape("tinyref: error: " + row["message"]).replace("…", ".*"), errors[0]):
        return f"documented: tinyref: error: {row['message']}...\ngot: {errors[0]}"
    after = fingerprint(inputs)
    changed = sorted(k for k in before if after.get(k) != before[k])
    if changed:
        return f"a bad command changed or removed files that were already there: {changed}"
    return None


@pytest.mark.parametrize("row", ROWS, ids=[r["what"] for r in ROWS])
def test_bad_input_gives_the_documented_one_line_error(row, inputs, monkeypatch, capsys):
    monkeypatch.chdir(inputs)
    problem = row_problem(row, inputs, capsys)
    assert problem is None, problem


def test_a_row_that_promises_another_message_or_status_fails(inputs, monkeypatch, capsys):
    """Negative control: the check is not satisfied by any error at all."""
    monkeypatch.chdir(inputs)
    row = next(r for r in ROWS if r["args"].startswith("generate --checkpoint nowhere"))
    assert "documented" in row_problem({**row, "message": "checkpoint elsewhere"}, inputs, capsys)
    assert "exit status" in row_problem({**row, "status": "2"}, inputs, capsys)
