"""bi_linear: the forward direction (encode) of a bidirectional dense layer, a(x W^T + b_f).

Where its parts live: the schema in csrc/bvae_ops.cpp; the CPU/CUDA kernels in csrc/bvae.h (linear_impl,
linear_backward_impl); the Triton kernels in bvae_kernels/triton/bi_linear.py (the conv kernels on 1x1 views);
autograd in csrc/autograd.cpp (BiLinearFn); the fake in bvae_kernels/_library.py (fake_bi_linear); tests in
tests/test_bi_linear.py.
"""

from __future__ import annotations

import torch

from . import reference
from ._library import autocast_inputs, check_bi_linear
from .activation import ActivationLike, GNoVa, activation_params
from .backends import impl_for, impl_table


def _reference(x, weight, bias, alpha, beta, gamma, *in_act):  # noqa: ANN001, ANN202
    """The eager reference with the op's signature (backend "torch")."""
    x, weight, bias = autocast_inputs(x, weight, bias)
    check_bi_linear("bi_linear", x, "x", weight, bias, None, reverse=False)
    return reference.bi_linear(x, weight, bias, GNoVa(alpha, beta, gamma), GNoVa(*in_act) if in_act else None)


_OPS = impl_table("bi_linear", _reference)


def bi_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    activation: ActivationLike = "gnova",
    input_activation: ActivationLike = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Forward direction of a bidirectional dense layer: a(a_in(x) W^T + b_f); x [*, in], weight [out, in];
    input_activation a_in: none by default (see bi_conv2d)."""
    act = activation_params(activation)
    if input_activation is not None:
        act += activation_params(input_activation)
    try:
        return _OPS[impl_for(backend, x.device.type)](x, weight, bias, *act)
    except (RuntimeError, TypeError, AttributeError):
        check_bi_linear("bi_linear", x, "x", weight, bias, None, reverse=False)  # our words for a parser error
        raise
