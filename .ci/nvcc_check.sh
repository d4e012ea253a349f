#!/usr/bin/env bash
# Compile-checks the plain CUDA sources (csrc/cuda/*.cu, no torch headers) with `nvcc -c` for every target
# architecture, with the flags PyTorch's CUDAExtension adds (no implicit half/bfloat16 conversions), all
# warnings as errors and no fast math. Needs no GPU and no CUDA build of torch.
#
#   bash .ci/nvcc_check.sh [FILE.cu ...]     (default: csrc/cuda/*.cu)
#
# Environment: NVCC (compiler to use; default: nvcc on PATH, then $CUDA_HOME/bin/nvcc, then
# /usr/local/cuda/bin/nvcc), NVCC_ARCHS (default "80 90").
# Exit status: 0 when every file compiles for every arch, or when nvcc is absent (prints
# "nvcc not found: skipped"); non-zero on any compile error.
set -uo pipefail
cd "$(dirname "$0")/.."

find_nvcc() {
  if [ -n "${NVCC:-}" ]; then
    [ -x "$NVCC" ] && echo "$NVCC"
    return
  fi
  local c
  for c in "$(command -v nvcc 2>/dev/null)" "${CUDA_HOME:+$CUDA_HOME/bin/nvcc}" /usr/local/cuda/bin/nvcc; do
    if [ -n "$c" ] && [ -x "$c" ]; then
      echo "$c"
      return
    fi
  done
}

nvcc_bin="$(find_nvcc)"
if [ -z "$nvcc_bin" ]; then
  echo "nvcc not found: skipped (set NVCC or CUDA_HOME to check csrc/cuda/*.cu)"
  exit 0
fi

if [ "$#" -gt 0 ]; then
  sources=("$@")
else
  shopt -s nullglob
  sources=(csrc/cuda/*.cu)
  shopt -u nullglob
fi
if [ "${#sources[@]}" -eq 0 ]; then
  echo "no .cu sources to check"
  exit 1
fi

read -r -a archs <<<"${NVCC_ARCHS:-80 90}"
flags=(-std=c++17 -O3 --expt-relaxed-constexpr
  -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__
  -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__
  -Xcompiler -Wall,-Wextra --Werror all-warnings)

echo "nvcc: $nvcc_bin ($("$nvcc_bin" --version | grep -o 'release [0-9.]*' | head -1))"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
failures=0
for arch in "${archs[@]}"; do
  for src in "${sources[@]}"; do
    obj="$tmp/sm_${arch}_$(basename "$src" .cu).o"
    if "$nvcc_bin" -c "${flags[@]}" -gencode "arch=compute_${arch},code=sm_${arch}" "$src" -o "$obj"; then
      echo "ok    sm_${arch}  $src"
    else
      echo "FAIL  sm_${arch}  $src"
      failures=$((failures + 1))
    fi
  done
done
if [ "$failures" -gt 0 ]; then
  echo "nvcc check: $failures compile failure(s)"
  exit 1
fi
echo "nvcc check: ${#sources[@]} file(s) x ${#archs[@]} arch(s) compiled"
