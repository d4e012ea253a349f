#!/usr/bin/env bash
# BVAE vs its VAE twin on ALL of Fashion-MNIST: the full-budget comparison, resumable per model.
#
# Every model: the 60,000 training images, $EPOCHS epochs, batch 128, AdamW + one-cycle (the `bvae train`
# defaults, identical for both forms), latent 16, the test loss recorded after every epoch (--curves).
# Models: the four objectives x both forms with seed 0, and the VAE objective with seeds 1 and 2 as well.
# Evaluation: PSNR/SSIM, active units, downstream accuracy (probe on all training latents) on the 10,000 test
# images; importance-sampled NLL with K=$NLL_K on the first $NLL_LIMIT. FID needs Inception weights
# (FID_WEIGHTS=/path/pt_inception-2015-12-05.pth); skipped without them.
#
# Resumable: a model whose eval.json exists is skipped, a finished training (metrics.json) is not redone, and
# a cut training continues from its last epoch's checkpoint. Run it again until it prints the table; on a GPU
# it runs unchanged (BACKEND=triton DEVICE=cuda). Results: $OUT/<kind>-<variant>-s<seed>/eval.json,
# metrics.json (the per-epoch history), $OUT/table.md, $OUT/curves-*.png, $OUT/commands.txt.
#
# Usage: scripts/run_fashion_full.sh   (env: EPOCHS, NLL_K, NLL_LIMIT, THREADS, BACKEND, DEVICE, ONLY=name,...,
#        TRAIN_ARGS="..." extra `bvae train` arguments for every model, e.g. a setting chosen by
#        scripts/fashion_gap_ablations.py, with its own OUT and RUNS,
#        LIMIT=N for a smoke run on N images)
set -euo pipefail

OUT=${OUT:-benchmarks/results/fashion-mnist-full}
RUNS=${RUNS:-runs/fashion-mnist-full}
EPOCHS=${EPOCHS:-30}
LATENT=${LATENT:-16}
NLL_K=${NLL_K:-500}
NLL_LIMIT=${NLL_LIMIT:-1000}
THREADS=${THREADS:-2}
BACKEND=${BACKEND:-}
DEVICE=${DEVICE:-cpu}
LIMIT_ARGS=()  # LIMIT=N: the first N training and test images only (a smoke run of this script, not a result)
if [[ -n "${LIMIT:-}" ]]; then LIMIT_ARGS=(--limit "$LIMIT"); fi
FID_ARGS=()
if [[ -n "${FID_WEIGHTS:-}" ]]; then FID_ARGS=(--fid-weights "$FID_WEIGHTS"); fi
BACKEND_ARGS=()
if [[ -n "$BACKEND" ]]; then BACKEND_ARGS=(--backend "$BACKEND"); fi
read -r -a TRAIN_EXTRA <<< "${TRAIN_ARGS:-}"  # the same for both forms

# objective -> its extra training arguments (identical for the bvae and vae forms)
declare -A EXTRA=(
  [vae]=""
  [beta-vae]="--beta 4"
  [beta-tcvae]="--beta 6 --alpha 1 --gamma 1"
  [iwae]="--k 5"
)
# the order runs go in: the VAE pair first (its curves say whether $EPOCHS is enough), then the rest
MODELS=()
for variant in vae beta-vae beta-tcvae iwae; do for kind in bvae vae; do MODELS+=("$kind $variant 0"); done; done
for seed in 1 2; do for kind in bvae vae; do MODELS+=("$kind vae $seed"); done; done

mkdir -p "$OUT" "$RUNS"
# commands.txt: each exact command once, however often a resumed run repeats it
record() { grep -qxF -- "$1" "$OUT/commands.txt" 2>/dev/null || echo "$1" >> "$OUT/commands.txt"; }
for spec in "${MODELS[@]}"; do
  read -r kind variant seed <<< "$spec"
  name="$kind-$variant-s$seed"
  if [[ -n "${ONLY:-}" && ",$ONLY," != *",$name,"* ]]; then continue; fi
  run="$RUNS/$name"
  if [[ -f "$OUT/$name/eval.json" ]]; then echo "$name: done"; continue; fi
  # shellcheck disable=SC2086
  train=(python -m bvae train --dataset fashion-mnist --kind "$kind" --variant "$variant" ${EXTRA[$variant]}
    --latent-dim "$LATENT" --epochs "$EPOCHS" --seed "$seed" --threads "$THREADS" --device "$DEVICE"
    "${BACKEND_ARGS[@]}" "${LIMIT_ARGS[@]}" "${TRAIN_EXTRA[@]}" --curves --no-progress --out "$run")
  if [[ ! -f "$run/metrics.json" ]]; then
    resume=()
    if [[ -f "$run/checkpoint.pt" ]]; then resume=(--resume "$run/checkpoint.pt"); fi
    echo "$name: training ($EPOCHS epochs${resume:+, resuming})"
    record "${train[*]}"
    "${train[@]}" "${resume[@]}" 2>&1 | tee -a "$run.train.log" | grep -E "^epoch|PSNR|stopped|error" || true
    [[ -f "$run/metrics.json" ]] || { echo "$name: training did not finish (see $run.train.log)" >&2; exit 1; }
  fi
  mkdir -p "$OUT/$name"
  cp "$run/metrics.json" "$OUT/$name/metrics.json"
  evaluate=(python -m bvae eval "$run/checkpoint.pt" --dataset fashion-mnist --device "$DEVICE"
    --nll-samples "$NLL_K" --nll-limit "$NLL_LIMIT" --batch-size 500 "${LIMIT_ARGS[@]/--limit/--limit}"
    "${FID_ARGS[@]}" --out "$OUT/$name")
  echo "$name: evaluating"
  record "${evaluate[*]}"
  OMP_NUM_THREADS=$THREADS "${evaluate[@]}" > "$run.eval.log" 2>&1 || { tail -5 "$run.eval.log"; exit 1; }
done
python scripts/fashion_full_report.py "$OUT"
