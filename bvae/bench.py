"""`bvae bench`: the command over the benchmark harness in bvae_kernels.bench (cases, timing, roofline, report).

bvae bench --quick --device cpu --out bench-out     # fused vs naive, eager and compiled: time, memory, roofline
bvae bench --host                                   # host (CPU) time per call against the eager chain
bvae bench --list                                   # the case ids; --cases picks some
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from bvae_kernels.bench import ALL_BACKENDS, SkipCase, backends_for, configure_device, run_benchmarks, select_cases
from bvae_kernels.bench.report import chain_summary, format_table, machine_info, write_results
from bvae_kernels.bench.runner import profile_case

from ._checks import int_arg, positive_int_arg


def _cmd_profile(args: argparse.Namespace, device: str) -> int:
    backends = [b.strip() for b in args.backends.split(",")] if args.backends else backends_for(device, False)
    configure_device(device, args.tf32)
    texts = []
    for case in select_cases(device, args.quick, args.cases):
        for backend in backends:
            try:
                texts.append(profile_case(case, backend, device, args.profile))
            except SkipCase as exc:
                texts.append(f"== {case.id(device)} / {backend}: skipped: {exc}")
            print(texts[-1])
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "profile.txt").write_text("\n\n".join(texts) + "\n")
        print(f"wrote {out / 'profile.txt'}")
    return 0


def _cmd_host(args: argparse.Namespace) -> int:
    """`bvae bench --host`: thread CPU time per call against the eager chain (see bvae/bench_host.py)."""
    from tqdm.auto import tqdm

    from . import bench_host

    torch.set_num_threads(args.threads or 1)
    cases = bench_host.select(bench_host.all_cases(), args.cases)
    if not cases:
        raise ValueError(f"--cases {args.cases!r} matches no host case; see `bvae bench --host --list`")
    if args.list:
        for c in cases:
            print(f"{c.name} [{c.mode}]")
        return 0
    rounds = args.reps or (5 if args.quick else 21)
    load_before = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    rows: list[dict] = []
    for case in tqdm(cases, desc="bvae bench --host", unit="case", disable=args.no_progress):
        rows += bench_host.measure(case, rounds=rounds)
    table = bench_host.markdown(rows)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        meta = {**machine_info("cpu"), "load_average_before": load_before, "rounds": rounds, "clock": "thread_time"}
        (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
        head = (
            f"Host time per call (thread CPU time, tiny tensors, {rounds} interleaved samples, "
            f"{torch.get_num_threads()} torch thread), {meta['device_name']}, torch {meta['torch_version']}, "
            f"{meta['date']}; command `{meta['command']}`.\n\n"
        )
        (out / "summary.md").write_text(head + table + "\n")
        print(f"wrote {out / 'results.json'}, {out / 'summary.md'}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.host:
        return _cmd_host(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.list:
        for c in select_cases(device, args.quick, args.cases):
            print(c.id(device))
        return 0
    if args.profile:
        return _cmd_profile(args, device)
    backends = [b.strip() for b in args.backends.split(",")] if args.backends else None
    include_compile = not args.no_compile
    result = run_benchmarks(
        device,
        args.quick,
        args.cases,
        args.reps,
        args.rounds,
        backends,
        include_compile,
        args.tf32,
        progress=not args.no_progress,
        checkpoint=Path(args.out) / "results.partial.json" if args.out else None,
    )
    print(format_table(result["rows"]))
    for c in chain_summary(result["rows"]):
        print(
            f"chain {c['layout']:<13} {c['backend']} round {c['round']}: eager {c['eager_ms']:.2f} ms, "
            f"fused {c['fused_ms']:.2f} ms, speedup {c['ratio']:.3f}x"
        )
    for r in result["rows"]:
        if r.get("status") != "ok":
            print(f"{r['status']}: {r['case']} {r['mode']} / {r['backend']}: {r['reason']}")
    if args.out:
        paths = write_results(result, Path(args.out))
        (Path(args.out) / "results.partial.json").unlink(missing_ok=True)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Adds `bvae bench`."""
    p = subparsers.add_parser(
        "bench",
        help="benchmark fused kernels vs eager and torch.compile",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--quick", action="store_true", help="small cases, few reps (< 2 min on 2 CPU cores)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    p.add_argument("--out", default=None, help="write results.json, results.csv, speedup.png, summary.md here")
    p.add_argument("--cases", default=None, help="comma-separated substrings or globs of case ids (see --list)")
    p.add_argument("--backends", default=None, help=f"comma-separated subset of {', '.join(ALL_BACKENDS)}")
    p.add_argument(
        "--reps", type=positive_int_arg, default=None, help="samples per backend (default 30; 5 with --quick)"
    )
    p.add_argument("--rounds", type=positive_int_arg, default=1, help="repeat the whole measurement this many times")
    p.add_argument("--threads", type=positive_int_arg, default=None, help="torch.set_num_threads before measuring")
    p.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    p.add_argument("--tf32", action="store_true", help="allow TF32 in both matmul and cuDNN (matched)")
    p.add_argument(
        "--profile",
        type=int_arg(0),
        default=0,
        metavar="N",
        help="instead of timing, print torch.profiler tables of N calls",
    )
    p.add_argument(
        "--host",
        action="store_true",
        help="measure host overhead instead: thread CPU time per call on tiny CPU tensors, fused vs the eager chain",
    )
    p.add_argument("--list", action="store_true", help="list the selected case ids and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_bench)
