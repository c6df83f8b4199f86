#!/usr/bin/env bash
# One short run that checks the README's CUDA claims on a GPU machine and brings back everything it
# wrote as ONE archive. Written for the GPU machine this project is lent (shared/ENVIRONMENT.md): no
# network, nothing installable, python3 with torch/torchvision/triton and the test packages but no
# pydantic, nox or Docker, the repository as a plain copy, and only 8 files (two folders deep) of
# what a command writes under $OUT coming back. So it runs this checkout from PYTHONPATH with the
# machine's python3, installs nothing, never downloads (--no-download), and leaves in $OUT exactly:
#
#   cuda-reference.tar.gz   every step's output (below), under cuda-reference/
#   steps.txt               one line per step: its name, exit status and seconds (also in the archive)
#
#   scripts/cuda-reference.sh              # on a GPU machine; OUT defaults to results/<date>-<gpu>-cuda-reference
#   OUT=/tmp/ref scripts/cuda-reference.sh
#   scripts/cuda-reference.sh --dry-run    # every step on the CPU, saying what a GPU would run; exits 0
#   scripts/cuda-reference.sh --gpu-steps  # the GPU commands even without a GPU: they fail (tests the script)
#
# Without a visible GPU it is a dry run by itself. Data: real Fashion-MNIST when the four IDX files
# (plain or .gz) sit in data/fashion-mnist/ (git-ignored; `mkdir -p data/fashion-mnist && cp
# /usr/share/datasets/fashion-mnist/*.gz data/fashion-mnist/`, about 30 MB, and carry `data` with the
# copy), else synthetic data (throughput is real, accuracy is not meaningful). BENCH_REFERENCE_DATA
# names another folder.
#
# Steps, in this order, each under `timeout -s INT -k 30 <limit>` (stopped like Ctrl-C, so the harness
# still writes its tables; killed 30 s later if it does not stop); the limits sum to 480 s:
#   facts   (30 s)  torch, CUDA, cuDNN, triton, gcc, Python.h, GPUs, driver, packages; nvidia-smi -q
#   check   (50 s)  bench check --require cuda (table and JSON)
#   tests  (150 s)  pytest -m cuda -rA --durations=0 --junitxml, temporary folders kept in the archive
#   run     (75 s)  bench run --quick on every GPU and the CPU
#   modes  (120 s)  every execution mode on the GPUs, --passes 1, peaks, % of peak, NVML energy
#   ddp     (45 s)  with 2 or more GPUs only: data-parallel over NCCL beside one process
#   pack    (10 s)  the archive, with a manifest of every file (files over 4 MiB listed, left out)
# A failing step never stops or reruns another; the exit status is 1 if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

dry=0
for arg in "$@"; do
  case $arg in
    --dry-run) dry=1 ;;
    --gpu-steps) dry=-1 ;; # the GPU machine's commands even without a GPU (they fail): tests the script itself
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

gpus=$("$PYTHON" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null | tail -1)
[[ $gpus =~ ^[0-9]+$ ]] || gpus=0
if [ "$gpus" -eq 0 ] && [ "$dry" -eq 0 ]; then
  echo "no GPU visible to $PYTHON's torch: a dry run (every step on the CPU, saying what a GPU would run)"
  dry=1
fi
[ "$dry" -eq -1 ] && dry=0
if [ "$dry" -eq 1 ]; then
  slug=dry-run
else
  gpu=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0))" 2>/dev/null | tail -1 || true)
  slug=$(echo "${gpu:-gpu}" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/^-//; s/-$//')
fi
OUT=${OUT:-results/$(date +%Y-%m-%d)-${slug}-cuda-reference}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
scratch=$(mktemp -d "${TMPDIR:-/tmp}/cuda-reference.XXXXXX")
WORK=$scratch/cuda-reference # what the archive holds
mkdir -p "$WORK"
: > "$WORK/steps.txt"
status=0

record() { echo "$*" | tee -a "$WORK/steps.txt"; }

step() { # step NAME LIMIT COMMAND...: runs it under its limit, its output in NAME.txt, records exit and time
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*" | tee "$WORK/$name.txt"
  local start=$SECONDS
  timeout -s INT -k 30 "$limit" "$@" 2>&1 | tee -a "$WORK/$name.txt"
  local code=${PIPESTATUS[0]}
  local note=""
  [ "$code" -eq 124 ] && note=" (stopped at its limit, interrupted as by Ctrl-C)"
  [ "$code" -eq 137 ] && note=" (killed: still running 30 s after the interrupt)"
  record "$name exit=$code seconds=$((SECONDS - start))$note"
  [ "$code" -eq 0 ] || status=1
}

would() { # would NAME WHAT...: in a dry run, what a GPU machine runs instead of what this step ran
  local name=$1
  shift
  [ "$dry" -eq 1 ] && record "$name dry run: a GPU machine runs $*" && echo "dry run: a GPU machine runs $*" >> "$WORK/$name.txt"
  return 0
}

# --- the data ---------------------------------------------------------------------------------------
data=${BENCH_REFERENCE_DATA:-data/fashion-mnist}
data_args=(--dataset synthetic --data-dir "$scratch/data")
have=0
for stem in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  { [ -f "$data/$stem" ] || [ -f "$data/$stem.gz" ]; } && have=$((have + 1))
done
if [ "$have" -eq 4 ]; then
  data_args=(--dataset fashion-mnist --data-dir "$data")
  record "data: Fashion-MNIST from $data"
else
  record "data: synthetic (no Fashion-MNIST in $data: throughput is real, accuracy is not meaningful)"
fi
[ "$dry" -eq 1 ] && record "mode: dry run (no GPU used); steps say what a GPU machine would run"

# --- the steps ----------------------------------------------------------------------------------------
cat > "$scratch/facts.py" << 'EOF'
import importlib.metadata, os, sys, sysconfig
import torch, torchvision
print("python", sys.version.split()[0], sys.executable)
print("torch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version())
print("torchvision", torchvision.__version__)
try:
    import triton
    print("triton", triton.__version__)
except Exception as error:
    print("triton: not importable:", error)
include = os.path.join(sysconfig.get_paths()["include"], "Python.h")
print("Python.h", include, "present" if os.path.exists(include) else "MISSING (Triton builds its launcher with it)")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i}", p.name, f"{p.total_memory / 2**30:.0f} GiB", f"capability {p.major}.{p.minor}",
          f"{p.multi_processor_count} SMs")
try:
    import pynvml
    pynvml.nvmlInit()
    print("driver", pynvml.nvmlSystemGetDriverVersion())
except Exception as error:
    print("NVML:", error)
names = sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions())
print("packages:", ", ".join(names))
EOF
cat > "$scratch/facts.sh" << 'EOF'
"$PYTHON" "$scratch/facts.py"
compiler=$(command -v gcc || command -v cc)
if [ -n "$compiler" ]; then echo "C compiler: $("$compiler" --version | head -1)"
else echo "no C compiler (gcc, cc) on PATH: Triton cannot build its launcher"; fi
if command -v nvidia-smi > /dev/null; then
  nvidia-smi -q > "$WORK/nvidia-smi.txt" 2>&1
  echo "nvidia-smi -q: exit $?, in nvidia-smi.txt"
else
  echo "nvidia-smi: not on PATH" | tee "$WORK/nvidia-smi.txt"
fi
EOF
export PYTHON scratch WORK
step facts 30 bash "$scratch/facts.sh"

if [ "$dry" -eq 1 ]; then require=(); else require=(--require cuda); fi
step check 50 bash -c '"$0" -m bench check "${@:2}"; code=$?; "$0" -m bench check --json "${@:2}" > "$1/check.json"; exit $code' \
  "$PYTHON" "$WORK" "${require[@]}"
would check "bench check --require cuda"

# before the long modes step, so a run cut short still has them
timeout_args=()
"$PYTHON" -c "import pytest_timeout" 2>/dev/null && timeout_args=(--timeout 120)
step tests 150 "$PYTHON" -m pytest tests -m cuda -rA --durations=0 -p no:cacheprovider "${timeout_args[@]}" \
  --junitxml "$WORK/pytest-cuda.xml" --basetemp "$WORK/pytest-tmp"
[ "$dry" -eq 1 ] && record "tests dry run: the same command; without a GPU every cuda test skips with its reason"

plot=()
"$PYTHON" -c "import matplotlib" 2>/dev/null && plot=(--plot)
if [ "$dry" -eq 1 ]; then
  step run 75 "$PYTHON" -m bench run --quick --devices cpu --workloads train_step,epoch --loaders resident \
    --batch-sizes 1024 --max-time 0.2 --no-download "${data_args[@]}" --out "$WORK/run" "${plot[@]}"
  would run "bench run --quick --devices cpu,cuda (every workload, batch 64 and 1024)"
else
  step run 75 "$PYTHON" -m bench run --quick --devices cpu,cuda --no-download "${data_args[@]}" \
    --out "$WORK/run" "${plot[@]}"
fi

if [ "$dry" -eq 1 ]; then
  step modes 120 "$PYTHON" -m bench run --devices cpu --modes eager,fused --workloads train_step --batch-sizes 64 \
    --passes 1 --max-time 0.2 --no-download "${data_args[@]}" --out "$WORK/modes"
  would modes "bench run --devices cuda --modes all --workloads train_step --batch-sizes 64,4096 --passes 1 --max-time 2"
else
  step modes 120 "$PYTHON" -m bench run --devices cuda --modes all --workloads train_step --batch-sizes 64,4096 \
    --passes 1 --max-time 2 --no-download "${data_args[@]}" --out "$WORK/modes" "${plot[@]}"
fi

if [ "$gpus" -ge 2 ] && [ "$dry" -eq 0 ]; then
  step ddp 45 "$PYTHON" -m bench run --nproc "$gpus" --side-by-side --devices cuda --workloads train_step,epoch \
    --batch-sizes 256 --passes 1 --max-time 2 --epoch-repeats 1 --no-download "${data_args[@]}" --out "$WORK/ddp"
else
  echo "== ddp: not run: NCCL data-parallel needs one GPU per process, 2 or more ($gpus here)" | tee "$WORK/ddp.txt"
  record "ddp exit=skipped seconds=0 (needs 2 or more GPUs, $gpus here)"
fi

step pack 10 bash -c '
  cd "$0" || exit 1
  find cuda-reference -type f -size +4M > big.txt
  { echo "files of the archive (bytes):"; find cuda-reference -type f -printf "%s %p\n" | sort -k2
    [ -s big.txt ] && { echo "left out, over 4 MiB:"; cat big.txt; } ; } > cuda-reference/manifest.txt
  tar -czf "$1/cuda-reference.tar.gz" --exclude-from big.txt cuda-reference
' "$scratch" "$OUT"
cp "$WORK/steps.txt" "$OUT/steps.txt"
echo "exit=$status$([ "$dry" -eq 1 ] && echo ' (dry run)')" >> "$OUT/steps.txt"
rm -rf "$scratch"
echo "== $OUT: cuda-reference.tar.gz ($(du -h "$OUT/cuda-reference.tar.gz" 2>/dev/null | cut -f1)), steps.txt"
cat "$OUT/steps.txt"
exit $status
