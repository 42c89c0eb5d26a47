#!/usr/bin/env bash
# Train CONFIG with the published runs' exact history (docs/results.md): a 5,000-iteration cosine schedule
# stopped at iteration 500, resumed as a 3,500-iteration schedule, then resumed as a 7,000-iteration one
# (a warm restart at 3,500). The SLN and both baselines in docs/results.md were trained this way.
#
#   bench/train_published.sh configs/tiny_synth_maskrcnn_amodal.yaml runs/tiny_synth_maskrcnn_amodal [THREADS]
#
# Each phase is an ordinary `train.py` run, so an interrupted phase continues with the same line and --resume.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG OUT [THREADS]" >&2
  exit 2
fi
config=$1 out=$2 threads=${3:-1}
py=${PYTHON:-.venv/bin/python}
common=(--config "$config" --out "$out" --threads "$threads" --no-progress)
"$py" train.py "${common[@]}" --max-iters 5000 --stop-at 500
"$py" train.py "${common[@]}" --resume --max-iters 3500
"$py" train.py "${common[@]}" --resume --max-iters 7000
