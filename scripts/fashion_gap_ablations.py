"""Ablations for the BVAE - VAE gap of the full-budget Fashion-MNIST run, chosen on a validation split.

    python scripts/fashion_gap_ablations.py [--epochs 10] [--out benchmarks/results/fashion-mnist-full/ablations]

Every setting trains both forms (VAE objective, seed 0) with the same recipe change on the first 55,000 training
images and scores them on the last 5,000 (`--val-size 5000`). The gap is read from the validation loss (the
negative ELBO per image after the last epoch) and its curve over the epochs; nothing here is chosen on the test
set (`bvae train` still prints a test PSNR at its end, in train.log; the table does not use it). A short budget
screens settings; a setting that closes the gap here is the one worth a full run.

Resumable: a model whose metrics.json exists is not trained again. Checkpoints go to <runs>/<setting>-<kind>/
(runs/ is not committed); writes <out>/<setting>-<kind>/metrics.json and train.log, <out>/table.md,
<out>/curves.png and <out>/commands.txt.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

# setting -> extra `bvae train` arguments, identical for the bvae and vae forms
SETTINGS = {
    "baseline": [],
    "lr-4e-3": ["--lr", "4e-3"],  # 2x the default peak lr
    "gnova-alpha-0.25": ["--gnova-alpha", "0.25"],
    "res-blocks-2": ["--res-blocks", "2"],
    "width-24": ["--width", "24", "--hidden", "192"],
}
KINDS = ("bvae", "vae")


def train_command(setting: str, kind: str, epochs: int, runs: Path) -> list[str]:
    return [
        sys.executable, "-m", "bvae", "train", "--dataset", "fashion-mnist", "--kind", kind, "--variant", "vae",
        "--latent-dim", "16", "--epochs", str(epochs), "--seed", "0", "--threads", "2", "--device", "cpu",
        "--val-size", "5000", "--no-progress", "--out", str(runs / f"{setting}-{kind}"), *SETTINGS[setting],
    ]  # fmt: skip


def run(settings: list[str], epochs: int, out: Path, runs: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    commands = out / "commands.txt"
    recorded = set(commands.read_text().splitlines()) if commands.exists() else set()
    for setting in settings:
        for kind in KINDS:
            run_dir = out / f"{setting}-{kind}"
            if (run_dir / "metrics.json").exists():
                print(f"{setting}-{kind}: done", flush=True)
                continue
            cmd = train_command(setting, kind, epochs, runs)
            line = " ".join(["python", *cmd[1:]])
            if line not in recorded:
                with commands.open("a") as f:
                    f.write(line + "\n")
                recorded.add(line)
            print(f"{setting}-{kind}: training ({epochs} epochs)", flush=True)
            run_dir.mkdir(parents=True, exist_ok=True)
            with (run_dir / "train.log").open("w") as log:
                subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
            shutil.copy(runs / f"{setting}-{kind}" / "metrics.json", run_dir / "metrics.json")


def report(settings: list[str], out: Path) -> str:
    rows = [
        "| setting | BVAE val loss | VAE val loss | gap (nats) | BVAE train loss | VAE train loss | parameters |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    curves = {}
    for setting in settings:
        metrics = {}
        for kind in KINDS:
            path = out / f"{setting}-{kind}" / "metrics.json"
            if path.exists():
                metrics[kind] = json.loads(path.read_text())
                curves[f"{setting}-{kind}"] = [e["val_loss"] for e in metrics[kind]["history"]]
        if len(metrics) < 2:
            rows.append(f"| {setting} | (not run) | | | | | |")
            continue
        last = {kind: m["history"][-1] for kind, m in metrics.items()}
        gap = last["bvae"]["val_loss"] - last["vae"]["val_loss"]
        rows.append(
            f"| {setting} | {last['bvae']['val_loss']:.2f} | {last['vae']['val_loss']:.2f} | {gap:+.2f} | "
            f"{last['bvae']['loss']:.2f} | {last['vae']['loss']:.2f} | "
            f"{metrics['bvae']['params']:,} / {metrics['vae']['params']:,} |"
        )
    table = "\n".join(rows) + "\n"
    (out / "table.md").write_text(table)
    if curves:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        colors = {setting: f"C{i}" for i, setting in enumerate(settings)}  # one color per setting, solid = BVAE
        for name, values in curves.items():
            setting, _, kind = name.rpartition("-")
            style = "-" if kind == "bvae" else "--"
            ax.plot(range(1, len(values) + 1), values, style, color=colors[setting], label=name)
        ax.set(xlabel="epoch", ylabel="validation loss (nats)", title="VAE objective, seed 0, 55k/5k split")
        ax.set_ylim(top=min(v[min(2, len(v) - 1)] for v in curves.values()) + 5)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "curves.png", dpi=110)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fashion-mnist-full/ablations"))
    parser.add_argument("--runs", type=Path, default=Path("runs/fashion-gap-ablations"), help="checkpoints")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated subset of {list(SETTINGS)}")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    settings = args.settings.split(",")
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}; choose from {list(SETTINGS)}")
    if not args.report_only:
        run(settings, args.epochs, args.out, args.runs)
    print(report(settings, args.out), end="")


if __name__ == "__main__":
    main()
