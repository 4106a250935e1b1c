"""``tinyref check``: oracle agreement on every selected device and dtype, as a table or JSON."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import IO

from ..verify.check import MODELS, CheckRow, check_one
from ..runtime.devices import CPU_DEVICES, DTYPES, KNOWN_DEVICES, normalize_device, prepare_compiler
from ..errors import TinyrefError
from .flags import SEED

COLUMNS = ("device", "dtype", "model", "kernel opts", "forward err", "grad err", "causal", "seconds", "verdict")
WIDTHS = (9, 9, 8, 12, 12, 10, 7, 8, 0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", nargs="+", default=["all"], metavar="NAME",
                   help=f"devices to check, or 'all' (default): {', '.join(KNOWN_DEVICES)}")
    p.add_argument("--dtype", nargs="+", default=["float32"], choices=list(DTYPES), metavar="DTYPE",
                   help="float32 (default), float16, bfloat16; unsupported ones are reported, not run")
    p.add_argument("--model", nargs="+", default=["gpt2"], choices=list(MODELS), metavar="MODEL",
                   help="gpt2 (default: tanh GELU, biases), nanogpt (exact GELU, no biases, as nanoGPT's "
                        "bias=False) and/or llama (rotary positions, RMSNorm, SwiGLU, 2 kv heads): each runs the "
                        "check case as that variant")
    p.add_argument("--seed", type=SEED, default=0, help="seed for the weights and tokens (default 0)")
    p.add_argument("--json", action="store_true", help='print {"devices": [...]} instead of the table')


def selected_devices(specs: list[str]) -> list[str]:
    """'all' -> every known device; names may also be comma-separated; order kept, duplicates dropped."""
    names = [n for spec in specs for n in spec.split(",") if n.strip()]
    expanded = [d for n in names for d in (KNOWN_DEVICES if n.strip().lower() == "all" else [normalize_device(n)])]
    return list(dict.fromkeys(expanded))


# The CPU backends each get a process of their own when several are checked, so their compilers run at once;
# the slowest to compile starts first (cold, PoCL's CL takes about twice the CPU time of any other).
START_ORDER = ("CL", "CPU", "CPU:X86", "CPU:LLVM", "PYTHON")


def device_rows(devices: list[str], args: argparse.Namespace):
    """Every check row, device by device in the order given. With two or more CPU backends, each of them runs in a
    ``tinyref check`` process of its own, all started at once; every other device runs here."""
    spawned = [d for d in START_ORDER if d in devices] if len([d for d in devices if d in CPU_DEVICES]) > 1 else []
    procs = {d: start_check_process(d, args) for d in spawned}
    for device in devices:
        if device in procs:
            yield from rows_from_process(procs[device], device, args)
        else:
            yield from (check_one(device, dtype, args.seed, model) for dtype, model in runs(args))


def start_check_process(device: str, args: argparse.Namespace) -> tuple[subprocess.Popen, IO[str]]:
    """``tinyref check --json`` for one device, compiling in that process alone (PARALLEL=0: the processes
    already share the cores, and tinygrad's compile pool would import tinygrad twice more in each)."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PARALLEL": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    argv = [sys.executable, "-m", "tinyref", "check", "--device", device, "--dtype", *args.dtype,
            "--model", *args.model, "--seed", str(args.seed), "--json"]
    # stdout is a few rows of JSON; stderr (compiler chatter) goes to a file so that no pipe fills up and stalls it
    err = tempfile.TemporaryFile("w+")
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=err, text=True), err


def rows_from_process(started: tuple[subprocess.Popen, IO[str]], device: str, args: argparse.Namespace) -> list[CheckRow]:
    """The rows a device's process printed; a process that died without them is a crashed row per run."""
    proc, err = started
    out, _ = proc.communicate()
    with err:
        try:
            return [CheckRow(**row) for row in json.loads(out)["devices"]]
        except (ValueError, KeyError, TypeError):
            err.seek(0)
            last = next((line.strip() for line in reversed(err.read().splitlines()) if line.strip()), "no output")
    reason = f"crashed: the check process exited with status {proc.returncode} ({last})"[:400]
    return [CheckRow(device, dtype, ok=False, reason=reason, model=model) for dtype, model in runs(args)]


def runs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The (dtype, model) pairs each device runs, duplicates dropped."""
    return [(dtype, model) for dtype in dict.fromkeys(args.dtype) for model in dict.fromkeys(args.model)]


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table_line(row) -> str:
    verdict = {True: "ok", False: f"DISAGREES: {row.reason}", None: f"skipped: {row.reason}"}[row.ok]
    causal = fmt(row.causal_ok and "yes" or (None if row.causal_ok is None else "NO"), "s")
    cells = (row.device, row.dtype, row.model, fmt(row.kernel_opts, "s"), fmt(row.forward_max_err, ".2e"),
             fmt(row.grad_max_err, ".2e"), causal, fmt(row.seconds, ".1f"), verdict)
    return "  ".join(c.ljust(w) for c, w in zip(cells, WIDTHS)).rstrip()


def run(args: argparse.Namespace) -> int:
    devices = selected_devices(args.device)
    prepare_compiler()   # the kernel optimisations train and bench use; a second check reuses the lowered kernels
    if not args.json:
        print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, WIDTHS)).rstrip(), flush=True)
    rows = []
    for row in device_rows(devices, args):
        rows.append(row)
        if not args.json:
            print(table_line(row), flush=True)
    if args.json:
        print(json.dumps({"devices": [asdict(r) for r in rows]}, indent=2))
    ran = [r for r in rows if r.ok is not None]
    if not ran:
        raise TinyrefError("none of the selected devices and dtypes can run here (see the reasons above); "
                           "try '--device all' or install clang")
    if not args.json:
        agreed = sum(r.ok for r in ran)
        print(f"{agreed} of {len(ran)} runs agree with the oracle; {len(rows) - len(ran)} not available here")
    return 0 if all(r.ok for r in ran) else 1
