"""The benchmark cases shared by pytest-benchmark (this folder) and `bvae bench`: one list, in
bvae_kernels/bench/cases.py.

The harness lives in the installed package (bvae_kernels.bench) so that `bvae bench` works from a wheel; this
module re-exports it and adds the pytest-benchmark glue. Environment knobs for `make bench`:
BVAE_BENCH_DEVICE (cpu | cuda; default cuda when available), BVAE_BENCH_QUICK=1 (the quick subset),
BVAE_BENCH_THREADS (torch.set_num_threads), BVAE_BENCH_ROUNDS (pytest-benchmark rounds; default 30).
"""

from __future__ import annotations

import os

import pytest
import torch

from bvae_kernels.bench import ALL_BACKENDS, CASES, CHAIN_CASE, COMPILE_BACKENDS, EAGER, Case, SkipCase, prepare
from bvae_kernels.bench.cases import DTYPES, MODULE_CASES, applicable, backends_for, select_cases
from bvae_kernels.bench.roofline import count_flops, floor_ms, measure_peaks
from bvae_kernels.bench.timing import do_bench_ms, peak_cuda_bytes, saved_activation_bytes, warm_up

__all__ = [
    "ALL_BACKENDS",
    "CASES",
    "CHAIN_CASE",
    "BLOCK_CASES",
    "OP_CASES",
    "Case",
    "backends_for",
    "bench_device",
    "run_benchmark",
]


def bench_device() -> str:
    """The device the suite measures: $BVAE_BENCH_DEVICE, else cuda when available, else cpu."""
    device = os.environ.get("BVAE_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"BVAE_BENCH_DEVICE must be 'cpu' or 'cuda', got {device!r}")
    return device


def _selected() -> list[Case]:
    return select_cases(bench_device(), quick=os.environ.get("BVAE_BENCH_QUICK") == "1")


OP_CASES = [c for c in _selected() if c.name not in MODULE_CASES]
BLOCK_CASES = [c for c in _selected() if c.name in MODULE_CASES]


def run_benchmark(benchmark, case: Case, backend: str, device: str) -> None:  # noqa: ANN001 - pytest fixture
    """Times `case` under `backend` with pytest-benchmark: group = case + shape + dtype, one test per backend.

    The timed callable ends with torch.cuda.synchronize() on CUDA; extra_info carries FLOPs, minimum bytes,
    the roofline floor from the measured peaks, saved-activation bytes, and on CUDA the peak allocation and
    triton.testing.do_bench's device-side median.
    """
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if not applicable(case, backend, device):
        pytest.skip(f"{backend} does not apply to {case.name}")
    compiled = backend in COMPILE_BACKENDS or backend.endswith("+compile")
    if compiled and os.environ.get("BVAE_BENCH_QUICK") == "1" and not case.quick_compile:
        pytest.skip("quick run: torch.compile is timed on the chain case only")
    try:
        prepared = prepare(case, backend, device)
    except SkipCase as exc:
        pytest.skip(str(exc))
    if device == "cuda":

        def fn() -> None:
            prepared.fn()
            torch.cuda.synchronize()

    else:
        fn = prepared.fn
    ms = warm_up(fn, device)
    iterations = max(1, min(1000, int(1.0 / max(ms, 1e-4)) + 1))
    flops = count_flops(prepare(case, EAGER, device).fn)
    peaks = measure_peaks(device, DTYPES[case.dtype_for(device)])
    info = {
        "case": case.name,
        "mode": case.mode,
        "shape": case.shape,
        "dtype": case.dtype_for(device),
        "layout": case.layout_for(device),
        "backend": backend,
        "reference": backend == EAGER,
        "flops": flops,
        "min_bytes": prepared.min_bytes,
        "floor_ms": floor_ms(flops, prepared.min_bytes, peaks),
        "peak_flops": peaks["peak_flops"],
        "peak_bytes_per_s": peaks["peak_bytes_per_s"],
        "torch_threads": torch.get_num_threads(),
    }
    if case.mode != "fwd":
        info["saved_mb"] = saved_activation_bytes(prepared.fn, prepared.params) / 2**20
    if device == "cuda":
        info["peak_mem_mb"] = peak_cuda_bytes(prepared.fn) / 2**20
        info["do_bench_median_ms"] = do_bench_ms(prepared.fn)
    benchmark.group = case.group(device)
    benchmark.extra_info.update(info)
    rounds = int(os.environ.get("BVAE_BENCH_ROUNDS", "5" if os.environ.get("BVAE_BENCH_QUICK") == "1" else "30"))
    benchmark.pedantic(fn, rounds=rounds, iterations=iterations, warmup_rounds=1)
