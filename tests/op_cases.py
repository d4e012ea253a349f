"""The one case table of the op tests, and how a case becomes arguments and callables (ours vs the reference).

Each op's test file (test_gnova.py, test_bi_conv2d.py, test_bi_conv2d_reverse.py, test_bi_linear.py,
test_bi_linear_reverse.py) runs these cases on every backend under test (conftest.BACKENDS_UNDER_TEST);
`interp` marks the cases the Triton interpreter runs too (it runs every program in numpy: the full table
would take minutes there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from conftest import Arg, make_arg

import bvae_kernels as bk
from bvae_kernels import reference


@dataclass(frozen=True)
class ConvCase:
    n: int
    c_in: int
    c_out: int
    h: int
    w: int
    k: int
    stride: int
    padding: int
    output_padding: int = 0
    bias: bool = True
    interp: bool = False
    dilation: int = 1
    groups: int = 1

    def __str__(self) -> str:
        geometry = (f"d{self.dilation}" if self.dilation != 1 else "") + (f"g{self.groups}" if self.groups != 1 else "")
        return (
            f"n{self.n}c{self.c_in}-{self.c_out}_{self.h}x{self.w}_k{self.k}s{self.stride}p{self.padding}"
            f"op{self.output_padding}{geometry}{'' if self.bias else '_nobias'}"
        )


# Channel counts of 6-8: the bias gradient is a sum over N*H*W, and its relative error in bf16 is a ratio of two
# noisy norms over the channels; with only 3 or 4 channels that ratio (ours vs torch's) swings 3x.
CONV_CASES = [
    ConvCase(2, 6, 8, 8, 8, 3, 1, 1, interp=True),
    ConvCase(2, 6, 8, 7, 9, 3, 2, 1),  # odd sizes, stride 2
    ConvCase(1, 7, 6, 7, 9, 1, 1, 0, interp=True),  # 1x1 kernel, batch 1
    ConvCase(2, 6, 8, 8, 8, 4, 2, 1, bias=False, interp=True),  # k=4 s=2 p=1 (the VAE's down/up-sampler), no bias
    ConvCase(1, 8, 6, 9, 7, 3, 2, 0, output_padding=1, interp=True),  # output_padding (reverse)
    ConvCase(3, 6, 6, 5, 6, 4, 1, 0),  # k=4, no padding
    ConvCase(2, 3, 5, 7, 7, 5, 2, 2, output_padding=1),  # k=5 s=2 p=2
    ConvCase(1, 17, 33, 5, 6, 3, 1, 1),  # channel counts past one tile
    # nn.Conv2d's other geometry (the Triton backend hands these to the compiled op, warning once)
    ConvCase(2, 6, 8, 9, 8, 3, 1, 2, dilation=2, groups=2, interp=True),  # grouped and dilated
    ConvCase(2, 6, 6, 7, 9, 3, 2, 1, output_padding=1, groups=6),  # depthwise, stride 2
    ConvCase(1, 4, 8, 10, 9, 3, 2, 2, output_padding=1, dilation=(2, 3)),  # dilated, stride 2
]


def conv_cases(reverse: bool, interp_only: bool = False) -> list[ConvCase]:
    """The table for one direction (output_padding is a reverse-direction argument)."""
    return [c for c in CONV_CASES if (reverse or not c.output_padding) and (c.interp or not interp_only)]


def conv_args(
    case: ConvCase,
    dtype: torch.dtype,
    reverse: bool,
    layout: str = "contiguous",
    weight_layout: str | None = None,
    device: str = "cpu",
    log_scale: bool = False,
) -> list[Arg | None]:
    """(inp, weight, bias[, log_scale]) Args. In reverse the input has C_out channels and the bias C_in."""
    c_inp = case.c_out if reverse else case.c_in
    args = [
        make_arg([case.n, c_inp, case.h, case.w], dtype, layout, device=device),
        make_arg(
            [case.c_out, case.c_in // case.groups, case.k, case.k],
            dtype,
            weight_layout or layout,
            scale=0.4,
            device=device,
        ),
        make_arg([case.c_in if reverse else case.c_out], dtype, device=device) if case.bias else None,
    ]
    if log_scale:
        args.append(make_arg([], dtype, scale=0.3, device=device))
    return args


def conv_fns(
    case: ConvCase, reverse: bool, activation: object = "gnova", backend: str = "cpu", input_activation: object = None
) -> tuple:
    """(ours, reference) callables taking (inp, weight, bias[, log_scale])."""
    act = bk.resolve_activation(activation)
    geometry = {"dilation": case.dilation, "groups": case.groups}
    kw = {"stride": case.stride, "padding": case.padding, "input_activation": input_activation, **geometry}
    if reverse:
        op = case.output_padding

        def ours(z, w, b, s=None):  # noqa: ANN001, ANN202
            return bk.bi_conv2d_reverse(
                z, w, b, output_padding=op, activation=activation, log_scale=s, backend=backend, **kw
            )

        def ref(z, w, b, s=None):  # noqa: ANN001, ANN202
            return reference.bi_conv2d_reverse(
                z, w, b, case.stride, case.padding, op, act, s, input_activation, **geometry
            )

        return ours, ref
    ours = lambda x, w, b: bk.bi_conv2d(x, w, b, activation=activation, backend=backend, **kw)  # noqa: E731
    ref = lambda x, w, b: reference.bi_conv2d(x, w, b, case.stride, case.padding, act, input_activation, **geometry)  # noqa: E731
    return ours, ref


def linear_fns(
    reverse: bool, activation: object = "gnova", backend: str = "cpu", input_activation: object = None
) -> tuple[Callable, Callable]:
    """(ours, reference) callables taking (inp, weight, bias[, log_scale])."""
    act, ia = bk.resolve_activation(activation), input_activation
    if reverse:
        return (
            lambda z, w, b, s=None: bk.bi_linear_reverse(
                z, w, b, activation=activation, log_scale=s, input_activation=ia, backend=backend
            ),
            lambda z, w, b, s=None: reference.bi_linear_reverse(z, w, b, act, log_scale=s, input_activation=ia),
        )
    return (
        lambda x, w, b: bk.bi_linear(x, w, b, activation=activation, input_activation=ia, backend=backend),
        lambda x, w, b: reference.bi_linear(x, w, b, act, ia),
    )


# Input activations a chained layer reads its input through: G-NoVa, sigmoid (alpha = 0), a custom one, and the
# identity spelled as parameters (the op's no-op path).
INPUT_ACTIVATIONS = ["gnova", "sigmoid", bk.GNoVa(0.05, 2.0, 0.5), bk.GNoVa(1.0, 0.0, 1.0)]
INPUT_ACTIVATION_IDS = ["gnova", "sigmoid", "custom", "identity-params"]


ACTIVATION_IDS = ["gnova", "sigmoid", "identity", "None", "custom"]


def chain(x, w1, b1, w2, b2, br, backend):  # noqa: ANN001, ANN201
    """Forward conv -> forward linear -> reverse linear -> reverse conv, through shared weights."""
    h = bk.bi_conv2d(x, w1, b1, stride=2, padding=1, backend=backend)
    flat = h.flatten(1)
    z = bk.bi_linear(flat, w2, b2, backend=backend)
    flat2 = bk.bi_linear_reverse(z, w2, None, activation="sigmoid", backend=backend)
    return bk.bi_conv2d_reverse(flat2.view_as(h), w1, br, stride=2, padding=1, output_padding=1, backend=backend)


def chain_inputs(dtype: torch.dtype = torch.float32, device: str = "cpu") -> list[torch.Tensor]:
    x = torch.randn(2, 3, 8, 8, dtype=dtype)
    w1 = torch.randn(4, 3, 3, 3, dtype=dtype) * 0.3
    w2 = torch.randn(6, 64, dtype=dtype) * 0.1
    out = [x, w1, torch.randn(4, dtype=dtype), w2, torch.randn(6, dtype=dtype), torch.randn(3, dtype=dtype)]
    return [t.to(device) for t in out]
