"""tinyref.runtime.schedulecache: a schedule read back from disk is the very graph the scheduler made, it is
used only for the graph it was made for, and the numbers come out the same.

Each test gets an empty cache table of its own (a temporary sqlite file) and an empty in-memory
schedule cache, so "a later run" is this process with tinygrad's memory wiped. The scheduler's
entry point is wrapped to count how often it really ran. The negative control plants a stale
entry (a key that ignores the graph) and shows that the tests would see the wrong numbers.
"""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import tinygrad.schedule as schedule
from tinygrad import Context, Tensor, dtypes
from tinygrad.uop.ops import CallInfo, Ops, UOp

from tinyref.runtime import schedulecache


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty schedule table and in-memory cache; returns a dict counting real scheduler runs."""
    conn = sqlite3.connect(tmp_path / "cache.db")
    monkeypatch.setattr(schedulecache, "db_connection", lambda: conn)
    monkeypatch.setattr(schedule, "schedule_cache", {})
    schedulecache.enable()
    runs = {"scheduled": 0}
    real = schedule.get_kernel_graph

    def counting(function):
        runs["scheduled"] += 1
        return real(function)

    monkeypatch.setattr(schedule, "get_kernel_graph", counting)
    yield runs
    conn.close()


def later_run(monkeypatch) -> None:
    """Forget every in-memory schedule, as a new process would."""
    monkeypatch.setattr(schedule, "schedule_cache", {})


def affine(data, scale: float) -> np.ndarray:
    x = Tensor(np.asarray(data, dtype=np.float32)).realize()
    return ((x * scale + 1).exp2().sum() + x).numpy()


def stored_rows() -> int:
    return schedulecache.db_connection().execute(f"SELECT count(*) FROM '{schedulecache.TABLE}'").fetchone()[0]


def test_a_later_run_reads_the_schedule_instead_of_scheduling(fresh, monkeypatch):
    first = affine([1, 2, 3, 4], 0.5)
    assert fresh["scheduled"] >= 1 and stored_rows() >= 1
    later_run(monkeypatch)
    before = fresh["scheduled"]
    again = affine([4, 3, 2, 1], 0.5)   # same shapes and constants, new values
    assert fresh["scheduled"] == before, "the scheduler ran although the schedule was on disk"
    np.testing.assert_array_equal(again, affine_numpy([4, 3, 2, 1], 0.5))
    np.testing.assert_array_equal(first, affine_numpy([1, 2, 3, 4], 0.5))


def affine_numpy(data, scale: float) -> np.ndarray:
    x = np.asarray(data, dtype=np.float32)
    return (np.exp2(x * np.float32(scale) + 1).sum() + x).astype(np.float32)


@pytest.mark.parametrize("change", ["shape", "constant", "setting"])
def test_a_changed_graph_or_setting_is_scheduled_again(fresh, monkeypatch, change):
    affine([1, 2, 3, 4], 0.5)
    later_run(monkeypatch)
    before = fresh["scheduled"]
    data, scale = ([1, 2, 3, 4, 5], 0.5) if change == "shape" else ([1, 2, 3, 4], 0.25 if change == "constant" else 0.5)
    with Context(NOOPT=1) if change == "setting" else Context():
        got = affine(data, scale)
    assert fresh["scheduled"] > before, f"a changed {change} reused a stored schedule"
    np.testing.assert_allclose(got, affine_numpy(data, scale), rtol=1e-6)


def test_negative_control_a_key_that_ignores_the_graph_gives_wrong_numbers(fresh, monkeypatch):
    """Plant the bug the key exists to prevent: every graph shares one key. The scaled-by-0.25 run then
    replays the 0.5 schedule, and the comparison the tests above make fails."""
    monkeypatch.setattr(schedulecache, "disk_key", lambda function: "one key for every graph")
    affine([1, 2, 3, 4], 0.5)
    later_run(monkeypatch)
    got = affine([1, 2, 3, 4], 0.25)
    assert not np.allclose(got, affine_numpy([1, 2, 3, 4], 0.25), rtol=1e-6)


def test_the_stored_form_decodes_to_the_same_graph(fresh, monkeypatch):
    captured = []
    real = schedulecache.ORIGINAL
    monkeypatch.setattr(schedulecache, "ORIGINAL", lambda function: captured.append(real(function)) or captured[-1])
    affine([1, 2, 3, 4], 0.5)
    linears = [lin for lin in captured if lin is not None]
    assert linears
    for lin in linears:
        assert schedulecache.decode(schedulecache.encode(lin)) is lin


def test_a_graph_with_a_python_callback_is_neither_stored_nor_looked_up():
    call = UOp(Ops.SINK, src=(UOp(Ops.CONST, dtypes.int, arg=1),))
    hooked = UOp(Ops.CALL, src=(call,), arg=CallInfo(grad_fxn=lambda *a: a))
    assert schedulecache.storable(call)
    assert not schedulecache.storable(hooked)
    with pytest.raises(schedulecache.Unstorable):
        schedulecache.encode(hooked)


def test_nothing_is_stored_when_the_disk_cache_is_off(fresh):
    with Context(CACHELEVEL=0):
        affine([1, 2, 3, 4], 0.5)
    with pytest.raises(sqlite3.OperationalError):   # the table was never created
        stored_rows()
