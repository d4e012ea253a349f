# ruff: noqa: ANN001, ANN201 - @triton.jit kernels take untyped tensors/scalars (annotations mean constexpr to Triton)
"""G-NoVa as Triton code: the jit helpers every kernel's prologue/epilogue calls, the elementwise
forward/backward kernels, and the bias-gradient reduction db[c] = sum(g * a'(u)) over all but channels.

a(u) = alpha * u + beta * sigmoid(gamma * u);  a'(u) = alpha + beta * gamma * s * (1 - s),  s = sigmoid(gamma * u).
All arithmetic is fp32; sigmoid is evaluated as exp(-|x|) so it never overflows, and alpha * u is skipped
when alpha == 0 so that u = +-inf gives +-beta-limited values rather than NaN (as the reference does).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .configs import pointwise_block


# ----------------------------------------------------------------------------------------------------------
# jit helpers (inlined into every kernel)
# ----------------------------------------------------------------------------------------------------------
@triton.jit
def sigmoid_f32(x):
    """Stable logistic: exp(-|x|) never overflows; inf gives 1/0, NaN stays NaN."""
    e = tl.exp(-tl.abs(x))
    r = 1.0 / (1.0 + e)
    return tl.where(x >= 0, r, e * r)


@triton.jit
def gnova_f32(u, alpha, beta, gamma):
    """a(u) in fp32."""
    s = beta * sigmoid_f32(gamma * u)
    return tl.where(alpha != 0.0, alpha * u + s, s)


@triton.jit
def gnova_grad_f32(u, alpha, beta, gamma):
    """a'(u) in fp32."""
    s = sigmoid_f32(gamma * u)
    return alpha + (beta * gamma) * (s * (1.0 - s))


# ----------------------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------------------
@triton.jit
def gnova_fwd_kernel(u_ptr, y_ptr, numel, alpha, beta, gamma, BLOCK: tl.constexpr):
    """y = a(u) over a flat dense buffer."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, gnova_f32(u, alpha, beta, gamma).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def gnova_bwd_kernel(g_ptr, u_ptr, out_ptr, numel, alpha, beta, gamma, BLOCK: tl.constexpr):
    """du = g * a'(u) over flat dense buffers with one layout."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, (g * gnova_grad_f32(u, alpha, beta, gamma)).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def bias_grad_kernel(
    g_ptr,
    u_ptr,
    ws_ptr,
    C,
    HW,
    W,
    P,
    pix_per_split,
    sgn,
    sgc,
    sgh,
    sgw,
    sun,
    suc,
    suh,
    suw,
    alpha,
    beta,
    gamma,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """ws[split, c] = sum over this split's pixels of g * a'(u); g, u: [N, C, H, W] with any strides.

    Each program owns one channel block and one pixel range: a fixed-order partial sum, reduced in a
    fixed order by `reduce_splits_kernel` (deterministic, no atomics).
    """
    pid_c = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = offs_c < C
    start = pid_s * pix_per_split
    end = tl.minimum(start + pix_per_split, P)
    acc = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for p0 in range(0, pix_per_split, BLOCK_P):
        pix = start + p0 + tl.arange(0, BLOCK_P)
        p_mask = pix < end
        n = (pix // HW).to(tl.int64)
        rem = pix % HW
        h = rem // W
        w = rem % W
        mask = p_mask[:, None] & c_mask[None, :]
        g_off = (n * sgn + h * sgh + w * sgw)[:, None] + offs_c[None, :] * sgc
        u_off = (n * sun + h * suh + w * suw)[:, None] + offs_c[None, :] * suc
        g = tl.load(g_ptr + g_off, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(u_ptr + u_off, mask=mask, other=0.0).to(tl.float32)
        acc += tl.sum(g * gnova_grad_f32(u, alpha, beta, gamma), axis=0)
    tl.store(ws_ptr + pid_s * C + offs_c, acc, mask=c_mask)


@triton.jit
def reduce_splits_kernel(ws_ptr, out_ptr, E, SPLITS, D1, D2, D3, so0, so1, so2, so3, BLOCK: tl.constexpr):
    """out[e] = sum_{s < SPLITS} ws[s, e] in fixed order (fp32), cast and scattered to out's strides.

    e indexes a logical [D0, D1, D2, D3] row-major tensor; out may have any strides (e.g. channels_last dW).
    """
    e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = e < E
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in range(0, SPLITS):
        acc += tl.load(ws_ptr + s * E + e, mask=mask, other=0.0)
    i3 = e % D3
    t = e // D3
    i2 = t % D2
    t = t // D2
    i1 = t % D1
    i0 = t // D1
    tl.store(out_ptr + i0 * so0 + i1 * so1 + i2 * so2 + i3 * so3, acc.to(out_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------------------
# launchers
# ----------------------------------------------------------------------------------------------------------
def is_dense(t: torch.Tensor) -> bool:
    """True when t's elements fill one gap-free block of memory in some dim order (then a flat kernel works)."""
    expected = 1
    for stride, size in sorted((st, s) for s, st in zip(t.shape, t.stride(), strict=True) if s != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _dense(t: torch.Tensor) -> torch.Tensor:
    return t if is_dense(t) else t.contiguous()


def gnova_forward(u: torch.Tensor, alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """a(u), same shape and (dense) strides as u."""
    u = _dense(u)
    y = torch.empty_like(u)
    numel = u.numel()
    if numel:
        block = pointwise_block()
        gnova_fwd_kernel[(triton.cdiv(numel, block),)](u, y, numel, alpha, beta, gamma, BLOCK=block)
    return y


def gnova_backward(grad: torch.Tensor, u: torch.Tensor, alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """grad * a'(u), laid out like u."""
    u = _dense(u)
    if grad.stride() != u.stride() or grad.dtype != u.dtype:
        grad = torch.empty_like(u).copy_(grad)
    out = torch.empty_like(u)
    numel = u.numel()
    if numel:
        block = pointwise_block()
        gnova_bwd_kernel[(triton.cdiv(numel, block),)](grad, u, out, numel, alpha, beta, gamma, BLOCK=block)
    return out


def as_nchw(t: torch.Tensor) -> torch.Tensor:
    """A 4D view [N, C, H, W] of a 2D [M, C] (linear) or 4D tensor, without copying."""
    return t[:, :, None, None] if t.dim() == 2 else t


def reduce_splits(ws: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Sums ws [S, *out.shape] (fp32) over S in fixed order into out (any strides, any float dtype)."""
    shape = list(out.shape) + [1] * (4 - out.dim())
    strides = list(out.stride()) + [0] * (4 - out.dim())
    numel = out.numel()
    block = pointwise_block()
    reduce_splits_kernel[(triton.cdiv(numel, block),)](
        ws, out, numel, ws.shape[0], shape[1], shape[2], shape[3], *strides, BLOCK=block
    )
    return out


def bias_grad(grad: torch.Tensor, u: torch.Tensor, alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """db[c] = sum over batch and space of grad * a'(u); grad, u: [N, C, H, W] or [M, C]."""
    g4, u4 = as_nchw(grad), as_nchw(u)
    n, c, h, w = u4.shape
    pixels = n * h * w
    db = torch.empty(c, dtype=u.dtype, device=u.device)
    if pixels == 0:
        return db.zero_()
    block_p, block_c = 64, min(64, triton.next_power_of_2(c))
    splits = max(1, min(64, triton.cdiv(pixels, 4 * block_p)))
    per_split = triton.cdiv(triton.cdiv(pixels, splits), block_p) * block_p
    splits = triton.cdiv(pixels, per_split)
    ws = torch.empty((splits, c), dtype=torch.float32, device=u.device)
    bias_grad_kernel[(triton.cdiv(c, block_c), splits)](
        g4,
        u4,
        ws,
        c,
        h * w,
        w,
        pixels,
        per_split,
        *g4.stride(),
        *u4.stride(),
        alpha,
        beta,
        gamma,
        BLOCK_P=block_p,
        BLOCK_C=block_c,
    )
    return reduce_splits(ws, db)
