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

import math
from collections.abc import Sequence

import torch
from torch import nn

from bvae_kernels.activation import IDENTITY, ActivationLike, GNoVa, resolve_activation
from bvae_kernels.backends import impl_for

from ._checks import positive_int
from .layers import BiConv2d, BiLinear, apply_activation, resolve_reverse_activation

Shape = tuple[int, ...]

# On the fused backends BiSequential and the models pass pre-activations between layers (each layer keeps one
# activation for its backward instead of two; see BiConv2d.forward_pre). False runs the layers one by one, as
# before, which is what the benchmarks compare against and a switch for debugging; the numbers are the same.
CHAINING = True


class BiFlatten(nn.Module):
    """Forward: [N, C, H, W] -> [N, C*H*W]; reverse: back to [N, C, H, W] (`shape` = (C, H, W))."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"BiFlatten: shape must be (C, H, W) of positive ints, got {shape!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.fx.Proxy) and tuple(x.shape[1:]) != self.shape:  # (a traced graph: no shape yet)
            raise ValueError(f"BiFlatten: expected input [N, {', '.join(map(str, self.shape))}], got {tuple(x.shape)}")
        return x.flatten(1)

    def reverse(self, z: torch.Tensor, output_size: Sequence[int] | None = None) -> torch.Tensor:
        return z.unflatten(1, self.shape)

    def forward_pre(self, x: torch.Tensor, input_activation: GNoVa = IDENTITY) -> tuple[torch.Tensor, GNoVa]:
        """A pending activation passes through: it is elementwise, and this layer only reshapes."""
        return self.forward(x), input_activation

    def reverse_pre(
        self, z: torch.Tensor, output_size: Sequence[int] | None = None, *, input_activation: GNoVa = IDENTITY
    ) -> tuple[torch.Tensor, GNoVa]:
        return self.reverse(z), input_activation

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


def chains(backend: str | None, t: torch.Tensor) -> bool:
    """Whether layers on `backend` pass pre-activations for tensors like `t`: on the fused backends (one activation
    kept per layer); the eager reference (backend "torch") runs the layers as they are, as eager code would."""
    if not CHAINING:
        return False
    if isinstance(t, torch.fx.Proxy):  # torch.fx: no device yet; the chained graph computes the same on any backend
        return backend != "torch"
    try:
        return impl_for(backend, t.device.type) != "torch"
    except (ValueError, AttributeError):  # an impossible request or not a tensor: the layers say what is wrong
        return True


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


def reverse_layer_pre(
    layer: nn.Module,
    z: torch.Tensor,
    activation: GNoVa,
    input_activation: GNoVa,
    output_size: Sequence[int] | None = None,
) -> tuple[torch.Tensor, GNoVa]:
    """reverse_layer for a chain: `layer` reads a_in(z) and leaves its activation pending: (u, activation)."""
    if isinstance(layer, BiLinear):
        return layer.reverse_pre(z, activation=activation, input_activation=input_activation)
    if isinstance(layer, BiFlatten):
        return layer.reverse_pre(z, input_activation=input_activation)
    if isinstance(layer, (BiConv2d, BiResBlock, BiSequential)):
        return layer.reverse_pre(z, output_size, activation=activation, input_activation=input_activation)
    raise TypeError(f"reverse_layer_pre: unsupported layer type {type(layer).__name__}")


def layer_output_shape(layer: nn.Module, shape: Shape) -> Shape:
    """The per-sample output shape of `layer` for a per-sample input `shape` (no batch dimension)."""
    if isinstance(layer, BiConv2d):
        if len(shape) != 3 or shape[0] != layer.in_channels:
            raise ValueError(f"{layer!r} cannot take input shape {shape}")
        hw = layer.output_hw(shape[1:])
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
        return (math.prod(shape),)  # plain ints: no tensor (a meta-device default would make .item() fail)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not chains(self.backend, x):
            return apply_activation(x + self.conv2(self.conv1(x)), self.activation, self.backend)
        u, act = self.forward_pre(x)
        return apply_activation(u, act, self.backend)

    def forward_pre(self, x: torch.Tensor, input_activation: GNoVa = IDENTITY) -> tuple[torch.Tensor, GNoVa]:
        """(x' + F(x'), a) with x' = a_in(x), the outer activation left pending. conv1 reads x through a_in and
        conv2 reads conv1's pre-activation: the block keeps x (once, shared by conv1 and the skip's a_in) and
        conv1's pre-activation; the skip adds a_in(x) itself, exactly as the unchained block does."""
        u1, a1 = self.conv1.forward_pre(x, input_activation)
        u2, _ = self.conv2.forward_pre(u1, a1)  # conv2 ends in the identity
        return apply_activation(x, input_activation, self.backend) + u2, self.activation

    def reverse(
        self, z: torch.Tensor, output_size: Sequence[int] | None = None, *, activation: ActivationLike = "default"
    ) -> torch.Tensor:
        """Decode through the same two weights; `activation` replaces the outer `a` ("default": the block's)."""
        if not chains(self.backend, z):
            outer = resolve_reverse_activation(activation, self.activation)
            inner = reverse_layer(self.conv1, reverse_layer(self.conv2, z, self.conv1.activation), IDENTITY)
            return apply_activation(z + inner, outer, self.backend)
        u, act = self.reverse_pre(z, output_size, activation=activation)
        return apply_activation(u, act, self.backend)

    def reverse_pre(
        self,
        z: torch.Tensor,
        output_size: Sequence[int] | None = None,
        *,
        activation: ActivationLike = "default",
        input_activation: GNoVa = IDENTITY,
    ) -> tuple[torch.Tensor, GNoVa]:
        """(z' + F_r(z'), outer) with z' = a_in(z): conv2's reverse (ending in conv1's activation, left pending
        for conv1's reverse to read), conv1's reverse (identity), the skip add."""
        outer = resolve_reverse_activation(activation, self.activation)
        r2, a2 = self.conv2.reverse_pre(z, activation=self.conv1.activation, input_activation=input_activation)
        r1, _ = self.conv1.reverse_pre(r2, activation=IDENTITY, input_activation=a2)
        return apply_activation(z, input_activation, self.backend) + r1, outer

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
        # the backend the layers were built with (a model's layers share one): decides whether calls chain
        self._backend = next((getattr(m, "backend", None) for m in self if hasattr(m, "backend")), None)
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

    def chains(self, t: torch.Tensor) -> bool:
        """Whether calls on `t` pass pre-activations between the layers (see `chains`)."""
        return chains(self._backend, t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.chains(x):
            for layer in self:
                x = layer(x)
            return x
        u, act, backend = self._forward_pre(x, IDENTITY)
        return apply_activation(u, act, backend)

    def forward_pre(self, x: torch.Tensor, input_activation: GNoVa = IDENTITY) -> tuple[torch.Tensor, GNoVa]:
        """The chain's output pre-activation and the activation left pending (see BiConv2d.forward_pre): between
        two of its layers only pre-activations travel, so each layer keeps one activation for its backward."""
        u, act, _ = self._forward_pre(x, input_activation)
        return u, act

    def _forward_pre(self, x: torch.Tensor, act: GNoVa) -> tuple[torch.Tensor, GNoVa, str | None]:
        backend = None  # of the layer that left `act` pending: it applies it where the chain ends
        for layer in self:
            step = getattr(layer, "forward_pre", None)
            if step is None:  # not a chain member: hand it an activated tensor
                x, act = layer(apply_activation(x, act, backend)), IDENTITY
                continue
            x, act = step(x, act)
            backend = getattr(layer, "backend", backend)
        return x, act, backend

    def reverse(
        self, z: torch.Tensor, output_size: Sequence[int] | None = None, *, activation: ActivationLike = "default"
    ) -> torch.Tensor:
        """Decode: layers in reverse order, each through its own weights (mirror rule for activations)."""
        if not self.chains(z):
            return self._reverse_plain(z, output_size, activation)
        u, act, backend = self._reverse_pre(z, output_size, activation, IDENTITY)
        return apply_activation(u, act, backend)

    def _reverse_plain(self, z: torch.Tensor, output_size: Sequence[int] | None, activation: ActivationLike):
        last = resolve_reverse_activation(activation, self.input_activation)
        for i in range(len(self) - 1, -1, -1):
            act = self._reverse_acts[i] if i > 0 else last
            size = None
            if self.input_shapes is not None:
                size = self.input_shapes[i]
            elif i == 0 and output_size is not None:
                size = tuple(output_size)
            z = reverse_layer(self[i], z, act, size)
        return z

    def reverse_pre(
        self,
        z: torch.Tensor,
        output_size: Sequence[int] | None = None,
        *,
        activation: ActivationLike = "default",
        input_activation: GNoVa = IDENTITY,
    ) -> tuple[torch.Tensor, GNoVa]:
        """The decode's output pre-activation and the activation left pending (see forward_pre)."""
        u, act, _ = self._reverse_pre(z, output_size, activation, input_activation)
        return u, act

    def _reverse_pre(
        self, z: torch.Tensor, output_size: Sequence[int] | None, activation: ActivationLike, pending: GNoVa
    ) -> tuple[torch.Tensor, GNoVa, str | None]:
        last = resolve_reverse_activation(activation, self.input_activation)
        backend = None
        for i in range(len(self) - 1, -1, -1):
            act = self._reverse_acts[i] if i > 0 else last
            size = None
            if self.input_shapes is not None:
                size = self.input_shapes[i]
            elif i == 0 and output_size is not None:
                size = tuple(output_size)
            z, pending = reverse_layer_pre(self[i], z, act, pending, size)
            backend = getattr(self[i], "backend", backend)
        return z, pending, backend

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}" if self.input_shape is not None else ""
