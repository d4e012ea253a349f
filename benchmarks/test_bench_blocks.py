"""pytest-benchmark: BiResBlock in both directions and a BVAE training step, per backend.

The modules come from bvae.blocks / bvae.models, imported lazily by the harness: when they are missing the
cases skip with the import error as the reason.
"""

from __future__ import annotations

import pytest

from .cases import BLOCK_CASES, backends_for, bench_device, run_benchmark


@pytest.mark.parametrize("backend", backends_for(bench_device()))
@pytest.mark.parametrize("case", BLOCK_CASES, ids=lambda c: c.id(bench_device()))
def test_module(benchmark, case, backend, device):
    run_benchmark(benchmark, case, backend, device)
