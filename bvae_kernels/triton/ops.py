# ruff: noqa: ANN001, ANN202 - the kernels take the op schemas' arguments (their types are the schemas')
"""What the `bvae::triton_<op>` ops run: the Triton kernels behind each op's schema (csrc/bvae_ops.cpp).

Autograd (csrc/autograd.cpp) and the fakes (bvae_kernels/_library.py) are shared with the compiled ops; this
module only registers kernels, for CUDA tensors (and for CPU tensors when TRITON_INTERPRET=1 is set before
import, which runs them in Triton's interpreter). Each kernel validates its arguments with the same checks as
the compiled ops, then hands a case the Triton kernels cannot serve (float64, sizes past their int32 indexing,
a bf16 matmul in the interpreter) to the compiled op of the same name, warning once.

What the forward saves is the input, the weight and the pre-activation u; the backward recomputes a'(u) on load
inside the dgrad, wgrad and bias-gradient kernels, so du = g * a'(u) is never written to memory. Linear layers are
1x1 convolutions on [M, C, 1, 1] views: the same kernels, the same epilogues.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._library import (
    check_bi_conv2d,
    check_bi_conv2d_reverse,
    check_bi_linear,
    check_gnova,
    check_gnova_bwd,
    memory_format_of,
    warn_once,
)
from ._gemm import PRO_ACT, PRO_ACT_GRAD, PRO_NONE, grad_prologue
from .bi_conv2d import conv2d
from .bi_conv2d_reverse import conv_transpose2d
from .configs import interpreting
from .gnova import gnova_backward, gnova_forward
from .reductions import as_nchw, bias_grad
from .wgrad import wgrad

# Pixel indices (N*H*W) and offsets inside one sample are int32 in the GEMM kernels (int64 tiles spill); a pixel
# index runs up to the count plus one tile, hence the margin. Grid axes 1 and 2 are limited to 65535 programs.
_PIXEL_LIMIT = 2**31 - 1024
_INT32 = 2**31
_GRID_YZ = 65535
Act = tuple[float, float, float]
IDENTITY: Act = (1.0, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------------------
# what the kernels cannot serve, and the hand-over to the compiled op
# ----------------------------------------------------------------------------------------------------------
def unsupported_reason(inp: torch.Tensor, matmul: bool = True) -> str | None:
    """Why the Triton kernels cannot take `inp`'s dtype (None when they can)."""
    if inp.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return f"the Triton kernels support float16, bfloat16 and float32, not {inp.dtype}"
    if inp.device.type == "cpu" and matmul and inp.dtype == torch.bfloat16:
        return "the Triton interpreter cannot run a bfloat16 tl.dot"
    return None


def _span(t: torch.Tensor) -> int:
    """Elements from t's first to its last address, plus one (its int32 offset range)."""
    return 1 + sum((n - 1) * st for n, st in zip(t.shape, t.stride(), strict=True)) if t.numel() else 0


def index_problem(pixels: tuple[int, ...], sample_sizes: tuple[int, ...], weight: torch.Tensor) -> str | None:
    """Why a layer's sizes overflow the kernels' int32 indexing (None when they do not).

    pixels: N*H*W of each side (the GEMM rows and the weight gradient's K); sample_sizes: C*H*W of each side (the
    launchers make activations dense, so that is one sample's offset range); weight: read in place, any strides.
    """
    if max(pixels) >= _PIXEL_LIMIT:
        return f"{max(pixels)} pixels (N*H*W) overflow the kernels' int32 pixel index"
    if max(sample_sizes) >= _INT32:
        return f"one sample has {max(sample_sizes)} elements: the kernels index inside a sample with int32"
    if _span(weight) >= _INT32:
        return f"the weight spans {_span(weight)} elements: the kernels index it with int32"
    return None


def conv_problem(
    inp: torch.Tensor,
    weight: torch.Tensor,
    out_hw: list[int],
    stride: list[int],
    reverse: bool,
    dilation: list[int] = (1, 1),
    groups: int = 1,
) -> str | None:
    """Why the Triton kernels cannot serve a conv of either direction from inp [N, C, H, W] to out_hw (None if none)."""
    if reason := unsupported_reason(inp):
        return reason
    if groups != 1 or tuple(dilation) != (1, 1):
        return f"the Triton kernels serve groups=1 and dilation=1, not groups={groups}, dilation={tuple(dilation)}"
    taps = weight.shape[2] * weight.shape[3]
    if taps > _GRID_YZ or stride[0] * stride[1] > _GRID_YZ:
        return f"kernel {tuple(weight.shape[2:])}, stride {tuple(stride)}: more than {_GRID_YZ} taps or stride phases"
    nb, c_in, h, w = inp.shape
    c_out = weight.shape[1 if reverse else 0]
    pixels_out = nb * out_hw[0] * out_hw[1]
    return index_problem((nb * h * w, pixels_out), (c_in * h * w, c_out * out_hw[0] * out_hw[1]), weight)


def _compiled(name: str, reason: str, device_type: str) -> Callable:
    """The compiled op that serves a case the Triton kernels cannot (warning once), or a clear error."""
    if not torch._C._dispatch_has_kernel_for_dispatch_key(f"bvae::{name}", device_type.upper()):
        raise NotImplementedError(
            f"triton_{name}: {reason}, and bvae_kernels._C has no {device_type} kernel to hand the case to; "
            "use backend='torch'"
        )
    warn_once(f"bvae_kernels: backend 'triton' hands {name} to the compiled op: {reason}")
    return getattr(torch.ops.bvae, name).default


def _log_scale_grad(d_inp: torch.Tensor, inp: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """ds for u = e^s T(z) + b: <dz, z> in fp32 (csrc: log_scale_grad)."""
    acc = torch.float64 if inp.dtype == torch.float64 else torch.float32
    return (d_inp.to(acc) * inp.to(acc)).sum().to(log_scale.dtype).reshape(log_scale.shape)


# ----------------------------------------------------------------------------------------------------------
# gnova
# ----------------------------------------------------------------------------------------------------------
def _gnova(u, alpha, beta, gamma):
    check_gnova(u)
    if reason := unsupported_reason(u, matmul=False):
        return _compiled("gnova", reason, u.device.type)(u, alpha, beta, gamma)
    return gnova_forward(u, alpha, beta, gamma)


def _gnova_bwd(grad, u, alpha, beta, gamma):
    check_gnova_bwd(grad, u, beta)
    if reason := unsupported_reason(u, matmul=False):
        return _compiled("gnova_bwd", reason, u.device.type)(grad, u, alpha, beta, gamma)
    return gnova_backward(grad, u, alpha, beta, gamma)


# ----------------------------------------------------------------------------------------------------------
# the conv layers: both directions' forwards, and one backward for both
# ----------------------------------------------------------------------------------------------------------
def _input_prologue(in_act: Act) -> int:
    """The prologue that reads a layer's input through its input activation (none for the identity)."""
    alpha, beta, gamma = in_act
    return PRO_NONE.value if alpha == 1.0 and beta * gamma == 0 else PRO_ACT.value


def conv_backward(
    grad: torch.Tensor,
    inp: torch.Tensor,
    weight: torch.Tensor,
    u: torch.Tensor | None,
    log_scale: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    transposed: bool,
    act: Act,
    mask: list[bool],
    dense: bool = False,
    in_act: Act = IDENTITY,
) -> tuple[torch.Tensor | None, ...]:
    """Gradients (d_inp, dW, db, ds) of a layer u = [e^s] T(a_in(inp), W) + b, y = a(u), where T is the
    forward-direction conv (transposed False) or the reverse-direction one (True). du = grad * a'(u) is applied on
    load, and a_in(inp) too where the weight gradient reads the input; d_inp = d(a_in(inp)) * a_in'(inp)."""
    pro = grad_prologue(u, act)
    aux = u if pro == PRO_ACT_GRAD.value else None
    pro_in = _input_prologue(in_act)
    scale_grad = mask[3] and log_scale is not None
    d_inp = dw = db = ds = None
    if mask[0] or scale_grad:
        common = dict(
            prologue=pro, aux=aux, prologue_act=act, store_u=False, out_format=memory_format_of(inp), dense=dense
        )
        if transposed:  # d_inp = e^s * conv2d(du, W): the forward-direction contraction
            d_inp, _ = conv2d(grad, weight, None, stride, padding, None, log_scale=log_scale, **common)
        else:  # d_inp = conv_transpose2d(du, W): the reverse-direction contraction
            d_inp, _ = conv_transpose2d(grad, weight, None, stride, padding, tuple(inp.shape[2:]), None, **common)
    if mask[1]:
        fmt = memory_format_of(weight)
        if transposed:  # X = du (the reverse output's side), D = a_in(z)
            dw = wgrad(grad, inp, weight, stride, padding, pro_x=pro, x_aux=aux, x_act=act, pro_d=pro_in,
                       d_act=in_act, log_scale=log_scale, out_format=fmt, dense=dense)  # fmt: skip
        else:  # X = a_in(x), D = du
            dw = wgrad(inp, grad, weight, stride, padding, pro_x=pro_in, x_act=in_act, pro_d=pro, d_aux=aux,
                       d_act=act, out_format=fmt, dense=dense)  # fmt: skip
    if mask[2]:
        db = bias_grad(grad, aux, *act)
    if scale_grad:
        eff = inp if pro_in == PRO_NONE.value else gnova_forward(inp, *in_act)
        ds = _log_scale_grad(d_inp, eff, log_scale)
    if mask[0] and pro_in != PRO_NONE.value:
        d_inp = gnova_backward(d_inp, inp, *in_act)
    return d_inp if mask[0] else None, dw, db, ds


def _conv_forward(name, keep_u, x, weight, bias, stride, padding, act, in_act, dilation, groups):
    """bi_conv2d (keep_u False: y) and bi_conv2d_fwd (True: y, u), or the compiled op `name` for a case the Triton
    kernels cannot serve."""
    out = check_bi_conv2d(x, weight, bias, stride, padding, dilation, groups)
    if reason := conv_problem(x, weight, out, stride, False, dilation, groups):
        op = _compiled(name, reason, x.device.type)
        return op(x, weight, bias, stride, padding, *act, *in_act, dilation, groups)
    y, u = conv2d(x, weight, bias, stride, padding, act, prologue=_input_prologue(in_act), prologue_act=in_act,
                  store_u=keep_u, out_format=memory_format_of(x))  # fmt: skip
    return (y, u) if keep_u else y


def _bi_conv2d_fwd(
    x, weight, bias, stride, padding, alpha, beta, gamma, in_alpha=1.0, in_beta=0.0, in_gamma=1.0, dilation=(1, 1),
    groups=1,
):  # fmt: skip
    act, in_act = (alpha, beta, gamma), (in_alpha, in_beta, in_gamma)
    return _conv_forward("bi_conv2d_fwd", True, x, weight, bias, stride, padding, act, in_act, dilation, groups)


def _bi_conv2d(
    x, weight, bias, stride, padding, alpha, beta, gamma, in_alpha=1.0, in_beta=0.0, in_gamma=1.0, dilation=(1, 1),
    groups=1,
):  # fmt: skip
    act, in_act = (alpha, beta, gamma), (in_alpha, in_beta, in_gamma)
    return _conv_forward("bi_conv2d", False, x, weight, bias, stride, padding, act, in_act, dilation, groups)


def _bi_conv2d_bwd(
    grad, x, weight, u, stride, padding, alpha, beta, gamma, output_mask, in_alpha=1.0, in_beta=0.0, in_gamma=1.0,
    dilation=(1, 1), groups=1,
):  # fmt: skip
    in_act = (in_alpha, in_beta, in_gamma)
    out = check_bi_conv2d(x, weight, None, stride, padding, dilation, groups)
    if reason := conv_problem(x, weight, out, stride, False, dilation, groups):
        op = _compiled("bi_conv2d_bwd", reason, x.device.type)
        return op(grad, x, weight, u, stride, padding, alpha, beta, gamma, output_mask, *in_act, dilation, groups)
    mask = [*output_mask, False]
    act = (alpha, beta, gamma)
    return conv_backward(grad, x, weight, u, None, stride, padding, False, act, mask, in_act=in_act)[:3]


def _reverse_out(z, weight, bias, log_scale, stride, padding, output_padding, dilation, groups):
    out = check_bi_conv2d_reverse(z, weight, bias, log_scale, stride, padding, output_padding, dilation, groups)
    return tuple(out), conv_problem(z, weight, out, stride, True, dilation, groups)


def _reverse_forward(
    name, keep_u, z, weight, bias, log_scale, stride, padding, output_padding, act, in_act, dilation, groups
):
    """bi_conv2d_reverse (keep_u False: y) and bi_conv2d_reverse_fwd (True: y, u), or the compiled op `name`."""
    out_hw, reason = _reverse_out(z, weight, bias, log_scale, stride, padding, output_padding, dilation, groups)
    if reason:
        op = _compiled(name, reason, z.device.type)
        return op(z, weight, bias, log_scale, stride, padding, output_padding, *act, *in_act, dilation, groups)
    y, u = conv_transpose2d(
        z, weight, bias, stride, padding, out_hw, act, log_scale=log_scale, prologue=_input_prologue(in_act),
        prologue_act=in_act, store_u=keep_u, out_format=memory_format_of(z),
    )  # fmt: skip
    return (y, u) if keep_u else y


def _bi_conv2d_reverse_fwd(
    z, weight, bias, log_scale, stride, padding, output_padding, alpha, beta, gamma, in_alpha=1.0, in_beta=0.0,
    in_gamma=1.0, dilation=(1, 1), groups=1,
):  # fmt: skip
    act, in_act = (alpha, beta, gamma), (in_alpha, in_beta, in_gamma)
    args = (z, weight, bias, log_scale, stride, padding, output_padding, act, in_act, dilation, groups)
    return _reverse_forward("bi_conv2d_reverse_fwd", True, *args)


def _bi_conv2d_reverse(
    z, weight, bias, log_scale, stride, padding, output_padding, alpha, beta, gamma, in_alpha=1.0, in_beta=0.0,
    in_gamma=1.0, dilation=(1, 1), groups=1,
):  # fmt: skip
    act, in_act = (alpha, beta, gamma), (in_alpha, in_beta, in_gamma)
    args = (z, weight, bias, log_scale, stride, padding, output_padding, act, in_act, dilation, groups)
    return _reverse_forward("bi_conv2d_reverse", False, *args)


def _bi_conv2d_reverse_bwd(
    grad,
    z,
    weight,
    u,
    log_scale,
    stride,
    padding,
    output_padding,
    alpha,
    beta,
    gamma,
    output_mask,
    in_alpha=1.0,
    in_beta=0.0,
    in_gamma=1.0,
    dilation=(1, 1),
    groups=1,
):
    in_act = (in_alpha, in_beta, in_gamma)
    _, reason = _reverse_out(z, weight, None, log_scale, stride, padding, output_padding, dilation, groups)
    if reason:
        op = _compiled("bi_conv2d_reverse_bwd", reason, z.device.type)
        args = (grad, z, weight, u, log_scale, stride, padding, output_padding, alpha, beta, gamma, output_mask)
        return op(*args, *in_act, dilation, groups)
    act = (alpha, beta, gamma)
    return conv_backward(grad, z, weight, u, log_scale, stride, padding, True, act, output_mask, in_act=in_act)


# ----------------------------------------------------------------------------------------------------------
# the dense layers: 1x1 convolutions on [M, C, 1, 1] views
# ----------------------------------------------------------------------------------------------------------
def _rows(t: torch.Tensor) -> torch.Tensor:
    """[*, C] -> [M, C, 1, 1] (a view when possible)."""
    return as_nchw(t.reshape(-1, t.shape[-1]))


def _linear_forward(inp, weight, bias, log_scale, act, reverse, store_u, in_act):
    w4 = weight[:, :, None, None]
    pro = {"prologue": _input_prologue(in_act), "prologue_act": in_act, "store_u": store_u, "dense": True}
    if reverse:
        y, u = conv_transpose2d(_rows(inp), w4, bias, (1, 1), (0, 0), (1, 1), act, log_scale=log_scale, **pro)
    else:
        y, u = conv2d(_rows(inp), w4, bias, (1, 1), (0, 0), act, **pro)
    shape = (*inp.shape[:-1], weight.shape[0 if not reverse else 1])
    return y.view(shape), (u.view(shape) if u is not None else None)


def _linear_backward(grad, inp, weight, u, log_scale, act, reverse, mask, in_act):
    u4 = _rows(u) if u is not None else None
    d_inp, dw, db, ds = conv_backward(
        _rows(grad), _rows(inp), weight[:, :, None, None], u4, log_scale, (1, 1), (0, 0), reverse, act, mask, True,
        in_act,
    )  # fmt: skip
    return (
        d_inp.reshape(inp.shape) if d_inp is not None else None,
        dw[:, :, 0, 0] if dw is not None else None,
        db,
        ds,
    )


def _linear_case(name, inp, label, weight, bias, log_scale, reverse):
    check_bi_linear(name, inp, label, weight, bias, log_scale, reverse)
    if reason := unsupported_reason(inp):
        return reason
    rows = inp.numel() // max(inp.shape[-1], 1)
    return index_problem((rows,), tuple(weight.shape), weight)


def _bi_linear(x, weight, bias, alpha, beta, gamma, in_alpha=1.0, in_beta=0.0, in_gamma=1.0):
    in_act = (in_alpha, in_beta, in_gamma)
    if reason := _linear_case("bi_linear", x, "x", weight, bias, None, False):
        return _compiled("bi_linear", reason, x.device.type)(x, weight, bias, alpha, beta, gamma, *in_act)
    return _linear_forward(x, weight, bias, None, (alpha, beta, gamma), False, False, in_act)[0]


def _bi_linear_fwd(x, weight, bias, alpha, beta, gamma, in_alpha=1.0, in_beta=0.0, in_gamma=1.0):
    in_act = (in_alpha, in_beta, in_gamma)
    if reason := _linear_case("bi_linear", x, "x", weight, bias, None, False):
        return _compiled("bi_linear_fwd", reason, x.device.type)(x, weight, bias, alpha, beta, gamma, *in_act)
    return _linear_forward(x, weight, bias, None, (alpha, beta, gamma), False, True, in_act)


def _bi_linear_bwd(grad, x, weight, u, alpha, beta, gamma, output_mask, in_alpha=1.0, in_beta=0.0, in_gamma=1.0):
    in_act = (in_alpha, in_beta, in_gamma)
    if reason := _linear_case("bi_linear_bwd", x, "x", weight, None, None, False):
        op = _compiled("bi_linear_bwd", reason, x.device.type)
        return op(grad, x, weight, u, alpha, beta, gamma, output_mask, *in_act)
    act, mask = (alpha, beta, gamma), [*output_mask, False]
    return _linear_backward(grad, x, weight, u, None, act, False, mask, in_act)[:3]


def _bi_linear_reverse(z, weight, bias, log_scale, alpha, beta, gamma, in_alpha=1.0, in_beta=0.0, in_gamma=1.0):
    in_act = (in_alpha, in_beta, in_gamma)
    if reason := _linear_case("bi_linear_reverse", z, "z", weight, bias, log_scale, True):
        op = _compiled("bi_linear_reverse", reason, z.device.type)
        return op(z, weight, bias, log_scale, alpha, beta, gamma, *in_act)
    return _linear_forward(z, weight, bias, log_scale, (alpha, beta, gamma), True, False, in_act)[0]


def _bi_linear_reverse_fwd(z, weight, bias, log_scale, alpha, beta, gamma, in_alpha=1.0, in_beta=0.0, in_gamma=1.0):
    in_act = (in_alpha, in_beta, in_gamma)
    if reason := _linear_case("bi_linear_reverse", z, "z", weight, bias, log_scale, True):
        op = _compiled("bi_linear_reverse_fwd", reason, z.device.type)
        return op(z, weight, bias, log_scale, alpha, beta, gamma, *in_act)
    return _linear_forward(z, weight, bias, log_scale, (alpha, beta, gamma), True, True, in_act)


def _bi_linear_reverse_bwd(
    grad, z, weight, u, log_scale, alpha, beta, gamma, output_mask, in_alpha=1.0, in_beta=0.0, in_gamma=1.0
):
    in_act = (in_alpha, in_beta, in_gamma)
    if reason := _linear_case("bi_linear_reverse_bwd", z, "z", weight, None, log_scale, True):
        op = _compiled("bi_linear_reverse_bwd", reason, z.device.type)
        return op(grad, z, weight, u, log_scale, alpha, beta, gamma, output_mask, *in_act)
    return _linear_backward(grad, z, weight, u, log_scale, (alpha, beta, gamma), True, output_mask, in_act)


# ----------------------------------------------------------------------------------------------------------
# registration
# ----------------------------------------------------------------------------------------------------------
KERNELS: dict[str, Callable] = {
    "gnova": _gnova,
    "gnova_bwd": _gnova_bwd,
    "bi_conv2d": _bi_conv2d,
    "bi_conv2d_fwd": _bi_conv2d_fwd,
    "bi_conv2d_bwd": _bi_conv2d_bwd,
    "bi_conv2d_reverse": _bi_conv2d_reverse,
    "bi_conv2d_reverse_fwd": _bi_conv2d_reverse_fwd,
    "bi_conv2d_reverse_bwd": _bi_conv2d_reverse_bwd,
    "bi_linear": _bi_linear,
    "bi_linear_fwd": _bi_linear_fwd,
    "bi_linear_bwd": _bi_linear_bwd,
    "bi_linear_reverse": _bi_linear_reverse,
    "bi_linear_reverse_fwd": _bi_linear_reverse_fwd,
    "bi_linear_reverse_bwd": _bi_linear_reverse_bwd,
}

_LIB = torch.library.Library("bvae", "IMPL")  # kept alive: the registrations last as long as it does


def register() -> None:
    """Registers every kernel for CUDA tensors, and for CPU tensors under the interpreter."""
    keys = ("CUDA", "CPU") if interpreting() else ("CUDA",)
    for name, kernel in KERNELS.items():
        for key in keys:
            _LIB.impl(f"triton_{name}", kernel, key)


__all__ = ["KERNELS", "conv_backward", "conv_problem", "index_problem", "register", "unsupported_reason"]
