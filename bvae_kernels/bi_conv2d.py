"""bi_conv2d: the forward direction (encode) of a bidirectional conv layer, a(conv2d(x, W, stride, padding) + b_f),
optionally reading its input through an input activation a_in (a chain passes pre-activations).

Where its parts live: the schema in csrc/bvae_ops.cpp; the CPU/CUDA kernels in csrc/bvae.h (bi_conv2d_impl,
conv_backward_impl); the Triton kernels in bvae_kernels/triton/bi_conv2d.py (`_bi_conv2d_fwd_kernel`, which is
also the reverse direction's dgrad); autograd in csrc/autograd.cpp (BiConv2dFn); the fake in
bvae_kernels/_library.py (fake_bi_conv2d); tests in tests/test_bi_conv2d.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import reference
from ._library import autocast_inputs, check_bi_conv2d, pair
from .activation import ActivationLike, GNoVa, activation_params
from .backends import FAST_INT_ARGS, impl_for, impl_table


def _reference(x, weight, bias, stride, padding, alpha, beta, gamma, *in_act):  # noqa: ANN001, ANN202
    """The eager reference with the op's signature (backend "torch")."""
    stride, padding = pair(stride, "stride"), pair(padding, "padding")
    x, weight, bias = autocast_inputs(x, weight, bias)
    check_bi_conv2d(x, weight, bias, stride, padding)
    in_act = GNoVa(*in_act) if in_act else None
    return reference.bi_conv2d(x, weight, bias, stride, padding, GNoVa(alpha, beta, gamma), in_act)


_OPS = impl_table("bi_conv2d", _reference)


def bi_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    activation: ActivationLike = "gnova",
    input_activation: ActivationLike = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Forward direction of a bidirectional conv: a(conv2d(a_in(x), W, stride, padding) + b_f).

    x: [N, C_in, H, W] (or unbatched [C_in, H, W]); weight: [C_out, C_in, kh, kw]; bias: [C_out].
    input_activation: a_in (none by default); with it x is the previous layer's pre-activation, and the op keeps
    only x for its backward (eager would keep x and a_in(x)).
    """
    act = activation_params(activation)
    if input_activation is not None:
        act += activation_params(input_activation)
    if type(stride) not in FAST_INT_ARGS:
        stride = pair(stride, "stride")
    if type(padding) not in FAST_INT_ARGS:
        padding = pair(padding, "padding")
    try:
        op = _OPS[impl_for(backend, x.device.type)]
        if x.dim() == 4:
            return op(x, weight, bias, stride, padding, *act)
        if x.dim() == 3:
            return op(x.unsqueeze(0), weight, bias, stride, padding, *act).squeeze(0)
        raise ValueError(f"bi_conv2d: x must be 3D or 4D, got shape {tuple(x.shape)}")
    except (RuntimeError, TypeError, AttributeError):
        # The schema parser's messages name positions, not arguments: say what is wrong in our words.
        stride, padding = pair(stride, "stride"), pair(padding, "padding")
        check_bi_conv2d(
            x if not isinstance(x, torch.Tensor) or x.dim() != 3 else x[None], weight, bias, stride, padding
        )
        raise
