"""What a run leaves behind: machine facts, the comparison table, and results.json / results.csv / speedup.png /
summary.md (matplotlib is imported only to draw the plot)."""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

import bvae_kernels as bk

from .cases import ALL_BACKENDS, CHAIN_CASE, EAGER, FUSED_BACKENDS, SHORT_DTYPE


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict:
    """Device, versions, date and machine facts recorded with every result."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    info = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else _cpu_name(),
        "torch_version": torch.__version__,
        "triton_version": triton_version,
        "cuda_version": torch.version.cuda,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "available_backends": bk.available_backends(),
        "command": " ".join(["bvae", *sys.argv[1:]]) if sys.argv else "",
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        info.update(
            capability=f"{props.major}.{props.minor}",
            sm_count=props.multi_processor_count,
            cudnn_version=torch.backends.cudnn.version(),
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
    return info


CSV_COLUMNS = (
    "case mode shape dtype layout device backend round status median_ms p20_ms p80_ms min_ms n_samples "
    "calls_per_sample speedup_vs_eager speedup_p20 speedup_p80 speedup_vs_compile peak_mem_mb saved_mb flops "
    "min_bytes tflops gbs floor_ms pct_of_floor do_bench_ms device_name torch_version triton_version date reason"
).split()


def _cell(value: object, digits: int = 3) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


TABLE_HEADER = (
    "case",
    "shape",
    "dtype",
    "backend",
    "median ms",
    "x eager",
    "x compile",
    "peak MB",
    "saved MB",
    "TFLOP/s",
    "GB/s",
    "% floor",
)


def table_rows(rows: list[dict]) -> list[list[str]]:
    out = []
    for r in rows:
        if r.get("status") != "ok":
            continue
        case = f"{r['case']} {r['mode']}" + (f" {r['layout']}" if r["layout"] == "channels_last" else "")
        if r.get("round"):
            case += f" r{r['round']}"
        out.append(
            [
                case,
                r["shape"],
                SHORT_DTYPE.get(r["dtype"], r["dtype"]),
                r["backend"],
                _cell(r.get("median_ms")),
                _cell(r.get("speedup_vs_eager")),
                _cell(r.get("speedup_vs_compile")),
                _cell(r.get("peak_mem_mb")),
                _cell(r.get("saved_mb")),
                _cell(r.get("tflops")),
                _cell(r.get("gbs")),
                _cell(r.get("pct_of_floor"), 2),
            ]
        )
    return out


def format_table(rows: list[dict], markdown: bool = False) -> str:
    """The comparison table (one line per case and backend), as aligned text or markdown."""
    body = table_rows(rows)
    if markdown:
        lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(TABLE_HEADER)]
    fmt = lambda cells: "  ".join(
        c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )
    return "\n".join([fmt(TABLE_HEADER), fmt(["-" * w for w in widths]), *(fmt(r) for r in body)])


def chain_summary(rows: list[dict]) -> list[dict]:
    """The key measurement: per layout and round, the `cpu`/`cuda` backend's speedup over the eager reference."""
    out = []
    for r in rows:
        if r["case"] == CHAIN_CASE and r["backend"] in FUSED_BACKENDS and r.get("status") == "ok":
            out.append(
                {
                    "layout": r["layout"],
                    "device": r["device"],
                    "backend": r["backend"],
                    "round": r["round"],
                    "eager_ms": r["median_ms"] * r["speedup_vs_eager"],
                    "fused_ms": r["median_ms"],
                    "ratio": r["speedup_vs_eager"],
                    "ratio_p20": r.get("speedup_p20"),
                    "ratio_p80": r.get("speedup_p80"),
                    "n_samples": r["n_samples"],
                }
            )
    return out


def summary_markdown(result: dict, title: str | None = None) -> str:
    """Markdown for one results.json: machine facts, the key chain measurement if present, the table."""
    meta, rows = result["meta"], result["rows"]
    peaks = meta.get("peaks", {})
    lines = [f"### {title or meta.get('title') or 'bvae bench'}", ""]
    lines.append(
        f"{meta.get('device_name')} ({meta.get('device')}, {meta.get('torch_threads')} torch threads), "
        f"torch {meta.get('torch_version')}, triton {meta.get('triton_version')}, {meta.get('date')}; "
        f"command `{meta.get('command')}`."
    )
    if meta.get("load_average_before") or meta.get("load_average"):
        lines.append(
            f"Machine load average (1, 5, 15 min) before: {meta.get('load_average_before')}, "
            f"after: {meta.get('load_average')} on {meta.get('cpu_count')} cores."
        )
    for dtype, pk in peaks.items():
        lines.append(
            f"Measured peaks ({dtype}): matmul {pk['peak_flops'] / 1e12:.3g} TFLOP/s, "
            f"copy {pk['peak_bytes_per_s'] / 1e9:.3g} GB/s."
        )
    chain = chain_summary(rows)
    if chain:
        lines += ["", "Key measurement: bi_conv2d then bi_conv2d_reverse, forward + backward (speedup over eager):", ""]
        lines += ["| layout | backend | round | eager ms | fused ms | speedup | p20-p80 of paired ratios | samples |"]
        lines += ["|---|---|---|---|---|---|---|---|"]
        for c in chain:
            lines.append(
                f"| {c['layout']} | {c['backend']} | {c['round']} | {c['eager_ms']:.2f} | {c['fused_ms']:.2f} | "
                f"**{c['ratio']:.2f}x** | {_cell(c['ratio_p20'])}-{_cell(c['ratio_p80'])} | {c['n_samples']} |"
            )
    lines += ["", format_table(rows, markdown=True)]
    skipped = [r for r in rows if r.get("status") != "ok"]
    if skipped:
        lines += ["", "Not measured:", ""]
        seen = set()
        for r in skipped:
            key = (r["case"], r["backend"], r["reason"])
            if key not in seen:
                seen.add(key)
                lines.append(f"- {r['case']} / {r['backend']}: {r['status']}: {r['reason']}")
    return "\n".join(lines) + "\n"


def write_plot(rows: list[dict], path: Path) -> None:
    """Speedup over eager by case (median, p20-p80 band of paired ratios), one marker per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    ok = [r for r in rows if r.get("status") == "ok" and r.get("speedup_vs_eager") is not None]
    groups = list(dict.fromkeys(r["group"] for r in ok))
    backends = [b for b in ALL_BACKENDS if b != EAGER and any(r["backend"] == b for r in ok)]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(groups) + 2), 6.5))
    width = 0.8 / max(1, len(backends))
    for j, backend in enumerate(backends):
        xs, ys, lo, hi = [], [], [], []
        for i, g in enumerate(groups):
            rs = [r for r in ok if r["group"] == g and r["backend"] == backend]
            if not rs:
                continue
            ratios = [r["speedup_vs_eager"] for r in rs]
            y = statistics.median(ratios)
            xs.append(i + (j - (len(backends) - 1) / 2) * width)
            ys.append(y)
            lo.append(y - min(r.get("speedup_p20") or y for r in rs))
            hi.append(max(r.get("speedup_p80") or y for r in rs) - y)
        ax.bar(xs, ys, width=width, label=backend, yerr=[[max(0, v) for v in lo], [max(0, v) for v in hi]], capsize=2)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log")  # ratios: 2x faster and 2x slower sit at equal distances from 1
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.set_ylabel("speedup vs eager (median, p20-p80 band)")
    dev = ok[0]["device"] if ok else "?"
    ax.set_title(f"bvae bench on {dev}")
    if backends:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(result: dict, out: Path) -> dict[str, Path]:
    """Writes results.json, results.csv, speedup.png and summary.md under `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / v for k, v in (("json", "results.json"), ("csv", "results.csv"), ("png", "speedup.png"))}
    paths["md"] = out / "summary.md"
    paths["json"].write_text(json.dumps(result, indent=1, default=str) + "\n")
    meta = result["meta"]
    with paths["csv"].open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in result["rows"]:
            facts = {k: meta.get(k) for k in ("device_name", "torch_version", "triton_version", "date")}
            writer.writerow({**facts, **row})
    write_plot(result["rows"], paths["png"])
    paths["md"].write_text(summary_markdown(result))
    return paths
