"""pytest-benchmark setup for `make bench`: device, threads and the fair-baseline switches (DESIGN.md 7)."""

from __future__ import annotations

import os

import pytest
import torch

from bvae_kernels.bench import configure_device

from .cases import bench_device


@pytest.fixture(scope="session")
def device() -> str:
    """The measured device, configured once: cudnn.benchmark on and TF32 matched (off) on CUDA."""
    name = bench_device()
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("BVAE_BENCH_DEVICE=cuda but no CUDA device is visible")
    threads = os.environ.get("BVAE_BENCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    configure_device(name, tf32=os.environ.get("BVAE_BENCH_TF32") == "1")
    return name


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test here is a benchmark: skip them all cleanly when pytest-benchmark is missing."""
    if config.pluginmanager.hasplugin("benchmark"):
        return
    skip = pytest.mark.skip(reason="pytest-benchmark is not installed")
    for item in items:
        item.add_marker(skip)
