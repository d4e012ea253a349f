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
            "tests/test_triton_kernels.py)",
            allow_module_level=True,
        )
    from bvae_kernels import backends

    reason = backends.triton_unavailable_reason()
    if reason is not None:
        pytest.skip(f"Triton backend unavailable: {reason}", allow_module_level=True)
