# ruff: noqa: ANN001, ANN201 - @triton.jit kernels take untyped tensors/scalars (annotations mean constexpr to Triton)
"""The two deterministic reductions of the backward pass: the bias gradient db[c] = sum(g * a'(u)) over all but
the channel dimension, and the fixed-order sum of split-K partials (the weight gradient's last step).

Both write per-split fp32 partials and reduce them in a fixed order: no atomics, the same bits every run.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._gemm import gnova_grad_f32
from .configs import pointwise_block

# bias_grad's tile: pixels x channels per loop step, and warps. 32 x 64 x 4 warps stays within 64 registers per
# thread with u in fp32 on sm_80 and sm_90 (64 x 64 needs 96); see python -m bvae_kernels.triton.aot.
BIAS_BLOCK_P, BIAS_BLOCK_C, BIAS_WARPS = 32, 64, 4


@triton.jit
def _bias_grad_kernel(
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
    HAS_U: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """ws[split, c] = sum over this split's pixels of g * a'(u) (of g * alpha without u); g, u: [N, C, H, W] with
    any strides. Each program owns one channel block and one pixel range."""
    pid_c = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = offs_c < C
    start = pid_s * pix_per_split
    end = tl.minimum(start + pix_per_split, P)
    acc = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for p0 in range(0, end - start, BLOCK_P):  # not past P (int32 pixel indices)
        pix = start + p0 + tl.arange(0, BLOCK_P)
        p_mask = pix < end
        n = (pix // HW).to(tl.int64)
        rem = pix % HW
        h = rem // W
        w = rem % W
        mask = p_mask[:, None] & c_mask[None, :]
        g_off = (n * sgn + h * sgh + w * sgw)[:, None] + offs_c[None, :] * sgc
        g = tl.load(g_ptr + g_off, mask=mask, other=0.0).to(tl.float32)
        if HAS_U:
            u_off = (n * sun + h * suh + w * suw)[:, None] + offs_c[None, :] * suc
            u = tl.load(u_ptr + u_off, mask=mask, other=0.0).to(tl.float32)
            acc += tl.sum(g * gnova_grad_f32(u, alpha, beta, gamma), axis=0)
        else:
            acc += tl.sum(g * alpha, axis=0)
    tl.store(ws_ptr + pid_s * C + offs_c, acc, mask=c_mask)


@triton.jit
def _reduce_splits_kernel(
    ws_ptr, scale_ptr, out_ptr, E, SPLITS, D1, D2, D3, so0, so1, so2, so3, HAS_SCALE: tl.constexpr, BLOCK: tl.constexpr
):
    """out[e] = e^s * sum_{s < SPLITS} ws[s, e] in fixed order (fp32), cast and scattered to out's strides.

    e indexes a logical [D0, D1, D2, D3] row-major tensor; out may have any strides (e.g. channels_last dW).
    E and out's offsets fit in int32 (reduce_splits checks); the split offset advances the pointer (64-bit).
    """
    e = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = e < E
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    ptrs = ws_ptr + e
    for _ in range(0, SPLITS):
        acc += tl.load(ptrs, mask=mask, other=0.0)
        ptrs += E
    if HAS_SCALE:
        acc = acc * tl.exp(tl.load(scale_ptr).to(tl.float32))
    i3 = e % D3
    t = e // D3
    i2 = t % D2
    t = t // D2
    i1 = t % D1
    i0 = t // D1
    tl.store(out_ptr + i0 * so0 + i1 * so1 + i2 * so2 + i3 * so3, acc.to(out_ptr.dtype.element_ty), mask=mask)


def as_nchw(t: torch.Tensor) -> torch.Tensor:
    """A 4D view [N, C, H, W] of a 2D [M, C] (linear) or 4D tensor, without copying."""
    return t[:, :, None, None] if t.dim() == 2 else t


def reduce_splits(ws: torch.Tensor, out: torch.Tensor, log_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Sums ws [S, *out.shape] (fp32) over S in fixed order into out (any strides, any float dtype), times e^s."""
    shape = list(out.shape) + [1] * (4 - out.dim())
    strides = list(out.stride()) + [0] * (4 - out.dim())
    numel = out.numel()
    if numel == 0:
        return out
    span = 1 + sum((n - 1) * abs(st) for n, st in zip(shape, strides, strict=True))
    if max(numel, span) >= 2**31:
        raise ValueError(f"reduce_splits: an output of {numel} elements (span {span}) needs int64 offsets")
    block = pointwise_block()
    _reduce_splits_kernel[(triton.cdiv(numel, block),)](
        ws,
        log_scale if log_scale is not None else ws,
        out,
        numel,
        ws.shape[0],
        shape[1],
        shape[2],
        shape[3],
        *strides,
        HAS_SCALE=log_scale is not None,
        BLOCK=block,
    )
    return out


def bias_grad(grad: torch.Tensor, u: torch.Tensor | None, alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """db[c] = sum over batch and space of grad * a'(u) (grad * alpha without u); grad, u: [N, C, H, W] or [M, C]."""
    g4 = as_nchw(grad)
    u4 = as_nchw(u) if u is not None else g4
    n, c, h, w = g4.shape
    pixels = n * h * w
    db = torch.empty(c, dtype=grad.dtype, device=grad.device)
    if pixels == 0 or c == 0:
        return db.zero_()
    block_p, block_c = BIAS_BLOCK_P, min(BIAS_BLOCK_C, triton.next_power_of_2(c))
    splits = max(1, min(64, triton.cdiv(pixels, 4 * block_p)))
    per_split = triton.cdiv(triton.cdiv(pixels, splits), block_p) * block_p
    splits = triton.cdiv(pixels, per_split)
    ws = torch.empty((splits, c), dtype=torch.float32, device=grad.device)
    _bias_grad_kernel[(triton.cdiv(c, block_c), splits)](
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
        HAS_U=u is not None and beta * gamma != 0,
        BLOCK_P=block_p,
        BLOCK_C=block_c,
        num_warps=BIAS_WARPS,
    )
    return reduce_splits(ws, db)
