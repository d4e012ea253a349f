"""gnova: the G-NoVa activation a(u) = alpha * u + beta * sigmoid(gamma * u), elementwise, any shape and layout.

Where its parts live: the schema in csrc/bvae_ops.cpp; the CPU/CUDA kernels in csrc/bvae.h (gnova_impl over
the devices' fused passes); the Triton kernels in bvae_kernels/triton/gnova.py; autograd in
csrc/autograd.cpp (GnovaFn); the fake in bvae_kernels/_library.py (fake_gnova); tests in tests/test_gnova.py.
"""

from __future__ import annotations

import torch

from . import reference
from ._library import check_gnova
from .activation import GNoVa
from .backends import impl_for, impl_table


def _reference(u, alpha, beta, gamma):  # noqa: ANN001, ANN202
    """The eager reference with the op's signature (backend "torch")."""
    check_gnova(u)
    return reference.gnova(u, alpha, beta, gamma)


_OPS = impl_table("gnova", _reference)


_VALIDATED: set[tuple[float, float, float]] = set()  # float parameter triples GNoVa has accepted


def gnova(
    u: torch.Tensor, alpha: float = 0.1, beta: float = 1.0, gamma: float = 1.0, *, backend: str | None = None
) -> torch.Tensor:
    """G-NoVa, a(u) = alpha * u + beta * sigmoid(gamma * u), elementwise, any shape and layout."""
    if (
        type(alpha) is not float
        or type(beta) is not float
        or type(gamma) is not float
        or ((alpha, beta, gamma) not in _VALIDATED)
    ):
        alpha, beta, gamma = GNoVa(alpha, beta, gamma).params  # validates (and makes ints floats)
        _VALIDATED.add((alpha, beta, gamma))
    try:
        return _OPS[impl_for(backend, u.device.type)](u, alpha, beta, gamma)
    except (RuntimeError, TypeError, AttributeError):
        check_gnova(u)  # our words for a parser error
        raise
