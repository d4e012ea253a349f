"""Shared setup of the Triton test files: where the kernels run, and the module-level skip.

The Triton interpreter must be switched on before any kernel is defined, so the tests run as
`TRITON_INTERPRET=1 python -m pytest tests/test_triton_*.py`; without it (and without CUDA) they skip.
"""

from __future__ import annotations

import os

import pytest
import torch

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
HAS_CUDA = torch.cuda.is_available()
# Under the interpreter the kernels run on CPU tensors; otherwise on the GPU.
DEVICE = "cpu" if INTERPRET else "cuda"
# The interpreter cannot run a bf16 tl.dot: fp32/fp16 there, all three on the GPU.
DTYPES = [torch.float32, torch.float16] if INTERPRET else [torch.float32, torch.float16, torch.bfloat16]


def skip_unless_runnable() -> None:
    """Module-level skip when the kernels cannot run here (no interpreter, no CUDA, no Triton)."""
    if not INTERPRET and not HAS_CUDA:
        pytest.skip(
            "Triton kernels need CUDA or TRITON_INTERPRET=1 (run: TRITON_INTERPRET=1 python -m pytest "
            "tests/test_triton_kernels.py tests/test_triton_ops.py)",
            allow_module_level=True,
        )
    import bvae_kernels.triton as bt

    if not bt.AVAILABLE:
        pytest.skip(f"Triton backend unavailable: {bt.UNAVAILABLE_REASON}", allow_module_level=True)


@pytest.fixture(autouse=True)
def _no_tf32():
    """fp32 tolerances assume tf32 off (DESIGN section 6)."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


@pytest.fixture(autouse=True)
def _fixed_config(monkeypatch: pytest.MonkeyPatch):
    """One fixed tile config per kernel family on the GPU (no autotune benchmarking per shape); a test that
    wants autotuning deletes the variable itself."""
    monkeypatch.setenv("BVAE_TRITON_FIXED_CONFIG", "1")
