"""The benchmark harness: the fused kernels against the naive path (eager and torch.compile), for time, memory and
the roofline floor. `bvae bench` and the pytest-benchmark suite under benchmarks/ are thin layers over it.

- `cases`: what is measured (one list of cases, the backends that can run each) and how each is built;
- `timing`: how a callable is timed (CUDA events or perf_counter, warm-up, saved and peak memory);
- `roofline`: FLOPs, the bytes a fused implementation must move, the device's measured peaks, the floor;
- `runner`: one case under every backend, interleaved per repetition, and whole runs with checkpoints;
- `report`: machine facts, the table, results.json / results.csv / speedup.png / summary.md.

The module-level cases (BiResBlock, a BVAE training step) build their modules from the `bvae` model package,
imported when such a case is prepared.
"""

from __future__ import annotations

from .cases import (
    ALL_BACKENDS,
    CASES,
    CHAIN_CASE,
    COMPILE_BACKENDS,
    EAGER,
    Case,
    Prepared,
    SkipCase,
    applicable,
    backends_for,
    prepare,
    select_cases,
)
from .report import format_table, machine_info, summary_markdown, write_results
from .runner import configure_device, run_benchmarks, run_case

__all__ = [
    "ALL_BACKENDS",
    "CASES",
    "CHAIN_CASE",
    "COMPILE_BACKENDS",
    "EAGER",
    "Case",
    "Prepared",
    "SkipCase",
    "applicable",
    "backends_for",
    "configure_device",
    "format_table",
    "machine_info",
    "prepare",
    "run_benchmarks",
    "run_case",
    "select_cases",
    "summary_markdown",
    "write_results",
]
