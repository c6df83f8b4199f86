#!/usr/bin/env bash
# The documented GPU entry points, run where they exist: `nox -s bench_cuda -- --quick` (needs nox
# and a package index) and `docker compose run --rm bench` (needs Docker, Compose and the NVIDIA
# Container Toolkit). A missing tool is reported as "not available here: <reason>", not as a pass.
#
#   scripts/cuda-entry-points.sh              # both, results under results/
#   OUT=/tmp/entry scripts/cuda-entry-points.sh
#
# Each step runs under `timeout` and is recorded in $OUT/steps.txt; the exit status is 1 if a step
# that could run failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/$(date +%Y-%m-%d)-cuda-entry-points}
mkdir -p "$OUT" results
: > "$OUT/steps.txt"
status=0

record() { echo "$1" | tee -a "$OUT/steps.txt"; }

if command -v nox >/dev/null 2>&1 || python3 -m nox --version >/dev/null 2>&1; then
  start=$SECONDS
  timeout --kill-after=10 1800 python3 -m nox -s bench_cuda -- --quick 2>&1 | tee "$OUT/nox-bench_cuda.txt"
  code=${PIPESTATUS[0]}
  record "nox -s bench_cuda -- --quick: exit=$code seconds=$((SECONDS - start))"
  [ "$code" -eq 0 ] || status=1
else
  record "nox -s bench_cuda: not available here: nox is not installed (pip install nox)"
fi

if ! docker compose version >/dev/null 2>&1; then
  record "docker compose run --rm bench: not available here: no Docker Compose"
elif ! docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q nvidia; then
  record "docker compose run --rm bench: not available here: Docker has no nvidia runtime (NVIDIA Container Toolkit)"
else
  start=$SECONDS
  BENCH_UID=$(id -u) BENCH_GID=$(id -g) timeout --kill-after=10 1800 docker compose run --rm bench 2>&1 \
    | tee "$OUT/docker-bench.txt"
  code=${PIPESTATUS[0]}
  record "docker compose run --rm bench: exit=$code seconds=$((SECONDS - start))"
  [ "$code" -eq 0 ] || status=1
fi
exit $status
