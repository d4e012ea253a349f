# ruff: noqa: ANN001, ANN201 - the fakes take the op schemas' arguments (their types are the schemas')
"""The bvae op contract, Python side: the compiled library, shape math, argument checks and the fake kernels.

The schemas, kernels, autograd and autocast of every op live in C++ (csrc/: bvae_ops.cpp declares the ops
`torch.ops.bvae.<name>` and their Triton twins `torch.ops.bvae.triton_<name>`, which share the schema text;
autograd.cpp registers both families' autograd). What torch.compile needs in Python is here: one fake kernel
per op name, registered for both families, with the same argument checks (and messages) as csrc/bvae.h.

This module is the leaf of the package: it imports only torch (and the compiled extension), so every other
module can import it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import torch

C_IMPORT_ERROR: str | None = None
try:  # the compiled ops are optional: `import bvae_kernels` must work anywhere
    from . import _C  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the build
    C_IMPORT_ERROR = f"bvae_kernels._C could not be imported ({exc}); rebuild with `pip install --no-build-isolation .`"

# The public ops (what `bvae_kernels` exports) and, for the bidirectional ones, their autograd halves.
PUBLIC_OPS = ("gnova", "bi_conv2d", "bi_conv2d_reverse", "bi_linear", "bi_linear_reverse")
BI_OPS = PUBLIC_OPS[1:]
ALL_OPS = ("gnova", "gnova_bwd", *(f"{name}{part}" for name in BI_OPS for part in ("", "_fwd", "_bwd")))
FAMILIES = {"compiled": "", "triton": "triton_"}  # op name prefix of each implementation family
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAX_CONV_ARG = 2**31 - 1  # sizes the convolution libraries and the Triton kernels take as 32-bit ints


def compiled_library_loaded() -> bool:
    """True when bvae_kernels._C loaded and declared the bvae ops."""
    return C_IMPORT_ERROR is None and hasattr(torch.ops.bvae, "bi_conv2d")


@functools.cache
def warn_once(message: str) -> None:
    """A RuntimeWarning, once per distinct message (fallbacks say why, and only once)."""
    warnings.warn(message, RuntimeWarning, stacklevel=3)


# ----------------------------------------------------------------------------------------------------------
# shape math
# ----------------------------------------------------------------------------------------------------------
def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose_output_size(
    size: int, kernel: int, stride: int, padding: int, output_padding: int, dilation: int = 1
) -> int:
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + 1 + output_padding


def memory_format_of(t: torch.Tensor) -> torch.memory_format:
    """Outputs follow the input's memory format: channels_last in, channels_last out (csrc: memory_format_of)."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def pair(value: object, name: str) -> list[int]:
    """An int or a pair of ints (bools refused, integer-likes such as numpy ints accepted) as a list of two."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    try:
        return [int(value.__index__())] * 2  # type: ignore[attr-defined]
    except AttributeError:
        pass
    try:
        values = list(value)  # type: ignore[call-overload]
    except TypeError:  # a float, None, ...: name the argument instead of "object is not iterable"
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if len(values) != 2 or any(isinstance(v, bool) or not hasattr(v, "__index__") for v in values):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return [int(v.__index__()) for v in values]


def int_arg(value: object, name: str) -> int:
    """An int (bools refused, integer-likes such as numpy ints accepted)."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"{name} must be an int, got {value!r}")
    return int(value.__index__())


def conv_geometry(act: tuple, dilation: object, groups: object) -> tuple:
    """A conv op's arguments after `padding`: the activations' parameters (3 or 6), then dilation and groups when
    either is not 1 (the schema's defaults, so the common call passes nothing more)."""
    dilation, groups = pair(dilation, "dilation"), int_arg(groups, "groups")
    if dilation == [1, 1] and groups == 1:
        return act
    return (*act, *((1.0, 0.0, 1.0) if len(act) == 3 else ()), dilation, groups)


def autocast_inputs(*tensors: object) -> list:
    """What the ops' Autocast kernels do, for the reference path: floating tensors (float64 excepted) cast to the
    autocast dtype when autocast is on for their device (as F.conv2d does)."""
    first = next((t for t in tensors if isinstance(t, torch.Tensor)), None)
    if first is None or first.device.type not in ("cpu", "cuda") or not torch.is_autocast_enabled(first.device.type):
        return list(tensors)
    dtype = torch.get_autocast_dtype(first.device.type)
    return [
        t.to(dtype) if isinstance(t, torch.Tensor) and t.dtype in (torch.float16, torch.bfloat16, torch.float32) else t
        for t in tensors
    ]


# ----------------------------------------------------------------------------------------------------------
# argument checks: the same conditions and messages as csrc/bvae.h
# ----------------------------------------------------------------------------------------------------------
def _fmt_dtype(dtype: torch.dtype) -> str:
    return str(dtype)


def _tuple(sizes: Sequence[int]) -> str:
    return str(tuple(int(s) for s in sizes))


def _list(sizes: Sequence[int]) -> str:
    return str([int(s) for s in sizes])


def check_tensor(op: str, t: object, name: str, optional: bool = False) -> None:
    if t is None and optional:
        return
    if not isinstance(t, torch.Tensor):
        kind = "a torch.Tensor or None" if optional else "a torch.Tensor"
        raise TypeError(f"{op}: {name} must be {kind}, got {type(t).__name__}")
    if t.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{op}: {name} must be float16, bfloat16, float32 or float64, got {_fmt_dtype(t.dtype)}")


def check_same(op: str, t: torch.Tensor, name: str, ref: torch.Tensor, ref_name: str) -> None:
    check_tensor(op, t, name)
    if t.device != ref.device:
        raise ValueError(f"{op}: {name} is on {t.device} but {ref_name} is on {ref.device}")
    if t.dtype != ref.dtype:
        raise ValueError(
            f"{op}: {name} has dtype {_fmt_dtype(t.dtype)} but {ref_name} has {_fmt_dtype(ref.dtype)}; "
            "cast them to one dtype"
        )


def _check_dim(op: str, t: torch.Tensor, name: str, dim: int, what: str) -> None:
    if t.dim() != dim:
        raise ValueError(f"{op}: {name} must be {dim}D {what}, got shape {_tuple(t.shape)}")


def _check_bias(
    op: str, bias: torch.Tensor | None, ref: torch.Tensor, ref_name: str, channels: int, which: str
) -> None:
    if bias is None:
        return
    check_same(op, bias, "bias", ref, ref_name)
    if bias.dim() != 1:
        raise ValueError(f"{op}: bias must be 1D, got shape {_tuple(bias.shape)}")
    if bias.shape[0] != channels:
        raise ValueError(f"{op}: bias must have shape [{channels}] ({which}), got {_list(bias.shape)}")


def _check_log_scale(op: str, log_scale: torch.Tensor | None, ref: torch.Tensor, ref_name: str) -> None:
    if log_scale is None:
        return
    check_tensor(op, log_scale, "log_scale")
    if log_scale.numel() != 1:
        raise ValueError(f"{op}: log_scale must hold one value, got shape {_tuple(log_scale.shape)}")
    if log_scale.device != ref.device:
        raise ValueError(f"{op}: log_scale is on {log_scale.device} but {ref_name} is on {ref.device}")


def _check_conv_config(
    op: str, stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], groups: int, weight: torch.Tensor
) -> None:
    for name, v in (("stride", stride), ("padding", padding), ("dilation", dilation)):
        if len(v) != 2:
            raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {_list(v)}")
    if min(stride) < 1:
        raise ValueError(f"{op}: stride must be >= 1, got {_list(stride)}")
    if min(padding) < 0:
        raise ValueError(f"{op}: padding must be >= 0, got {_list(padding)}")
    if min(dilation) < 1:
        raise ValueError(f"{op}: dilation must be >= 1, got {_list(dilation)}")
    if groups < 1:
        raise ValueError(f"{op}: groups must be >= 1, got {groups}")
    if max(*stride, *padding, *dilation, groups) > MAX_CONV_ARG:
        raise ValueError(
            f"{op}: stride, padding, dilation and groups must be < 2^31, got stride {_list(stride)}, "
            f"padding {_list(padding)}, dilation {_list(dilation)}, groups {groups}"
        )
    if weight.shape[0] % groups:  # groups splits both channel counts: weight [C_out, C_in / groups, kh, kw]
        raise ValueError(
            f"{op}: weight's C_out={weight.shape[0]} must be divisible by groups={groups} "
            f"(weight shape {_tuple(weight.shape)})"
        )


def _check_conv_out(op: str, out: list) -> None:
    if max(out) > MAX_CONV_ARG:
        raise ValueError(f"{op}: the output would be {_list(out)} pixels: each side must be < 2^31")


def _check_conv_weight(op: str, weight: torch.Tensor, inp: torch.Tensor, inp_name: str) -> None:
    check_same(op, weight, "weight", inp, inp_name)
    _check_dim(op, weight, "weight", 4, "[C_out, C_in, kh, kw]")
    if min(weight.shape) < 1:  # the contract for degenerate shapes: see check_conv_weight in csrc/bvae.h
        raise ValueError(
            f"{op}: weight must have C_out >= 1, C_in >= 1 and a kernel of at least 1x1, got shape "
            f"{_tuple(weight.shape)}"
        )


def check_bi_conv2d(
    x: object,
    weight: object,
    bias: object,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int] = (1, 1),
    groups: int = 1,
) -> list:
    """Forward direction: x [N, C_in, H, W], weight [C_out, C_in / groups, kh, kw], bias [C_out]. Returns [Ho, Wo]."""
    op = "bi_conv2d"
    check_tensor(op, x, "x")
    check_tensor(op, weight, "weight")
    check_tensor(op, bias, "bias", optional=True)
    _check_dim(op, x, "x", 4, "[N, C_in, H, W]")
    _check_conv_weight(op, weight, x, "x")
    _check_conv_config(op, stride, padding, dilation, groups, weight)
    if x.shape[1] != weight.shape[1] * groups:
        raise ValueError(
            f"{op}: x has {x.shape[1]} channels but weight expects C_in={weight.shape[1] * groups} "
            f"(weight shape {_tuple(weight.shape)}, groups={groups})"
        )
    _check_bias(op, bias, x, "x", weight.shape[0], "C_out")
    out = [conv_output_size(x.shape[2 + i], weight.shape[2 + i], stride[i], padding[i], dilation[i]) for i in range(2)]
    if out[0] < 1 or out[1] < 1:
        raise ValueError(
            f"{op}: input {_tuple(x.shape[2:])} is too small for kernel {_tuple(weight.shape[2:])} with "
            f"padding {_list(padding)} and dilation {_list(dilation)} (output would be {_list(out)})"
        )
    _check_conv_out(op, out)
    return out


def check_bi_conv2d_reverse(
    z: object,
    weight: object,
    bias: object,
    log_scale: object,
    stride: Sequence[int],
    padding: Sequence[int],
    output_padding: Sequence[int],
    dilation: Sequence[int] = (1, 1),
    groups: int = 1,
) -> list:
    """Reverse direction: z [N, C_out, H, W] through weight [C_out, C_in / groups, kh, kw], bias [C_in]. Returns
    [Ho, Wo]."""
    op = "bi_conv2d_reverse"
    check_tensor(op, z, "z")
    check_tensor(op, weight, "weight")
    check_tensor(op, bias, "bias", optional=True)
    check_tensor(op, log_scale, "log_scale", optional=True)
    _check_dim(op, z, "z", 4, "[N, C_out, H, W]")
    _check_conv_weight(op, weight, z, "z")
    _check_conv_config(op, stride, padding, dilation, groups, weight)
    if len(output_padding) != 2:
        raise ValueError(f"{op}: output_padding must be an int or a pair of ints, got {_list(output_padding)}")
    if not all(0 <= output_padding[i] < max(stride[i], dilation[i]) for i in range(2)):  # ATen's rule
        raise ValueError(
            f"{op}: output_padding must be >= 0 and smaller than stride or dilation, got {_list(output_padding)} "
            f"with stride {_list(stride)}, dilation {_list(dilation)}"
        )
    if z.shape[1] != weight.shape[0]:
        raise ValueError(
            f"{op}: z has {z.shape[1]} channels but the reverse direction takes weight's C_out={weight.shape[0]} "
            f"(weight shape {_tuple(weight.shape)})"
        )
    _check_bias(op, bias, z, "z", weight.shape[1] * groups, "C_in")
    _check_log_scale(op, log_scale, z, "z")
    out = [
        conv_transpose_output_size(
            z.shape[2 + i], weight.shape[2 + i], stride[i], padding[i], output_padding[i], dilation[i]
        )
        for i in range(2)
    ]
    if out[0] < 1 or out[1] < 1:
        raise ValueError(
            f"{op}: padding {_list(padding)} is too large for input {_tuple(z.shape[2:])} (output {_list(out)})"
        )
    _check_conv_out(op, out)
    return out


def check_bi_linear(
    op: str, inp: object, name: str, weight: object, bias: object, log_scale: object, reverse: bool
) -> None:
    """Dense layers: x [*, in] (forward, weight [out, in]) or z [*, out] (reverse)."""
    check_tensor(op, inp, name)
    check_tensor(op, weight, "weight")
    check_tensor(op, bias, "bias", optional=True)
    check_tensor(op, log_scale, "log_scale", optional=True)
    if inp.dim() < 1:
        raise ValueError(f"{op}: {name} must be 1D or more [*, features], got shape {_tuple(inp.shape)}")
    check_same(op, weight, "weight", inp, name)
    _check_dim(op, weight, "weight", 2, "[out_features, in_features]")
    if min(weight.shape) < 1:
        raise ValueError(
            f"{op}: weight must have out_features >= 1 and in_features >= 1, got shape {_tuple(weight.shape)}"
        )
    k_dim = 0 if reverse else 1
    if inp.shape[-1] != weight.shape[k_dim]:
        raise ValueError(
            f"{op}: {name} has {inp.shape[-1]} features but weight {_tuple(weight.shape)} expects {weight.shape[k_dim]}"
        )
    _check_bias(op, bias, inp, name, weight.shape[1 - k_dim], "in_features" if reverse else "out_features")
    _check_log_scale(op, log_scale, inp, name)


def check_gnova(u: object) -> None:
    check_tensor("gnova", u, "u")


def _check_grad(
    op: str, grad: torch.Tensor, u: torch.Tensor | None, inp: torch.Tensor, name: str, out: Sequence, beta: float
) -> None:
    if u is None and beta != 0:
        raise ValueError(
            f"{op}: u (the pre-activation) is required unless the activation's slope is constant (beta == 0)"
        )
    check_same(op, grad, "grad", inp, name)
    if list(grad.shape) != list(out):
        raise ValueError(f"{op}: grad must have the output's shape {_list(out)}, got {_list(grad.shape)}")
    if u is not None:
        check_same(op, u, "u", inp, name)
        if list(u.shape) != list(out):
            raise ValueError(f"{op}: u must have the output's shape {_list(out)}, got {_list(u.shape)}")


# ----------------------------------------------------------------------------------------------------------
# fake kernels: shapes, dtypes and strides exactly as the real kernels produce them
# ----------------------------------------------------------------------------------------------------------
def _dense_like(t: torch.Tensor) -> torch.Tensor:
    """csrc's dense_of: a non-overlapping, dense tensor keeps its strides, anything else becomes contiguous."""
    dims = sorted((d for d in range(t.dim()) if t.shape[d] != 1), key=lambda d: t.stride(d))
    expected, dense = 1, True
    for d in dims:
        if t.stride(d) != expected:
            dense = False
            break
        expected *= t.shape[d]
    if dense:
        return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
    return t.new_empty(t.shape)


def _conv_out(inp: torch.Tensor, c_out: int, hw: Sequence) -> torch.Tensor:
    shape = (inp.shape[0], c_out, hw[0], hw[1])
    return torch.empty(shape, dtype=inp.dtype, device=inp.device, memory_format=memory_format_of(inp))


def _linear_out(inp: torch.Tensor, features: int) -> torch.Tensor:
    return inp.new_empty((*inp.shape[:-1], features))


def fake_gnova(u, alpha, beta, gamma):
    check_gnova(u)
    return _dense_like(u)


def check_gnova_bwd(grad: object, u: object, beta: float) -> None:
    """gnova_bwd: u a tensor, grad one of its device, dtype and shape."""
    check_gnova(u)
    check_tensor("gnova_bwd", grad, "grad")
    _check_grad("gnova_bwd", grad, u, u, "u", u.shape, beta)


def fake_gnova_bwd(grad, u, alpha, beta, gamma):
    check_gnova_bwd(grad, u, beta)
    return _dense_like(u)


def fake_bi_conv2d(
    x, weight, bias, stride, padding, alpha, beta, gamma, in_alpha=1.0, in_beta=0.0, in_gamma=1.0, dilation=(1, 1),
    groups=1,
):  # fmt: skip
    return _conv_out(x, weight.shape[0], check_bi_conv2d(x, weight, bias, stride, padding, dilation, groups))


def fake_bi_conv2d_fwd(
    x, weight, bias, stride, padding, alpha, beta, gamma, in_alpha=1.0, in_beta=0.0, in_gamma=1.0, dilation=(1, 1),
    groups=1,
):  # fmt: skip
    y = fake_bi_conv2d(x, weight, bias, stride, padding, alpha, beta, gamma, dilation=dilation, groups=groups)
    return y, torch.empty_like(y)


def _conv_grads(inp, weight, log_scale, channels, mask):
    """dinput and dweight in their tensors' memory formats, [C] bias grad, scale grad like the scale."""
    d_inp = torch.empty(inp.shape, dtype=inp.dtype, device=inp.device, memory_format=memory_format_of(inp))
    d_w = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device, memory_format=memory_format_of(weight))
    d_b = inp.new_empty((channels,))
    d_s = torch.empty_like(log_scale) if log_scale is not None and mask[3] else None
    return d_inp if mask[0] else None, d_w if mask[1] else None, d_b if mask[2] else None, d_s


def fake_bi_conv2d_bwd(
    grad, x, weight, u, stride, padding, alpha, beta, gamma, output_mask, in_alpha=1.0, in_beta=0.0, in_gamma=1.0,
    dilation=(1, 1), groups=1,
):  # fmt: skip
    out = check_bi_conv2d(x, weight, None, stride, padding, dilation, groups)
    _check_grad("bi_conv2d_bwd", grad, u, x, "x", [x.shape[0], weight.shape[0], *out], beta)
    return _conv_grads(x, weight, None, weight.shape[0], [*output_mask, False])[:3]


def fake_bi_conv2d_reverse(
    z,
    weight,
    bias,
    log_scale,
    stride,
    padding,
    output_padding,
    alpha,
    beta,
    gamma,
    in_alpha=1.0,
    in_beta=0.0,
    in_gamma=1.0,
    dilation=(1, 1),
    groups=1,
):
    out = check_bi_conv2d_reverse(z, weight, bias, log_scale, stride, padding, output_padding, dilation, groups)
    return _conv_out(z, weight.shape[1] * groups, out)


def fake_bi_conv2d_reverse_fwd(
    z,
    weight,
    bias,
    log_scale,
    stride,
    padding,
    output_padding,
    alpha,
    beta,
    gamma,
    in_alpha=1.0,
    in_beta=0.0,
    in_gamma=1.0,
    dilation=(1, 1),
    groups=1,
):
    args = (z, weight, bias, log_scale, stride, padding, output_padding, alpha, beta, gamma)
    y = fake_bi_conv2d_reverse(*args, dilation=dilation, groups=groups)
    return y, torch.empty_like(y)


def fake_bi_conv2d_reverse_bwd(
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
    out = check_bi_conv2d_reverse(z, weight, None, log_scale, stride, padding, output_padding, dilation, groups)
    _check_grad("bi_conv2d_reverse_bwd", grad, u, z, "z", [z.shape[0], weight.shape[1] * groups, *out], beta)
    return _conv_grads(z, weight, log_scale, weight.shape[1] * groups, output_mask)


def fake_bi_linear(x, weight, bias, alpha, beta, gamma, in_alpha=1.0, in_beta=0.0, in_gamma=1.0):
    check_bi_linear("bi_linear", x, "x", weight, bias, None, reverse=False)
    return _linear_out(x, weight.shape[0])


def fake_bi_linear_fwd(x, weight, bias, alpha, beta, gamma, in_alpha=1.0, in_beta=0.0, in_gamma=1.0):
    y = fake_bi_linear(x, weight, bias, alpha, beta, gamma)
    return y, torch.empty_like(y)


def _linear_grads(inp, weight, log_scale, features, mask):
    """csrc's dense backward: fresh contiguous mm results, whatever the inputs' strides."""
    d_inp = inp.new_empty(inp.shape) if mask[0] else None
    d_w = weight.new_empty(weight.shape) if mask[1] else None
    d_b = inp.new_empty((features,)) if mask[2] else None
    d_s = torch.empty_like(log_scale) if log_scale is not None and mask[3] else None
    return d_inp, d_w, d_b, d_s


def fake_bi_linear_bwd(grad, x, weight, u, alpha, beta, gamma, output_mask, in_alpha=1.0, in_beta=0.0, in_gamma=1.0):
    check_bi_linear("bi_linear_bwd", x, "x", weight, None, None, reverse=False)
    _check_grad("bi_linear_bwd", grad, u, x, "x", [*x.shape[:-1], weight.shape[0]], beta)
    return _linear_grads(x, weight, None, weight.shape[0], [*output_mask, False])[:3]


def fake_bi_linear_reverse(z, weight, bias, log_scale, alpha, beta, gamma, in_alpha=1.0, in_beta=0.0, in_gamma=1.0):
    check_bi_linear("bi_linear_reverse", z, "z", weight, bias, log_scale, reverse=True)
    return _linear_out(z, weight.shape[1])


def fake_bi_linear_reverse_fwd(z, weight, bias, log_scale, alpha, beta, gamma, in_alpha=1.0, in_beta=0.0, in_gamma=1.0):
    y = fake_bi_linear_reverse(z, weight, bias, log_scale, alpha, beta, gamma)
    return y, torch.empty_like(y)


def fake_bi_linear_reverse_bwd(
    grad, z, weight, u, log_scale, alpha, beta, gamma, output_mask, in_alpha=1.0, in_beta=0.0, in_gamma=1.0
):
    check_bi_linear("bi_linear_reverse_bwd", z, "z", weight, None, log_scale, reverse=True)
    _check_grad("bi_linear_reverse_bwd", grad, u, z, "z", [*z.shape[:-1], weight.shape[1]], beta)
    return _linear_grads(z, weight, log_scale, weight.shape[1], output_mask)


FAKES = {name: globals()[f"fake_{name}"] for name in ALL_OPS}


def _register_fakes() -> None:
    for prefix in FAMILIES.values():
        for name, fake in FAKES.items():
            torch.library.register_fake(f"bvae::{prefix}{name}")(fake)


if compiled_library_loaded():
    _register_fakes()
