#!/usr/bin/env bash
# BVAE vs VAE on Fashion-MNIST: train each variant in both forms with identical budgets, evaluate, tabulate.
#
# Budget (CPU, 2 shared cores): the first $LIMIT training images, $EPOCHS epochs, latent 16, seed 0, for
# every model; evaluation on the first $TEST_LIMIT test images, importance-sampled NLL with K=$NLL_K on the
# first $NLL_LIMIT of them, the downstream probe trained on the same $LIMIT training latents.
# These are far smaller than the paper's budgets (full data, many epochs, K=1000): a smoke-scale comparison.
# FID/rFID need local Inception weights (pass FID_WEIGHTS=/path/pt_inception-2015-12-05.pth); skipped otherwise.
#
# Usage: scripts/run_paper_table.sh [OUT_DIR]   (default benchmarks/results/fashion-mnist-table)
set -euo pipefail

OUT=${1:-benchmarks/results/fashion-mnist-table}
RUNS=${RUNS:-runs/fashion-mnist-table}
LIMIT=${LIMIT:-3000}
EPOCHS=${EPOCHS:-2}
LATENT=${LATENT:-16}
TEST_LIMIT=${TEST_LIMIT:-1000}
NLL_LIMIT=${NLL_LIMIT:-100}
NLL_K=${NLL_K:-100}
TSNE=${TSNE:-300}
FID_ARGS=()
if [[ -n "${FID_WEIGHTS:-}" ]]; then FID_ARGS=(--fid-weights "$FID_WEIGHTS"); fi

# variant name -> its extra training arguments (identical for the bvae and vae forms)
declare -A EXTRA=(
  [vae]=""
  [beta-vae]="--beta 4"
  [beta-tcvae]="--beta 6 --alpha 1 --gamma 1"
  [iwae]="--k 5"
)
VARIANTS=(vae beta-vae beta-tcvae iwae)

mkdir -p "$OUT" "$RUNS"
CODE=(bvae/models.py bvae/blocks.py bvae/layers.py bvae/objectives.py bvae/train.py bvae/data.py bvae/metrics.py bvae/evaluate.py)
sha256sum "${CODE[@]}" > "$OUT/code.sha256"  # the code the table came from (checked again at the end)
eval_pids=()
for variant in "${VARIANTS[@]}"; do
  for kind in bvae vae; do
    name="$kind-$variant"
    # shellcheck disable=SC2086
    python -m bvae train --dataset fashion-mnist --kind "$kind" --variant "$variant" ${EXTRA[$variant]} \
      --latent-dim "$LATENT" --epochs "$EPOCHS" --limit "$LIMIT" --seed 0 --threads 2 --no-progress \
      --out "$RUNS/$name" 2>&1 | tee "$RUNS/$name.train.log" | tail -n 3
    # evaluate in the background (one thread) while the next model trains
    OMP_NUM_THREADS=1 python -m bvae eval "$RUNS/$name/checkpoint.pt" --dataset fashion-mnist \
      --limit "$TEST_LIMIT" --nll-limit "$NLL_LIMIT" --nll-samples "$NLL_K" --train-limit "$LIMIT" \
      --tsne "$TSNE" --batch-size 500 "${FID_ARGS[@]}" --out "$OUT/$name" > "$RUNS/$name.eval.log" 2>&1 &
    eval_pids+=($!)
  done
done
for pid in "${eval_pids[@]}"; do wait "$pid"; done

dirs=()
for variant in "${VARIANTS[@]}"; do for kind in bvae vae; do dirs+=("$OUT/$kind-$variant"); done; done
python -m bvae compare "${dirs[@]}" --out "$OUT/table.md"
sha256sum --check --quiet "$OUT/code.sha256" || echo "WARNING: model code changed during the run" >&2
