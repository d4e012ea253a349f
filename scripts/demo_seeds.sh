#!/usr/bin/env bash
# The demo's BVAE-vs-VAE gap over seeds, with and without the reverse scale (README "Reverse scale").
#
# Runs `bvae demo` (its defaults: 5000 train / 1000 test images, 20 epochs, batch 64, lr 1e-2, latent 16)
# for each seed in $SEEDS, once as is and once with --no-reverse-scale, two demos at a time with one thread
# each (2-core machine), then tabulates PSNR/SSIM per run and the mean gap into $OUT/summary.md.
#
# Usage: scripts/demo_seeds.sh [OUT_DIR]   (default benchmarks/results/fashion-mnist-demo-seeds)
set -euo pipefail

OUT=${1:-benchmarks/results/fashion-mnist-demo-seeds}
SEEDS=${SEEDS:-"0 1 2"}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"

run() {  # run NAME ARGS...
  local name=$1
  shift
  "$PYTHON" -m bvae demo --out "$OUT/$name" --threads 1 --no-progress "$@" > "$OUT/$name.log" 2>&1
  rm -f "$OUT/$name"/*/checkpoint.pt
}

for seed in $SEEDS; do
  run "seed$seed-reverse-scale" --seed "$seed" &
  run "seed$seed-plain" --seed "$seed" --no-reverse-scale &
  wait
done

"$PYTHON" - "$OUT" <<'EOF'
import json
import pathlib
import platform
import statistics
import subprocess
import sys

import torch

out = pathlib.Path(sys.argv[1])
rows, gaps = [], {"reverse-scale": [], "plain": []}
for metrics in sorted(out.glob("seed*/metrics.json")):
    m = json.loads(metrics.read_text())
    seed, form = metrics.parent.name.split("-", 1)
    gap = m["bvae"]["psnr"] - m["vae"]["psnr"]
    gaps[form].append(gap)
    rows.append(
        f"| {seed[4:]} | {form} | {m['bvae']['params']:,} | {m['vae']['params']:,} | {m['bvae']['psnr']:.2f} | "
        f"{m['vae']['psnr']:.2f} | {gap:+.2f} | {m['bvae']['ssim']:.4f} | {m['vae']['ssim']:.4f} |"
    )
sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
lines = [
    "# `bvae demo` over seeds: BVAE vs its VAE twin, with and without the reverse scale",
    "",
    f"torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread per demo, git {sha}"
    " (plus uncommitted changes when run before the commit).",
    "",
    "| seed | form | BVAE params | VAE params | BVAE PSNR | VAE PSNR | gap (dB) | BVAE SSIM | VAE SSIM |",
    "|---|---|---|---|---|---|---|---|---|",
    *rows,
    "",
]
for form, values in gaps.items():
    if values:
        lines.append(f"- {form}: mean gap {statistics.mean(values):+.2f} dB over {len(values)} seeds")
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
