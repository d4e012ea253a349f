"""Drop-in bidirectional layers: one weight, `layer(x)` encodes, `layer.reverse(z)` decodes.

BiConv2d takes nn.Conv2d's arguments and loads an nn.Conv2d state_dict (its reverse bias, `reverse_bias`,
is the one extra parameter); BiLinear does the same for nn.Linear. The reverse direction reads the same
weight tensor: no transposed or flipped copy exists.

`reverse_scale=True` adds one scalar, `reverse_log_scale` s: the reverse direction computes
a(e^s W^T z + b_r). Tying fixes the ratio of the two directions' gains to 1; a trained VAE's decoder layers
end up 3-8x larger than its encoder's (the KL term keeps the mean head small), so a tied layer must
compromise. One log-scale per layer gives that ratio back inside the fused reverse op: e^s multiplies the
contraction in the op's epilogue, and the op's backward gives ds = <dz, z> exactly (no extra pass, nothing
extra saved).

Everything a call needs besides the tensors (activation parameters, stride and padding as the ops take them)
is resolved once, at construction: a forward call is one public op call.

BiConv2d covers nn.Conv2d's geometry: stride, padding (ints, 'valid', 'same' with any kernel), dilation,
groups and every padding_mode. The reverse direction is nn.ConvTranspose2d's with the same weight, stride,
dilation and groups; it reads zero padding whatever the forward's padding_mode (nn.ConvTranspose2d supports only
'zeros'), i.e. it crops the border the forward direction padded, and where the forward padded one side more
('same' with an even dilated kernel extent) it crops that side more, so a stride-1 layer maps H x W back to H x W.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bvae_kernels import bi_conv2d, bi_conv2d_reverse, bi_linear, bi_linear_reverse, gnova
from bvae_kernels._library import conv_output_size, conv_transpose_output_size
from bvae_kernels.activation import IDENTITY, ActivationLike, GNoVa, resolve_activation

from ._checks import positive_int

# torch.fx.symbolic_trace records the ops as calls (graph nodes) instead of tracing into their checks, which
# branch on shapes: a traced model's graph holds one op node per layer and direction.
for _op_name in ("bi_conv2d", "bi_conv2d_reverse", "bi_linear", "bi_linear_reverse", "gnova"):
    torch.fx.wrap(_op_name)


def _int(value: object) -> int | None:
    """`value` as a Python int when it is integer-like (int, numpy / torch integer scalars; not a bool), else None."""
    if isinstance(value, bool) or getattr(value, "dtype", None) == torch.bool:
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if (single := _int(value)) is not None:
        return (single, single)
    try:
        values = tuple(_int(v) for v in value)
    except TypeError:  # a float, None, ...: name the argument instead of "object is not iterable"
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if len(values) != 2 or None in values:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return values  # type: ignore[return-value]


def _size(name: str, value: object) -> int:
    """A channel / feature count: a positive integer-like value (np.int64 included), as a Python int."""
    as_int = _int(value)
    return positive_int(name, as_int if as_int is not None else value)


def apply_activation(t: torch.Tensor, activation: GNoVa, backend: str | None) -> torch.Tensor:
    """a(t) as one fused op; nothing for the identity (a chain's pending activation, applied where it ends)."""
    return t if activation == IDENTITY else gnova(t, *activation.params, backend=backend)


def reverse_output_padding(
    input_hw: Sequence[int],
    output_size: Sequence[int] | int,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    crop: Sequence[int] = (0, 0),
) -> tuple[int, int]:
    """The output_padding that makes a reverse conv (then cropped by `crop` at the end) produce `output_size`."""
    target = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)[-2:]
    if len(target) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in target):
        raise ValueError(f"BiConv2d.reverse: output_size must end in (H, W) ints, got {output_size!r}")
    pads = []
    for i in range(2):
        smallest = conv_transpose_output_size(input_hw[i], kernel_size[i], stride[i], padding[i], 0, dilation[i])
        smallest -= crop[i]
        extra = target[i] - smallest
        reach = max(stride[i], dilation[i])  # output_padding < stride or dilation
        if not 0 <= extra < reach:
            raise ValueError(
                f"BiConv2d.reverse: output_size {tuple(target)} is unreachable from input {tuple(input_hw)}: "
                f"dim {i} must be in [{smallest}, {smallest + reach - 1}]"
            )
        pads.append(extra)
    return (pads[0], pads[1])


def traced_output_padding(z: torch.Tensor, output_size: Sequence[int], *geometry: Sequence[int]) -> tuple[int, int]:
    """reverse_output_padding for z's own (H, W), read when a traced graph runs (a graph node under torch.fx)."""
    return reverse_output_padding(tuple(z.shape[-2:]), output_size, *geometry)


torch.fx.wrap("traced_output_padding")


def _op_input_activation(activation: GNoVa) -> GNoVa | None:
    """What a layer op takes as its input_activation: None (no argument at all) for the identity."""
    return None if activation == IDENTITY else activation


def resolve_reverse_activation(activation: ActivationLike, default: GNoVa) -> GNoVa:
    """The activation a reverse pass ends in: `default` (the module's own) for "default", else `activation`.

    Every `reverse(..., activation=...)` takes it, so containers can pass the mirror rule's choice down."""
    if isinstance(activation, str) and activation == "default":
        return default
    return resolve_activation(activation)


class _ReverseParamsMixin:
    """What BiConv2d and BiLinear add to their unidirectional twins: the reverse bias and an optional reverse scale.

    A state_dict of the twin (nn.Conv2d / nn.Linear) loads: the reverse-only parameters it lacks keep their
    current values (a missing reverse scale stays exp(0) = 1, which is the layer without one).
    """

    weight: nn.Parameter
    bias: nn.Parameter | None
    reverse_bias: nn.Parameter | None
    reverse_log_scale: nn.Parameter | None

    def _make_params(
        self,
        weight_shape: tuple[int, ...],
        bias: bool,
        reverse_bias: bool | None,
        reverse_scale: bool,
        factory: dict,
        groups: int = 1,
    ) -> None:
        """W [out, in / groups, *kernel]; b_f [out] when `bias`; b_r [in] when `reverse_bias` (None: as `bias`); the
        scalar s when `reverse_scale`."""
        out_size, in_size = weight_shape[0], weight_shape[1] * groups
        reverse_bias = bias if reverse_bias is None else reverse_bias
        self.weight = nn.Parameter(torch.empty(weight_shape, **factory))
        self.bias = nn.Parameter(torch.empty(out_size, **factory)) if bias else None
        self.reverse_bias = nn.Parameter(torch.empty(in_size, **factory)) if reverse_bias else None
        scale = nn.Parameter(torch.zeros((), **factory)) if reverse_scale else None
        self.register_parameter("reverse_log_scale", scale)

    def _reset_params(self, forward_fan_in: int, reverse_fan_in: int) -> None:
        """The twin's (nn.Conv2d / nn.Linear) initialization; b_r uses the reverse direction's fan-in, s = 0."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        for bias, fan_in in ((self.bias, forward_fan_in), (self.reverse_bias, reverse_fan_in)):
            if bias is not None:
                nn.init.uniform_(bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        if self.reverse_log_scale is not None:
            nn.init.zeros_(self.reverse_log_scale)

    def _initial_reverse_param(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """A fresh reverse bias (the reverse direction's fan-in, as `_reset_params`) or log-scale (0), like `weight`."""
        if name == "reverse_log_scale":
            return torch.zeros((), dtype=weight.dtype, device=weight.device)
        groups = getattr(self, "groups", 1)
        bound = 1 / math.sqrt(weight.numel() // weight.shape[1] // groups)
        return torch.empty(weight.shape[1] * groups, dtype=weight.dtype, device=weight.device).uniform_(-bound, bound)

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list,
        unexpected_keys: list,
        error_msgs: list,
    ) -> None:
        if prefix + "weight" in state_dict:
            weight = state_dict[prefix + "weight"]
            for name in ("reverse_bias", "reverse_log_scale"):
                value = getattr(self, name, None)
                if value is not None and prefix + name not in state_dict:
                    if value.is_meta and not weight.is_meta:  # built on meta, loaded with assign=True: initialize
                        value = self._initial_reverse_param(name, weight)
                    state_dict[prefix + name] = value.detach().clone()
        super()._load_from_state_dict(  # type: ignore[misc]
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class BiConv2d(_ReverseParamsMixin, nn.Module):
    """A bidirectional conv: forward a(conv2d(x, W) + b_f), reverse a(conv_transpose2d(z, W) + b_r)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        activation: ActivationLike = "gnova",
        backend: str | None = None,
        reverse_scale: bool = False,
        reverse_bias: bool | None = None,
    ) -> None:
        super().__init__()
        in_channels = _size("BiConv2d: in_channels", in_channels)
        out_channels = _size("BiConv2d: out_channels", out_channels)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.dilation = _pair(dilation, "dilation")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.dilation) < 1:
            raise ValueError(
                f"BiConv2d: kernel_size, stride and dilation must be >= 1, got {self.kernel_size}, {self.stride}, "
                f"{self.dilation}"
            )
        self.groups = _size("BiConv2d: groups", groups)
        if in_channels % self.groups or out_channels % self.groups:
            raise ValueError(
                f"BiConv2d: in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by "
                f"groups ({self.groups})"
            )
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(
                f"BiConv2d: padding_mode must be 'zeros', 'reflect', 'replicate' or 'circular', got {padding_mode!r}"
            )
        self.padding_mode = padding_mode
        self.output_padding, self.transposed = (0, 0), False  # nn.Conv2d's attributes, for code that reads them
        self.padding = self._resolve_padding(padding)
        self.activation = resolve_activation(activation)
        self.backend = backend
        self._set_op_geometry()
        self._output_padding: dict[tuple, tuple[int, int]] = {}  # (input HW, output_size) -> output_padding
        factory = {"device": device, "dtype": dtype}
        weight_shape = (out_channels, in_channels // self.groups, *self.kernel_size)
        self._make_params(weight_shape, bias, reverse_bias, reverse_scale, factory, self.groups)
        self.reset_parameters()

    def _resolve_padding(self, padding: int | Sequence[int] | str) -> tuple[int, int] | str:
        """nn.Conv2d's `padding` attribute: a pair of ints, or the string 'same' / 'valid' as given."""
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"BiConv2d: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("BiConv2d: padding='same' is not supported for strided convolutions")
            return padding
        pads = _pair(padding, "padding")
        if min(pads) < 0:
            raise ValueError(f"BiConv2d: padding must be >= 0, got {pads}")
        return pads

    def _set_op_geometry(self) -> None:
        """What the ops take, resolved once: the symmetric padding they apply themselves, and the rest of the
        padding as an explicit pad of the input (a mode other than 'zeros', or the extra side of 'same')."""
        if self.padding == "valid":
            before, after = (0, 0), (0, 0)
        elif self.padding == "same":  # as nn.Conv2d: the extra pixel of an odd total goes after
            total = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size, strict=True)]
            before = (total[0] // 2, total[1] // 2)
            after = (total[0] - before[0], total[1] - before[1])
        else:
            before = after = self.padding
        if self.padding_mode == "zeros":
            self._op_padding = list(before)
            extra = (after[1] - before[1], after[0] - before[0])
            self._input_pad = (0, extra[0], 0, extra[1]) if any(extra) else None
        else:
            self._op_padding = [0, 0]
            self._input_pad = (before[1], after[1], before[0], after[0]) if any(before + after) else None
        # F.pad's mode for the input pad; the reverse direction zero-pads `before` and crops the extra `after` side
        self._pad_mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        self._reverse_padding = list(before)
        self._reverse_crop = (after[0] - before[0], after[1] - before[1])
        self._op_stride = list(self.stride)
        self._op_dilation = 1 if self.dilation == (1, 1) else list(self.dilation)  # 1: the ops' fast default

    def output_hw(self, input_hw: Sequence[int]) -> tuple[int, int]:
        """The forward direction's output (H, W) for an input (H, W)."""
        pads = self._input_pad or (0, 0, 0, 0)
        padded = (input_hw[0] + pads[2] + pads[3], input_hw[1] + pads[0] + pads[1])
        return tuple(  # type: ignore[return-value]
            conv_output_size(padded[i], self.kernel_size[i], self.stride[i], self._op_padding[i], self.dilation[i])
            for i in range(2)
        )

    def reset_parameters(self) -> None:
        """nn.Conv2d's initialization; the reverse bias uses the reverse direction's fan-in."""
        taps = self.kernel_size[0] * self.kernel_size[1]
        self._reset_params(self.in_channels // self.groups * taps, self.out_channels // self.groups * taps)

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.Conv2d's name for it
        """Encode: a(conv2d(x, W) + b_f). input: [N, C_in, H, W] or [C_in, H, W]."""
        if self._input_pad is not None:
            input = F.pad(input, self._input_pad, mode=self._pad_mode)  # noqa: A001
        return bi_conv2d(
            input,
            self.weight,
            self.bias,
            stride=self._op_stride,
            padding=self._op_padding,
            dilation=self._op_dilation,
            groups=self.groups,
            activation=self.activation,
            backend=self.backend,
        )

    def forward_pre(self, x: torch.Tensor, input_activation: GNoVa = IDENTITY) -> tuple[torch.Tensor, GNoVa]:
        """Encode, leaving the activation to the next layer: (u, a) with u = conv2d(a_in(x), W) + b_f.

        A chain (BiSequential, BiResBlock, the models) hands u on and the next layer reads a(u) as it loads it, so
        each layer keeps one activation for its backward (its input) where eager keeps two (x and a(u)).
        """
        if self._input_pad is not None:
            if self._pad_mode == "constant" and input_activation != IDENTITY:  # a_in(0) != 0: activate, then pad
                x, input_activation = apply_activation(x, input_activation, self.backend), IDENTITY
            x = F.pad(x, self._input_pad, mode=self._pad_mode)  # reflect / replicate / circular commute with a_in
        u = bi_conv2d(
            x,
            self.weight,
            self.bias,
            stride=self._op_stride,
            padding=self._op_padding,
            dilation=self._op_dilation,
            groups=self.groups,
            activation=IDENTITY,
            input_activation=_op_input_activation(input_activation),
            backend=self.backend,
        )
        return u, self.activation

    def output_padding_for(self, input_hw: Sequence[int], output_size: Sequence[int]) -> tuple[int, int]:
        """The output_padding that makes the reverse direction produce `output_size` (H, W) from `input_hw`."""
        try:
            return self._output_padding[(tuple(input_hw), output_size)]
        except (KeyError, TypeError):  # new, or an unhashable output_size (a list): compute
            pass
        pads = self._compute_output_padding(input_hw, output_size)
        try:
            self._output_padding[(tuple(input_hw), output_size)] = pads
        except TypeError:
            pass
        return pads

    def _compute_output_padding(self, input_hw: Sequence[int], output_size: Sequence[int]) -> tuple[int, int]:
        geometry = (self.kernel_size, self.stride, self._reverse_padding, self.dilation, self._reverse_crop)
        return reverse_output_padding(input_hw, output_size, *geometry)

    def reverse(
        self, z: torch.Tensor, output_size: Sequence[int] | None = None, *, activation: ActivationLike = "default"
    ) -> torch.Tensor:
        """Decode through the same weight: a(conv_transpose2d(z, W) + b_r), or a(e^s conv_transpose2d(z, W) + b_r)
        with a reverse scale.

        `output_size` (…, H, W) picks the output_padding, as for nn.ConvTranspose2d (needed to invert a
        strided forward exactly, e.g. 28 -> 14 -> 28 with k=3, s=2, p=1). `activation` replaces a ("default":
        the layer's own; containers pass the mirror rule's choice).
        """
        act = resolve_reverse_activation(activation, self.activation)
        return self._reverse(z, output_size, act, IDENTITY)

    def reverse_pre(
        self,
        z: torch.Tensor,
        output_size: Sequence[int] | None = None,
        *,
        activation: ActivationLike = "default",
        input_activation: GNoVa = IDENTITY,
    ) -> tuple[torch.Tensor, GNoVa]:
        """Decode, leaving the activation to the next layer: (u, a) with u = [e^s] conv_transpose2d(a_in(z), W) + b_r
        (see forward_pre)."""
        act = resolve_reverse_activation(activation, self.activation)
        return self._reverse(z, output_size, IDENTITY, input_activation), act

    def _reverse(
        self, z: torch.Tensor, output_size: Sequence[int] | None, activation: GNoVa, input_activation: GNoVa
    ) -> torch.Tensor:
        output_padding = 0
        if isinstance(z, torch.fx.Proxy) and output_size is not None:  # z's size is known when the graph runs
            geometry = (self.kernel_size, self.stride, self._reverse_padding, self.dilation, self._reverse_crop)
            output_padding = traced_output_padding(z, output_size, *geometry)
        elif output_size is not None:
            if not isinstance(z, torch.Tensor) or z.dim() not in (3, 4):
                raise ValueError("BiConv2d.reverse: z must be a 3D or 4D tensor")
            output_padding = self.output_padding_for(z.shape[-2:], output_size)
        out = bi_conv2d_reverse(
            z,
            self.weight,
            self.reverse_bias,
            stride=self._op_stride,
            padding=self._reverse_padding,
            output_padding=output_padding,
            dilation=self._op_dilation,
            groups=self.groups,
            activation=activation,
            log_scale=self.reverse_log_scale,
            input_activation=_op_input_activation(input_activation),
            backend=self.backend,
        )
        crop_h, crop_w = self._reverse_crop
        if crop_h or crop_w:  # the side the forward direction padded more
            out = out[..., : -crop_h or None, : -crop_w or None]
        return out

    def extra_repr(self) -> str:
        geometry = "".join(
            f", {name}={value!r}"
            for name, value, default in (
                ("dilation", self.dilation, (1, 1)),
                ("groups", self.groups, 1),
                ("padding_mode", self.padding_mode, "zeros"),
            )
            if value != default
        )
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}{geometry}, bias={self.bias is not None}, activation={self.activation}"
            + (", reverse_scale=True" if self.reverse_log_scale is not None else "")
        )


class BiLinear(_ReverseParamsMixin, nn.Module):
    """A bidirectional dense layer: forward a(x W^T + b_f), reverse a(z W + b_r)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        activation: ActivationLike = "gnova",
        backend: str | None = None,
        reverse_scale: bool = False,
        reverse_bias: bool | None = None,
    ) -> None:
        super().__init__()
        in_features = _size("BiLinear: in_features", in_features)
        out_features = _size("BiLinear: out_features", out_features)
        self.in_features, self.out_features = in_features, out_features
        self.activation = resolve_activation(activation)
        self.backend = backend
        factory = {"device": device, "dtype": dtype}
        self._make_params((out_features, in_features), bias, reverse_bias, reverse_scale, factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's initialization; the reverse bias uses the reverse direction's fan-in."""
        self._reset_params(self.in_features, self.out_features)

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.Linear's name for it
        """Encode: a(x W^T + b_f). input: [*, in_features]."""
        return bi_linear(input, self.weight, self.bias, activation=self.activation, backend=self.backend)

    def forward_pre(self, x: torch.Tensor, input_activation: GNoVa = IDENTITY) -> tuple[torch.Tensor, GNoVa]:
        """Encode, leaving the activation to the next layer: (u, a) with u = a_in(x) W^T + b_f (see
        BiConv2d.forward_pre)."""
        u = bi_linear(
            x,
            self.weight,
            self.bias,
            activation=IDENTITY,
            input_activation=_op_input_activation(input_activation),
            backend=self.backend,
        )
        return u, self.activation

    def reverse(self, z: torch.Tensor, *, activation: ActivationLike = "default") -> torch.Tensor:
        """Decode through the same weight: a(z W + b_r), or a(e^s z W + b_r) with a reverse scale. z: [*, out_features].

        `activation` replaces a ("default": the layer's own; containers pass the mirror rule's choice).
        """
        return bi_linear_reverse(
            z,
            self.weight,
            self.reverse_bias,
            activation=resolve_reverse_activation(activation, self.activation),
            log_scale=self.reverse_log_scale,
            backend=self.backend,
        )

    def reverse_pre(
        self, z: torch.Tensor, *, activation: ActivationLike = "default", input_activation: GNoVa = IDENTITY
    ) -> tuple[torch.Tensor, GNoVa]:
        """Decode, leaving the activation to the next layer: (u, a) with u = [e^s] a_in(z) W + b_r."""
        u = bi_linear_reverse(
            z,
            self.weight,
            self.reverse_bias,
            activation=IDENTITY,
            log_scale=self.reverse_log_scale,
            input_activation=_op_input_activation(input_activation),
            backend=self.backend,
        )
        return u, resolve_reverse_activation(activation, self.activation)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, activation={self.activation}"
            + (", reverse_scale=True" if self.reverse_log_scale is not None else "")
        )
