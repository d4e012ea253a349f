"""The bvae custom ops: fake kernels, autograd, input checks and backend dispatch.

The schemas and the CPU/CUDA kernels live in csrc/ (torch.ops.bvae.*). Every forward op returns
(y, u): the activation output and the pre-activation u, which is the one tensor a layer saves for its
backward besides what the contraction itself needs. `register_bi_autograd` is shared with the Triton
backend, whose ops have the same signatures.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch

from . import reference
from .activation import (
    ActivationLike,
    GNoVa,
    gnova_grad_reference,
    gnova_second_grad_reference,
    resolve_activation,
)
from .backends import compiled_ops_available, resolve_backend

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
IntPair = int | Sequence[int]


# ----------------------------------------------------------------------------------------------------------
# shapes and checks
# ----------------------------------------------------------------------------------------------------------
def _pair(value: IntPair, name: str) -> list[int]:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return [value, value]
    try:
        values = list(value)
    except TypeError:  # a float, None, ...: name the argument instead of "object is not iterable"
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return values


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def conv_transpose_output_size(size: int, kernel: int, stride: int, padding: int, output_padding: int) -> int:
    return (size - 1) * stride - 2 * padding + kernel + output_padding


def channels_last_output(t: torch.Tensor) -> bool:
    """Outputs follow the input's memory format: channels_last in, channels_last out (as csrc does)."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _check_tensor(t: object, name: str, op: str, ndims: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{op}: {name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    if t.dim() not in ndims:
        want = " or ".join(f"{n}D" for n in ndims)
        raise ValueError(f"{op}: {name} must be {want}, got shape {tuple(t.shape)}")
    return t


def _check_same(op: str, named: dict[str, torch.Tensor | None]) -> None:
    tensors = {k: v for k, v in named.items() if v is not None}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor or None, got {type(t).__name__}")
    first_name, first = next(iter(tensors.items()))
    for name, t in tensors.items():
        if t.device != first.device:
            raise ValueError(f"{op}: {name} is on {t.device} but {first_name} is on {first.device}")
        if t.dtype != first.dtype:
            raise ValueError(
                f"{op}: {name} has dtype {t.dtype} but {first_name} has {first.dtype}; cast them to one dtype"
            )


def _check_bias(op: str, bias: torch.Tensor | None, channels: int, which: str) -> None:
    if bias is None:
        return
    _check_tensor(bias, "bias", op, (1,))
    if bias.shape[0] != channels:
        raise ValueError(f"{op}: bias must have shape [{channels}] ({which}), got {tuple(bias.shape)}")


def _check_conv_config(op: str, stride: list[int], padding: list[int]) -> None:
    if min(stride) < 1:
        raise ValueError(f"{op}: stride must be >= 1, got {stride}")
    if min(padding) < 0:
        raise ValueError(f"{op}: padding must be >= 0, got {padding}")


def _autocast(*tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    """Casts floating inputs to the autocast dtype when autocast is on for their device (as F.conv2d does)."""
    first = next(t for t in tensors if t is not None)
    if not all(t is None or isinstance(t, torch.Tensor) for t in tensors):
        return list(tensors)  # _check_same reports the non-tensor
    device_type = first.device.type
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return list(tensors)
    dtype = torch.get_autocast_dtype(device_type)
    return [t.to(dtype) if t is not None and t.dtype != torch.float64 else t for t in tensors]


def _unbatched(t: torch.Tensor) -> tuple[torch.Tensor, bool]:
    return (t.unsqueeze(0), True) if t.dim() == 3 else (t, False)


# ----------------------------------------------------------------------------------------------------------
# autograd, shared by every backend whose forward op returns (y, u)
# ----------------------------------------------------------------------------------------------------------
def register_bi_autograd(op_name: str, backward_op: Callable, reference_fn: Callable) -> None:
    """Registers autograd for a forward op `(inp, weight, bias, *config) -> (y, u)`.

    First-order gradients come from `backward_op(grad, inp, weight, u, *config, output_mask)`; when a
    graph of the gradient is asked for (create_graph=True), the gradient is recomputed through
    `reference_fn(inp, weight, bias, *config)` so that every higher order is exact.
    """

    def setup_context(ctx, inputs, output):  # noqa: ANN001, ANN202
        inp, weight, bias = inputs[:3]
        ctx.config = tuple(inputs[3:])
        ctx.has_bias = bias is not None
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)  # u's gradient is always None: never allocate zeros for it
        u = output[1]
        # With beta == 0 (identity-like), a'(u) = alpha whatever u is: keep only u's layout, not its memory.
        ctx.u_layout = None if ctx.config[-2] != 0 else (u.shape, u.stride(), u.dtype, u.device)
        ctx.save_for_backward(inp, weight, bias, u if ctx.u_layout is None else None)

    def backward(ctx, grad_y, _grad_u):  # noqa: ANN001, ANN202
        inp, weight, bias, u = ctx.saved_tensors
        if grad_y is None:
            return (None,) * (3 + len(ctx.config))
        need = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2] and ctx.has_bias]
        nones = [None] * len(ctx.config)
        if torch.is_grad_enabled():
            targets = [t for t, n in zip((inp, weight, bias), need, strict=True) if n]
            y_ref = reference_fn(inp, weight, bias, *ctx.config)
            grads = iter(torch.autograd.grad(y_ref, targets, grad_y, create_graph=True))
            return (*[next(grads) if n else None for n in need], *nones)
        if u is None:  # identity-like activation: any u gives a'(u) = alpha; zeros keep the kernels exact
            shape, stride, dtype, device = ctx.u_layout
            u = torch.empty_strided(shape, stride, dtype=dtype, device=device).zero_()
        d_inp, d_weight, d_bias = backward_op(grad_y, inp, weight, u, *ctx.config, need)
        return (d_inp if need[0] else None, d_weight if need[1] else None, d_bias if need[2] else None, *nones)

    torch.library.register_autograd(op_name, backward, setup_context=setup_context)


def _raw_gnova(alpha: float, beta: float, gamma: float) -> GNoVa:
    """A GNoVa without validation (the op layer already validated it; sigmoid/identity have zeros)."""
    act = object.__new__(GNoVa)
    object.__setattr__(act, "alpha", float(alpha))
    object.__setattr__(act, "beta", float(beta))
    object.__setattr__(act, "gamma", float(gamma))
    return act


def reference_op(name: str) -> Callable:
    """The eager reference with the op's signature `(inp, weight, bias, *config)`, returning y."""
    if name == "bi_conv2d":
        return lambda x, w, b, s, p, a, be, g: reference.bi_conv2d(x, w, b, s, p, _raw_gnova(a, be, g))
    if name == "bi_conv2d_reverse":
        return lambda z, w, b, s, p, op, a, be, g: reference.bi_conv2d_reverse(z, w, b, s, p, op, _raw_gnova(a, be, g))
    if name == "bi_linear":
        return lambda x, w, b, a, be, g: reference.bi_linear(x, w, b, _raw_gnova(a, be, g))
    if name == "bi_linear_reverse":
        return lambda z, w, b, a, be, g: reference.bi_linear_reverse(z, w, b, _raw_gnova(a, be, g))
    raise ValueError(f"unknown op {name!r}")


BI_OPS = ("bi_conv2d", "bi_conv2d_reverse", "bi_linear", "bi_linear_reverse")


# ----------------------------------------------------------------------------------------------------------
# fake kernels (shape/dtype/layout propagation for torch.compile and opcheck)
# ----------------------------------------------------------------------------------------------------------
def fake_bi_conv2d(x, weight, bias, stride, padding, alpha, beta, gamma):  # noqa: ANN001, ANN201
    n, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    shape = (n, c_out, conv_output_size(h, kh, stride[0], padding[0]), conv_output_size(w, kw, stride[1], padding[1]))
    fmt = torch.channels_last if channels_last_output(x) else torch.contiguous_format
    y = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)
    return y, torch.empty_like(y)


def fake_bi_conv2d_reverse(z, weight, bias, stride, padding, output_padding, alpha, beta, gamma):  # noqa: ANN001, ANN201
    n, _, h, w = z.shape
    _, c_in, kh, kw = weight.shape
    shape = (
        n,
        c_in,
        conv_transpose_output_size(h, kh, stride[0], padding[0], output_padding[0]),
        conv_transpose_output_size(w, kw, stride[1], padding[1], output_padding[1]),
    )
    fmt = torch.channels_last if channels_last_output(z) else torch.contiguous_format
    y = torch.empty(shape, dtype=z.dtype, device=z.device, memory_format=fmt)
    return y, torch.empty_like(y)


def fake_bi_linear(x, weight, bias, alpha, beta, gamma):  # noqa: ANN001, ANN201
    y = x.new_empty((*x.shape[:-1], weight.shape[0]))
    return y, torch.empty_like(y)


def fake_bi_linear_reverse(z, weight, bias, alpha, beta, gamma):  # noqa: ANN001, ANN201
    y = z.new_empty((*z.shape[:-1], weight.shape[1]))
    return y, torch.empty_like(y)


def _kernel_layout(t: torch.Tensor) -> torch.Tensor:
    """csrc's to_kernel_layout: contiguous NCHW / NHWC tensors stay as they are, anything else is made contiguous."""
    if t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)):
        return t
    return t.contiguous()


def _fake_conv_backward(grad, inp, weight, u, stride, padding, output_padding, transposed, mask):  # noqa: ANN001, ANN202
    """Mirrors csrc's conv_backward_impl: du in u's kernel layout, then ATen's convolution_backward.

    ATen picks the gradients' memory format (channels_last when the input or the weight is), so the fake
    asks ATen's own meta kernel instead of guessing with empty_like.
    """
    d_inp = d_weight = None
    if mask[0] or mask[1]:
        du = _kernel_layout(u)
        d_inp, d_weight, _ = torch.ops.aten.convolution_backward(
            du, inp, weight, None, stride, padding, [1, 1], transposed, output_padding, 1, [mask[0], mask[1], False]
        )
    d_bias = u.new_empty((u.shape[1],)) if mask[2] else None
    return d_inp, d_weight, d_bias


def fake_bi_conv2d_backward(grad, x, weight, u, stride, padding, alpha, beta, gamma, mask):  # noqa: ANN001, ANN201
    return _fake_conv_backward(grad, x, weight, u, stride, padding, [0, 0], False, mask)


def fake_bi_conv2d_reverse_backward(grad, z, weight, u, stride, padding, output_padding, alpha, beta, gamma, mask):  # noqa: ANN001, ANN201
    return _fake_conv_backward(grad, z, weight, u, stride, padding, output_padding, True, mask)


def fake_bi_linear_backward(grad, inp, weight, u, alpha, beta, gamma, mask):  # noqa: ANN001, ANN201
    """csrc's dense backward returns fresh contiguous mm results, whatever the inputs' strides."""
    d_inp = inp.new_empty(inp.shape) if mask[0] else None
    d_weight = weight.new_empty(weight.shape) if mask[1] else None
    d_bias = u.new_empty((u.shape[-1],)) if mask[2] else None
    return d_inp, d_weight, d_bias


def _fake_like_dense(u: torch.Tensor) -> torch.Tensor:
    """csrc's gnova keeps a non-overlapping, dense tensor's strides and makes anything else contiguous."""
    if _non_overlapping_and_dense(u):
        return torch.empty_strided(u.shape, u.stride(), dtype=u.dtype, device=u.device)
    return u.new_empty(u.shape)


def _non_overlapping_and_dense(t: torch.Tensor) -> bool:
    """ATen's is_non_overlapping_and_dense (not exposed as a Tensor method)."""
    dims = sorted((d for d in range(t.dim()) if t.shape[d] != 1), key=lambda d: t.stride(d))
    expected = 1
    for d in dims:
        if t.stride(d) != expected:
            return False
        expected *= t.shape[d]
    return True


def fake_bi_backward(grad, inp, weight, u, *rest):  # noqa: ANN001, ANN201
    """A generic backward fake (gradients shaped like the inputs); kept for backends that reuse it."""
    mask = rest[-1]
    d_inp = torch.empty_like(inp) if mask[0] else None
    d_weight = torch.empty_like(weight) if mask[1] else None
    d_bias = u.new_empty((u.shape[1] if u.dim() == 4 else u.shape[-1],)) if mask[2] else None
    return d_inp, d_weight, d_bias


FAKE_BACKWARDS = {
    "bi_conv2d": fake_bi_conv2d_backward,
    "bi_conv2d_reverse": fake_bi_conv2d_reverse_backward,
    "bi_linear": fake_bi_linear_backward,
    "bi_linear_reverse": fake_bi_linear_backward,
}


FAKES = {
    "bi_conv2d": fake_bi_conv2d,
    "bi_conv2d_reverse": fake_bi_conv2d_reverse,
    "bi_linear": fake_bi_linear,
    "bi_linear_reverse": fake_bi_linear_reverse,
}


def _register_compiled_ops() -> None:
    for name in BI_OPS:
        torch.library.register_fake(f"bvae::{name}")(FAKES[name])
        torch.library.register_fake(f"bvae::{name}_backward")(FAKE_BACKWARDS[name])
        register_bi_autograd(f"bvae::{name}", getattr(torch.ops.bvae, f"{name}_backward"), reference_op(name))

    @torch.library.register_fake("bvae::gnova")
    def _fake_gnova(u, alpha, beta, gamma):  # noqa: ANN001, ANN202
        return _fake_like_dense(u)

    @torch.library.register_fake("bvae::gnova_backward")
    def _fake_gnova_backward(grad, u, alpha, beta, gamma):  # noqa: ANN001, ANN202
        return _fake_like_dense(u)

    def _gnova_setup(ctx, inputs, output):  # noqa: ANN001, ANN202
        ctx.params = inputs[1:]
        ctx.save_for_backward(inputs[0])

    def _gnova_backward(ctx, grad):  # noqa: ANN001, ANN202
        (u,) = ctx.saved_tensors
        return torch.ops.bvae.gnova_backward(grad, u, *ctx.params), None, None, None

    def _gnova_backward_setup(ctx, inputs, output):  # noqa: ANN001, ANN202
        ctx.params = inputs[2:]
        ctx.save_for_backward(inputs[0], inputs[1])

    def _gnova_backward_backward(ctx, grad_grad):  # noqa: ANN001, ANN202
        grad, u = ctx.saved_tensors
        d_grad = grad_grad * gnova_grad_reference(u, *ctx.params) if ctx.needs_input_grad[0] else None
        d_u = grad_grad * grad * gnova_second_grad_reference(u, *ctx.params) if ctx.needs_input_grad[1] else None
        return d_grad, d_u, None, None, None

    torch.library.register_autograd("bvae::gnova", _gnova_backward, setup_context=_gnova_setup)
    torch.library.register_autograd(
        "bvae::gnova_backward", _gnova_backward_backward, setup_context=_gnova_backward_setup
    )


if compiled_ops_available():
    _register_compiled_ops()


def _triton_call(name: str, args: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    from . import triton as triton_backend

    return triton_backend.OPS[name](*args)


def _triton_unsupported(name: str, args: tuple) -> str | None:
    """Why the Triton kernels cannot serve this case (None if they can, or if Triton is absent)."""
    try:
        from . import triton as triton_backend
    except Exception:  # noqa: BLE001 - availability is reported by backends.resolve_backend
        return None
    check = getattr(triton_backend, "unsupported_reason", None)
    return check(name, args) if check is not None else None


def _run_bi(name: str, args: tuple, backend: str | None, device: torch.device) -> torch.Tensor:
    """Dispatches one bidirectional op `(inp, weight, bias, *config)` to the chosen backend; returns y."""
    wants_triton = device.type == "cuda" or backend == "triton" or os.environ.get("BVAE_BACKEND") == "triton"
    chosen = resolve_backend(backend, device, _triton_unsupported(name, args) if wants_triton else None)
    if chosen == "torch":
        return reference_op(name)(*args)
    if chosen == "triton":
        return _triton_call(name, args)[0]
    return getattr(torch.ops.bvae, name)(*args)[0]


# ----------------------------------------------------------------------------------------------------------
# the public ops
# ----------------------------------------------------------------------------------------------------------
def gnova(
    u: torch.Tensor,
    alpha: float = 0.1,
    beta: float = 1.0,
    gamma: float = 1.0,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """G-NoVa, a(u) = alpha * u + beta * sigmoid(gamma * u), elementwise, any shape and layout."""
    act = GNoVa(alpha, beta, gamma)
    _check_tensor(u, "u", "bvae_kernels.gnova", tuple(range(0, 9)))
    (u,) = _autocast(u)
    chosen = resolve_backend(backend, u.device)
    if chosen == "torch":
        return reference.gnova(u, *act.params)
    if chosen == "triton":
        from . import triton as triton_backend

        return triton_backend.OPS["gnova"](u, *act.params)
    return torch.ops.bvae.gnova(u, *act.params)


def bi_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    stride: IntPair = 1,
    padding: IntPair = 0,
    activation: ActivationLike = "gnova",
    backend: str | None = None,
) -> torch.Tensor:
    """Forward direction of a bidirectional conv: a(conv2d(x, W, stride, padding) + b_f).

    x: [N, C_in, H, W] (or unbatched [C_in, H, W]); weight: [C_out, C_in, kh, kw]; bias: [C_out].
    """
    op = "bvae_kernels.bi_conv2d"
    act = resolve_activation(activation)
    _check_tensor(x, "x", op, (3, 4))
    _check_tensor(weight, "weight", op, (4,))
    x, weight, bias = _autocast(x, weight, bias)
    _check_same(op, {"x": x, "weight": weight, "bias": bias})
    stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
    _check_conv_config(op, stride, padding)
    x, unbatched = _unbatched(x)
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"{op}: x has {x.shape[1]} channels but weight expects C_in={weight.shape[1]} "
            f"(weight shape {tuple(weight.shape)})"
        )
    _check_bias(op, bias, weight.shape[0], "C_out")
    out_hw = [conv_output_size(x.shape[2 + i], weight.shape[2 + i], stride[i], padding[i]) for i in range(2)]
    if min(out_hw) < 1:
        raise ValueError(
            f"{op}: input {tuple(x.shape[2:])} is too small for kernel {tuple(weight.shape[2:])} with "
            f"padding {padding} (output would be {out_hw})"
        )
    y = _run_bi("bi_conv2d", (x, weight, bias, stride, padding, *act.params), backend, x.device)
    return y.squeeze(0) if unbatched else y


def bi_conv2d_reverse(
    z: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    stride: IntPair = 1,
    padding: IntPair = 0,
    output_padding: IntPair = 0,
    activation: ActivationLike = "gnova",
    backend: str | None = None,
) -> torch.Tensor:
    """Reverse direction through the same weight: a(conv_transpose2d(z, W, stride, padding, output_padding) + b_r).

    z: [N, C_out, H, W] (or unbatched); weight: [C_out, C_in, kh, kw] (the forward layer's); bias: [C_in].
    """
    op = "bvae_kernels.bi_conv2d_reverse"
    act = resolve_activation(activation)
    _check_tensor(z, "z", op, (3, 4))
    _check_tensor(weight, "weight", op, (4,))
    z, weight, bias = _autocast(z, weight, bias)
    _check_same(op, {"z": z, "weight": weight, "bias": bias})
    stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
    output_padding = _pair(output_padding, "output_padding")
    _check_conv_config(op, stride, padding)
    for i in range(2):
        if not 0 <= output_padding[i] < stride[i]:
            raise ValueError(
                f"{op}: output_padding must be >= 0 and < stride, got {output_padding} with stride {stride}"
            )
    z, unbatched = _unbatched(z)
    if z.shape[1] != weight.shape[0]:
        raise ValueError(
            f"{op}: z has {z.shape[1]} channels but the reverse direction takes weight's C_out={weight.shape[0]} "
            f"(weight shape {tuple(weight.shape)})"
        )
    _check_bias(op, bias, weight.shape[1], "C_in")
    out_hw = [
        conv_transpose_output_size(z.shape[2 + i], weight.shape[2 + i], stride[i], padding[i], output_padding[i])
        for i in range(2)
    ]
    if min(out_hw) < 1:
        raise ValueError(f"{op}: padding {padding} is too large for input {tuple(z.shape[2:])} (output {out_hw})")
    y = _run_bi("bi_conv2d_reverse", (z, weight, bias, stride, padding, output_padding, *act.params), backend, z.device)
    return y.squeeze(0) if unbatched else y


def _linear_checks(
    op: str, inp: torch.Tensor, name: str, weight: torch.Tensor, bias: torch.Tensor | None, reverse: bool
) -> list[torch.Tensor | None]:
    """Checks a dense op's arguments; returns them cast for autocast."""
    _check_tensor(inp, name, op, tuple(range(1, 9)))
    _check_tensor(weight, "weight", op, (2,))
    inp, weight, bias = _autocast(inp, weight, bias)
    _check_same(op, {name: inp, "weight": weight, "bias": bias})
    k_dim, out_dim = (0, 1) if reverse else (1, 0)
    if inp.shape[-1] != weight.shape[k_dim]:
        raise ValueError(
            f"{op}: {name} has {inp.shape[-1]} features but weight {tuple(weight.shape)} expects {weight.shape[k_dim]}"
        )
    _check_bias(op, bias, weight.shape[out_dim], "in_features" if reverse else "out_features")
    return [inp, weight, bias]


def bi_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    activation: ActivationLike = "gnova",
    backend: str | None = None,
) -> torch.Tensor:
    """Forward direction of a bidirectional dense layer: a(x W^T + b_f); x [*, in], weight [out, in]."""
    op = "bvae_kernels.bi_linear"
    act = resolve_activation(activation)
    x, weight, bias = _linear_checks(op, x, "x", weight, bias, reverse=False)
    return _run_bi("bi_linear", (x, weight, bias, *act.params), backend, x.device)


def bi_linear_reverse(
    z: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    activation: ActivationLike = "gnova",
    backend: str | None = None,
) -> torch.Tensor:
    """Reverse direction through the same weight: a(z W + b_r); z [*, out], weight [out, in]."""
    op = "bvae_kernels.bi_linear_reverse"
    act = resolve_activation(activation)
    z, weight, bias = _linear_checks(op, z, "z", weight, bias, reverse=True)
    return _run_bi("bi_linear_reverse", (z, weight, bias, *act.params), backend, z.device)
