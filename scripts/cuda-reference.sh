#!/usr/bin/env bash
# One short run that checks every CUDA claim of the README on a GPU machine and leaves the tables
# to commit. It needs only what such a machine has (torch with CUDA, torchvision, pytest,
# pytest-benchmark, psutil, tabulate, nvidia-ml-py; pydantic and hypothesis are optional) and no
# network: it runs this checkout from PYTHONPATH and installs nothing.
#
#   scripts/cuda-reference.sh                 # everything under results/<date>-<gpu>-cuda-reference/
#   OUT=/tmp/ref scripts/cuda-reference.sh    # somewhere else
#
# Steps, each under `timeout`, each recorded in $OUT/steps.txt with its exit status and seconds:
#   build      which torch this is (version, CUDA, GPUs, driver)        -> build.txt
#   check      bench check --require cuda (table and JSON)              -> check.txt, check.json
#   run        bench run --quick on every GPU and the CPU               -> run/ (summary.md, results.*)
#   modes      every execution mode on the GPUs (compile, fused, bf16, tf32, cuda-graph against eager),
#              with the measured peaks, % of peak and the NVML energy figures  -> modes/
#   ddp        with 2 or more GPUs: data-parallel across every GPU (NCCL, one GPU per process) beside
#              one process, and the same number of copies side by side          -> ddp/
#   tests      pytest -m cuda: every GPU test of the suite, which assert the README's CUDA claims
#              (check passes, every workload with device memory and NVML figures, a CUDA OOM cell,
#              cuda:N out of range, the clock under 1% of a round, GPU accuracy = CPU accuracy, the
#              timer agreement with torch.utils.benchmark)                   -> pytest-cuda.txt
# A failing step never reruns another; the exit status is 1 if any step failed. Budget: under 6
# minutes on one H200 with 16 cores.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
gpu=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no-gpu')" 2>/dev/null || echo unknown)
slug=$(echo "$gpu" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/^-//; s/-$//')
OUT=${OUT:-results/$(date +%Y-%m-%d)-${slug}-cuda-reference}
mkdir -p "$OUT"
: > "$OUT/steps.txt"
status=0

step() {  # step NAME SECONDS COMMAND...: runs it under timeout, records status and time
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@"
  local code=$?
  [ "$code" -eq 124 ] && echo "== $name: TIMED OUT after ${limit}s"
  echo "$name exit=$code seconds=$((SECONDS - start))" | tee -a "$OUT/steps.txt"
  [ "$code" -eq 0 ] || status=1
}

step build 60 "$PYTHON" -c "
import torch, torchvision
print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'cuDNN', torch.backends.cudnn.version())
print('torchvision', torchvision.__version__)
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f'cuda:{i}', p.name, f'{p.total_memory / 2**30:.0f} GiB', f'capability {p.major}.{p.minor}')
try:
    import pynvml; pynvml.nvmlInit(); print('driver', pynvml.nvmlSystemGetDriverVersion())
except Exception as error:
    print('NVML:', error)
" > "$OUT/build.txt" 2>&1
cat "$OUT/build.txt"

step check 120 bash -o pipefail -c "'$PYTHON' -m bench check --require cuda | tee '$OUT/check.txt'"
"$PYTHON" -m bench check --require cuda --json > "$OUT/check.json" 2>/dev/null

plot=()
if "$PYTHON" -c "import matplotlib" 2>/dev/null; then plot=(--plot); else echo "matplotlib is not installed: no plots"; fi
step run 180 "$PYTHON" -m bench run --quick --devices cpu,cuda --no-download --out "$OUT/run" "${plot[@]}"

step modes 150 "$PYTHON" -m bench run --devices cuda --modes all --workloads train_step --batch-sizes 64,4096 \
  --passes 2 --max-time 3 --no-download --out "$OUT/modes" "${plot[@]}"

gpus=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
if [ "$gpus" -ge 2 ]; then
  step ddp 180 "$PYTHON" -m bench run --nproc "$gpus" --side-by-side --devices cuda --workloads train_step,epoch \
    --batch-sizes 256 --passes 2 --max-time 2 --epoch-repeats 2 --no-download --out "$OUT/ddp"
else
  echo "ddp not available here: NCCL across processes needs one GPU per process, 2 or more ($gpus here)" \
    | tee -a "$OUT/steps.txt"
fi

step tests 240 bash -o pipefail -c "'$PYTHON' -m pytest tests -m cuda -q -rs -p no:cacheprovider 2>&1 | tee '$OUT/pytest-cuda.txt'"

echo "== done: $OUT (exit $status)"
cat "$OUT/steps.txt"
exit $status
