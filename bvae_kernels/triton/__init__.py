"""The "triton" backend: implicit-GEMM bidirectional conv kernels reading one weight buffer.

Importing this package registers the Triton kernels of the `bvae::triton_<op>` ops (bvae_kernels/triton/ops.py)
for CUDA tensors, and for CPU tensors when TRITON_INTERPRET=1 is set before the import (Triton's interpreter,
for tests). It needs the triton package and the compiled library (the ops' schemas and autograd), never a GPU.
bvae_kernels.backends imports it the first time the triton backend is chosen.

Layout, one file per op family: bi_conv2d.py (the forward-direction conv kernel and launcher),
bi_conv2d_reverse.py (the reverse-direction conv), wgrad.py (the weight gradient of both), gnova.py (elementwise),
reductions.py (bias gradient, split-K sums), _gemm.py (shared tile code), configs.py (tiles), ops.py (what each
op runs), aot.py (ahead-of-time compile check).
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

from packaging.version import Version


def _interpreter_problem() -> str | None:
    """Triton < 3.8's interpreter fails on numpy >= 2.4 (`int()` of a 0-d array): say so instead of failing later."""
    if os.environ.get("TRITON_INTERPRET", "0") != "1":
        return None
    try:
        triton_version, numpy_version = Version(version("triton")), Version(version("numpy"))
    except PackageNotFoundError:
        return None
    if triton_version < Version("3.8") and numpy_version >= Version("2.4"):
        return f"Triton {triton_version}'s interpreter needs numpy < 2.4 (found {numpy_version})"
    return None


UNAVAILABLE_REASON: str | None = _interpreter_problem()

if UNAVAILABLE_REASON is None:
    from . import ops

    ops.register()
