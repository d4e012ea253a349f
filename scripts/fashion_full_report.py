"""The table and learning curves of scripts/run_fashion_full.sh, from the eval.json and metrics.json it wrote.

    python scripts/fashion_full_report.py benchmarks/results/fashion-mnist-full

Writes table.md (per objective and form: mean and spread over the seeds present; the BVAE - VAE gap, paired by
seed) and curves-<objective>.png (train and test loss per epoch, both forms, every seed). Models still missing
are listed (with ONLY=name,... in the environment, as scripts/run_fashion_full.sh takes it, only those), so a
partial run reports what it has.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

OBJECTIVES = ("vae", "beta-vae", "beta-tcvae", "iwae")
METRICS = (  # (eval.json key, column, format of a mean over seeds)
    ("psnr", "PSNR (dB)", "{:.2f}"),
    ("ssim", "SSIM", "{:.4f}"),
    ("nll", "NLL (nats)", "{:.2f}"),
    ("active_units", "AU", "{:.1f}"),
    ("accuracy", "accuracy", "{:.4f}"),
)


def load_runs(root: Path) -> dict[tuple[str, str, int], dict]:
    """{(kind, objective, seed): {"eval": ..., "metrics": ...}} for every finished model under root."""
    runs = {}
    for path in sorted(root.glob("*-s*/eval.json")):
        kind, _, rest = path.parent.name.partition("-")
        objective, _, seed = rest.rpartition("-s")
        metrics_path = path.parent / "metrics.json"
        runs[(kind, objective, int(seed))] = {
            "eval": json.loads(path.read_text()),
            "metrics": json.loads(metrics_path.read_text()) if metrics_path.exists() else {},
        }
    return runs


def _mean_spread(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


def table(runs: dict) -> str:
    lines = [
        "| objective | form | seeds | parameters | " + " | ".join(m[1] for m in METRICS) + " |",
        "|---|---|---|---:|" + "---:|" * len(METRICS),
    ]
    for objective in OBJECTIVES:
        for kind in ("bvae", "vae"):
            chosen = [r for (k, o, _), r in sorted(runs.items()) if k == kind and o == objective]
            if not chosen:
                continue
            seeds = sorted(s for (k, o, s) in runs if k == kind and o == objective)
            cells = [objective, kind.upper(), ",".join(map(str, seeds)), f"{chosen[0]['eval']['parameters']:,}"]
            cells += [_mean_spread([r["eval"]["metrics"][key] for r in chosen], fmt) for key, _, fmt in METRICS]
            lines.append("| " + " | ".join(cells) + " |")
        pairs = [s for (k, o, s) in runs if k == "bvae" and o == objective and ("vae", objective, s) in runs]
        if pairs:
            gaps = []
            for key, _, fmt in METRICS:
                diffs = [
                    runs[("bvae", objective, s)]["eval"]["metrics"][key]
                    - runs[("vae", objective, s)]["eval"]["metrics"][key]
                    for s in sorted(pairs)
                ]
                gaps.append(_mean_spread(diffs, "{:+" + fmt[2:]))
            lines.append(
                f"| {objective} | BVAE - VAE | {','.join(map(str, sorted(pairs)))} | | " + " | ".join(gaps) + " |"
            )
    return "\n".join(lines) + "\n"


def curves(runs: dict, root: Path) -> list[Path]:
    """One PNG per objective: train (solid) and test (dashed) loss per epoch, BVAE and VAE, every seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for objective in OBJECTIVES:
        mine = {key: r for key, r in runs.items() if key[1] == objective and r["metrics"].get("history")}
        if not mine:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        late = []  # the y range from epoch 3 on: the first epochs' losses would flatten everything else
        for (kind, _, seed), r in sorted(mine.items()):
            hist = r["metrics"]["history"]
            epochs = [h["epoch"] for h in hist]
            color = "tab:blue" if kind == "bvae" else "tab:orange"
            label = f"{kind.upper()} s{seed}"
            ax.plot(epochs, [h["loss"] for h in hist], color=color, alpha=0.9 - 0.25 * seed, label=f"{label} train")
            late += [h[k] for h in hist[2:] for k in ("loss", "test_loss") if k in h]
            if "test_loss" in hist[0]:
                test = [h["test_loss"] for h in hist]
                ax.plot(epochs, test, color=color, ls="--", alpha=0.9 - 0.25 * seed, label=f"{label} test")
        ax.set(xlabel="epoch", ylabel="loss (nats per image)", title=f"Fashion-MNIST, {objective} objective")
        if late:
            ax.set_ylim(min(late) - 1, max(late) + 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        path = root / f"curves-{objective}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[0])
    runs = load_runs(root)
    if not runs:
        print(f"no finished model under {root} (eval.json)", file=sys.stderr)
        return 1
    expected = {(k, o, 0) for k in ("bvae", "vae") for o in OBJECTIVES} | {
        (k, "vae", s) for k in ("bvae", "vae") for s in (1, 2)
    }
    only = {name for name in os.environ.get("ONLY", "").split(",") if name}  # the run script's ONLY=name,...
    missing = sorted(f"{k}-{o}-s{s}" for k, o, s in expected - set(runs) if not only or f"{k}-{o}-s{s}" in only)
    text = table(runs)
    if missing:
        text += f"\nStill to run: {', '.join(missing)}.\n"
    (root / "table.md").write_text(text)
    written = curves(runs, root)
    print(text)
    print(f"wrote {root / 'table.md'}" + "".join(f", {p}" for p in written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
