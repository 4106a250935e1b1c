"""``tinyref check``: oracle agreement on every selected device and dtype, as a table or JSON."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from ..verify.check import MODELS, check_one
from ..runtime.devices import DTYPES, KNOWN_DEVICES, normalize_device
from ..errors import TinyrefError
from .flags import SEED

COLUMNS = ("device", "dtype", "model", "forward err", "grad err", "causal", "seconds", "verdict")
WIDTHS = (9, 9, 8, 12, 10, 7, 8, 0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", nargs="+", default=["all"], metavar="NAME",
                   help=f"devices to check, or 'all' (default): {', '.join(KNOWN_DEVICES)}")
    p.add_argument("--dtype", nargs="+", default=["float32"], choices=list(DTYPES), metavar="DTYPE",
                   help="float32 (default), float16, bfloat16; unsupported ones are reported, not run")
    p.add_argument("--model", nargs="+", default=["gpt2"], choices=list(MODELS), metavar="MODEL",
                   help="gpt2 (default: tanh GELU, biases) and/or nanogpt (exact GELU, no biases, as nanoGPT's "
                        "bias=False): each runs the check case as that variant")
    p.add_argument("--seed", type=SEED, default=0, help="seed for the weights and tokens (default 0)")
    p.add_argument("--json", action="store_true", help='print {"devices": [...]} instead of the table')


def selected_devices(specs: list[str]) -> list[str]:
    """'all' -> every known device; names may also be comma-separated; order kept, duplicates dropped."""
    names = [n for spec in specs for n in spec.split(",") if n.strip()]
    expanded = [d for n in names for d in (KNOWN_DEVICES if n.strip().lower() == "all" else [normalize_device(n)])]
    return list(dict.fromkeys(expanded))


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table_line(row) -> str:
    verdict = {True: "ok", False: f"DISAGREES: {row.reason}", None: f"skipped: {row.reason}"}[row.ok]
    causal = fmt(row.causal_ok and "yes" or (None if row.causal_ok is None else "NO"), "s")
    cells = (row.device, row.dtype, row.model, fmt(row.forward_max_err, ".2e"), fmt(row.grad_max_err, ".2e"), causal,
             fmt(row.seconds, ".1f"), verdict)
    return "  ".join(c.ljust(w) for c, w in zip(cells, WIDTHS)).rstrip()


def run(args: argparse.Namespace) -> int:
    devices = selected_devices(args.device)
    if not args.json:
        print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, WIDTHS)).rstrip(), flush=True)
    rows = []
    for device in devices:
        for dtype in dict.fromkeys(args.dtype):
            for model in dict.fromkeys(args.model):
                rows.append(check_one(device, dtype, args.seed, model))
                if not args.json:
                    print(table_line(rows[-1]), flush=True)
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
