# ruff: noqa: ANN001, ANN201 - @triton.jit kernels take untyped tensors/scalars (annotations mean constexpr to Triton)
"""bi_conv2d_reverse on Triton: the reverse-direction convolution (conv_transpose2d through the forward layer's
weight) in gather form; also the dgrad of the forward direction.

    out[n, ci, oh, ow] = epilogue( sum_{co, i, j} z[n, co, ih, iw] * W[co, ci, i, j] ),
    over the (i, j) with oh + P - i = S*ih and ow + P - j = S*iw

The weight is the nn.Conv2d buffer [C_out, C_in, kh, kw] read with the roles of C_in/C_out swapped; no
flipped copy exists: the flip is the index arithmetic ih = (oh + P - i) / S. Each output pixel is owned by
one program (no atomics, deterministic, and the activation epilogue fuses since the sum is complete).

Stride S is handled by splitting the output into S*S phases (grid axis 1): the pixels oh = ph + S*mh of one
phase see only the taps i = r + S*t with r = (ph + P) mod S, and then ih = (ph + P) // S + mh - t exactly,
so no tap is wasted on masked-out zeros (k=4, s=2, p=1 gives 2x2 taps per phase). The ceil(k / S) taps per phase
and dimension and the channel blocks run as one loop with run-time bounds (see bi_conv2d.py); a tap index past
the kernel (k % S != 0) is masked. (Tap masks are built block-shaped, `(x * 0 + i) < KH`: the interpreter turns
`block_bool & scalar_bool` into an int mask.)
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
from .bi_conv2d import EXACT_M
from .configs import autotune_configs, fixed_launch, prune_by


@triton.jit
def _reverse_rows(offs_m, M, hp, wp, szn):
    """Per output pixel of this phase (GEMM row): in range, its z sample's base offset and its phase coordinates
    (mh, mw)."""
    hpw = tl.maximum(hp * wp, 1)  # an empty phase (Ho < S) has M = 0: every row masked, no division by 0
    wp1 = tl.maximum(wp, 1)
    n_idx = offs_m // hpw
    rem = offs_m % hpw
    z_base = n_idx.to(tl.int64) * szn  # int64 per row only (see bi_conv2d.py)
    return offs_m < M, z_base, rem // wp1, rem % wp1


@triton.jit
def _reverse_out_rows(offs_m, hp, wp, ph, pw, SH, SW, syn, syh, syw):
    """Per output pixel of this phase: its output offset (computed after the K loop)."""
    hpw = tl.maximum(hp * wp, 1)
    wp1 = tl.maximum(wp, 1)
    rem = offs_m % hpw
    return (offs_m // hpw).to(tl.int64) * syn + (ph + SH * (rem // wp1)) * syh + (pw + SW * (rem % wp1)) * syw


@triton.jit(noinline=True)
def _reverse_exact(
    pid_m, pid_n, z_ptr, zaux_ptr, w_ptr, scale_ptr, b_ptr, y_ptr, u_ptr, M, hp, wp, ph, pw, rh, rw, qh, qw, C_z, Hz,
    Wz, C_o, szn, szc, szh, szw, swo, swi, swh, sww, syn, syc, syh, syw, KH, KW, SH, SW, TH, TW, alpha, beta, gamma,
    p_alpha, p_beta, p_gamma, PROLOGUE: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr,
    APPLY_ACT: tl.constexpr, STORE_U: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """The exact path (see bi_conv2d.py's _fwd_exact): the tile again, EXACT_M rows and one channel at a time,
    each tap's product kept only for the rows whose tap lies inside z and the kernel (a tap index past the kernel
    reads the last tap's address and is never kept)."""
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < C_o
    w_col = offs_n * swi
    for r0 in range(0, BLOCK_M, EXACT_M):
        rows = pid_m * BLOCK_M + r0 + tl.arange(0, EXACT_M)
        r_mask, r_base, r_mh, r_mw = _reverse_rows(rows, M, hp, wp, szn)
        part = tl.zeros((EXACT_M, BLOCK_N), dtype=tl.float32)
        for tap in range(0, TH * TW):
            t = tap // TW
            s = tap - t * TW
            i = rh + SH * t
            j = rw + SW * s
            ih = qh + r_mh - t
            iw = qw + r_mw - s
            ok = r_mask & (ih >= 0) & (ih < Hz) & (iw >= 0) & (iw < Wz) & ((ih * 0 + i) < KH) & ((iw * 0 + j) < KW)
            a_row = r_base + ih * szh + iw * szw
            b_col = w_col + tl.minimum(i, KH - 1) * swh + tl.minimum(j, KW - 1) * sww
            for c in tl.range(0, C_z, num_stages=1):
                a = load_operand(z_ptr, zaux_ptr, a_row + c * szc, ok, p_alpha, p_beta, p_gamma, PROLOGUE)
                b = tl.load(w_ptr + b_col + c * swo, mask=n_mask, other=0.0)
                part += tl.where(ok[:, None], a.to(tl.float32)[:, None] * b.to(tl.float32)[None, :], 0.0)
        r_out = _reverse_out_rows(rows, hp, wp, ph, pw, SH, SW, syn, syh, syw)
        gemm_epilogue(
            part, scale_ptr, b_ptr, y_ptr, u_ptr, r_out, offs_n, r_mask, n_mask, syc, alpha, beta, gamma,
            HAS_SCALE, HAS_BIAS, APPLY_ACT, STORE_U,
        )  # fmt: skip


@triton.jit
def _reverse_operands(
    kk, z_ptr, zaux_ptr, w_ptr, z_base, qh, qw, mh, mw, rh, rw, m_mask, w_col, n_mask, offs_k, cblocks,
    C_z, Hz, Wz, szc, szh, szw, swo, swh, sww, KH, KW, SH, SW, TW, p_alpha, p_beta, p_gamma,
    PROLOGUE: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Step kk of the K loop: the A (z pixels) and B (weight) tiles of one (phase tap, channel block), and which
    rows' tap lies inside z and the kernel."""
    tap = kk // cblocks
    ck = (kk - tap * cblocks) * BLOCK_K + offs_k
    t = tap // TW
    s = tap - t * TW
    i = rh + SH * t
    j = rw + SW * s
    ih = qh + mh - t
    iw = qw + mw - s
    ok = m_mask & (ih >= 0) & (ih < Hz) & (iw >= 0) & (iw < Wz) & ((ih * 0 + i) < KH) & ((iw * 0 + j) < KW)
    k_mask = ck < C_z
    kt_mask = k_mask & ((ck * 0 + i) < KH) & ((ck * 0 + j) < KW)  # block-shaped: see the module doc
    a_off = (z_base + ih * szh + iw * szw)[:, None] + ck[None, :] * szc
    a = load_operand(z_ptr, zaux_ptr, a_off, ok[:, None] & k_mask[None, :], p_alpha, p_beta, p_gamma, PROLOGUE)
    b_off = (w_col + i * swh + j * sww)[None, :] + ck[:, None] * swo
    b = tl.load(w_ptr + b_off, mask=kt_mask[:, None] & n_mask[None, :], other=0.0)
    return a, b, ok


@triton.jit
def _bi_conv2d_reverse_fwd_kernel(
    z_ptr,
    zaux_ptr,
    w_ptr,
    scale_ptr,
    b_ptr,
    y_ptr,
    u_ptr,
    NB,
    C_z,
    Hz,
    Wz,
    C_o,
    Ho,
    Wo,
    szn,
    szc,
    szh,
    szw,
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
    """One [BLOCK_M pixels of one phase x BLOCK_N channels] tile of the reverse-direction conv (bi_conv2d_reverse's
    forward, and bi_conv2d's dgrad).

    z: [NB, C_z, Hz, Wz] (C_z = the weight's C_out); out: [NB, C_o, Ho, Wo] (C_o = the weight's C_in).
    """
    TH = tl.cdiv(KH, SH)  # taps per phase and dimension
    TW = tl.cdiv(KW, SW)
    phase = tl.program_id(1)
    ph = phase // SW
    pw = phase % SW
    hp = tl.cdiv(Ho - ph, SH)  # rows of this phase
    wp = tl.cdiv(Wo - pw, SW)
    M = NB * hp * wp
    pid_m, pid_n = tile_ids(tl.program_id(0), NB * tl.cdiv(Ho, SH) * tl.cdiv(Wo, SW), C_o, BLOCK_M, BLOCK_N, GROUP_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    n_mask = offs_n < C_o
    rh = (ph + pad_h) % SH
    rw = (pw + pad_w) % SW
    qh = (ph + pad_h) // SH
    qw = (pw + pad_w) // SW
    w_col = offs_n * swi
    cblocks = tl.cdiv(C_z, BLOCK_K)
    m_mask, z_base, mh, mw = _reverse_rows(pid_m * BLOCK_M + tl.arange(0, BLOCK_M), M, hp, wp, szn)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # One loop over (this phase's tap, channel block), as in bi_conv2d.py. A phase's tap past the kernel (k % S != 0,
    # e.g. k=3, s=2) is masked: its MMA adds zeros.
    for kk in range(0, TH * TW * cblocks):
        a, b, ok = _reverse_operands(
            kk, z_ptr, zaux_ptr, w_ptr, z_base, qh, qw, mh, mw, rh, rw, m_mask, w_col, n_mask, offs_k, cblocks, C_z,
            Hz, Wz, szc, szh, szw, swo, swh, sww, KH, KW, SH, SW, TW, p_alpha, p_beta, p_gamma, PROLOGUE, BLOCK_K,
        )  # fmt: skip
        acc = mma(a, b, acc, ALLOW_TF32)
    # The exact path of bi_conv2d.py: only a non-finite operand makes a NaN (0 * inf from a tap outside z), and only
    # then is the tile summed again, exactly, by a function of its own (noinline: its registers are not the loop's).
    exact = has_nan(acc)
    if exact:  # as in bi_conv2d.py: the exact path only for a non-finite weight
        exact = weight_nonfinite(w_ptr, pid_n, C_o, C_z, KH, KW, swi, swo, swh, sww, BLOCK_N)
    if exact:
        _reverse_exact(
            pid_m, pid_n, z_ptr, zaux_ptr, w_ptr, scale_ptr, b_ptr, y_ptr, u_ptr, M, hp, wp, ph, pw, rh, rw, qh, qw,
            C_z, Hz, Wz, C_o, szn, szc, szh, szw, swo, swi, swh, sww, syn, syc, syh, syw, KH, KW, SH, SW, TH, TW, alpha,
            beta, gamma, p_alpha, p_beta, p_gamma, PROLOGUE, HAS_SCALE, HAS_BIAS, APPLY_ACT, STORE_U, BLOCK_M, BLOCK_N,
        )  # fmt: skip
    else:
        out_row = _reverse_out_rows(pid_m * BLOCK_M + tl.arange(0, BLOCK_M), hp, wp, ph, pw, SH, SW, syn, syh, syw)
        gemm_epilogue(
            acc, scale_ptr, b_ptr, y_ptr, u_ptr, out_row, offs_n, m_mask, n_mask, syc, alpha, beta, gamma,
            HAS_SCALE, HAS_BIAS, APPLY_ACT, STORE_U,
        )  # fmt: skip


# The batch size is not in the key (see bi_conv2d.py).
_bi_conv2d_reverse_fwd_tuned = triton.autotune(
    configs=autotune_configs("gemm"),
    key=["C_z", "C_o", "Ho", "Wo", "KH", "KW", "SH", "SW"],
    prune_configs_by=prune_by("gemm", "z_ptr"),
)(_bi_conv2d_reverse_fwd_kernel)


def conv_transpose2d(
    z: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    out_hw: tuple[int, int],
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
    """Launches the reverse-direction conv; out_hw = (Ho, Wo) fixes output_padding. Returns (y, u or None).

    log_scale: multiply the contraction by e^s before the bias (the reverse scale). The rest as conv2d().
    """
    nb, c_z, hz, wz = z.shape
    _, c_o, kh, kw = weight.shape
    ho, wo = out_hw
    z = z.contiguous(memory_format=torch.channels_last)
    if aux is not None:
        aux = aux.contiguous(memory_format=torch.channels_last)
        if aux.stride() != z.stride():
            aux = torch.empty_like(z).copy_(aux)
    y = torch.empty((nb, c_o, ho, wo), dtype=z.dtype, device=z.device, memory_format=out_format)
    u = torch.empty_like(y) if store_u else None
    if y.numel() == 0:
        return y, u
    sh, sw = stride
    m_max = nb * triton.cdiv(ho, sh) * triton.cdiv(wo, sw)
    grid = lambda meta: (triton.cdiv(m_max, meta["BLOCK_M"]) * triton.cdiv(c_o, meta["BLOCK_N"]), sh * sw)
    fixed = fixed_launch("gemm", z.dtype)
    (_bi_conv2d_reverse_fwd_tuned if fixed is None else _bi_conv2d_reverse_fwd_kernel)[grid](
        z,
        aux if aux is not None else z,
        weight,
        log_scale if log_scale is not None else weight,
        bias if bias is not None else weight,
        y,
        u if u is not None else y,
        nb,
        c_z,
        hz,
        wz,
        c_o,
        ho,
        wo,
        *z.stride(),
        *weight.stride(),
        *y.stride(),
        kh,
        kw,
        sh,
        sw,
        padding[0],
        padding[1],
        *act_args(act),
        *prologue_act,
        PROLOGUE=prologue,
        HAS_SCALE=log_scale is not None,
        HAS_BIAS=bias is not None,
        APPLY_ACT=act is not None,
        STORE_U=store_u,
        ALLOW_TF32=allow_tf32(z.dtype, dense),
        **(fixed or {}),
    )
    return y, u
