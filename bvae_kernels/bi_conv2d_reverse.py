"""bi_conv2d_reverse: the reverse direction (decode) of a bidirectional conv layer, through the forward layer's
own weight: a(e^s conv_transpose2d(z, W, stride, padding, output_padding) + b_r), e^s only with a reverse scale.

Where its parts live: the schema in csrc/bvae_ops.cpp; the CPU/CUDA kernels in csrc/bvae.h
(bi_conv2d_reverse_impl, conv_backward_impl); the Triton kernels in bvae_kernels/triton/bi_conv2d_reverse.py
(`_bi_conv2d_reverse_fwd_kernel`, also the forward direction's dgrad); autograd in csrc/autograd.cpp
(BiConv2dReverseFn); the fake in bvae_kernels/_library.py (fake_bi_conv2d_reverse); tests in
tests/test_bi_conv2d_reverse.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import reference
from ._library import autocast_inputs, check_bi_conv2d_reverse, conv_geometry, int_arg, pair
from .activation import ActivationLike, GNoVa, activation_params
from .backends import FAST_INT_ARGS, impl_for, impl_table


def _reference(
    z: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    log_scale: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    output_padding: Sequence[int],
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
    stride, padding, output_padding, dilation = (
        pair(stride, "stride"),
        pair(padding, "padding"),
        pair(output_padding, "output_padding"),
        pair(dilation, "dilation"),
    )
    z, weight, bias = autocast_inputs(z, weight, bias)
    check_bi_conv2d_reverse(z, weight, bias, log_scale, stride, padding, output_padding, dilation, groups)
    act, in_act = GNoVa(alpha, beta, gamma), GNoVa(in_alpha, in_beta, in_gamma)
    return reference.bi_conv2d_reverse(
        z, weight, bias, stride, padding, output_padding, act, log_scale, in_act, dilation, groups
    )


_OPS = impl_table("bi_conv2d_reverse", _reference)


def bi_conv2d_reverse(
    z: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    output_padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    activation: ActivationLike = "gnova",
    log_scale: torch.Tensor | None = None,
    input_activation: ActivationLike = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Reverse direction through the same weight: a(e^s conv_transpose2d(a_in(z), W, ...) + b_r).

    z: [N, C_out, H, W] (or unbatched); weight: [C_out, C_in / groups, kh, kw] (the forward layer's, with its
    stride, padding, dilation and groups); bias: [C_in];
    log_scale: an optional one-element tensor s (the layer's learned reverse scale; its gradient is exact);
    input_activation: a_in (none by default): z is then the previous layer's pre-activation (see bi_conv2d).
    """
    act = activation_params(activation)
    if input_activation is not None:
        act += activation_params(input_activation)
    if type(stride) not in FAST_INT_ARGS:
        stride = pair(stride, "stride")
    if type(padding) not in FAST_INT_ARGS:
        padding = pair(padding, "padding")
    if type(output_padding) not in FAST_INT_ARGS:
        output_padding = pair(output_padding, "output_padding")
    if type(dilation) is int and type(groups) is int and dilation == 1 and groups == 1:  # the default: nothing more
        geometry = act
    else:
        geometry = conv_geometry(act, dilation, groups)
    try:
        op = _OPS[impl_for(backend, z.device.type)]
        if z.dim() == 4:
            return op(z, weight, bias, log_scale, stride, padding, output_padding, *geometry)
        if z.dim() == 3:
            return op(z[None], weight, bias, log_scale, stride, padding, output_padding, *geometry)[0]
        raise ValueError(f"bi_conv2d_reverse: z must be 3D or 4D, got shape {tuple(z.shape)}")
    except (RuntimeError, TypeError, AttributeError):
        # The schema parser's messages name positions, not arguments: say what is wrong in our words.
        stride, padding, output_padding, dilation = (
            pair(v, n)
            for v, n in (
                (stride, "stride"), (padding, "padding"), (output_padding, "output_padding"), (dilation, "dilation")
            )
        )  # fmt: skip
        z4 = z[None] if isinstance(z, torch.Tensor) and z.dim() == 3 else z
        check_bi_conv2d_reverse(
            z4, weight, bias, log_scale, stride, padding, output_padding, dilation, int_arg(groups, "groups")
        )
        raise
