"""docs/results.md, rendered from the JSON that ``tinyref bench --json`` and ``tinyref check --json``
wrote into docs/results/: the page shows the current figures with their machine and date, and
regenerating it from the same JSON gives the same page (a test holds the committed page to that).

    python -m tinyref.bench.report                  # docs/results/*.json -> docs/results.md
    python -m tinyref.bench.report --check          # exit 1 if docs/results.md is out of date
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
DATA, PAGE = ROOT / "docs" / "results", ROOT / "docs" / "results.md"
# file -> the command that writes it (run from the repository root; scripts/measure-results.sh runs them all)
SOURCES = {
    "bench.json": "tinyref bench --config all --compare --json",
    "bench-profile.json": "tinyref bench --config all --profile --json",
    "check.json": "tinyref check --device all --dtype float32 bfloat16 float16 --model gpt2 nanogpt --json",
    "oracle-gpt2.json": "tinyref bench --oracle-gpt2 --runs 3 --json",
}
REQUIRED = ("bench.json", "check.json")


def fmt(value, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def machine_section(machine: dict) -> list[str]:
    load = ", ".join(str(v) for v in machine.get("load_average", [])) or "-"
    software = f"Python {machine.get('python', '?')}, tinygrad {machine.get('tinygrad', '?')}"
    if "torch" in machine:
        software += f", PyTorch {machine['torch']} ({machine.get('torch_threads', '?')} threads)"
    env = ", ".join(f"{k}={v}" for k, v in machine.get("tinygrad_env", {}).items()) or "none"
    return ["## The machine", "", *table(["", ""], [
        ["date", machine.get("date", "?")], ["CPU", f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores"],
        ["OS", machine.get("os", "?")], ["software", software], ["tinyref's device", f"`{machine.get('device', '?')}`"],
        ["load average at the start (1, 5, 15 min)", load], ["tinygrad switches set", env]])]


def training_section(bench: dict) -> list[str]:
    rows = []
    for r in bench["results"]:
        eager = next((e["tokens_per_s"] for e in bench["results"]
                      if e["config"] == r["config"] and e["impl"] == "torch-eager"), None)
        ratio = f"{r['tokens_per_s'] / eager:.2f}x" if r["tokens_per_s"] and eager else "-"
        rows.append([r["config"], r["impl"], fmt(r["warmup_s"], ".2f"), fmt(r["ms_per_step"], ".2f"),
                     fmt(r["tokens_per_s"], ",.0f"), fmt(r["peak_mem_mb"], ".0f"), ratio + (f" ({r['note']})" if r.get("note") else "")])
    lines = ["## Training speed", "", f"`{SOURCES['bench.json']}`: one training step (forward, loss, backward, AdamW) "
             "on the same weights and batch in every implementation, median of the timed steps; "
             "the ratio is tokens/s against PyTorch eager in the same run.", "",
             *table(["config", "implementation", "warm-up s", "ms/step", "tokens/s", "peak MB", "vs torch-eager"], rows)]
    if bench.get("generation"):
        gen = [[g["config"], "yes" if g["kv_cache"] else "no", str(g["new_tokens"]), fmt(g["tokens_per_s"], ",.1f"),
                "yes" if g.get("slides") else "no"] for g in bench["generation"]]
        lines += ["", "Greedy generation from a one-token prompt:", "",
                  *table(["config", "KV cache", "new tokens", "tokens/s", "window slides past the context"], gen)]
    return lines


def profile_section(profile: dict) -> list[str]:
    lines = ["## Where a step's time goes", "", f"`{SOURCES['bench-profile.json']}`:", ""]
    for p in profile.get("profiles", []):
        lines += [f"### {p['config']}", "", *table(["kernel class", "kernels", "ms per step", "share"],
                  [[c["class"], str(c["kernels"]), fmt(c["ms"], ".2f"), fmt(c.get("share"), ".0%")] for c in p["classes"]])]
        if p.get("largest"):
            lines += ["", *table(["largest kernels", "MFLOP", "ms", "GFLOP/s"],
                                 [[f"`{k['name']}`", fmt(k["mflop"], ".0f"), fmt(k["ms"], ".2f"), fmt(k["gflops"], ".1f")]
                                  for k in p["largest"]])]
        if p.get("warmup"):
            lines += ["", *table(["warm-up part", "seconds"], [[k, fmt(v, ".2f")] for k, v in p["warmup"].items()])]
        lines.append("")
    return lines


def short(reason: str | None, limit: int = 90) -> str:
    """A reason's first clause, cut to ``limit`` characters (the JSON keeps it whole)."""
    first = (reason or "").split("; ")[0]
    return first if len(first) <= limit else first[:limit - 3] + "..."


def check_section(check: dict) -> list[str]:
    verdict = {True: "agrees", False: "DISAGREES", None: "not run here"}
    rows = [[f"`{r['device']}`", r.get("model", "gpt2"), r["dtype"], fmt(r["forward_max_err"], ".1e"),
             fmt(r["grad_max_err"], ".1e"), {True: "yes", False: "NO", None: "-"}[r["causal_ok"]], fmt(r["seconds"], ".1f"),
             verdict[r["ok"]] + (f": {short(r['reason'])}" if r["ok"] is not True and r.get("reason") else "")]
            for r in check["devices"]]
    return ["## Every backend against the oracle", "", f"`{SOURCES['check.json']}`: the check case's logits, loss and "
            "every gradient after one AdamW step, worst relative error against the float64 oracle.", "",
            *table(["device", "model", "dtype", "forward err", "gradient err", "causal", "seconds", "verdict"], rows)]


def oracle_gpt2_section(data: dict) -> list[str]:
    rows = [[r["impl"], fmt(r["seconds"], ".1f"), fmt(r["peak_mem_mb"], ",.0f"), fmt(r.get("time_ratio"), ".2f"),
             fmt(r.get("memory_ratio"), ".2f")] for r in data["results"]]
    shape = data.get("shape", {})
    what = ", ".join(f"{k} {v}" for k, v in shape.items())
    return ["## The oracle at GPT-2 small's size", "", f"`{SOURCES['oracle-gpt2.json']}`: float64 forward and backward "
            f"({what}), random weights; each implementation in its own process.", "",
            *table(["implementation", "seconds", "peak MB", "time vs PyTorch", "memory vs PyTorch"], rows)]


def load(directory: Path) -> dict[str, dict]:
    missing = [name for name in REQUIRED if not (directory / name).is_file()]
    if missing:
        raise UsageError(f"{directory} lacks {', '.join(missing)}: write it with "
                         + "; ".join(f"'{SOURCES[m]} > {directory / m}'" for m in missing))
    data = {}
    for name in SOURCES:
        path = directory / name
        if path.is_file():
            try:
                data[name] = json.loads(path.read_text())
            except ValueError as e:
                raise UsageError(f"{path} is not JSON ({e}): write it again with '{SOURCES[name]}'") from None
    return data


def render(data: dict[str, dict]) -> str:
    bench = data["bench.json"]
    lines = ["# Results", "", "<!-- generated by 'python -m tinyref.bench.report' from docs/results/*.json: "
             "edit the JSON (by measuring again), not this page -->", "",
             "Current figures, each table from one command's JSON output kept in `docs/results/`. "
             "Measure again with `bash scripts/measure-results.sh` (it runs the commands below and "
             "regenerates this page). Timings on a shared machine move between runs: compare ratios "
             "taken in the same run, not absolute times across runs.", "",
             *machine_section(bench["machine"]), "", *training_section(bench), ""]
    if "bench-profile.json" in data:
        lines += profile_section(data["bench-profile.json"])
    lines += [*check_section(data["check.json"]), ""]
    if "oracle-gpt2.json" in data:
        lines += [*oracle_gpt2_section(data["oracle-gpt2.json"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinyref.bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder of the JSON files (default docs/results)")
    parser.add_argument("--out", type=Path, default=PAGE, help="the page to write (default docs/results.md)")
    parser.add_argument("--check", action="store_true", help="do not write: exit 1 if the page differs from the JSON")
    args = parser.parse_args(argv)
    try:
        page = render(load(args.data))
    except UsageError as e:
        sys.stderr.write(f"tinyref: error: {e}\n")
        return 2
    if args.check:
        current = args.out.read_text() if args.out.is_file() else ""
        if current != page:
            sys.stderr.write(f"{args.out} is out of date: run python -m tinyref.bench.report\n")
            return 1
        return 0
    args.out.write_text(page)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
