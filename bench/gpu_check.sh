#!/usr/bin/env bash
# The prepared device check (docs/performance.md, "GPU"): one table of model-only, end-to-end and
# preprocessing throughput on this machine's first GPU, in <= 8 minutes on a fresh H100/H200.
#
#   bench/gpu_check.sh            # needs a CUDA device
#   bench/gpu_check.sh --smoke    # tiny sizes, on CPU if there is no GPU: proves the script runs
#
# Runs the project from this checkout with the machine's python3 (override with PYTHON=...); it
# needs torch, torchvision, numpy, Pillow, pyarrow and pandas, nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# -u: every row is printed as it is measured, so a timeout keeps the rows so far.
exec timeout 480 "${PYTHON:-python3}" -u bench/gpu_check.py "$@"
