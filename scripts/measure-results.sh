#!/usr/bin/env bash
# Measure every figure of docs/results.md again on this machine and regenerate the page and its charts.
# Each command's JSON lands in docs/results/ (committed: the page is rendered from it).
# Takes ~15-30 min on a 2-core machine (the L config, torch.compile and the GPT-2-size oracle).
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/results
mkdir -p "$out"
py=.venv/bin/python
$py -m tinyref bench --config all --compare --json > "$out/bench.json"
$py -m tinyref bench --config all --profile --json > "$out/bench-profile.json"
$py -m tinyref check --device all --dtype float32 bfloat16 float16 --model gpt2 nanogpt llama --json > "$out/check.json" || true   # a disagreement is a figure too
$py -m tinyref bench --oracle-gpt2 --runs 3 --json > "$out/oracle-gpt2.json"
$py -m tinyref bench --oracle-smollm --runs 3 --json > "$out/oracle-smollm.json"
$py -m tinyref.bench.report
