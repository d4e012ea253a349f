"""pytest-benchmark: the op cases (gnova, bi_conv2d, bi_conv2d_reverse, bi_linear, the chain) per backend.

Run with `make bench` (python -m pytest benchmarks --benchmark-only --benchmark-group-by=group). Each
group is one case + shape + dtype; its rows are the backends, the eager `torch` reference among them.
"""

from __future__ import annotations

import pytest

from .cases import OP_CASES, backends_for, bench_device, run_benchmark


@pytest.mark.parametrize("backend", backends_for(bench_device()))
@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: c.id(bench_device()))
def test_op(benchmark, case, backend, device):
    run_benchmark(benchmark, case, backend, device)
