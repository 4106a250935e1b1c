"""Test session setup: Hypothesis profiles, the tinygrad devices under test, and a header naming them.

``pytest --device X`` (repeatable, or ``all``; default all) picks the backends the per-device
agreement tests run on. A device this machine cannot use is skipped with the reason, never passed.
Each device's results are computed once per worker (``device_result``) and shared by its tests;
with pytest-xdist, a device's tests are grouped onto one worker so its kernels compile once.
"""
import os

import pytest
from hypothesis import HealthCheck, settings

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
    from tinyref.check_cli import selected_devices
    from tinyref.devices import select_device
    from tinyref.errors import TinyrefError
    try:
        config.tinyref_devices = selected_devices(config.getoption("--device") or ["all"])
        config.tinyref_default = select_device(None)   # DEV if set, else tinyref's default (GPU > CPU > CL)
    except TinyrefError as e:
        raise pytest.UsageError(str(e)) from None
    # under xdist, keep each device's tests on one worker (they share one compiled model): 'load' -> 'loadgroup'
    if getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"
    # a worker decides whether to tag tests with their group before this hook runs: tell it (see below)
    if getattr(config, "workerinput", {}).get("tinyref_loadgroup"):
        config.option.loadgroup = True


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist: pass the controller's 'loadgroup' to each worker, which reads --dist before conftest can change it."""
    node.workerinput["tinyref_loadgroup"] = node.config.getvalue("dist") == "loadgroup"


def pytest_report_header(config):
    from importlib.metadata import version

    from tinyref.devices import available_devices, describe_device
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


@pytest.hookimpl(tryfirst=True)   # before xdist's worker reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        params = getattr(item, "callspec", None) and item.callspec.params or {}
        device = next((params[p] for p in DEVICE_PARAMS if p in params), None)
        if device is not None:
            item.add_marker(pytest.mark.xdist_group(device))


_results = {}


def device_result(device: str, dtype: str = "float32", case=None):
    """tinyref.check.run_case for this device, dtype and case, computed once per worker;
    skips (with the reason) when the device or dtype cannot run here."""
    from tinyref.check import run_case
    from tinyref.devices import dtype_support, probe_device
    reason = probe_device(device) or dtype_support(device, dtype)
    if reason is not None:
        pytest.skip(f"{device} {dtype} not available here: {reason}")
    key = (device, dtype, case)
    if key not in _results:
        _results[key] = run_case(device, dtype, case)
    return _results[key]
