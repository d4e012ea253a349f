"""Times one `bvae bench` case in two or more source trees (or settings) in the same run, interleaved.

"Is it slower than before this change?" needs both versions measured on the same machine at the same time:
each arm is its own worker process (its own checkout on PYTHONPATH, its own built extension), and the arms
take turns, one sample each, in a rotating order, so machine load hits them alike. Only one arm runs at a
time. Prints a table and writes JSON with every sample.

    python scripts/bench_ab.py --case 'bvae_train_step train batch64' \
        --arm before=/tmp/before --arm now=. --arm now-unchained=.:unchained --out results.json

An arm is NAME=TREE[:FLAGS], FLAGS a comma list of `unchained` (turns off the modules' pre-activation
chaining, bvae.blocks.CHAINING = False) and `backend=NAME` (this arm's backend, e.g. `torch` for the eager
reference, instead of --backend).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

WORKER = r"""
import json, os, sys, time, torch
import bvae_kernels
assert bvae_kernels.__file__.startswith(os.getcwd()), f"imported {bvae_kernels.__file__}, not the arm's tree"
torch.set_num_threads(int(sys.argv[4]))
from bvae_kernels.bench.cases import select_cases, prepare
from bvae_kernels.bench.timing import warm_up, time_once, saved_activation_bytes
import bvae.blocks as blocks
flags = dict(f.partition("=")[::2] for f in sys.argv[3].split(",") if f)
if "unchained" in flags:
    blocks.CHAINING = False
backend, device = flags.get("backend") or sys.argv[2], "cpu"
(case,) = [c for c in select_cases(device, patterns=sys.argv[1]) if c.full] or select_cases(device, True, sys.argv[1])
p = prepare(case, backend, device)
warm_up(p.fn, device, min_calls=5, min_seconds=1.0)
print(json.dumps({"case": case.id(device), "saved_mb": saved_activation_bytes(p.fn, p.params) / 2**20}), flush=True)
for line in sys.stdin:
    n = int(line)
    t0 = time.perf_counter()
    for _ in range(n):
        p.fn()
    print((time.perf_counter() - t0) * 1e3 / n, flush=True)
"""


def _commit(tree: str) -> str:
    """The tree's git commit, with "+changes" when its tracked files differ from it ("?" outside git)."""
    try:
        head = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", tree, "diff", "--quiet", "HEAD"], capture_output=True).returncode
    except OSError:
        return "?"
    return head.stdout.strip() + ("+changes" if dirty else "") if head.returncode == 0 else "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", required=True, help="a `bvae bench` case pattern that selects exactly one CPU case")
    ap.add_argument("--arm", action="append", required=True, help="NAME=TREE[:FLAGS] (two or more)")
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--samples", type=int, default=30, help="samples per arm")
    ap.add_argument("--calls", type=int, default=5, help="calls per sample")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per worker")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if len(args.arm) < 2:
        ap.error("give at least two --arm")
    arms: dict[str, subprocess.Popen] = {}
    meta: dict[str, dict] = {}
    for spec in args.arm:
        name, _, rest = spec.partition("=")
        tree, _, flag = rest.partition(":")
        if not name or not Path(tree, "bvae_kernels").is_dir():
            ap.error(f"--arm {spec!r}: expected NAME=TREE with TREE a checkout (bvae_kernels/ in it)")
        root = str(Path(tree).resolve())
        env = {**os.environ, "PYTHONPATH": root}
        cmd = [sys.executable, "-c", WORKER, args.case, args.backend, flag, str(args.threads)]
        # run in the tree: `python -c` puts the working folder first on sys.path, ahead of any installed copy
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=root)
        arms[name] = proc
        header = proc.stdout.readline()
        if not header:
            ap.error(f"arm {name!r} did not start (see its error above)")
        meta[name] = {"tree": root, "commit": _commit(root), "flag": flag, **json.loads(header)}
    samples: dict[str, list[float]] = {name: [] for name in arms}
    order = list(arms)
    for i in range(args.samples):
        shift = i % len(order)
        for name in order[shift:] + order[:shift]:
            arms[name].stdin.write(f"{args.calls}\n")
            arms[name].stdin.flush()
            samples[name].append(float(arms[name].stdout.readline()))
    for proc in arms.values():
        proc.stdin.close()
        proc.wait()
    first = order[0]
    print(f"case {meta[first]['case']}, {args.samples} samples x {args.calls} calls, backend {args.backend}")
    print("| arm | commit | median ms | p20 | p80 | x first arm (median of paired ratios) | saved MB |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for name in order:
        s = samples[name]
        ratio = statistics.median(a / b for a, b in zip(samples[first], s, strict=True))
        q = statistics.quantiles(s, n=5)
        rows.append(
            {
                "arm": name,
                **meta[name],
                "median_ms": statistics.median(s),
                "p20_ms": q[0],
                "p80_ms": q[3],
                "speedup_vs_first": ratio,
                "samples_ms": s,
            }
        )
        print(
            f"| {name} | {meta[name]['commit']} | {statistics.median(s):.2f} | {q[0]:.2f} | {q[3]:.2f} | {ratio:.3f} | "
            f"{meta[name]['saved_mb']:.2f} |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        load = [round(v, 2) for v in os.getloadavg()]
        info = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv, "load_avg_after": load}
        args.out.write_text(json.dumps({"meta": info, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
