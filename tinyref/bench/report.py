"""docs/results.md and its charts, rendered from the JSON that ``tinyref bench --json`` and
``tinyref check --json`` wrote into docs/results/: the page shows the current figures with their
machine and date, and regenerating it from the same JSON gives the same page and the same chart
bytes (a test holds the committed page and PNGs to that).

    python -m tinyref.bench.report                  # docs/results/*.json -> docs/results.md, docs/results/*.png
    python -m tinyref.bench.report --check          # exit 1 if the page or a chart is out of date
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..errors import UsageError
from .charts import charts

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


def figure(images: dict[str, str], name: str, alt: str) -> list[str]:
    """The markdown of chart ``name`` (images: name -> its link from the page), or nothing if it was not drawn."""
    return [f"![{alt}]({images[name]})", ""] if name in images else []


def peak_note(bench: dict) -> str:
    """How the peak MB column was measured: by a process per implementation, or (JSON written before
    tinyref bench did that) by one process for all, where a later implementation under-reads."""
    if bench.get("process_per_impl"):
        return "Peak MB: how far the resident memory of the implementation's own process rose while it ran."
    return ("Peak MB: how far the resident memory of the one process that ran them all rose while each ran; a "
            "later implementation reuses memory an earlier one freed, so its figure reads low, down to 0. "
            "Measure again for each implementation's own peak: tinyref bench --compare runs each in its own process.")


def training_section(bench: dict, images: dict[str, str]) -> list[str]:
    rows = []
    for r in bench["results"]:
        eager = next((e["tokens_per_s"] for e in bench["results"]
                      if e["config"] == r["config"] and e["impl"] == "torch-eager"), None)
        ratio = f"{r['tokens_per_s'] / eager:.2f}x" if r["tokens_per_s"] and eager else "-"
        rows.append([r["config"], r["impl"], fmt(r["warmup_s"], ".2f"), fmt(r["ms_per_step"], ".2f"),
                     fmt(r["tokens_per_s"], ",.0f"), fmt(r["peak_mem_mb"], ".0f"), ratio + (f" ({r['note']})" if r.get("note") else "")])
    lines = ["## Training speed", "", f"`{SOURCES['bench.json']}`: one training step (forward, loss, backward, AdamW) "
             "on the same weights and batch in every implementation, median of the timed steps; "
             "the ratio is tokens/s against PyTorch eager in the same run. " + peak_note(bench), "",
             *figure(images, "speed.png", "Bar chart: training tokens per second of each implementation on configs "
                     "S, M and L, log scale"),
             *table(["config", "implementation", "warm-up s", "ms/step", "tokens/s", "peak MB", "vs torch-eager"], rows)]
    if bench.get("generation"):
        gen = [[g["config"], "yes" if g["kv_cache"] else "no", str(g["new_tokens"]), fmt(g["tokens_per_s"], ",.1f"),
                "yes" if g.get("slides") else "no"] for g in bench["generation"]]
        lines += ["", "Greedy generation from a one-token prompt:", "",
                  *table(["config", "KV cache", "new tokens", "tokens/s", "window slides past the context"], gen)]
    return lines


def profile_section(profile: dict, images: dict[str, str]) -> list[str]:
    lines = ["## Where a step's time goes", "", f"`{SOURCES['bench-profile.json']}`:", "",
             *figure(images, "profile.png", "Stacked bars: the share of a step's kernel time spent in matmul, "
                     "elementwise and reduction kernels, per config")]
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


def oracle_gpt2_section(data: dict, images: dict[str, str]) -> list[str]:
    rows = [[r["impl"], fmt(r["seconds"], ".1f"), fmt(r["peak_mem_mb"], ",.0f"), fmt(r.get("time_ratio"), ".2f"),
             fmt(r.get("memory_ratio"), ".2f")] for r in data["results"]]
    shape = data.get("shape", {})
    what = ", ".join(f"{k} {v}" for k, v in shape.items())
    return ["## The oracle at GPT-2 small's size", "", f"`{SOURCES['oracle-gpt2.json']}`: float64 forward and backward "
            f"({what}), random weights; each implementation in its own process.", "",
            *figure(images, "oracle-gpt2.png", "Bar charts: seconds and peak memory of one GPT-2 small step, the "
                    "oracle against Hugging Face's GPT-2 in PyTorch"),
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


def render(data: dict[str, dict], images: dict[str, str] | None = None) -> str:
    """The page; ``images``: chart file name -> its link from the page, for the charts drawn (none by default)."""
    images = images or {}
    bench = data["bench.json"]
    lines = ["# Results", "", "<!-- generated by 'python -m tinyref.bench.report' from docs/results/*.json: "
             "edit the JSON (by measuring again), not this page -->", "",
             "Current figures, each table from one command's JSON output kept in `docs/results/`. "
             "Measure again with `bash scripts/measure-results.sh` (it runs the commands below and "
             "regenerates this page). Timings on a shared machine move between runs: compare ratios "
             "taken in the same run, not absolute times across runs.", "",
             *machine_section(bench["machine"]), "", *training_section(bench, images), ""]
    if "bench-profile.json" in data:
        lines += profile_section(data["bench-profile.json"], images)
    lines += [*check_section(data["check.json"]), ""]
    if "oracle-gpt2.json" in data:
        lines += [*oracle_gpt2_section(data["oracle-gpt2.json"], images), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinyref.bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder of the JSON files, where the charts go too "
                                                                "(default docs/results)")
    parser.add_argument("--out", type=Path, default=PAGE, help="the page to write (default docs/results.md)")
    parser.add_argument("--check", action="store_true", help="do not write: exit 1 if the page or a chart differs "
                                                             "from what the JSON gives")
    args = parser.parse_args(argv)
    try:
        data = load(args.data)
        images = charts(data)
    except UsageError as e:
        sys.stderr.write(f"tinyref: error: {e}\n")
        return 2
    link = Path(os.path.relpath(args.data, args.out.parent))
    outputs = {args.out: render(data, {name: (link / name).as_posix() for name in images}).encode(),
               **{args.data / name: image for name, image in images.items()}}
    if args.check:
        stale = [str(path) for path, content in outputs.items() if not path.is_file() or path.read_bytes() != content]
        if stale:
            sys.stderr.write(f"{', '.join(stale)} out of date: run python -m tinyref.bench.report\n")
            return 1
        return 0
    for path, content in outputs.items():
        path.write_bytes(content)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
