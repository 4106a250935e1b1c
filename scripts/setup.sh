#!/usr/bin/env bash
# Sets up tinyref on a fresh Debian/Ubuntu machine: system packages for tinygrad's CPU-side
# backends, then a virtual environment in .venv with tinyref installed (editable).
#   bash scripts/setup.sh          # runtime + real-text training extras
#   bash scripts/setup.sh dev      # everything the tests and docs need
set -euo pipefail
cd "$(dirname "$0")/.."
extras=train
[ "${1:-}" = dev ] && extras=dev

# clang: tinygrad's CPU backend; libllvm19: CPU:LLVM; PoCL + ICD loader: CL on the CPU.
packages="clang libllvm19 pocl-opencl-icd ocl-icd-libopencl1"
# chromium: the docs tests render pages in a headless browser and check the math and code
[ "$extras" = dev ] && packages="$packages chromium"
python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null || packages="$packages python3-venv"
missing=$(for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing system packages:" $missing
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[$extras]"
echo "setup: done (.venv, extras: $extras)"
