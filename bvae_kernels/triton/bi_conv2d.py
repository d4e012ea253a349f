# ruff: noqa: ANN001, ANN201 - @triton.jit kernels take untyped tensors/scalars (annotations mean constexpr to Triton)
"""bi_conv2d on Triton: the forward-direction convolution as an implicit GEMM (also the dgrad of the reverse
direction).

    out[n, co, oh, ow] = epilogue( sum_{i, j, ci} prologue(x)[n, ci, oh*S - P + i, ow*S - P + j] * W[co, ci, i, j] )

GEMM view: M = N*Ho*Wo output pixels, N = C_out, K = kh*kw*C_in ordered (i, j, ci) with ci innermost, run as one
loop over (tap, channel block) with `oh*S - P` hoisted out of it. Kernel size and stride are run-time values: one
compiled kernel per tile config serves every layer (unrolled taps cost a JIT compile per kernel size, up to a
minute for fp32 k4, and registers: ptxas counted spills in every unrolled config, none in most flat ones, see
aot.py). Tensors are read
through their strides: activations are converted to channels_last (NHWC) once by the launcher so the ci
rows are contiguous, and the weight is read in place in its nn.Conv2d [C_out, C_in, kh, kw] shape (any
memory format; channels_last weight makes the B tile rows contiguous).

Prologue (on the A operand, see _gemm.py): PRO_ACT applies a() on load (a fused chain reads the previous layer's
pre-activation), PRO_ACT_GRAD multiplies the incoming gradient by a'(u) recomputed from u (dgrad of the
reverse direction: du is never materialized). Epilogue: * e^s (the reverse scale, in the reverse dgrad), + bias,
store u (pre-activation), a(u), cast.

Offsets: int64 only for the per-sample base (n * stride_n); offsets inside one sample, pixel and channel
indices are int32 (ops.index_problem hands a case where any of those reaches 2**31 to the compiled op). Full
int64 tiles cost ~4-6 KB of register spills per thread on sm_90 (ptxas -v), int32 tiles none.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._gemm import (
    PRO_NONE,
    act_args,
    allow_tf32,
    gemm_epilogue,
    has_nan,
    load_operand,
    mma,
    tile_ids,
    weight_nonfinite,
)
from .configs import autotune_configs, fixed_launch, prune_by

EXACT_M = tl.constexpr(8)  # rows per sub-tile of the exact path (more rows: more registers, see _fwd_exact)


@triton.jit
def _fwd_rows(offs_m, M, Ho, Wo, SH, SW, pad_h, pad_w, sxn):
    """Per output pixel (GEMM row): in range, its input sample's base offset and its window's top-left input
    pixel."""
    hw = Ho * Wo
    n_idx = offs_m // hw
    rem = offs_m % hw
    x_base = n_idx.to(tl.int64) * sxn  # int64 only per row: int64 tiles spill (see module doc)
    return offs_m < M, x_base, (rem // Wo) * SH - pad_h, (rem % Wo) * SW - pad_w


@triton.jit
def _fwd_out_rows(offs_m, Ho, Wo, syn, syh, syw):
    """Per output pixel: its output offset (computed after the K loop: nothing extra lives through it)."""
    hw = Ho * Wo
    rem = offs_m % hw
    return (offs_m // hw).to(tl.int64) * syn + (rem // Wo) * syh + (rem % Wo) * syw


@triton.jit
def _fwd_operands(
    kk, x_ptr, xaux_ptr, w_ptr, x_base, ih0, iw0, m_mask, w_col, n_mask, offs_k, cblocks, C_in, H, W,
    sxc, sxh, sxw, swi, swh, sww, KW, p_alpha, p_beta, p_gamma, PROLOGUE: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Step kk of the K loop: the A (input pixels) and B (weight) tiles of one (tap, channel block), and which
    rows' tap lies inside the image."""
    tap = kk // cblocks
    ck = (kk - tap * cblocks) * BLOCK_K + offs_k
    i = tap // KW
    j = tap - i * KW
    ih = ih0 + i
    iw = iw0 + j
    ok = m_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    k_mask = ck < C_in
    a_off = (x_base + ih * sxh + iw * sxw)[:, None] + ck[None, :] * sxc
    a = load_operand(x_ptr, xaux_ptr, a_off, ok[:, None] & k_mask[None, :], p_alpha, p_beta, p_gamma, PROLOGUE)
    b_off = (w_col + i * swh + j * sww)[None, :] + ck[:, None] * swi
    b = tl.load(w_ptr + b_off, mask=k_mask[:, None] & n_mask[None, :], other=0.0)
    return a, b, ok


@triton.jit(noinline=True)
def _fwd_exact(
    pid_m, x_ptr, xaux_ptr, w_ptr, scale_ptr, b_ptr, y_ptr, u_ptr, M, C_in, H, W, Ho, Wo, sxn, sxc, sxh, sxw,
    swi, swh, sww, syn, syc, syh, syw, KH, KW, SH, SW, pad_h, pad_w, alpha, beta, gamma, p_alpha, p_beta,
    p_gamma, pid_n, C_out, swo, PROLOGUE: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr,
    APPLY_ACT: tl.constexpr, STORE_U: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """The exact path of a tile whose sum made a NaN: the tile again, EXACT_M rows and one channel at a time (outer
    products in fp32, few registers), each tap's product kept only for the rows whose tap lies inside the image,
    as a direct convolution sums. Scalar arguments only (a noinline function's rule)."""
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < C_out
    w_col = offs_n * swo
    for r0 in range(0, BLOCK_M, EXACT_M):
        rows = pid_m * BLOCK_M + r0 + tl.arange(0, EXACT_M)
        r_mask, r_base, r_ih0, r_iw0 = _fwd_rows(rows, M, Ho, Wo, SH, SW, pad_h, pad_w, sxn)
        part = tl.zeros((EXACT_M, BLOCK_N), dtype=tl.float32)
        for tap in range(0, KH * KW):
            i = tap // KW
            j = tap - i * KW
            ih = r_ih0 + i
            iw = r_iw0 + j
            ok = r_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            a_row = r_base + ih * sxh + iw * sxw
            b_col = w_col + i * swh + j * sww
            for c in tl.range(0, C_in, num_stages=1):
                a = load_operand(x_ptr, xaux_ptr, a_row + c * sxc, ok, p_alpha, p_beta, p_gamma, PROLOGUE)
                b = tl.load(w_ptr + b_col + c * swi, mask=n_mask, other=0.0)
                part += tl.where(ok[:, None], a.to(tl.float32)[:, None] * b.to(tl.float32)[None, :], 0.0)
        r_out = _fwd_out_rows(rows, Ho, Wo, syn, syh, syw)
        gemm_epilogue(
            part, scale_ptr, b_ptr, y_ptr, u_ptr, r_out, offs_n, r_mask, n_mask, syc, alpha, beta, gamma,
            HAS_SCALE, HAS_BIAS, APPLY_ACT, STORE_U,
        )  # fmt: skip


@triton.jit
def _bi_conv2d_fwd_kernel(
    x_ptr,
    xaux_ptr,
    w_ptr,
    scale_ptr,
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
    KH,
    KW,
    SH,
    SW,
    pad_h,
    pad_w,
    alpha,
    beta,
    gamma,
    p_alpha,
    p_beta,
    p_gamma,
    PROLOGUE: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    APPLY_ACT: tl.constexpr,
    STORE_U: tl.constexpr,
    ALLOW_TF32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr = 8,
):
    """One [BLOCK_M pixels x BLOCK_N channels] output tile of the forward-direction conv (bi_conv2d's forward, and
    bi_conv2d_reverse's dgrad)."""
    M = NB * Ho * Wo
    pid_m, pid_n = tile_ids(tl.program_id(0), M, C_out, BLOCK_M, BLOCK_N, GROUP_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    n_mask = offs_n < C_out
    w_col = offs_n * swo
    cblocks = tl.cdiv(C_in, BLOCK_K)
    m_mask, x_base, ih0, iw0 = _fwd_rows(pid_m * BLOCK_M + tl.arange(0, BLOCK_M), M, Ho, Wo, SH, SW, pad_h, pad_w, sxn)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # K = (tap, channel block) flattened into one loop: the pipeliner overlaps the loads of the next tap with the
    # current MMA (a BVAE layer's C_in fits one BLOCK_K, so a per-tap loop would run once and pipeline nothing),
    # and the taps being a run-time count keeps one compiled kernel per tile config for every kernel size.
    for kk in range(0, KH * KW * cblocks):
        a, b, ok = _fwd_operands(
            kk, x_ptr, xaux_ptr, w_ptr, x_base, ih0, iw0, m_mask, w_col, n_mask, offs_k, cblocks, C_in, H, W,
            sxc, sxh, sxw, swi, swh, sww, KW, p_alpha, p_beta, p_gamma, PROLOGUE, BLOCK_K,
        )  # fmt: skip
        acc = mma(a, b, acc, ALLOW_TF32)
    # A padded tap is a zero row of A times the weight: 0 * inf = NaN where a direct convolution has no term. Only a
    # non-finite operand makes a NaN, and only then is the tile summed again, exactly, by _fwd_exact: a function of
    # its own (noinline), so that its registers are not added to the main loop's (ptxas -v: unchanged, see aot.py).
    exact = has_nan(acc)
    if exact:  # a NaN from the input alone is the reference's too: the exact path only for a non-finite weight
        exact = weight_nonfinite(w_ptr, pid_n, C_out, C_in, KH, KW, swo, swi, swh, sww, BLOCK_N)
    if exact:
        _fwd_exact(
            pid_m, x_ptr, xaux_ptr, w_ptr, scale_ptr, b_ptr, y_ptr, u_ptr, M, C_in, H, W, Ho, Wo, sxn, sxc, sxh, sxw,
            swi, swh, sww, syn, syc, syh, syw, KH, KW, SH, SW, pad_h, pad_w, alpha, beta, gamma, p_alpha, p_beta,
            p_gamma, pid_n, C_out, swo, PROLOGUE, HAS_SCALE, HAS_BIAS, APPLY_ACT, STORE_U, BLOCK_M, BLOCK_N,
        )  # fmt: skip
    else:
        out_row = _fwd_out_rows(pid_m * BLOCK_M + tl.arange(0, BLOCK_M), Ho, Wo, syn, syh, syw)
        gemm_epilogue(
            acc, scale_ptr, b_ptr, y_ptr, u_ptr, out_row, offs_n, m_mask, n_mask, syc, alpha, beta, gamma,
            HAS_SCALE, HAS_BIAS, APPLY_ACT, STORE_U,
        )  # fmt: skip


# The batch size is not in the key: a short last batch reuses the tuned config (no re-tuning mid-epoch, which
# would also break CUDA-graph capture); the first call of a shape tunes (warm up before capturing).
_bi_conv2d_fwd_tuned = triton.autotune(
    configs=autotune_configs("gemm"),
    key=["C_in", "C_out", "Ho", "Wo", "KH", "KW", "SH", "SW"],
    prune_configs_by=prune_by("gemm", "x_ptr"),
)(_bi_conv2d_fwd_kernel)


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    act: tuple[float, float, float] | None,
    *,
    log_scale: torch.Tensor | None = None,
    prologue: int = PRO_NONE.value,
    aux: torch.Tensor | None = None,
    prologue_act: tuple[float, float, float] = (1.0, 0.0, 1.0),
    store_u: bool = True,
    out_format: torch.memory_format = torch.contiguous_format,
    dense: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launches the forward-direction conv; returns (y, u) with u None when store_u is False.

    act: the epilogue activation (None: y = u, no activation); log_scale: multiply the contraction by e^s before
    the bias. prologue/aux/prologue_act: see _gemm.py (aux is u for PRO_ACT_GRAD and has x's shape). x is read
    as channels_last (converted once if it is not); the output is written in `out_format`. dense: a dense layer's
    1x1 view (fp32 then follows the matmul tf32 flag instead of cuDNN's; see _gemm.allow_tf32).
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
    grid = lambda meta: (triton.cdiv(nb * ho * wo, meta["BLOCK_M"]) * triton.cdiv(c_out, meta["BLOCK_N"]),)
    fixed = fixed_launch("gemm", x.dtype)
    (_bi_conv2d_fwd_tuned if fixed is None else _bi_conv2d_fwd_kernel)[grid](
        x,
        aux if aux is not None else x,
        weight,
        log_scale if log_scale is not None else weight,
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
        kh,
        kw,
        stride[0],
        stride[1],
        padding[0],
        padding[1],
        *act_args(act),
        *prologue_act,
        PROLOGUE=prologue,
        HAS_SCALE=log_scale is not None,
        HAS_BIAS=bias is not None,
        APPLY_ACT=act is not None,
        STORE_U=store_u,
        ALLOW_TF32=allow_tf32(x.dtype, dense),
        **(fixed or {}),
    )
    return y, u
