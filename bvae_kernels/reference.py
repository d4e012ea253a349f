"""The naive eager path (backend "torch"): F.conv2d / F.conv_transpose2d / F.linear and elementwise G-NoVa.

It is the oracle for every test and the baseline for every benchmark, so it stays as plain as possible. Every
layer takes an `input_activation` a_in (none by default): the layer reads a_in(input), as a layer fed the previous
layer's pre-activation does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .activation import IDENTITY, ActivationLike, GNoVa, gnova_reference, resolve_activation


def _act(activation: ActivationLike) -> GNoVa:
    return resolve_activation(activation)


def _input(t: torch.Tensor, input_activation: ActivationLike) -> torch.Tensor:
    """a_in(t): a layer's input read through its input activation (none by default)."""
    act = _act(input_activation)
    return t if act == IDENTITY else act(t)


def gnova(u: torch.Tensor, alpha: float = 0.1, beta: float = 1.0, gamma: float = 1.0) -> torch.Tensor:
    return gnova_reference(u, alpha, beta, gamma)


def bi_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    activation: ActivationLike = "gnova",
    input_activation: ActivationLike = None,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """Forward direction: a(conv2d(a_in(x), W) + b_f)."""
    return _act(activation)(F.conv2d(_input(x, input_activation), weight, bias, stride, padding, dilation, groups))


def _scaled(pre: torch.Tensor, log_scale: torch.Tensor | None) -> torch.Tensor:
    return pre if log_scale is None else pre * log_scale.reshape(()).exp()


def bi_conv2d_reverse(
    z: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    output_padding: int | tuple[int, int] = 0,
    activation: ActivationLike = "gnova",
    log_scale: torch.Tensor | None = None,
    input_activation: ActivationLike = None,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """Reverse direction through the same W: a(e^s conv_transpose2d(a_in(z), W) + b_r) (e^s only with a log_scale
    s)."""
    z = _input(z, input_activation)
    geometry = (stride, padding, output_padding, groups, dilation)  # F.conv_transpose2d's order
    if log_scale is None:
        return _act(activation)(F.conv_transpose2d(z, weight, bias, *geometry))
    pre = _scaled(F.conv_transpose2d(z, weight, None, *geometry), log_scale)
    return _act(activation)(pre + bias[:, None, None] if bias is not None else pre)


def bi_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: ActivationLike = "gnova",
    input_activation: ActivationLike = None,
) -> torch.Tensor:
    """Forward direction: a(a_in(x) W^T + b_f)."""
    return _act(activation)(F.linear(_input(x, input_activation), weight, bias))


def bi_linear_reverse(
    z: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: ActivationLike = "gnova",
    log_scale: torch.Tensor | None = None,
    input_activation: ActivationLike = None,
) -> torch.Tensor:
    """Reverse direction: a(e^s a_in(z) W + b_r) (e^s only with a log_scale s)."""
    pre = _scaled(torch.matmul(_input(z, input_activation), weight), log_scale)
    return _act(activation)(pre + bias if bias is not None else pre)
