"""Bidirectional blocks: a residual block and a sequential container that run forward and in reverse.

Activation rule in the reverse direction (the "mirror" rule). In the forward direction layer i maps
h_{i-1} to h_i = a_i(W_i h_{i-1} + b_i). Its reverse maps h_i' back to h_{i-1}', so it applies the
activation that *produced* h_{i-1} in the forward direction: a_{i-1}, and for the first layer the
container's `input_activation` (identity by default: data has no activation). This keeps the reverse
pass a true mirror of the forward one (e.g. a forward layer with identity output is followed in reverse
by a G-NoVa, and the reverse ends in identity logits/means). The weights are the same tensors in both
directions; the reverse runs each layer's own `reverse` (the fused `bk.bi_conv2d_reverse` /
`bk.bi_linear_reverse` on the same weight) with the mirror rule's activation.

Strided convolutions lose the exact input size (28 -> 14 with k=4, s=2, p=1 could come from 28 or 29), so
a BiSequential built with `input_shape=(C, H, W)` records every layer's input shape once, from the
architecture, and its reverse passes them as `output_size`: `decode(z)` works without a prior encode.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

import bvae_kernels as bk
from bvae_kernels._library import conv_output_size
from bvae_kernels.activation import IDENTITY, ActivationLike, GNoVa, resolve_activation

from ._checks import positive_int
from .layers import BiConv2d, BiLinear, resolve_reverse_activation

Shape = tuple[int, ...]


class BiFlatten(nn.Module):
    """Forward: [N, C, H, W] -> [N, C*H*W]; reverse: back to [N, C, H, W] (`shape` = (C, H, W))."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"BiFlatten: shape must be (C, H, W) of positive ints, got {shape!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"BiFlatten: expected input [N, {', '.join(map(str, self.shape))}], got {tuple(x.shape)}")
        return x.flatten(1)

    def reverse(self, z: torch.Tensor, output_size: Sequence[int] | None = None) -> torch.Tensor:
        return z.reshape(z.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


def forward_activation(layer: nn.Module) -> GNoVa | None:
    """The activation applied to a layer's forward output (None for shape-only layers)."""
    if isinstance(layer, (BiConv2d, BiLinear, BiResBlock)):
        return layer.activation
    if isinstance(layer, BiSequential):
        return layer.output_activation
    if isinstance(layer, BiFlatten):
        return None
    raise TypeError(f"forward_activation: unsupported layer type {type(layer).__name__}")


def reverse_layer(
    layer: nn.Module, z: torch.Tensor, activation: GNoVa, output_size: Sequence[int] | None = None
) -> torch.Tensor:
    """Runs `layer` in reverse through its own weights, ending in `activation` (see the mirror rule)."""
    if isinstance(layer, (BiConv2d, BiResBlock, BiSequential)):
        return layer.reverse(z, output_size, activation=activation)
    if isinstance(layer, BiLinear):
        return layer.reverse(z, activation=activation)
    if isinstance(layer, BiFlatten):
        return layer.reverse(z)
    raise TypeError(f"reverse_layer: unsupported layer type {type(layer).__name__}")


def layer_output_shape(layer: nn.Module, shape: Shape) -> Shape:
    """The per-sample output shape of `layer` for a per-sample input `shape` (no batch dimension)."""
    if isinstance(layer, BiConv2d):
        if len(shape) != 3 or shape[0] != layer.in_channels:
            raise ValueError(f"{layer!r} cannot take input shape {shape}")
        hw = [conv_output_size(shape[1 + i], layer.kernel_size[i], layer.stride[i], layer.padding[i]) for i in range(2)]
        if min(hw) < 1:
            raise ValueError(f"{layer!r}: input {shape} is too small")
        return (layer.out_channels, hw[0], hw[1])
    if isinstance(layer, BiLinear):
        if shape[-1] != layer.in_features:
            raise ValueError(f"{layer!r} cannot take input shape {shape}")
        return (*shape[:-1], layer.out_features)
    if isinstance(layer, BiResBlock):
        if len(shape) != 3 or shape[0] != layer.channels:
            raise ValueError(f"BiResBlock({layer.channels}) cannot take input shape {shape}")
        return shape
    if isinstance(layer, BiFlatten):
        if tuple(shape) != layer.shape:
            raise ValueError(f"BiFlatten{layer.shape} cannot take input shape {shape}")
        return (int(torch.tensor(shape).prod()),)
    if isinstance(layer, BiSequential):
        for sub in layer:
            shape = layer_output_shape(sub, shape)
        return shape
    raise TypeError(f"layer_output_shape: unsupported layer type {type(layer).__name__}")


class BiResBlock(nn.Module):
    """Bidirectional residual block: forward y = a(x + F(x)), reverse x' = a(y' + F_r(y')).

    F = conv2 . conv1, two 3x3 BiConv2d with `channels` in and out: conv1 ends in `activation`, conv2 in
    identity (its output is added to the skip). F_r runs the same two weights in reverse order, mirrored:
    conv2's reverse ends in conv1's activation, conv1's reverse in identity, then the skip add and `a`.
    """

    def __init__(
        self,
        channels: int,
        activation: ActivationLike = "gnova",
        backend: str | None = None,
        reverse_scale: bool = False,
    ) -> None:
        super().__init__()
        positive_int("BiResBlock: channels", channels)
        self.channels = channels
        self.activation = resolve_activation(activation)
        self.backend = backend
        common = {"padding": 1, "backend": backend, "reverse_scale": reverse_scale}
        self.conv1 = BiConv2d(channels, channels, 3, activation=self.activation, **common)
        self.conv2 = BiConv2d(channels, channels, 3, activation=IDENTITY, **common)

    def _act(self, u: torch.Tensor, activation: GNoVa) -> torch.Tensor:
        if activation == IDENTITY:
            return u
        return bk.gnova(u, *activation.params, backend=self.backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._act(x + self.conv2(self.conv1(x)), self.activation)

    def reverse(
        self, z: torch.Tensor, output_size: Sequence[int] | None = None, *, activation: ActivationLike = "default"
    ) -> torch.Tensor:
        """Decode through the same two weights; `activation` replaces the outer `a` ("default": the block's)."""
        outer = resolve_reverse_activation(activation, self.activation)
        inner = reverse_layer(self.conv2, z, self.conv1.activation)
        inner = reverse_layer(self.conv1, inner, IDENTITY)
        return self._act(z + inner, outer)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, activation={self.activation}"


class BiSequential(nn.Sequential):
    """Layers run in order forward and in reverse order backward-in-space (the reverse direction).

    `input_shape` (C, H, W) fixes each layer's input shape, so strided convs invert to the exact size;
    `input_activation` is what the last reverse layer ends in (identity: the reverse output is data space).
    """

    def __init__(
        self, *layers: nn.Module, input_shape: Sequence[int] | None = None, input_activation: ActivationLike = None
    ) -> None:
        super().__init__(*layers)
        self.input_activation = resolve_activation(input_activation)
        acts: list[GNoVa] = []
        current = self.input_activation
        for layer in self:
            act = forward_activation(layer)
            current = act if act is not None else current
            acts.append(current)
        # activation that ends layer i's reverse = the forward output activation of layer i-1
        self._reverse_acts = [self.input_activation, *acts[:-1]]
        self._out_act = acts[-1] if acts else self.input_activation
        self.input_shapes: list[Shape] | None = None
        self.input_shape: Shape | None = None
        self.output_shape: Shape | None = None
        if input_shape is not None:
            shape = tuple(int(s) for s in input_shape)
            self.input_shape = shape
            shapes = []
            for layer in self:
                shapes.append(shape)
                shape = layer_output_shape(layer, shape)
            self.input_shapes = shapes
            self.output_shape = shape

    @property
    def output_activation(self) -> GNoVa:
        """The activation of the forward output (of the last layer that has one)."""
        return self._out_act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x)
        return x

    def reverse(
        self, z: torch.Tensor, output_size: Sequence[int] | None = None, *, activation: ActivationLike = "default"
    ) -> torch.Tensor:
        """Decode: layers in reverse order, each through its own weights (mirror rule for activations)."""
        last = resolve_reverse_activation(activation, self.input_activation)
        n = len(self)
        for i in range(n - 1, -1, -1):
            act = self._reverse_acts[i] if i > 0 else last
            size = None
            if self.input_shapes is not None:
                size = self.input_shapes[i]
            elif i == 0 and output_size is not None:
                size = tuple(output_size)
            z = reverse_layer(self[i], z, act, size)
        return z

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}" if self.input_shape is not None else ""
