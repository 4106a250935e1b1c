"""``tinyref check``: the table and JSON it prints, its exit status, and its errors for bad flags.

In-process runs reuse the default device's shared result (``device_result``) through a stand-in for
``run_case``, so only the one end-to-end subprocess compiles (from tinygrad's disk cache, mostly).
"""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import tinygrad.codegen as codegen
import tinygrad.engine.realize as realize
from tinygrad import Context, Device
from tinygrad.codegen.opt import OptOps
from tinygrad.uop.ops import Ops

import tinyref.cli.check
import tinyref.verify.check
from conftest import device_result
from tinyref.cli import main
from tinyref.runtime import kernelopts, programcache
from tinyref.runtime.devices import KNOWN_DEVICES, probe_device
from tinyref.verify.tolerances import FLOAT32, FLOAT32_GRAD

ROOT = Path(__file__).resolve().parents[1]
ROW_KEYS = {"device", "dtype", "forward_max_err", "grad_max_err", "causal_ok", "seconds", "ok", "reason", "model", "kernel_opts"}
# kernelopts' rules that a training step uses, each a function of a kernel (its block of dot products serves
# generation's forward passes over a short window, tests/test_kernelopts.py)
KERNEL_RULES = ("tiled_matmul", "vector_column_sum")
ELEMENTWISE_RULE = "wide_elementwise"                                     # and the one for elementwise kernels


def unavailable_device() -> str:
    name = next((d for d in reversed(KNOWN_DEVICES) if probe_device(d) is not None), None)
    if name is None:
        pytest.skip("every tinygrad device works on this machine: none to report as unavailable")
    return name


@pytest.fixture
def shared_runs(monkeypatch, default_backend):
    """run_case answered with the default device's shared result; ``plant[device] = x`` adds x to one of
    its gradients in the answers that follow."""
    shared = device_result(default_backend)
    planted = {}

    def run_case(device, dtype="float32", case=None, seed=0, adamw_step=True):
        assert (device, dtype, case, seed) == (default_backend, "float32", None, 0), "only the shared run is stored"
        if device not in planted:
            return shared
        actual = {**shared.actual, "grad wte.weight": shared.actual["grad wte.weight"] + planted[device]}
        return dataclasses.replace(shared, actual=actual, mismatches=tinyref.verify.check.judge(
            device, dtype, shared.case.config, actual, shared.expected))

    monkeypatch.setattr(tinyref.verify.check, "run_case", run_case)
    return default_backend, planted


def check_json(capsys, *argv) -> tuple[int, dict]:
    status = main(["check", *argv, "--json"])
    return status, json.loads(capsys.readouterr().out)


def test_json_schema_and_exit_0_when_every_device_that_ran_agrees(shared_runs, capsys):
    device, _ = shared_runs
    missing = unavailable_device()
    status, report = check_json(capsys, "--device", device, missing)
    assert status == 0 and list(report) == ["devices"]
    ran, skipped = report["devices"]
    assert set(ran) == ROW_KEYS and set(skipped) == ROW_KEYS
    assert ran["device"] == device and ran["dtype"] == "float32" and ran["ok"] is True and ran["causal_ok"] is True
    assert ran["reason"] is None and 0 < ran["forward_max_err"] < FLOAT32.atol and 0 < ran["grad_max_err"] < FLOAT32_GRAD.atol
    assert ran["seconds"] > 0
    assert skipped["device"] == missing and skipped["ok"] is None and skipped["reason"]
    assert all(skipped[k] is None for k in ("forward_max_err", "grad_max_err", "causal_ok", "seconds"))


def test_exit_1_and_the_reason_when_a_device_disagrees(shared_runs, capsys):
    device, planted = shared_runs
    planted[device] = 1e-3          # every element of one gradient off by 1e-3: far beyond float32 rounding
    status, report = check_json(capsys, "--device", device)
    row = report["devices"][0]
    assert status == 1 and row["ok"] is False and row["causal_ok"] is True
    assert row["grad_max_err"] > FLOAT32_GRAD.atol and "grad wte.weight" in row["reason"] and "worst element at index" in row["reason"]


def test_table_names_each_device_and_verdict(shared_runs, capsys):
    device, planted = shared_runs
    missing = unavailable_device()
    assert main(["check", "--device", device, missing]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["device", "dtype"]
    assert lines[1].startswith(device) and lines[1].endswith(" ok")
    assert lines[2].startswith(missing) and "skipped: " in lines[2]
    assert lines[-1] == "1 of 1 runs agree with the oracle; 1 not available here"
    planted[device] = 1e-3
    assert main(["check", "--device", device]) == 1
    assert "DISAGREES: " in capsys.readouterr().out


def test_a_device_that_crashes_disagrees_with_the_reason(monkeypatch, default_backend, capsys):
    def run_case(*args, **kwargs):
        raise RuntimeError("kernel failed to launch")
    monkeypatch.setattr(tinyref.verify.check, "run_case", run_case)
    status, report = check_json(capsys, "--device", default_backend)
    assert status == 1 and report["devices"][0]["ok"] is False
    assert report["devices"][0]["reason"] == "crashed: RuntimeError: kernel failed to launch"


def test_nothing_able_to_run_is_a_one_line_runtime_error(monkeypatch, capsys, default_backend):
    monkeypatch.setattr(tinyref.verify.check, "run_case", lambda *a, **k: pytest.fail("an unsupported dtype must not run"))
    monkeypatch.setattr(tinyref.verify.check, "dtype_support", lambda device, dtype: f"no {dtype} here")
    assert main(["check", "--device", default_backend, "--dtype", "bfloat16", "--json"]) == 1
    captured = capsys.readouterr()
    assert [(r["ok"], r["reason"]) for r in json.loads(captured.out)["devices"]] == [(None, "no bfloat16 here")]
    assert captured.err == ("tinyref: error: none of the selected devices and dtypes can run here (see the reasons "
                            "above); try '--device all' or install clang\n")


@pytest.mark.parametrize("argv, message", [
    (["--device", "TPU"], "unknown device 'TPU': choose one of CPU, CPU:LLVM"),
    (["--dtype", "float8"], "argument --dtype: invalid choice: 'float8'"),
    (["--seed", "x"], "argument --seed: invalid int value: 'x'"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_bad_flags_are_one_line_usage_errors(argv, message, capsys):
    try:
        status = main(["check", *argv])
    except SystemExit as e:     # argparse's own errors exit from inside parse_args
        status = e.code
    captured = capsys.readouterr()
    assert status == 2 and captured.out == ""
    assert captured.err.startswith("tinyref: error: ") and captured.err.count("\n") == 1 and message in captured.err


def test_end_to_end_json_from_the_command_line(default_backend):
    """The real command in a fresh process: a usable device agrees, an unavailable one is null with its reason."""
    missing = unavailable_device()
    done = subprocess.run([sys.executable, "-m", "tinyref", "check", "--device", default_backend, missing, "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["devices"]
    assert [(r["device"], r["ok"]) for r in rows] == [(default_backend, True), (missing, None)], rows
    assert [r["kernel_opts"] for r in rows] == [kernelopts.RULE, None]   # the opts train and bench install
    assert "Traceback" not in done.stderr


def test_bad_device_from_the_command_line_has_no_traceback():
    done = subprocess.run([sys.executable, "-m", "tinyref", "check", "--device", "cpu,nope"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "tinyref: error: unknown device 'nope': choose one of " + ", ".join(KNOWN_DEVICES) + "\n"


def test_the_nanogpt_variant_is_checked_on_request(default_backend, capsys):
    """--model nanogpt: nanoGPT's variant (exact GELU, no biases) agrees too; --model gpt2 is the default run."""
    row = tinyref.verify.check.check_one(default_backend, "float32", 0, "nanogpt")
    assert (row.model, row.ok, row.causal_ok) == ("nanogpt", True, True), row
    assert 0 < row.forward_max_err < FLOAT32.atol and 0 < row.grad_max_err < FLOAT32_GRAD.atol
    case = tinyref.verify.check.case_for(default_backend, "nanogpt")
    assert (case.config.activation, case.config.bias) == ("gelu", False)
    with pytest.MonkeyPatch.context() as mp:        # the gpt2 row is the shared default run, not recompiled
        mp.setattr(tinyref.verify.check, "run_case", lambda device, dtype, case=None, seed=0: (
            device_result(default_backend) if case is None else pytest.fail("gpt2 must run the default case")))
        status, report = check_json(capsys, "--device", default_backend, "--model", "gpt2")
    assert status == 0 and [r["model"] for r in report["devices"]] == ["gpt2"]


def row_against_another_oracle(monkeypatch, device: str, model: str, **fields):
    """The check row of ``model`` on ``device`` judged against the oracle of its config with ``fields`` replaced."""
    real = tinyref.verify.check.run_oracle

    def other_oracle(case, *args):
        return real(dataclasses.replace(case, config=dataclasses.replace(case.config, **fields)), *args)
    monkeypatch.setattr(tinyref.verify.check, "run_oracle", other_oracle)
    return tinyref.verify.check.check_one(device, "float32", 0, model)


def test_the_nanogpt_check_fails_when_the_oracle_computes_gpt2(default_backend, monkeypatch):
    """Negative control: the variant's run judged against the oracle of GPT-2's tanh GELU fails on the logits."""
    row = row_against_another_oracle(monkeypatch, default_backend, "nanogpt", activation="gelu_tanh")
    assert row.ok is False and "logits" in row.reason


def test_the_llama_variant_is_checked_on_request(default_backend, capsys, monkeypatch):
    """--model llama runs the Llama case (rotary positions, RMSNorm, SwiGLU, 2 kv heads) and prints its row: the
    device's shared Llama run (tests/test_devices.py), not recompiled here."""
    llama = tinyref.verify.check.case_for(default_backend, "llama")
    assert (llama.config.positions, llama.config.norm, llama.config.gated_mlp, llama.config.n_kv_heads) == (
        "rope", "rmsnorm", True, 2)
    shared = device_result(default_backend, case=llama)
    monkeypatch.setattr(tinyref.verify.check, "run_case", lambda device, dtype, case=None, seed=0: (
        shared if case == llama else pytest.fail("llama must run its own case")))
    status, report = check_json(capsys, "--device", default_backend, "--model", "llama")
    (row,) = report["devices"]
    assert status == 0 and (row["model"], row["ok"], row["causal_ok"]) == ("llama", True, True), row
    assert 0 < row["forward_max_err"] < FLOAT32.atol and 0 < row["grad_max_err"] < FLOAT32_GRAD.atol


def test_the_llama_check_fails_when_the_oracle_pairs_other_rotary_dimensions(default_backend, monkeypatch):
    """Negative control: the Llama run judged against an oracle that rotates interleaved pairs fails on the logits."""
    row = row_against_another_oracle(monkeypatch, default_backend, "llama", rope_style="interleaved")
    assert row.ok is False and "logits" in row.reason


@pytest.fixture
def fake_processes(monkeypatch):
    """subprocess.Popen in tinyref.cli.check replaced by a Python one-liner per device: ``scripts[device]`` is its
    code (default: print an agreeing JSON row for that device); the argv and environment of each start are kept."""
    started, scripts = [], {}
    real_popen = subprocess.Popen

    def popen(argv, env, **kwargs):
        device = argv[argv.index("--device") + 1]
        started.append((device, argv, env))
        row = {**dict.fromkeys(ROW_KEYS), "device": device, "dtype": "float32", "model": "gpt2", "ok": True,
               "causal_ok": True, "forward_max_err": 1e-7, "grad_max_err": 1e-6, "seconds": 1.0}
        code = scripts.get(device, f"print({json.dumps(json.dumps({'devices': [row]}))})")
        return real_popen([sys.executable, "-c", code], **kwargs)
    monkeypatch.setattr(tinyref.cli.check.subprocess, "Popen", popen)
    return started, scripts


def test_cpu_backends_run_at_once_in_processes_of_their_own(fake_processes, capsys):
    """Several CPU backends: one `tinyref check --json` process each, the slowest (CL) started first, rows in
    the order asked for, each process compiling alone (PARALLEL=0)."""
    started, _ = fake_processes
    assert main(["check", "--device", "PYTHON", "CPU", "CL"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:4]] == ["PYTHON", "CPU", "CL"] and all(line.endswith(" ok") for line in lines[1:4])
    assert lines[-1] == "3 of 3 runs agree with the oracle; 0 not available here"
    assert [device for device, _, _ in started] == ["CL", "CPU", "PYTHON"]
    assert all(argv[1:4] == ["-m", "tinyref", "check"] and argv[-1] == "--json" and env["PARALLEL"] == "0"
               for _, argv, env in started)


def test_a_backend_whose_process_dies_is_a_crashed_row(fake_processes, capsys):
    """A process killed by a signal prints no JSON: its device is a disagreeing row naming the status and
    the last line it wrote, not a traceback; the other backends' rows stand."""
    _, scripts = fake_processes
    scripts["CL"] = "import os, sys; sys.stderr.write('Fatal Python error: Segmentation fault\\n'); sys.stderr.flush(); os.abort()"
    status, report = check_json(capsys, "--device", "CPU", "CL")
    crashed, = [r for r in report["devices"] if r["device"] == "CL"]
    assert status == 1 and [r["device"] for r in report["devices"]] == ["CPU", "CL"]
    assert crashed["ok"] is False and crashed["model"] == "gpt2" and crashed["dtype"] == "float32"
    assert crashed["reason"] == ("crashed: the check process exited with status -6 "
                                 "(Fatal Python error: Segmentation fault)")



def wrong_sums(rule, optimised_kernels: list):
    """kernelopts' ``rule``, except that every kernel it optimises (listed in ``optimised_kernels``) accumulates its
    sum 0.1% too large, ten times the gradient tolerance: a kernel optimisation that computes a wrong result."""
    def broken(k):
        if (optimised := rule(k)) is None:
            return None
        total = optimised.reduceop
        optimised.ast = optimised.ast.substitute({total: total.replace(src=(total.src[0] * 1.001, *total.src[1:]))})
        optimised_kernels.append(sorted(o.arg for o in optimised.applied_opts if o.op is OptOps.UPCAST))
        return optimised
    return broken


def wrong_stores(rule, optimised_kernels: list):
    """kernelopts' elementwise ``rule``, except that every kernel it widens (listed in ``optimised_kernels``) stores
    values 0.1% too large."""
    def broken(k, chosen):
        if (optimised := rule(k, chosen)) is chosen:
            return chosen
        stores = [u for u in optimised.ast.toposort() if u.op is Ops.STORE]
        optimised.ast = optimised.ast.substitute({s: s.replace(src=(s.src[0], s.src[1] * 1.001, *s.src[2:])) for s in stores})
        optimised_kernels.append(optimised.full_shape)
        return optimised
    return broken


def test_a_wrong_kernel_optimisation_fails_the_check(default_backend, monkeypatch, capsys):
    """Negative control: the check runs the kernels that tinyref's optimisations make in training, each of the
    rules takes some of them, and with those rules summing wrongly the check fails. Compiled here, now
    (PARALLEL=0, no disk cache, an empty program cache): the wrong kernels are made in this process and kept
    nowhere after the test."""
    renderer = Device[default_backend.split(":")[0]].renderer
    if not kernelopts.vector_registers() or renderer.target.device != "CPU":
        pytest.skip("tinyref's kernel optimisations act on x86-64 CPUs with AVX2 and FMA only")
    optimised = {rule: [] for rule in (*KERNEL_RULES, ELEMENTWISE_RULE)}
    for rule in KERNEL_RULES:
        monkeypatch.setattr(kernelopts, rule, wrong_sums(getattr(kernelopts, rule), optimised[rule]))
    monkeypatch.setattr(kernelopts, ELEMENTWISE_RULE, wrong_stores(kernelopts.wide_elementwise, optimised[ELEMENTWISE_RULE]))
    empty = programcache.DiskBackedPrograms()
    monkeypatch.setattr(codegen, "to_program_cache", empty)
    monkeypatch.setattr(realize, "to_program_cache", empty)
    with Context(PARALLEL=0, CCACHE=0):
        status, report = check_json(capsys, "--device", default_backend)
    row, = report["devices"]
    assert all(optimised.values()), f"a rule takes none of the check's kernels: {optimised}"
    if kernelopts.vector_width(renderer) == 16:   # LLVM, AVX-512: the 8 x 32 tile of M's and L's products is among them
        assert [2, 8, 16] in optimised["tiled_matmul"], optimised["tiled_matmul"]
    assert status == 1 and row["ok"] is False and row["kernel_opts"] == kernelopts.RULE, row
    assert row["forward_max_err"] > FLOAT32.atol and row["grad_max_err"] > FLOAT32_GRAD.atol, row
