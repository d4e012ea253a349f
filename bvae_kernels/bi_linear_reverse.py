"""bi_linear_reverse: the reverse direction (decode) of a bidirectional dense layer through the same weight,
a(e^s z W + b_r), e^s only with a reverse scale.

Where its parts live: the schema in csrc/bvae_ops.cpp; the CPU/CUDA kernels in csrc/bvae.h (linear_impl,
linear_backward_impl); the Triton kernels in bvae_kernels/triton/bi_linear.py (the conv kernels on 1x1 views);
autograd in csrc/autograd.cpp (BiLinearReverseFn); the fake in bvae_kernels/_library.py
(fake_bi_linear_reverse); tests in tests/test_bi_linear.py.
"""

from __future__ import annotations

import torch

from . import reference
from ._library import autocast_inputs, check_bi_linear
from .activation import ActivationLike, GNoVa, activation_params
from .backends import impl_for, impl_table


def _reference(z, weight, bias, log_scale, alpha, beta, gamma, *in_act):  # noqa: ANN001, ANN202
    """The eager reference with the op's signature (backend "torch")."""
    z, weight, bias = autocast_inputs(z, weight, bias)
    check_bi_linear("bi_linear_reverse", z, "z", weight, bias, log_scale, reverse=True)
    act, in_act = GNoVa(alpha, beta, gamma), GNoVa(*in_act) if in_act else None
    return reference.bi_linear_reverse(z, weight, bias, act, log_scale=log_scale, input_activation=in_act)


_OPS = impl_table("bi_linear_reverse", _reference)


def bi_linear_reverse(
    z: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    activation: ActivationLike = "gnova",
    log_scale: torch.Tensor | None = None,
    input_activation: ActivationLike = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Reverse direction through the same weight: a(e^s a_in(z) W + b_r); z [*, out], weight [out, in], bias [in];
    input_activation a_in: none by default (see bi_conv2d)."""
    act = activation_params(activation)
    if input_activation is not None:
        act += activation_params(input_activation)
    try:
        return _OPS[impl_for(backend, z.device.type)](z, weight, bias, log_scale, *act)
    except (RuntimeError, TypeError, AttributeError):
        check_bi_linear("bi_linear_reverse", z, "z", weight, bias, log_scale, reverse=True)  # our words
        raise
