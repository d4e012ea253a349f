"""The Triton backend as torch.library custom ops `bvae::triton_<name>`, with the compiled ops' schemas.

Each op is opaque to torch.compile (the fake kernels are the ones the compiled ops use, from
bvae_kernels.ops), and its autograd is `register_bi_autograd` with a `bvae::triton_<name>_backward` op, so
the Triton ops behave exactly like torch.ops.bvae.*. What a layer saves for backward: its input, the
weight and the pre-activation u; the backward recomputes a'(u) on load inside the dgrad, wgrad and
bias-gradient kernels, so du = g * a'(u) is never written to memory.

Linear layers are 1x1 convolutions on [M, C, 1, 1] views: the same kernels, the same epilogues.
"""

from __future__ import annotations

import torch

from ..ops import (
    BI_OPS,
    FAKES,
    channels_last_output,
    conv_transpose_output_size,
    fake_bi_backward,
    reference_op,
    register_bi_autograd,
)
from .configs import interpreting
from .conv import conv2d
from .conv_transpose import conv_transpose2d
from .pointwise import as_nchw, bias_grad, gnova_backward, gnova_forward
from .wgrad import wgrad

MAX_TAPS = 64  # taps are unrolled at compile time: larger kernels go to the cuda backend

_SCHEMAS = {
    "bi_conv2d": "(Tensor x, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, float alpha, float beta, "
    "float gamma) -> (Tensor, Tensor)",
    "bi_conv2d_backward": "(Tensor grad, Tensor x, Tensor weight, Tensor u, int[2] stride, int[2] padding, "
    "float alpha, float beta, float gamma, bool[3] output_mask) -> (Tensor?, Tensor?, Tensor?)",
    "bi_conv2d_reverse": "(Tensor z, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
    "int[2] output_padding, float alpha, float beta, float gamma) -> (Tensor, Tensor)",
    "bi_conv2d_reverse_backward": "(Tensor grad, Tensor z, Tensor weight, Tensor u, int[2] stride, "
    "int[2] padding, int[2] output_padding, float alpha, float beta, float gamma, bool[3] output_mask) "
    "-> (Tensor?, Tensor?, Tensor?)",
    "bi_linear": "(Tensor x, Tensor weight, Tensor? bias, float alpha, float beta, float gamma) -> (Tensor, Tensor)",
    "bi_linear_backward": "(Tensor grad, Tensor x, Tensor weight, Tensor u, float alpha, float beta, "
    "float gamma, bool[3] output_mask) -> (Tensor?, Tensor?, Tensor?)",
    "bi_linear_reverse": "(Tensor z, Tensor weight, Tensor? bias, float alpha, float beta, float gamma) "
    "-> (Tensor, Tensor)",
    "bi_linear_reverse_backward": "(Tensor grad, Tensor z, Tensor weight, Tensor u, float alpha, float beta, "
    "float gamma, bool[3] output_mask) -> (Tensor?, Tensor?, Tensor?)",
    "gnova": "(Tensor u, float alpha, float beta, float gamma) -> Tensor",
    "gnova_backward": "(Tensor grad, Tensor u, float alpha, float beta, float gamma) -> Tensor",
}


def _fmt(t: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if channels_last_output(t) else torch.contiguous_format


def _like(result: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """result with the strides torch.empty_like(ref) has (what the fake kernels promise)."""
    target = torch.empty_like(ref)
    return result if result.stride() == target.stride() else target.copy_(result)


# ----------------------------------------------------------------------------------------------------------
# implementations
# ----------------------------------------------------------------------------------------------------------
def _bi_conv2d(x, weight, bias, stride, padding, alpha, beta, gamma):  # noqa: ANN001, ANN202
    return conv2d(x, weight, bias, tuple(stride), tuple(padding), (alpha, beta, gamma), out_format=_fmt(x))


def _bi_conv2d_backward(grad, x, weight, u, stride, padding, alpha, beta, gamma, output_mask):  # noqa: ANN001, ANN202
    act = (alpha, beta, gamma)
    stride, padding = tuple(stride), tuple(padding)
    dx = dw = db = None
    if output_mask[0]:
        dx, _ = conv_transpose2d(
            grad,
            weight,
            None,
            stride,
            padding,
            tuple(x.shape[2:]),
            None,
            prologue=2,
            aux=u,
            prologue_act=act,
            store_u=False,
            out_format=_fmt(x),
        )
        dx = _like(dx, x)
    if output_mask[1]:
        dw = wgrad(x, grad, weight, stride, padding, pro_d=2, d_aux=u, prologue_act=act)
    if output_mask[2]:
        db = bias_grad(grad, u, *act)
    return dx, dw, db


def _bi_conv2d_reverse(z, weight, bias, stride, padding, output_padding, alpha, beta, gamma):  # noqa: ANN001, ANN202
    out_hw = tuple(
        conv_transpose_output_size(z.shape[2 + i], weight.shape[2 + i], stride[i], padding[i], output_padding[i])
        for i in (0, 1)
    )
    return conv_transpose2d(
        z, weight, bias, tuple(stride), tuple(padding), out_hw, (alpha, beta, gamma), out_format=_fmt(z)
    )


def _bi_conv2d_reverse_backward(grad, z, weight, u, stride, padding, output_padding, alpha, beta, gamma, output_mask):  # noqa: ANN001, ANN202
    act = (alpha, beta, gamma)
    stride, padding = tuple(stride), tuple(padding)
    dz = dw = db = None
    if output_mask[0]:
        dz, _ = conv2d(
            grad,
            weight,
            None,
            stride,
            padding,
            None,
            prologue=2,
            aux=u,
            prologue_act=act,
            store_u=False,
            out_format=_fmt(z),
        )
        dz = _like(dz, z)
    if output_mask[1]:
        dw = wgrad(grad, z, weight, stride, padding, pro_x=2, x_aux=u, prologue_act=act)
    if output_mask[2]:
        db = bias_grad(grad, u, *act)
    return dz, dw, db


def _rows(t: torch.Tensor) -> torch.Tensor:
    """[*, C] -> [M, C, 1, 1] (a view when possible)."""
    return as_nchw(t.reshape(-1, t.shape[-1]))


def _w4(weight: torch.Tensor) -> torch.Tensor:
    return weight[:, :, None, None]


def _bi_linear(x, weight, bias, alpha, beta, gamma):  # noqa: ANN001, ANN202
    y, u = conv2d(_rows(x), _w4(weight), bias, (1, 1), (0, 0), (alpha, beta, gamma))
    shape = (*x.shape[:-1], weight.shape[0])
    return y.view(shape), u.view(shape)


def _bi_linear_reverse(z, weight, bias, alpha, beta, gamma):  # noqa: ANN001, ANN202
    y, u = conv_transpose2d(_rows(z), _w4(weight), bias, (1, 1), (0, 0), (1, 1), (alpha, beta, gamma))
    shape = (*z.shape[:-1], weight.shape[1])
    return y.view(shape), u.view(shape)


def _bi_linear_backward(grad, x, weight, u, alpha, beta, gamma, output_mask):  # noqa: ANN001, ANN202
    act = (alpha, beta, gamma)
    g4, u4, x4, w4 = _rows(grad), _rows(u), _rows(x), _w4(weight)
    dx = dw = db = None
    if output_mask[0]:
        dx, _ = conv_transpose2d(
            g4, w4, None, (1, 1), (0, 0), (1, 1), None, prologue=2, aux=u4, prologue_act=act, store_u=False
        )
        dx = _like(dx.view(x.shape), x)
    if output_mask[1]:
        dw = wgrad(x4, g4, w4, (1, 1), (0, 0), pro_d=2, d_aux=u4, prologue_act=act)[:, :, 0, 0]
    if output_mask[2]:
        db = bias_grad(grad.reshape(-1, grad.shape[-1]), u.reshape(-1, u.shape[-1]), *act)
    return dx, dw, db


def _bi_linear_reverse_backward(grad, z, weight, u, alpha, beta, gamma, output_mask):  # noqa: ANN001, ANN202
    act = (alpha, beta, gamma)
    g4, u4, z4, w4 = _rows(grad), _rows(u), _rows(z), _w4(weight)
    dz = dw = db = None
    if output_mask[0]:
        dz, _ = conv2d(g4, w4, None, (1, 1), (0, 0), None, prologue=2, aux=u4, prologue_act=act, store_u=False)
        dz = _like(dz.view(z.shape), z)
    if output_mask[1]:
        dw = wgrad(g4, z4, w4, (1, 1), (0, 0), pro_x=2, x_aux=u4, prologue_act=act)[:, :, 0, 0]
    if output_mask[2]:
        db = bias_grad(grad.reshape(-1, grad.shape[-1]), u.reshape(-1, u.shape[-1]), *act)
    return dz, dw, db


def _gnova(u, alpha, beta, gamma):  # noqa: ANN001, ANN202
    return gnova_forward(u, alpha, beta, gamma)


def _gnova_backward(grad, u, alpha, beta, gamma):  # noqa: ANN001, ANN202
    return gnova_backward(grad, u, alpha, beta, gamma)


_IMPLS = {
    "bi_conv2d": _bi_conv2d,
    "bi_conv2d_backward": _bi_conv2d_backward,
    "bi_conv2d_reverse": _bi_conv2d_reverse,
    "bi_conv2d_reverse_backward": _bi_conv2d_reverse_backward,
    "bi_linear": _bi_linear,
    "bi_linear_backward": _bi_linear_backward,
    "bi_linear_reverse": _bi_linear_reverse,
    "bi_linear_reverse_backward": _bi_linear_reverse_backward,
    "gnova": _gnova,
    "gnova_backward": _gnova_backward,
}


# ----------------------------------------------------------------------------------------------------------
# registration
# ----------------------------------------------------------------------------------------------------------
def _register() -> dict:
    ops = {}
    for name, impl in _IMPLS.items():
        ops[name] = torch.library.custom_op(f"bvae::triton_{name}", impl, mutates_args=(), schema=_SCHEMAS[name])
    for name in BI_OPS:
        ops[name].register_fake(FAKES[name])
        ops[f"{name}_backward"].register_fake(fake_bi_backward)
        register_bi_autograd(f"bvae::triton_{name}", ops[f"{name}_backward"], reference_op(name))

    ops["gnova"].register_fake(lambda u, alpha, beta, gamma: torch.empty_like(u))
    ops["gnova_backward"].register_fake(lambda grad, u, alpha, beta, gamma: torch.empty_like(u))

    def gnova_setup(ctx, inputs, output):  # noqa: ANN001, ANN202
        ctx.params = inputs[1:]
        ctx.save_for_backward(inputs[0])

    def gnova_bwd(ctx, grad):  # noqa: ANN001, ANN202
        (u,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiate the reference formula
            from ..activation import gnova_grad_reference

            return grad * gnova_grad_reference(u, *ctx.params), None, None, None
        return ops["gnova_backward"](grad, u, *ctx.params), None, None, None

    ops["gnova"].register_autograd(gnova_bwd, setup_context=gnova_setup)
    return ops


_ALL = _register()
OPS = {name: _ALL[name] for name in ("gnova", *BI_OPS)}


def unsupported_reason(name: str, args: tuple) -> str | None:
    """Why the Triton kernels cannot serve `name(*args)` (None when they can)."""
    if name not in OPS:
        return f"no Triton kernel for {name!r}"
    inp = args[0]
    if not isinstance(inp, torch.Tensor):
        return "the first argument is not a tensor"
    if inp.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return f"the Triton kernels support float16, bfloat16 and float32, not {inp.dtype}"
    if inp.device.type == "cpu":
        if not interpreting():
            return "CPU tensors need TRITON_INTERPRET=1 for the Triton kernels"
        if inp.dtype == torch.bfloat16 and name != "gnova":
            return "the Triton interpreter cannot run a bfloat16 tl.dot"
    elif inp.device.type != "cuda":
        return f"the Triton kernels run on CUDA tensors, not {inp.device.type}"
    if inp.dim() > 0 and max(inp.numel() // max(inp.shape[0], 1), inp.numel() // max(inp.shape[-1], 1)) >= 2**31:
        return "a sample (or the row count) reaches 2**31 elements: the kernels index inside a sample with int32"
    if name.startswith("bi_conv2d"):
        weight = args[1]
        if inp.shape[0] * max(inp.shape[2] * args[3][0], 1) * max(inp.shape[3] * args[3][1], 1) >= 2**31:
            return "N*H*W output pixels reach 2**31: the kernels index pixels with int32"
        if weight.shape[2] * weight.shape[3] > MAX_TAPS:
            return f"kernel {tuple(weight.shape[2:])} has more than {MAX_TAPS} taps (unrolled at compile time)"
    return None
