#!/usr/bin/env bash
# The CUDA reference check, prepared to run in a few minutes on a GPU machine that has torch,
# torchvision, pytest, pytest-benchmark, psutil, tabulate and nvidia-ml-py but no network:
#
#   OUT=/tmp/cuda-ref scripts/cuda-reference.sh
#
# It runs the project from this checkout (PYTHONPATH), so nothing is installed. It writes, under $OUT:
#   check.txt / check.json   bench check --require cuda (table and facts)
#   run/                     bench run --quick on every GPU and the CPU (summary.md, results.csv, results.json)
#   pytest-cuda.txt          the test suite's CUDA tests (they skip elsewhere)
# Commit what it produced under results/ (e.g. results/<date>-<gpu>-cuda-quick/).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/cuda-reference}
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
status=0

echo "== bench check --require cuda"
"$PYTHON" -m bench check --require cuda | tee "$OUT/check.txt" || status=1
"$PYTHON" -m bench check --require cuda --json > "$OUT/check.json" || true

echo "== bench run --quick on the GPUs and the CPU"
"$PYTHON" -m bench run --quick --devices cpu,cuda --dataset "${BENCH_DATASET:-auto}" --out "$OUT/run" --plot \
  || "$PYTHON" -m bench run --quick --devices cpu,cuda --dataset "${BENCH_DATASET:-auto}" --out "$OUT/run-noplot" \
  || status=1

echo "== CUDA tests"
"$PYTHON" -m pytest tests/test_devices.py tests/test_check.py -q -p no:cacheprovider -k "cuda" -rs \
  | tee "$OUT/pytest-cuda.txt" || status=1
exit $status
