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
from ._library import autocast_inputs, check_bi_conv2d, conv_geometry, int_arg, pair
from .activation import ActivationLike, GNoVa, activation_params
from .backends import FAST_INT_ARGS, impl_for, impl_table


def _reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    alpha: float,
    beta: float,
    gamma: float,
    in_alpha: float = 1.0,
    in_beta: float = 0.0,
    in_gamma: float = 1.0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """The eager reference with the op's signature (backend "torch")."""
    stride, padding, dilation = pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation")
    x, weight, bias = autocast_inputs(x, weight, bias)
    check_bi_conv2d(x, weight, bias, stride, padding, dilation, groups)
    act, in_act = GNoVa(alpha, beta, gamma), GNoVa(in_alpha, in_beta, in_gamma)
    return reference.bi_conv2d(x, weight, bias, stride, padding, act, in_act, dilation, groups)


_OPS = impl_table("bi_conv2d", _reference)


def bi_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    activation: ActivationLike = "gnova",
    input_activation: ActivationLike = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Forward direction of a bidirectional conv: a(conv2d(a_in(x), W, stride, padding, dilation, groups) + b_f).

    x: [N, C_in, H, W] (or unbatched [C_in, H, W]); weight: [C_out, C_in / groups, kh, kw]; bias: [C_out].
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
    if type(dilation) is int and type(groups) is int and dilation == 1 and groups == 1:  # the default: nothing more
        geometry = act
    else:
        geometry = conv_geometry(act, dilation, groups)
    try:
        op = _OPS[impl_for(backend, x.device.type)]
        if x.dim() == 4:
            return op(x, weight, bias, stride, padding, *geometry)
        if x.dim() == 3:
            return op(x.unsqueeze(0), weight, bias, stride, padding, *geometry).squeeze(0)
        raise ValueError(f"bi_conv2d: x must be 3D or 4D, got shape {tuple(x.shape)}")
    except (RuntimeError, TypeError, AttributeError):
        # The schema parser's messages name positions, not arguments: say what is wrong in our words.
        stride, padding, dilation = pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation")
        x4 = x if not isinstance(x, torch.Tensor) or x.dim() != 3 else x[None]
        check_bi_conv2d(x4, weight, bias, stride, padding, dilation, int_arg(groups, "groups"))
        raise
