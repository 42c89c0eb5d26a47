#!/usr/bin/env bash
# First check of a CUDA machine (docs/training.md): trains the R50 SLN and the R50 Mask R-CNN on synthetic
# scenes at full resolution with AMP, prints s/iter of both, their ratio and peak GPU memory, then predicts
# and evaluates. `--device cpu --tiny` runs the same steps on a tiny network in seconds (the test suite does).
#
#   bench/gpu_check.sh [--iters 300] [--heldout 50] [--out DIR]
#   bench/gpu_check.sh --device cpu --tiny [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
exec "$py" bench/gpu_check.py "$@"
