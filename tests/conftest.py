"""Test session setup: Hypothesis profiles, the tinygrad devices under test, and a header naming them.

``pytest --device X`` (repeatable, or ``all``; default all) picks the backends the per-device
agreement tests run on. A device this machine cannot use is skipped with the reason, never passed.
Each device's results are computed once per worker (``device_result``) and shared by its tests;
with pytest-xdist, a device's tests are grouped onto one worker so its kernels compile once, each other
module's tests too (its module-scoped fixtures are made once), and the longest units start first.
"""
import collections
import os

# Compile each kernel in the process that needs it. tinygrad's default starts a pool of compile processes, one per
# core, in every process that compiles (each importing tinygrad and tinyref: about 1.6 s of CPU for the demo's
# first step); under `pytest -n 2` on two cores both cores already run tests, so the pools only add that work
# (the README's test command, cold: 235 s with this, 246 s without). Kernel optimisation runs in this process
# either way; a user's run keeps tinygrad's pool.
os.environ.setdefault("PARALLEL", "0")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=25, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", deadline=None, max_examples=50, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=500, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# thorough mode: reduced-precision dtypes and the two-layer case on every selected device
THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
# parameters naming a device: tests carrying one are grouped per device under xdist
DEVICE_PARAMS = ("backend", "default_backend", "dtype_backend")


def pytest_addoption(parser):
    parser.addoption("--device", action="append", default=None, metavar="NAME",
                     help="tinygrad device for the per-device agreement tests (repeatable, or 'all'; default all): "
                          "CPU, CPU:LLVM, CPU:X86, CL, PYTHON, CUDA, NV, AMD, METAL, WEBGPU")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    from tinyref.cli.check import selected_devices
    from tinyref.runtime.devices import select_device
    from tinyref.errors import TinyrefError
    try:
        config.tinyref_devices = selected_devices(config.getoption("--device") or ["all"])
        config.tinyref_default = select_device(None)   # DEV if set, else tinyref's default (GPU > CPU:LLVM > CPU > CL)
    except TinyrefError as e:
        raise pytest.UsageError(str(e)) from None
    # the tests' subprocesses (the CLI, checkpoint writers, the examples) use the same device: tinygrad alone
    # would pick PoCL's CL where it is installed, which compiles about twice as slowly
    os.environ.setdefault("DEV", config.tinyref_default)
    # under xdist, keep each device's tests on one worker (they share one compiled model): see below
    if getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"


# Under ``pytest -n``, a test module is one unit of work: its module-scoped fixtures (a built site, a trained run
# folder, a demo run) and the kernels its tests compile are made once, on one worker. Modules that share more than
# that are one unit together: test_generate.py and test_kvcache.py compile TIED's generation kernels once (their
# ``xdist_group("generation")`` marks say so, but pytest-xdist 3.8's marks group nothing under pytest 9.2).
MODULE_GROUPS = {"tests/test_generate.py": "generation", "tests/test_kvcache.py": "generation"}
# The units that take longest, started first so that the two workers finish together (largest first, as measured
# with --durations on 2 cores): PoCL's device tests compile slowest, then the default device's (every dtype). The
# demo's module comes next: it compiles the S config's step, which the benchmark module's subprocesses then find on
# disk. Then the words-as-vectors module (it trains two models) and the modules that train or benchmark in
# subprocesses. Every other unit follows, those with more tests first (pytest-xdist's order).
FIRST = ("CL", "CPU:LLVM", "tests/test_demo.py", "tests/test_embeddings.py", "tests/test_crash.py", "tests/test_runs.py",
         "tests/test_bench.py", "tests/test_check_cli.py", "tests/test_train.py", "tests/test_parallel.py", "generation")


def xdist_scope(nodeid: str, devices) -> str:
    """The unit of work of a test under ``pytest -n``: the device it runs on (the first test parameter that
    names one), an explicit ``@group`` suffix, else its module's group in MODULE_GROUPS, else its module."""
    if nodeid.rfind("@") > nodeid.rfind("]"):
        return nodeid.rsplit("@", 1)[-1]
    if nodeid.endswith("]"):
        device = next((p for p in nodeid[nodeid.index("[") + 1:-1].split("-") if p in devices), None)
        if device is not None:
            return device
    module = nodeid.split("::")[0]
    return MODULE_GROUPS.get(module, module)


class FirstUnitsFirst(collections.OrderedDict):
    """pytest-xdist's queue of units (scope -> tests), handing out the FIRST units before the others, which keep
    xdist's order."""

    def popitem(self, last=True):
        if last:
            return super().popitem(last)
        scope = min(self, key=lambda s: FIRST.index(s) if s in FIRST else len(FIRST))   # min: the earliest of equals
        return scope, self.pop(scope)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist's loadgroup, with the groups computed here: pytest-xdist 3.8 tags a test with its xdist_group
    mark by rewriting ``item._nodeid``, which pytest 9.2 no longer reads, so marks alone group nothing."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class DeviceScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid, config.tinyref_devices)

        def __init__(self, config, log=None):
            super().__init__(config, log)
            self.workqueue = FirstUnitsFirst()

    return DeviceScheduling(config, log)


def pytest_report_header(config):
    from importlib.metadata import version

    from tinyref.runtime.devices import available_devices, describe_device
    found = available_devices(config.tinyref_devices)
    lines = [f"tinyref default device: {describe_device()} (tinygrad {version('tinygrad')}); "
             f"Hypothesis profile: {os.environ.get('HYPOTHESIS_PROFILE', 'ci')}{' (thorough device matrix)' if THOROUGH else ''}",
             f"devices under test: {', '.join(d for d, r in found.items() if r is None) or 'none'}"]
    lines += [f"  skipped {d}: {r}" for d, r in found.items() if r is not None]
    return lines


def pytest_generate_tests(metafunc):
    config = metafunc.config
    chosen = config.getoption("--device") is not None
    values = {"backend": config.tinyref_devices,
              "default_backend": [config.tinyref_default],
              # reduced precision costs a compile per dtype: default device only, unless asked for
              "dtype_backend": config.tinyref_devices if chosen or THOROUGH else [config.tinyref_default]}
    for name in DEVICE_PARAMS:
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, values[name], scope="session")


_results = {}


def device_result(device: str, dtype: str = "float32", case=None):
    """tinyref.verify.check.run_case for this device, dtype and case, computed once per worker;
    skips (with the reason) when the device or dtype cannot run here."""
    from tinyref.verify.check import run_case
    from tinyref.runtime.devices import dtype_support, probe_device
    reason = probe_device(device) or dtype_support(device, dtype)
    if reason is not None:
        pytest.skip(f"{device} {dtype} not available here: {reason}")
    key = (device, dtype, repr(case))   # GPTConfig is not hashable; its repr names every field
    if key not in _results:
        _results[key] = run_case(device, dtype, case)
    return _results[key]
