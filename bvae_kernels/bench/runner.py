"""The measurement loop: one case under every backend, interleaved per repetition, and whole runs.

Backends are interleaved per repetition (with a rotating order) so that a noisy machine slows them all alike;
each sample times `number` calls (about 1 ms on CPU, 0.5 ms on CUDA); the report gives the median and the
p20-p80 band; a backend's speedup is the ratio of the medians, with the p20-p80 band of its per-repetition
ratios to the eager sample taken next to it. On CUDA, inputs are channels_last, cudnn.benchmark is on and TF32
is off for both matmul and cuDNN unless tf32=True turns both on.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import torch

from .cases import (
    COMPILE_BACKENDS,
    DTYPES,
    EAGER,
    Case,
    Prepared,
    SkipCase,
    applicable,
    backends_for,
    compiled,
    prepare,
    select_cases,
)
from .report import machine_info
from .roofline import count_flops, floor_ms, measure_peaks
from .timing import (
    calls_per_sample,
    do_bench_ms,
    peak_cuda_bytes,
    quantile,
    saved_activation_bytes,
    sync,
    time_once,
    warm_up,
)


def configure_device(device: str, tf32: bool = False) -> None:
    """Fair baselines: cudnn.benchmark on, TF32 matched (both off unless asked) on CUDA."""
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


def _flops(case: Case, device: str) -> int:
    try:
        return count_flops(prepare(case, EAGER, device).fn)
    except SkipCase:
        return 0


def run_case(
    case: Case,
    backends: list[str],
    device: str,
    reps: int,
    round_index: int = 0,
    peaks: dict[str, float] | None = None,
    details: bool = True,
) -> list[dict]:
    """Measures one case under every backend, interleaved per repetition; returns one row per backend.

    details: also the saved-activation bytes, and on CUDA the peak allocation and Triton's do_bench median.
    """
    base = {
        "case": case.name,
        "mode": case.mode,
        "shape": case.shape,
        "dtype": case.dtype_for(device),
        "layout": case.layout_for(device),
        "group": case.group(device),
        "device": device,
        "round": round_index,
        "note": case.note,
    }
    rows: dict[str, dict] = {}
    prepared: dict[str, Prepared] = {}
    numbers: dict[str, int] = {}
    torch._dynamo.reset()  # a fresh cache per case: recompile limits must never drop a case back to eager
    for backend in backends:
        row = {**base, "backend": backend, "status": "ok", "reason": ""}
        rows[backend] = row
        start = time.perf_counter()
        try:
            p = prepare(case, backend, device)
            ms = warm_up(p.fn, device)
            prepared[backend] = p
            numbers[backend] = calls_per_sample(ms, device)
        except SkipCase as exc:
            row.update(status="skipped", reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - one broken backend must not stop the comparison
            row.update(status="error", reason=f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
        row["setup_s"] = round(time.perf_counter() - start, 2)  # building, compiling, autotuning, warming up
    times: dict[str, list[float]] = {b: [] for b in prepared}
    order = list(prepared)
    for rep in range(reps):
        shift = rep % max(1, len(order))
        for backend in order[shift:] + order[:shift]:
            times[backend].append(time_once(prepared[backend].fn, device, numbers[backend]))
    flops = _flops(case, device) if prepared else 0
    eager = times.get(EAGER)
    compiled_times = [times[b] for b in COMPILE_BACKENDS if b in times]
    best_compile = min(compiled_times, key=statistics.median) if compiled_times else None
    for backend, p in prepared.items():
        s = times[backend]
        row = rows[backend]
        med = statistics.median(s)
        row.update(
            median_ms=med,
            p20_ms=quantile(s, 0.2),
            p80_ms=quantile(s, 0.8),
            min_ms=min(s),
            n_samples=len(s),
            calls_per_sample=numbers[backend],
            samples_ms=s,
            flops=flops,
            min_bytes=p.min_bytes,
        )
        if eager:
            ratios = [e / x for e, x in zip(eager, s, strict=True)]
            row.update(
                speedup_vs_eager=statistics.median(eager) / med,
                speedup_p20=quantile(ratios, 0.2),
                speedup_p80=quantile(ratios, 0.8),
            )
        if best_compile is not None:
            row["speedup_vs_compile"] = statistics.median(best_compile) / med
        row["tflops"] = flops / (med * 1e-3) / 1e12 if flops else None
        row["gbs"] = p.min_bytes / (med * 1e-3) / 1e9 if p.min_bytes else None
        if details and case.mode != "fwd":
            try:
                row["saved_mb"] = saved_activation_bytes(p.fn, p.params) / 2**20
            except Exception as exc:  # noqa: BLE001 - a hook failure must not lose the timing
                row["saved_mb"] = None
                row["reason"] = f"saved-bytes hook failed: {type(exc).__name__}"
        if details and device == "cuda":
            row["peak_mem_mb"] = peak_cuda_bytes(p.fn) / 2**20
            row["do_bench_ms"] = do_bench_ms(p.fn)
        if peaks:
            floor = floor_ms(flops, p.min_bytes, peaks)
            row["floor_ms"] = floor
            row["pct_of_floor"] = 100 * floor / med if floor > 0 else None
    return [rows[b] for b in backends]


def run_benchmarks(
    device: str = "cpu",
    quick: bool = False,
    cases: str | None = None,
    reps: int | None = None,
    rounds: int = 1,
    backends: list[str] | None = None,
    include_compile: bool = True,
    tf32: bool = False,
    progress: bool = True,
    checkpoint: Path | None = None,
    deadline: float | None = None,
    details: bool = True,
) -> dict:
    """Runs the selected cases `rounds` times; returns {"meta": ..., "rows": [...]}.

    Each case runs under the backends (given, or the device's defaults) that apply to it. With `checkpoint`, the
    rows so far are written there (JSON) after every case, so a run cut short by a time limit still leaves its
    measurements; with `deadline` (a time.monotonic() value) no case starts after it, and meta lists the ones
    left out.
    """
    from tqdm.auto import tqdm

    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' asked for, but torch.cuda.is_available() is False")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if reps is not None and reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    configure_device(device, tf32)
    chosen = select_cases(device, quick, cases)
    if not chosen:
        raise ValueError(f"cases={cases!r} matches no case for {device}; see `bvae bench --list`")
    names = backends or backends_for(device, include_compile)
    for b in names:
        applicable(chosen[0], b, device)  # raises ValueError on an unknown name
    if EAGER not in names:
        names = [EAGER, *names]
    reps = reps or (5 if quick else 30)
    dtypes = sorted({c.dtype_for(device) for c in chosen})
    peaks = {dt: measure_peaks(device, DTYPES[dt], quick) for dt in dtypes}
    rows: list[dict] = []
    left_out: list[str] = []
    bar = tqdm(total=len(chosen) * rounds, desc="bvae bench", unit="case", disable=not progress)
    load_before = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    for r in range(rounds):
        for case in chosen:
            if deadline is not None and time.monotonic() > deadline:
                left_out.append(case.id(device))
                continue
            bar.set_postfix_str(case.id(device)[:40])
            case_backends = [b for b in names if applicable(case, b, device)]
            if quick and not case.quick_compile:
                case_backends = [b for b in case_backends if not compiled(b)]
            rows += run_case(case, case_backends, device, reps, r, peaks[case.dtype_for(device)], details)
            bar.update()
            if checkpoint is not None:
                checkpoint.parent.mkdir(parents=True, exist_ok=True)
                partial = {"meta": {**machine_info(device), "partial": True, "peaks": peaks}, "rows": rows}
                checkpoint.write_text(json.dumps(partial, default=str) + "\n")
    bar.close()
    meta = machine_info(device)
    meta["load_average_before"] = load_before
    meta.update(quick=quick, reps=reps, rounds=rounds, backends=names, peaks=peaks, tf32=tf32, cases=cases)
    if left_out:
        meta["left_out_past_deadline"] = left_out
    for row in rows:
        for k in ("device_name", "torch_version", "triton_version", "date"):
            row.setdefault(k, meta[k])
    return {"meta": meta, "rows": rows}


def profile_case(case: Case, backend: str, device: str, iterations: int = 10, top: int = 15) -> str:
    """torch.profiler table of `iterations` warm calls of one case: where the time goes, op by op."""
    from torch.profiler import ProfilerActivity, profile

    prepared = prepare(case, backend, device)
    warm_up(prepared.fn, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(iterations):
            prepared.fn()
        sync(device)
    sort_by = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    title = f"== {case.id(device)} / {backend}: {iterations} iterations, sorted by {sort_by}"
    return title + "\n" + prof.key_averages().table(sort_by=sort_by, row_limit=top, max_name_column_width=60)
