"""``tinyref bench``: a table (or JSON) of training-step speed per config, with PyTorch and the oracle on --compare."""
from __future__ import annotations

import argparse
import json
import os
import sys

from ..bench.harness import CONFIGS, TORCH_MISSING, bench_config, generation_results, machine_info, torch_available
from ..runtime.devices import describe_device, select_device
from ..errors import UsageError
from ..runtime.memory import check_training_memory, parameter_count
from .flags import COUNT, POSITIVE, integer

COLUMNS = ("config", "impl", "warm-up s", "ms/step", "tokens/s", "peak MB", "vs torch-eager")
WIDTHS = (6, 13, 9, 9, 10, 8, 0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    sizes = "; ".join(f"{n}: batch {b}, seq {c.context_length}, vocab {c.vocab_size}, d_model {c.d_model}, "
                      f"{c.n_heads} heads, {c.n_layers} layers" for n, (b, c) in CONFIGS.items())
    p.add_argument("--config", default="S", choices=[*CONFIGS, "all"], metavar="S|M|L|all",
                   help=f"which model and batch to time (default S, the demo's shapes). {sizes}")
    p.add_argument("--steps", type=POSITIVE, default=20, help="timed training steps after the warm-up; the median is reported (default 20)")
    p.add_argument("--compare", action="store_true",
                   help="also time PyTorch eager, torch.compile and the NumPy oracle on the same weights and data "
                        "(needs the bench extra: pip install 'tinyref[bench]')")
    p.add_argument("--threads", type=integer(1, 1024), default=None, metavar="N",
                   help="threads PyTorch may use with --compare (default: PyTorch's own choice, recorded in the JSON's "
                        "machine info). tinygrad's CPU backend runs each kernel on one thread, so --threads 1 compares "
                        "like with like")
    p.add_argument("--device", default=None, help="tinygrad device for tinyref (default: tinyref's choice, see 'tinyref check')")
    p.add_argument("--beam", type=COUNT, default=0, metavar="N",
                   help="search N kernel variants per kernel (tinygrad BEAM) and cache the winners on disk, so "
                        "later runs at the same shapes reuse them; the first run with it is slow (default 0: off)")
    p.add_argument("--gen-tokens", type=COUNT, default=128, metavar="N",
                   help="also time greedy generation of N new tokens with and without the KV cache (default 128; 0: skip)")
    p.add_argument("--oracle-gpt2", action="store_true",
                   help="instead: time the NumPy oracle's float64 forward and backward at GPT-2 small's shape (vocab 50257, "
                        "context 1024, 12 layers, 12 heads, d_model 768; random weights) against Hugging Face's GPT-2 in "
                        "PyTorch float64, each run in its own process (needs torch and transformers; minutes per run)")
    p.add_argument("--seq-len", type=POSITIVE, default=1024, metavar="T", help="with --oracle-gpt2: tokens in the batch of one (default 1024)")
    p.add_argument("--runs", type=POSITIVE, default=1, metavar="N",
                   help="with --oracle-gpt2: runs per implementation, alternated; the median is reported (default 1)")
    p.add_argument("--numpy-hugepages", action="store_true",
                   help="with --oracle-gpt2: leave NumPy's transparent-huge-page advice on for the oracle (see tinyref.bench.oracle_gpt2)")
    p.add_argument("--profile", action="store_true",
                   help="instead of timing steps, time each kernel of one step on one thread and print them by class "
                        "(matmul, reduction, elementwise), the largest kernels' GFLOP/s and the warm-up's compile and "
                        "schedule seconds (CPU devices)")
    p.add_argument("--json", action="store_true", help='print {"machine": {...}, "results": [...], "generation": [...]}')


def cell(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table_line(r, eager_tokens_per_s) -> str:
    ratio = (f"{r.tokens_per_s / eager_tokens_per_s:.2f}x" if r.tokens_per_s and eager_tokens_per_s else "")
    cells = (r.config, r.impl, cell(r.warmup_s, ".2f"), cell(r.ms_per_step, ".2f"), cell(r.tokens_per_s, ",.0f"),
             cell(r.peak_mem_mb, ".0f"), ratio if not r.note else f"{ratio} {r.note}".strip())
    return "  ".join(c.ljust(w) for c, w in zip(cells, WIDTHS)).rstrip()


def run_oracle_gpt2(args: argparse.Namespace) -> int:
    from ..bench.oracle_gpt2 import GPT2_SMALL, REFERENCE, bench_oracle_gpt2
    if not 1 <= args.seq_len <= GPT2_SMALL.context_length:
        raise UsageError(f"--seq-len must be in [1, {GPT2_SMALL.context_length}], got {args.seq_len}")
    machine = machine_info(select_device(args.device))                 # the load average before the runs
    log = lambda line: print(line, file=sys.stderr if args.json else sys.stdout, flush=True)  # noqa: E731
    log(f"GPT-2 small ({GPT2_SMALL.n_layers} layers, d_model {GPT2_SMALL.d_model}, vocab {GPT2_SMALL.vocab_size}), float64, "
        f"batch 1 x {args.seq_len} tokens: forward, mean cross-entropy and backward, each run in its own process; "
        f"{args.runs} run(s) each, median reported")
    data = bench_oracle_gpt2(args.seq_len, args.runs, numpy_hugepages=args.numpy_hugepages, log=log)
    if args.json:
        machine["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
        print(json.dumps({"machine": machine, **data}, indent=2))
        return 0
    widths = (16, 9, 9, 0)
    log("  ".join(c.ljust(w) for c, w in zip(("impl", "seconds", "peak MB", f"vs {REFERENCE} (time, memory)"), widths)).rstrip())
    for r in data["results"]:
        ratios = f"{cell(r['time_ratio'], '.2f')}x, {cell(r['memory_ratio'], '.2f')}x"
        log("  ".join(c.ljust(w) for c, w in zip((r["impl"], cell(r["seconds"], ".1f"), cell(r["peak_mem_mb"], ".0f"), ratios),
                                                 widths)).rstrip())
    return 0


def run(args: argparse.Namespace) -> int:
    if args.oracle_gpt2:
        return run_oracle_gpt2(args)
    if args.compare and not torch_available():
        raise UsageError(TORCH_MISSING)
    device = select_device(args.device)
    torch_threads = ""
    if args.compare:
        import torch
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        torch_threads = f"; PyTorch threads: {torch.get_num_threads()}"
    if args.beam:
        from tinygrad.helpers import BEAM
        BEAM.value = args.beam
    names = list(CONFIGS) if args.config == "all" else [args.config]
    log = lambda line: print(line, file=sys.stderr if args.json else sys.stdout, flush=True)  # noqa: E731
    log(f"Device: {describe_device(device)}{f', BEAM={args.beam}' if args.beam else ''}; "
        f"{args.steps} timed steps per run, median reported{torch_threads}")
    if args.profile:
        from ..bench.profile import profile_config, profile_lines
        profiles = [profile_config(name) for name in names]
        for p in profiles:
            if not args.json:
                log("\n".join(profile_lines(p)))
        if args.json:
            print(json.dumps({"machine": machine_info(device), "profiles": profiles}, indent=2))
        return 0
    results, generation = [], []
    for name in names:
        batch, cfg = CONFIGS[name]
        log(f"{name}: {parameter_count(cfg):,} parameters, batch {batch}; memory: {check_training_memory(cfg, batch)}")
        rows = bench_config(name, args.steps, args.compare, log=log, device=args.device, threads=args.threads,
                            beam=args.beam)
        results += rows
        if not args.json:
            eager = next((r.tokens_per_s for r in rows if r.impl == "torch-eager"), None)
            log("  ".join(c.ljust(w) for c, w in zip(COLUMNS, WIDTHS)).rstrip())
            for r in rows:
                log(table_line(r, eager))
        if args.gen_tokens:
            generation += generation_results(name, args.gen_tokens)
            if not args.json:
                cached, plain = generation[-2:]
                log(f"  generation, {args.gen_tokens} new tokens: {cached['tokens_per_s']:,.0f} tokens/s with the KV cache, "
                    f"{plain['tokens_per_s']:,.0f} recomputing ({cached['tokens_per_s'] / plain['tokens_per_s']:.1f}x)"
                    + (" (the window slides past the context, refilling the cache)" if cached["slides"] else ""))
    if args.json:
        print(json.dumps({"machine": {**machine_info(device), "beam": args.beam}, "results": [r.to_dict() for r in results],
                          "generation": generation, "process_per_impl": args.compare}, indent=2))
    return 0
