"""tinyref.runtime.cpugraph: a jitted step replayed from C, on every core, gives the same numbers, bit for bit,
as tinygrad's own kernel-by-kernel replay (the same kernels, in the same order, each thread writing
its own share of each output).

The runs are adamw_case's three jitted AdamW steps (tests/helpers.py, already compiled for the other
tests). Each run chooses its replay by setting the device's graph class between building the step
and its first call, when TinyJit captures it. Negative controls plant the two ways a replay can go
stale: input buffers (the batch) not re-pointed between calls, and symbolic values (KV-cache
positions) not updated.
"""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from tinygrad import Device, Tensor, TinyJit

from helpers import TIED, adamw_case, adamw_run, load_params
from tinyref import GPTStyleTransformer
from tinyref.runtime import cpugraph
from tinyref.runtime.devices import current_device
from tinyref.generation.kvcache import KVCache
from tinyref.train import make_train_step

DEVICE = cpugraph.buffer_device(current_device())   # CPU:LLVM's tensors live on CPU
pytestmark = pytest.mark.skipif(type(Device[DEVICE]).__name__ != "CPUDevice" or not cpugraph.install(DEVICE),
                                reason="tinyref.runtime.cpugraph replays the CPU device only (and needs clang to build its runner)")


class CountingGraph(cpugraph.CPUGraph):
    """The real graph, counting its replays (so a test can tell it was used)."""
    replays = 0

    def __call__(self, input_uops, var_vals, wait=False):
        type(self).replays += 1
        return super().__call__(input_uops, var_vals, wait)


class StaleInputsGraph(cpugraph.CPUGraph):
    """Planted bug: replays keep the input addresses of the capture (every step sees the first batch)."""

    def __call__(self, input_uops, var_vals, wait=False):
        cpugraph.RUNNER.tinyref_run(self.table, self.count)


class StaleVariablesGraph(cpugraph.CPUGraph):
    """Planted bug: symbolic values (positions, token ids) keep their value from the capture."""

    def updated_vars(self, var_vals):
        return iter(())


def run_with(graph):
    """adamw_run() with the step captured under ``graph`` (None: tinygrad's own replay)."""
    device = DEVICE

    def make_step(model, opt):
        step = make_train_step(model, opt)     # installs CPUGraph; the capture happens at the first call
        Device[device].graph = graph
        return step
    try:
        return adamw_run(make_step)
    finally:
        cpugraph.install(device)


@pytest.fixture(scope="module")
def tinygrad_replay():
    return run_with(None)


def test_graph_replay_is_bit_identical_to_tinygrad_replay(tinygrad_replay):
    CountingGraph.replays = 0
    losses, weights = run_with(CountingGraph)
    assert CountingGraph.replays >= 2, "the C replay was not used"
    assert losses == tinygrad_replay[0]
    for name, expected in tinygrad_replay[1].items():
        assert np.array_equal(weights[name], expected), f"{name}: differs from tinygrad's replay"


def test_graph_runs_kernels_on_every_core():
    from tinygrad.helpers import NUM_CPU_THREADS
    assert cpugraph.runner_threads() == min(NUM_CPU_THREADS.value, 64)


def test_control_stale_inputs_are_caught(tinygrad_replay):
    losses, _ = run_with(StaleInputsGraph)
    assert losses[0] == tinygrad_replay[0][0]           # the table holds the first batch: step 1 is right
    assert losses[1:] != tinygrad_replay[0][1:]


def decoded_logits(graph) -> np.ndarray:
    """Logits of KV-cache decoding after a prompt of 3 and 4 more tokens, captured under ``graph``."""
    device = DEVICE
    model = GPTStyleTransformer(TIED)
    load_params(model, adamw_case()[0])
    decoder = KVCache(model)                    # installs CPUGraph
    Device[device].graph = graph
    try:
        out = [decoder.prefill([1, 2, 3]).numpy()] + [decoder.extend(t).numpy() for t in (4, 5, 6, 7)]
    finally:
        cpugraph.install(device)
    return np.stack(out)


def test_graph_decoding_matches_and_stale_variables_are_caught():
    reference = decoded_logits(None)
    assert np.array_equal(decoded_logits(cpugraph.CPUGraph), reference)
    assert not np.array_equal(decoded_logits(StaleVariablesGraph), reference)


class WidestGroupGraph(cpugraph.CPUGraph):
    """The real graph, recording the most threads any of its kernels is split over."""
    widest = 0

    def __init__(self, linear, input_uops=()):
        super().__init__(linear, input_uops)
        type(self).widest = max(type(self).widest, *(self.table[i * cpugraph.STRIDE + 1] for i in range(self.count)))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_replays_without_the_parents_workers():
    """Only the forking thread survives a fork: the child must run every share of a threaded kernel itself,
    not wait for workers that do not exist (it would hang). Child and parent must agree bit for bit."""
    device = DEVICE
    Device[device].graph = WidestGroupGraph
    try:
        @TinyJit
        def mlp(a: Tensor) -> Tensor:          # matmuls big enough for tinygrad to split over threads
            return ((a @ a).relu() @ a).realize()
        a = Tensor(np.random.default_rng(0).standard_normal((128, 128), dtype=np.float32)).realize()
        expected = [mlp(a).numpy() for _ in range(3)][-1]   # TinyJit captures on the second call
    finally:
        cpugraph.install(device)
    if WidestGroupGraph.widest < 2:
        pytest.skip("no kernel here is split over threads (one CPU core?): nothing a fork could break")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                                         # the child: one replay, its result down the pipe
        try:
            os.write(write_end, mlp(a).numpy().tobytes())
        finally:
            os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + 60
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's replay hung (waiting for the parent's worker threads)")
        time.sleep(0.05)
    with os.fdopen(read_end, "rb") as pipe:
        child = pipe.read()
    assert len(child) == expected.nbytes, "the forked child died before reporting its result"
    assert np.array_equal(np.frombuffer(child, np.float32).reshape(expected.shape), expected)


def test_a_runner_that_does_not_compile_leaves_tinygrads_path(tmp_path, monkeypatch):
    """A compile error (or no clang), or no writable cache folder: build_runner() says None (install then keeps tinygrad's own replay)
    and leaves no half-written library behind."""
    broken = tmp_path / "cpugraph.c"
    broken.write_text("this is not C\n")
    monkeypatch.setattr(cpugraph, "SOURCE", broken)
    monkeypatch.setattr(cpugraph, "cache_dir", str(tmp_path / "cache"))
    assert cpugraph.build_runner() is None
    assert not list((tmp_path / "cache").rglob("*.so"))
    monkeypatch.setattr(cpugraph, "cache_dir", "/proc/no-such-folder")   # a cache folder that cannot be made
    assert cpugraph.build_runner() is None
