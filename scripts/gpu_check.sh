#!/usr/bin/env bash
# `make gpu-check`: everything a GPU session must run, in one script (DESIGN.md sections 6 and 7).
#
#   scripts/gpu_check.sh [all|info|build|tests|bench|pack] ...   (default: all; stages run in the order given)
#
# Builds in place (pip install --no-build-isolation --no-deps -e .), prints the device, driver, torch and
# Triton versions, runs the GPU-marked tests, the Triton tests on the GPU (TRITON_INTERPRET unset), the
# pytest-benchmark suite and `bvae bench --device cuda`, and copies raw results and logs to $OUT.
# It only reads the GPU's settings: it never changes clocks, power limits, persistence or MIG.
# The GPU machine's python3 has torch 2.11, Triton 3.6, pytest and pytest-benchmark, and no network:
# nothing here installs anything from outside.
#
# $OUT gets at most 8 files (the device tool's limit): gpu_check.log, results.json, results.csv,
# speedup.png, summary.md, pytest-benchmark.json, gpu-check.tar.gz (every log and raw file), and
# results.partial.json when `bvae bench` was cut short (it checkpoints after every case).
# Knobs: PYTHON (python3), OUT ($PWD/gpu-check-out), STEP_TIMEOUT (seconds per step, 900),
# BENCH_ARGS (extra `bvae bench` arguments, e.g. "--quick" or "--cases bi_conv2d"),
# BENCH_QUICK (1: the pytest-benchmark suite runs its quick subset; default 1, `bvae bench` is the full run).
# One device-tool command may run 10 minutes: in such a session run the stages in separate calls, e.g.
#   scripts/gpu_check.sh info build tests   then   scripts/gpu_check.sh bench pack
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
OUT=${OUT:-$PWD/gpu-check-out}
WORK=${WORK:-/tmp/bvae-gpu-check}  # outside $OUT: only the packed files travel back
STEP_TIMEOUT=${STEP_TIMEOUT:-900}
BENCH_ARGS=${BENCH_ARGS:-}
BENCH_QUICK=${BENCH_QUICK:-1}
mkdir -p "$OUT" "$WORK/logs" "$WORK/bench"
LOG="$OUT/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1

failures=()
start=$(date +%s)
step() { printf '\n=== %s (t=%ss) ===\n' "$1" "$(( $(date +%s) - start ))"; }

# run NAME CMD...: runs one step with a timeout, logs it to $WORK/logs/NAME.log, records a failure.
run() {
  local name=$1; shift
  step "$name: $*"
  timeout --signal=TERM --kill-after=30 "$STEP_TIMEOUT" "$@" 2>&1 | tee "$WORK/logs/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "--- $name: exit $rc"
  if [ "$rc" -ne 0 ]; then failures+=("$name (exit $rc)"); fi
  return 0
}

stage_info() {
  step "device and versions"
  date -u +"date %Y-%m-%dT%H:%M:%SZ"
  uname -a
  if command -v nvidia-smi >/dev/null; then
    # read-only queries; nothing here sets clocks or limits
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu,mig.mode.current --format=csv \
      | tee "$WORK/logs/nvidia-smi.csv"
    nvidia-smi | tee "$WORK/logs/nvidia-smi.txt"
  else
    echo "nvidia-smi not found"
  fi
  command -v nvcc >/dev/null && nvcc --version | tail -2
  "$PYTHON" - <<'PY' 2>&1 | tee "$WORK/logs/versions.txt"
import platform, torch
print("python", platform.python_version())
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
try:
    import triton
    print("triton", triton.__version__)
except ImportError as exc:
    print("triton missing:", exc)
print("cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"sm_{p.major}{p.minor}", p.multi_processor_count, "SMs", round(p.total_memory / 2**30, 1), "GiB")
PY
}

stage_build() {
  run build "$PYTHON" -m pip install --no-build-isolation --no-deps -e .
  run backends "$PYTHON" -c "import bvae_kernels as bk, torch; print('backends', bk.available_backends()); \
assert torch.cuda.is_available(), 'no CUDA device'; assert bk.cuda_ops_available(), 'CUDA kernels not registered'"
}

stage_tests() {
  run pytest-gpu "$PYTHON" -m pytest tests -m gpu -q -rs -p no:cacheprovider --junitxml="$WORK/logs/pytest-gpu.xml"
  # the Triton tests run on the GPU when the interpreter is off
  local triton_tests
  triton_tests=$(ls tests/test_triton_*.py 2>/dev/null)
  if [ -n "$triton_tests" ]; then
    run pytest-triton-gpu env -u TRITON_INTERPRET "$PYTHON" -m pytest $triton_tests -q -rs -p no:cacheprovider \
      --junitxml="$WORK/logs/pytest-triton-gpu.xml"
  else
    echo "no tests/test_triton_*.py"
  fi
}

stage_bench() {
  run pytest-benchmark env BVAE_BENCH_DEVICE=cuda BVAE_BENCH_QUICK="$BENCH_QUICK" "$PYTHON" -m pytest benchmarks \
    --benchmark-only --benchmark-group-by=group --benchmark-sort=name --benchmark-columns=median,iqr,min,rounds \
    --benchmark-json="$WORK/bench/pytest-benchmark.json" -q -rs -p no:cacheprovider
  # shellcheck disable=SC2086
  run bvae-bench "$PYTHON" -m bvae bench --device cuda --no-progress --out "$WORK/bench" $BENCH_ARGS
  run render-perf "$PYTHON" scripts/render_perf.py "$WORK/bench/results.json"
}

stage_pack() {
  step "copy results to $OUT"
  for f in results.json results.csv speedup.png summary.md pytest-benchmark.json results.partial.json; do
    [ -f "$WORK/bench/$f" ] && cp "$WORK/bench/$f" "$OUT/$f"
  done
  tar -czf "$OUT/gpu-check.tar.gz" -C "$WORK" . && ls -la "$OUT"
}

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(all)
for s in "${stages[@]}"; do
  case "$s" in
    all) stage_info; stage_build; stage_tests; stage_bench; stage_pack ;;
    info) stage_info ;;
    build) stage_build ;;
    tests) stage_tests ;;
    bench) stage_bench ;;
    pack) stage_pack ;;
    *) echo "unknown stage '$s' (all|info|build|tests|bench|pack)"; exit 2 ;;
  esac
done

step "done"
if [ ${#failures[@]} -ne 0 ]; then
  printf 'FAILED: %s\n' "${failures[@]}"
  exit 1
fi
echo "gpu-check: all steps passed"
