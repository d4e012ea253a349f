# ruff: noqa: ANN001, ANN201 - @triton.jit kernels take untyped tensors/scalars (annotations mean constexpr to Triton)
"""Forward-direction convolution as an implicit GEMM (also the dgrad of the reverse direction).

    out[n, co, oh, ow] = epilogue( sum_{i, j, ci} prologue(x)[n, ci, oh*S - P + i, ow*S - P + j] * W[co, ci, i, j] )

GEMM view: M = N*Ho*Wo output pixels, N = C_out, K = kh*kw*C_in ordered (i, j, ci) with ci innermost. The
taps are unrolled with tl.static_range and `oh*S - P` is hoisted out of the K loop. Tensors are read
through their strides: activations are converted to channels_last (NHWC) once by the launcher so the ci
rows are contiguous, and the weight is read in place in its nn.Conv2d [C_out, C_in, kh, kw] shape (any
memory format; channels_last weight makes the B tile rows contiguous).

Prologue (on the A operand): PROLOGUE=1 applies a() on load (a fused chain reads the previous layer's
pre-activation), PROLOGUE=2 multiplies the incoming gradient by a'(u) recomputed from u (dgrad of the
reverse direction: du is never materialized). Epilogue: + bias, store u (pre-activation), a(u), cast.

Offsets: int64 only for the per-sample base (n * stride_n); offsets inside one sample, pixel and channel
indices are int32 (ops.unsupported_reason rejects a sample or N*Ho*Wo of 2**31 or more). Full int64 tiles
cost ~4-6 KB of register spills per thread on sm_90 (ptxas -v), int32 tiles none.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .configs import PRUNE, gemm_configs
from .pointwise import gnova_f32, gnova_grad_f32


@triton.jit
def load_operand(ptr, aux_ptr, off, mask, p_alpha, p_beta, p_gamma, PROLOGUE: tl.constexpr):
    """Loads a tile and applies the prologue; masked (padding) entries are exactly 0 after it."""
    a = tl.load(ptr + off, mask=mask, other=0.0)
    if PROLOGUE == 1:
        a = tl.where(mask, gnova_f32(a.to(tl.float32), p_alpha, p_beta, p_gamma), 0.0).to(ptr.dtype.element_ty)
    elif PROLOGUE == 2:
        aux = tl.load(aux_ptr + off, mask=mask, other=0.0).to(tl.float32)
        a = (a.to(tl.float32) * gnova_grad_f32(aux, p_alpha, p_beta, p_gamma)).to(ptr.dtype.element_ty)
    return a


@triton.jit
def mma(a, b, acc, ALLOW_TF32: tl.constexpr):
    """acc += a @ b with fp32 accumulation; fp32 operands use tf32 only when allowed."""
    if ALLOW_TF32:
        acc = tl.dot(a, b, acc, input_precision="tf32")
    else:
        acc = tl.dot(a, b, acc, input_precision="ieee")
    return acc


@triton.jit
def gemm_epilogue(
    acc,
    b_ptr,
    y_ptr,
    u_ptr,
    out_row,
    offs_n,
    m_mask,
    n_mask,
    syc,
    alpha,
    beta,
    gamma,
    HAS_BIAS: tl.constexpr,
    APPLY_ACT: tl.constexpr,
    STORE_U: tl.constexpr,
):
    """+ bias, store u, y = a(u) (or u), cast; out_row: per-pixel offsets, channel stride syc."""
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    off = out_row[:, None] + offs_n[None, :] * syc
    mask = m_mask[:, None] & n_mask[None, :]
    if STORE_U:
        tl.store(u_ptr + off, acc.to(u_ptr.dtype.element_ty), mask=mask)
    if APPLY_ACT:
        acc = gnova_f32(acc, alpha, beta, gamma)
    tl.store(y_ptr + off, acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def tile_ids(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Grouped (L2-friendly) mapping of a 1D program id to (pid_m, pid_n)."""
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    group = GROUP_M * num_n
    first_m = (pid // group) * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % size_m
    pid_n = (pid % group) // size_m
    return pid_m, pid_n


@triton.jit
def conv2d_kernel(
    x_ptr,
    xaux_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    u_ptr,
    NB,
    C_in,
    H,
    W,
    C_out,
    Ho,
    Wo,
    sxn,
    sxc,
    sxh,
    sxw,
    swo,
    swi,
    swh,
    sww,
    syn,
    syc,
    syh,
    syw,
    pad_h,
    pad_w,
    alpha,
    beta,
    gamma,
    p_alpha,
    p_beta,
    p_gamma,
    KH: tl.constexpr,
    KW: tl.constexpr,
    SH: tl.constexpr,
    SW: tl.constexpr,
    PROLOGUE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    APPLY_ACT: tl.constexpr,
    STORE_U: tl.constexpr,
    ALLOW_TF32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr = 8,
):
    """One [BLOCK_M pixels x BLOCK_N channels] output tile of the forward-direction conv."""
    M = NB * Ho * Wo
    pid_m, pid_n = tile_ids(tl.program_id(0), M, C_out, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_mask = offs_m < M
    n_mask = offs_n < C_out
    hw = Ho * Wo
    n_idx = offs_m // hw
    rem = offs_m % hw
    oh = rem // Wo
    ow = rem % Wo
    ih0 = oh * SH - pad_h
    iw0 = ow * SW - pad_w
    x_base = n_idx.to(tl.int64) * sxn  # int64 only per row: int64 tiles spill (see module doc)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for i in tl.static_range(KH):
        ih = ih0 + i
        h_ok = m_mask & (ih >= 0) & (ih < H)
        for j in tl.static_range(KW):
            iw = iw0 + j
            ok = h_ok & (iw >= 0) & (iw < W)
            a_row = x_base + ih * sxh + iw * sxw
            w_tap = offs_n * swo + i * swh + j * sww
            for c0 in range(0, C_in, BLOCK_K):
                ck = c0 + offs_k
                k_mask = ck < C_in
                a_mask = ok[:, None] & k_mask[None, :]
                a_off = a_row[:, None] + ck[None, :] * sxc
                a = load_operand(x_ptr, xaux_ptr, a_off, a_mask, p_alpha, p_beta, p_gamma, PROLOGUE)
                b_off = w_tap[None, :] + ck[:, None] * swi
                b = tl.load(w_ptr + b_off, mask=k_mask[:, None] & n_mask[None, :], other=0.0)
                acc = mma(a, b, acc, ALLOW_TF32)
    out_row = n_idx.to(tl.int64) * syn + oh * syh + ow * syw
    gemm_epilogue(
        acc,
        b_ptr,
        y_ptr,
        u_ptr,
        out_row,
        offs_n,
        m_mask,
        n_mask,
        syc,
        alpha,
        beta,
        gamma,
        HAS_BIAS,
        APPLY_ACT,
        STORE_U,
    )


conv2d_tuned = triton.autotune(
    configs=gemm_configs(), key=["NB", "C_in", "C_out", "Ho", "Wo", "KH", "KW", "SH", "SW"], prune_configs_by=PRUNE
)(conv2d_kernel)


def allow_tf32(dtype: torch.dtype) -> bool:
    return dtype == torch.float32 and bool(torch.backends.cuda.matmul.allow_tf32)


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    act: tuple[float, float, float] | None,
    *,
    prologue: int = 0,
    aux: torch.Tensor | None = None,
    prologue_act: tuple[float, float, float] = (1.0, 0.0, 1.0),
    store_u: bool = True,
    out_format: torch.memory_format = torch.contiguous_format,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launches conv2d_kernel; returns (y, u) with u None when store_u is False.

    act: the epilogue activation (None: y = u, no activation). prologue/aux/prologue_act: see the module
    docstring (aux is u for PROLOGUE=2 and must have x's shape). Output in `out_format`.
    """
    nb, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    ho = (h + 2 * padding[0] - kh) // stride[0] + 1
    wo = (w + 2 * padding[1] - kw) // stride[1] + 1
    x = x.contiguous(memory_format=torch.channels_last)
    if aux is not None:
        aux = aux.contiguous(memory_format=torch.channels_last)
        if aux.stride() != x.stride():  # size-1 dims can leave ambiguous strides: force one layout
            aux = torch.empty_like(x).copy_(aux)
    y = torch.empty((nb, c_out, ho, wo), dtype=x.dtype, device=x.device, memory_format=out_format)
    u = torch.empty_like(y) if store_u else None
    if y.numel() == 0:
        return y, u
    a_alpha, a_beta, a_gamma = act if act is not None else (1.0, 0.0, 1.0)
    grid = lambda meta: (triton.cdiv(nb * ho * wo, meta["BLOCK_M"]) * triton.cdiv(c_out, meta["BLOCK_N"]),)
    conv2d_tuned[grid](
        x,
        aux if aux is not None else x,
        weight,
        bias if bias is not None else weight,
        y,
        u if u is not None else y,
        nb,
        c_in,
        h,
        w,
        c_out,
        ho,
        wo,
        *x.stride(),
        *weight.stride(),
        *y.stride(),
        padding[0],
        padding[1],
        a_alpha,
        a_beta,
        a_gamma,
        *prologue_act,
        KH=kh,
        KW=kw,
        SH=stride[0],
        SW=stride[1],
        PROLOGUE=prologue,
        HAS_BIAS=bias is not None,
        APPLY_ACT=act is not None,
        STORE_U=store_u,
        ALLOW_TF32=allow_tf32(x.dtype),
    )
    return y, u
