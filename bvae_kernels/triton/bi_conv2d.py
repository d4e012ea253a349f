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

from ._gemm import PRO_NONE, act_args, allow_tf32, gemm_epilogue, load_operand, mma, tile_ids
from .configs import autotune_configs, fixed_launch, prune_by


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
    w_col = offs_n * swo
    cblocks = tl.cdiv(C_in, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # K = (tap, channel block) flattened into one loop: the pipeliner overlaps the loads of the next tap with the
    # current MMA (a BVAE layer's C_in fits one BLOCK_K, so a per-tap loop would run once and pipeline nothing),
    # and the taps being a run-time count keeps one compiled kernel per tile config for every kernel size.
    for kk in range(0, KH * KW * cblocks):
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
        acc = mma(a, b, acc, ALLOW_TF32)
    out_row = n_idx.to(tl.int64) * syn + oh * syh + ow * syw
    gemm_epilogue(
        acc,
        scale_ptr,
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
        HAS_SCALE,
        HAS_BIAS,
        APPLY_ACT,
        STORE_U,
    )


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
