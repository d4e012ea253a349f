"""The compiled `cpu` backend against the eager reference: values and every gradient, per dtype and layout.

Tolerances are the table in conftest.TOL (relative norm against a float64 reference computed from the same
rounded inputs); low precision is also held to at most 2x torch's own error in that dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from conftest import ACTIVATIONS, LAYOUTS, TOL, compare_to_reference, cpu_ops, make_arg, rel_err

import bvae_kernels as bk
from bvae_kernels import reference

pytestmark = cpu_ops

DTYPES = [torch.float32, torch.bfloat16]


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

    def __str__(self) -> str:
        return (
            f"n{self.n}c{self.c_in}-{self.c_out}_{self.h}x{self.w}_k{self.k}s{self.stride}p{self.padding}"
            f"op{self.output_padding}{'' if self.bias else '_nobias'}"
        )


# Channel counts of 6-8: the bias gradient is a sum over N*H*W, and its relative error in bf16 is a ratio of
# two noisy norms over the channels; with only 3 or 4 channels that ratio (ours vs torch's) swings 3x.
CONV_CASES = [
    ConvCase(2, 6, 8, 8, 8, 3, 1, 1),
    ConvCase(2, 6, 8, 7, 9, 3, 2, 1),  # odd sizes, stride 2
    ConvCase(1, 7, 6, 7, 9, 1, 1, 0),  # 1x1 kernel, batch 1
    ConvCase(2, 6, 8, 8, 8, 4, 2, 1, bias=False),  # k=4 s=2 p=1 (the VAE's down/up-sampler), no bias
    ConvCase(1, 8, 6, 9, 7, 3, 2, 0, output_padding=1),  # output_padding (reverse)
    ConvCase(3, 6, 6, 5, 6, 4, 1, 0),  # k=4, no padding
]
CONV_IDS = [str(c) for c in CONV_CASES]


def conv_args(case: ConvCase, dtype: torch.dtype, reverse: bool, layout: str, weight_layout: str | None = None):
    """(inp, weight, bias) Args. In reverse the input has C_out channels and the bias C_in."""
    c_inp = case.c_out if reverse else case.c_in
    inp = make_arg([case.n, c_inp, case.h, case.w], dtype, layout)
    weight = make_arg([case.c_out, case.c_in, case.k, case.k], dtype, weight_layout or layout, scale=0.4)
    bias = make_arg([case.c_in if reverse else case.c_out], dtype) if case.bias else None
    return [inp, weight, bias]


def conv_fns(case: ConvCase, reverse: bool, activation=None, backend: str = "cpu"):  # noqa: ANN001, ANN202
    """(ours, reference) callables taking (inp, weight, bias)."""
    act = "gnova" if activation is None else activation
    if reverse:
        kw = dict(stride=case.stride, padding=case.padding, output_padding=case.output_padding, activation=act)
        return (
            lambda z, w, b: bk.bi_conv2d_reverse(z, w, b, backend=backend, **kw),
            lambda z, w, b: reference.bi_conv2d_reverse(
                z, w, b, case.stride, case.padding, case.output_padding, bk.resolve_activation(act)
            ),
        )
    kw = dict(stride=case.stride, padding=case.padding, activation=act)
    return (
        lambda x, w, b: bk.bi_conv2d(x, w, b, backend=backend, **kw),
        lambda x, w, b: reference.bi_conv2d(x, w, b, case.stride, case.padding, bk.resolve_activation(act)),
    )


# ----------------------------------------------------------------------------------------------------------
# float64: gradcheck / gradgradcheck through the compiled ops
# ----------------------------------------------------------------------------------------------------------
GRADCHECK_CASES = [
    ConvCase(1, 2, 2, 4, 5, 3, 1, 1),
    ConvCase(1, 2, 2, 5, 4, 4, 2, 1, output_padding=1),
    ConvCase(2, 2, 2, 3, 4, 1, 1, 0, bias=False),
]


GRADCHECK_PARAMS = [(c, "gnova") for c in GRADCHECK_CASES] + [(GRADCHECK_CASES[0], bk.GNoVa(0.05, 2.0, 0.5))]


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize(
    ("case", "activation"),
    GRADCHECK_PARAMS,
    ids=[f"{c}-{'custom' if a != 'gnova' else a}" for c, a in GRADCHECK_PARAMS],
)
def test_conv_gradcheck_float64(case: ConvCase, reverse: bool, activation) -> None:
    if not reverse and case.output_padding:
        pytest.skip("output_padding is a reverse-direction argument")
    ours, _ = conv_fns(case, reverse, activation)
    args = [
        a.make(torch.float64)[1] if a is not None else None
        for a in conv_args(case, torch.float64, reverse, "contiguous")
    ]
    inputs = tuple(a for a in args if a is not None)
    fn = ours if case.bias else (lambda x, w: ours(x, w, None))
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=True)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_linear_gradcheck_float64(reverse: bool) -> None:
    x = torch.randn(2, 3, 4 if reverse else 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5 if reverse else 4, dtype=torch.float64, requires_grad=True)
    op = bk.bi_linear_reverse if reverse else bk.bi_linear
    fn = lambda x, w, b: op(x, w, b, activation=bk.GNoVa(0.2, 1.5, 0.7), backend="cpu")
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_gnova_gradcheck_float64() -> None:
    u = (torch.randn(3, 4, dtype=torch.float64) * 3).requires_grad_()
    fn = lambda u: bk.gnova(u, 0.1, 1.5, 0.8, backend="cpu")
    assert torch.autograd.gradcheck(fn, (u,))
    assert torch.autograd.gradgradcheck(fn, (u,))


# ----------------------------------------------------------------------------------------------------------
# float32 / bfloat16 values and gradients, every layout
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_conv_matches_reference(case: ConvCase, reverse: bool, dtype: torch.dtype, layout: str) -> None:
    if not reverse and case.output_padding:
        pytest.skip("output_padding is a reverse-direction argument")
    ours, ref = conv_fns(case, reverse)
    compare_to_reference(ours, ref, conv_args(case, dtype, reverse, layout), dtype, ["inp", "weight", "bias"])


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("x_layout", ["contiguous", "channels_last"])
def test_conv_channels_last_weight(reverse: bool, x_layout: str) -> None:
    """DESIGN keeps the weight channels_last (physical OHWI); any input layout must still be right."""
    case = CONV_CASES[3]
    ours, ref = conv_fns(case, reverse)
    args = conv_args(case, torch.float32, reverse, x_layout, weight_layout="channels_last")
    compare_to_reference(ours, ref, args, torch.float32, ["inp", "weight", "bias"])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=["gnova", "sigmoid", "identity", "None", "custom"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_conv_activations(activation, reverse: bool, dtype: torch.dtype) -> None:
    case = ConvCase(2, 6, 8, 7, 9, 3, 2, 1, output_padding=1 if reverse else 0)
    ours, ref = conv_fns(case, reverse, activation)
    compare_to_reference(ours, ref, conv_args(case, dtype, reverse, "contiguous"), dtype, ["inp", "weight", "bias"])


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
def test_conv_output_layout_follows_input(reverse: bool, fmt: str) -> None:
    memory_format = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
    x = torch.randn(2, 4 if reverse else 3, 6, 6).to(memory_format=memory_format)
    w = torch.randn(4, 3, 3, 3)
    op = bk.bi_conv2d_reverse if reverse else bk.bi_conv2d
    y = op(x, w, None, stride=2, padding=1, backend="cpu")
    assert y.is_contiguous(memory_format=memory_format)
    y_ref = (reference.bi_conv2d_reverse if reverse else reference.bi_conv2d)(x, w, None, 2, 1)
    assert rel_err(y, y_ref) <= TOL[torch.float32]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_conv_empty_batch(reverse: bool, dtype: torch.dtype) -> None:
    """N=0: an empty output of the right shape; dW and db are zeros (not missing), dx is empty."""
    case = ConvCase(0, 3, 4, 7, 9, 3, 2, 1, output_padding=1 if reverse else 0)
    ours, ref = conv_fns(case, reverse)
    args = conv_args(case, dtype, reverse, "contiguous")
    x, w, b = (a.make(dtype)[0] for a in args)
    y = ours(x, w, b)
    assert y.shape == ref(x.detach(), w.detach(), b.detach()).shape
    assert y.shape[0] == 0
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert w.grad is not None and torch.equal(w.grad, torch.zeros_like(w))
    assert b.grad is not None and torch.equal(b.grad, torch.zeros_like(b))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_conv_unbatched(reverse: bool) -> None:
    case = ConvCase(1, 3, 4, 7, 9, 3, 2, 1, output_padding=1 if reverse else 0)
    ours, ref = conv_fns(case, reverse)
    args = conv_args(case, torch.float32, reverse, "contiguous")
    inp = args[0]
    unbatched = make_arg(list(inp.leaf.shape[1:]), torch.float32)
    errs = compare_to_reference(ours, ref, [unbatched, args[1], args[2]], torch.float32, ["inp", "weight", "bias"])
    assert set(errs) == {"y", "dinp", "dweight", "dbias"}
    y = ours(unbatched.leaf.float(), args[1].leaf.float(), args[2].leaf.float())
    assert y.dim() == 3


def test_conv_reverse_inverts_shape() -> None:
    """k=3, s=2, p=1: 28 -> 14 forward; reverse with output_padding=1 gives back 28."""
    w = torch.randn(8, 1, 3, 3)
    y = bk.bi_conv2d(torch.randn(2, 1, 28, 28), w, stride=2, padding=1, backend="cpu")
    assert y.shape == (2, 8, 14, 14)
    x2 = bk.bi_conv2d_reverse(y, w, stride=2, padding=1, output_padding=1, backend="cpu")
    assert x2.shape == (2, 1, 28, 28)


# ----------------------------------------------------------------------------------------------------------
# dense layers
# ----------------------------------------------------------------------------------------------------------
LEADING = [(), (5,), (2, 3), (0,)]


@pytest.mark.parametrize("layout", ["contiguous", "sliced", "transposed"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("leading", LEADING, ids=lambda s: "x".join(map(str, s)) or "1d")
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_linear_matches_reference(reverse: bool, bias: bool, leading: tuple, dtype: torch.dtype, layout: str) -> None:
    in_f, out_f = 6, 5
    feat = out_f if reverse else in_f
    inp_layout = layout if len(leading) >= 1 and leading != (0,) else "contiguous"
    args = [
        make_arg([*leading, feat], dtype, inp_layout),
        make_arg([out_f, in_f], dtype, layout, scale=0.4),
        make_arg([in_f if reverse else out_f], dtype) if bias else None,
    ]
    op = bk.bi_linear_reverse if reverse else bk.bi_linear
    ref_op = reference.bi_linear_reverse if reverse else reference.bi_linear
    ours = lambda x, w, b: op(x, w, b, backend="cpu")
    compare_to_reference(ours, ref_op, args, dtype, ["inp", "weight", "bias"])


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=["gnova", "sigmoid", "identity", "None", "custom"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_linear_activations(activation, reverse: bool) -> None:
    args = [make_arg([7, 5 if reverse else 6], torch.float32), make_arg([5, 6], torch.float32), None]
    args[2] = make_arg([6 if reverse else 5], torch.float32)
    op = bk.bi_linear_reverse if reverse else bk.bi_linear
    ref_op = reference.bi_linear_reverse if reverse else reference.bi_linear
    act = bk.resolve_activation(activation)
    compare_to_reference(
        lambda x, w, b: op(x, w, b, activation=activation, backend="cpu"),
        lambda x, w, b: ref_op(x, w, b, act),
        args,
        torch.float32,
        ["inp", "weight", "bias"],
    )


def test_linear_hand_computed() -> None:
    """A 1x2 @ 2x2 case checked against numbers computed by hand (not by the reference)."""
    w = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    x = torch.tensor([[0.5, -1.0]])
    # forward: x W^T = [0.5 - 2, 1.5 + 1] = [-1.5, 2.5]; identity + bias [1, -1] -> [-0.5, 1.5]
    y = bk.bi_linear(x, w, torch.tensor([1.0, -1.0]), activation="identity", backend="cpu")
    torch.testing.assert_close(y, torch.tensor([[-0.5, 1.5]]))
    # reverse: z W = [0.5*1 - 3, 0.5*2 + 1] = [-2.5, 2]; sigmoid
    z = bk.bi_linear_reverse(x, w, None, activation="sigmoid", backend="cpu")
    torch.testing.assert_close(z, torch.tensor([[1 / (1 + math.exp(2.5)), 1 / (1 + math.exp(-2.0))]]))


# ----------------------------------------------------------------------------------------------------------
# G-NoVa
# ----------------------------------------------------------------------------------------------------------
def gnova_formula(u: torch.Tensor, alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """The formula in float64, written independently of bvae_kernels (stable sigmoid by cases)."""
    u = u.double()
    gu = gamma * u
    s = torch.where(gu >= 0, 1 / (1 + torch.exp(-gu.abs())), torch.exp(-gu.abs()) / (1 + torch.exp(-gu.abs())))
    return alpha * u + beta * s


@pytest.mark.parametrize("params", [(0.1, 1.0, 1.0), (0.0, 1.0, 1.0), (1.0, 0.0, 1.0), (0.3, 2.0, 0.25)])
def test_gnova_float64_matches_formula(params: tuple) -> None:
    u = torch.randn(1000, dtype=torch.float64) * 10
    y = bk.gnova(u, *params, backend="cpu")
    torch.testing.assert_close(y, gnova_formula(u, *params), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_gnova_values_and_grad(dtype: torch.dtype, layout: str) -> None:
    u_arg = make_arg([2, 3, 4, 33], dtype, layout, scale=4.0)  # 33: not a multiple of the vector width
    args = [u_arg]
    compare_to_reference(
        lambda u: bk.gnova(u, 0.1, 1.5, 0.8, backend="cpu"),
        lambda u: bk.gnova_reference(u, 0.1, 1.5, 0.8),
        args,
        dtype,
        ["u"],
    )


def test_gnova_stable_for_large_inputs() -> None:
    """float32, |u| > 88: exp(-u) overflows; the result must still be the formula, finite, no NaN."""
    u = torch.tensor([-1e30, -1000.0, -100.0, -89.0, -88.5, 88.5, 89.0, 100.0, 1000.0, 1e30], dtype=torch.float32)
    for params in [(0.1, 1.0, 1.0), (0.0, 1.0, 1.0), (0.1, 1.0, 3.0)]:
        y = bk.gnova(u, *params, backend="cpu")
        assert torch.isfinite(y).all(), (params, y)
        expected = gnova_formula(u, *params).float()
        torch.testing.assert_close(y, expected, rtol=1e-6, atol=1e-30)
    ur = u.clone().requires_grad_()
    bk.gnova(ur, 0.1, 1.0, 1.0, backend="cpu").sum().backward()
    torch.testing.assert_close(ur.grad, torch.full_like(u, 0.1))  # sigmoid' underflows to 0 at both ends


def test_gnova_infinities_and_nan() -> None:
    u = torch.tensor([float("inf"), float("-inf"), float("nan"), 0.0], requires_grad=True)
    y = bk.gnova(u, 0.1, 1.0, 1.0, backend="cpu")
    assert y[0] == float("inf") and y[1] == float("-inf") and y[2].isnan() and y[3] == 0.5
    y.sum().backward()
    assert u.grad[0] == pytest.approx(0.1) and u.grad[1] == pytest.approx(0.1)
    assert u.grad[2].isnan()
    assert u.grad[3] == pytest.approx(0.1 + 0.25)
    sig = bk.gnova(u.detach(), 0.0, 1.0, 1.0, backend="cpu")  # sigmoid: no 0 * inf = NaN at the ends
    assert sig[0] == 1.0 and sig[1] == 0.0 and sig[2].isnan()
    ident = bk.gnova(u.detach(), 1.0, 0.0, 1.0, backend="cpu")
    assert ident[0] == float("inf") and ident[1] == float("-inf") and ident[2].isnan()


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced", "transposed", "scalar"])
def test_gnova_any_shape_and_layout(layout: str) -> None:
    if layout == "scalar":
        u = torch.tensor(0.7)
    else:
        u = make_arg([2, 3, 4, 5], torch.float32, layout).make(torch.float32)[1].detach()
    y = bk.gnova(u, backend="cpu")
    assert y.shape == u.shape
    torch.testing.assert_close(y, gnova_formula(u, 0.1, 1.0, 1.0).float(), rtol=1e-6, atol=1e-7)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)


def test_cpu_backend_is_the_compiled_op() -> None:
    """backend='cpu' must reach torch.ops.bvae (not silently the reference)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    with Record() as rec:
        bk.bi_conv2d(torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3), backend="cpu")
        bk.bi_conv2d_reverse(torch.randn(1, 3, 3, 3), torch.randn(3, 2, 3, 3), backend="cpu")
        bk.bi_linear(torch.randn(2, 4), torch.randn(3, 4), backend="cpu")
        bk.bi_linear_reverse(torch.randn(2, 3), torch.randn(3, 4), backend="cpu")
        bk.gnova(torch.randn(3), backend="cpu")
    for name in ("bi_conv2d", "bi_conv2d_reverse", "bi_linear", "bi_linear_reverse", "gnova"):
        assert f"bvae.{name}.default" in rec.ops, rec.ops


# ----------------------------------------------------------------------------------------------------------
# torch.library.opcheck on every op, forward and backward
# ----------------------------------------------------------------------------------------------------------
OPCHECK_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
P = (0.1, 1.0, 1.0)


def _conv_op_args(reverse: bool, fmt: torch.memory_format, bias: bool):  # noqa: ANN202
    x = torch.randn(2, 4 if reverse else 3, 5, 7).to(memory_format=fmt)
    w = torch.randn(4, 3, 3, 3)
    b = torch.randn(3 if reverse else 4) if bias else None
    cfg = ([2, 2], [1, 1], [1, 1]) if reverse else ([2, 2], [1, 1])
    return x, w, b, cfg


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_opcheck_conv(reverse: bool, fmt: torch.memory_format, bias: bool) -> None:
    name = "bi_conv2d_reverse" if reverse else "bi_conv2d"
    x, w, b, cfg = _conv_op_args(reverse, fmt, bias)
    op, op_bw = getattr(torch.ops.bvae, name), getattr(torch.ops.bvae, f"{name}_backward")
    fwd_args = (x.requires_grad_(), w.requires_grad_(), b.requires_grad_() if b is not None else None, *cfg, *P)
    torch.library.opcheck(op.default, fwd_args, test_utils=OPCHECK_UTILS)
    y, u = op(x.detach(), w.detach(), b, *cfg, *P)
    g = torch.randn_like(y)
    for mask in ([True, True, bias], [False, True, False], [True, False, False]):
        torch.library.opcheck(op_bw.default, (g, x.detach(), w.detach(), u, *cfg, *P, mask), test_utils=OPCHECK_UTILS)


@pytest.mark.parametrize("shape", [(4,), (3, 4), (2, 3, 4)], ids=["1d", "2d", "3d"])
@pytest.mark.parametrize("noncontig", [False, True], ids=["contiguous", "transposed"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_opcheck_linear(reverse: bool, noncontig: bool, shape: tuple) -> None:
    name = "bi_linear_reverse" if reverse else "bi_linear"
    x = torch.randn(shape)
    w = torch.randn(4, 5) if reverse else torch.randn(5, 4)
    if noncontig and x.dim() >= 2:
        x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    if noncontig:
        w = w.t().contiguous().t()
    b = torch.randn(5)
    op, op_bw = getattr(torch.ops.bvae, name), getattr(torch.ops.bvae, f"{name}_backward")
    torch.library.opcheck(op.default, (x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), *P))
    y, u = op(x.detach(), w.detach(), b.detach(), *P)
    g = torch.randn_like(y)
    torch.library.opcheck(op_bw.default, (g, x.detach(), w.detach(), u, *P, [True, True, True]))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced", "channels_last_sliced"])
def test_opcheck_gnova(layout: str) -> None:
    if layout == "channels_last_sliced":  # not dense: csrc makes it contiguous (empty_like would keep NHWC)
        u = torch.randn(2, 3, 8, 5).to(memory_format=torch.channels_last)[:, :, ::2]
    else:
        u = make_arg([2, 3, 4, 5], torch.float32, layout).make(torch.float32)[1].detach()
    leaf = u if "sliced" in layout else u.clone().requires_grad_()
    torch.library.opcheck(torch.ops.bvae.gnova.default, (leaf, *P))
    torch.library.opcheck(torch.ops.bvae.gnova_backward.default, (torch.randn_like(u), u, *P))


# ----------------------------------------------------------------------------------------------------------
# torch.compile and autocast
# ----------------------------------------------------------------------------------------------------------
def _chain(x, w1, b1, w2, b2, br, backend):  # noqa: ANN001, ANN202
    """Forward conv -> forward linear -> reverse linear -> reverse conv, through shared weights."""
    h = bk.bi_conv2d(x, w1, b1, stride=2, padding=1, backend=backend)
    flat = h.flatten(1)
    z = bk.bi_linear(flat, w2, b2, backend=backend)
    flat2 = bk.bi_linear_reverse(z, w2, None, activation="sigmoid", backend=backend)
    return bk.bi_conv2d_reverse(flat2.view_as(h), w1, br, stride=2, padding=1, output_padding=1, backend=backend)


def _chain_inputs(dtype: torch.dtype = torch.float32):  # noqa: ANN202
    x = torch.randn(2, 3, 8, 8, dtype=dtype)
    w1 = torch.randn(4, 3, 3, 3, dtype=dtype) * 0.3
    w2 = torch.randn(6, 64, dtype=dtype) * 0.1
    return [x, w1, torch.randn(4, dtype=dtype), w2, torch.randn(6, dtype=dtype), torch.randn(3, dtype=dtype)]


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_chain(compile_backend: str) -> None:
    torch._dynamo.reset()
    inputs = _chain_inputs()
    eager_leaves = [t.clone().requires_grad_() for t in inputs]
    comp_leaves = [t.clone().requires_grad_() for t in inputs]
    y_eager = _chain(*eager_leaves, backend="cpu")
    compiled = torch.compile(_chain, fullgraph=True, backend=compile_backend)
    y_comp = compiled(*comp_leaves, backend="cpu")
    assert rel_err(y_comp, y_eager) <= TOL[torch.float32]
    g = torch.randn_like(y_eager)
    grads_eager = torch.autograd.grad(y_eager, eager_leaves, g)
    grads_comp = torch.autograd.grad(y_comp, comp_leaves, g)
    for i, (a, b) in enumerate(zip(grads_comp, grads_eager, strict=True)):
        assert rel_err(a, b) <= TOL[torch.float32], f"grad {i}"
    # and both against the reference chain in float64
    ref_leaves = [t.double().requires_grad_() for t in inputs]
    y_ref = _chain(*ref_leaves, backend="torch")
    assert rel_err(y_comp, y_ref) <= TOL[torch.float32]


def test_autocast_bfloat16_cpu() -> None:
    """Under CPU autocast (bf16) the ops compute in bf16 like F.conv2d, and gradients reach fp32 leaves."""
    inputs = _chain_inputs()
    ours_leaves = [t.clone().requires_grad_() for t in inputs]
    ref_leaves = [t.clone().requires_grad_() for t in inputs]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = _chain(*ours_leaves, backend="cpu")
        y_ref_lp = _chain(*ref_leaves, backend="torch")
    assert y.dtype == torch.bfloat16 and y_ref_lp.dtype == torch.bfloat16
    # float64 reference from the same bf16-rounded inputs
    ref64 = [t.to(torch.bfloat16).double().requires_grad_() for t in inputs]
    y64 = _chain(*ref64, backend="torch")
    err, err_torch = rel_err(y, y64), rel_err(y_ref_lp, y64)
    assert err <= TOL[torch.bfloat16] and err <= 2 * err_torch + 5e-4, (err, err_torch)
    g = torch.randn(y.shape, dtype=torch.float64).to(torch.bfloat16)
    grads = torch.autograd.grad(y, ours_leaves, g)
    grads64 = torch.autograd.grad(y64, ref64, g.double())
    for i, (a, b) in enumerate(zip(grads, grads64, strict=True)):
        assert a.dtype == torch.float32, f"grad {i} dtype {a.dtype}"
        assert rel_err(a, b) <= 2 * TOL[torch.bfloat16], f"grad {i}: {rel_err(a, b):.3e}"
