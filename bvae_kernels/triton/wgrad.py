# ruff: noqa: ANN001, ANN201 - @triton.jit kernels take untyped tensors/scalars (annotations mean constexpr to Triton)
"""Weight gradient for either direction: one kernel, conv geometry.

    dW[co, ci, i, j] = sum_{n, p, q} D[n, co, p, q] * X[n, ci, p*S - P + i, q*S - P + j]

Forward direction: X = x (layer input), D = du = g * a'(u). Reverse direction: X = du (on the reverse
output, the large side), D = z. Either operand may carry the G-NoVa gradient prologue, so du is never
materialized, and the layer's input the input activation's (a_in(x) or a_in(z): the input is the previous
layer's pre-activation), so a_in(input) is never materialized either. GEMM view per tap (grid axis 1):
M = C_out, N = C_in, K = N*Ho*Wo pixels (long), split-K over grid axis 2 with fp32 accumulation. Deterministic
mode (torch.are_deterministic_algorithms_enabled(), or whenever there is one split) writes per-split fp32
partials to a workspace reduced in fixed order; otherwise splits combine with fp32 atomics. dW comes out in the
weight's own strides (channels_last weights get a channels_last grad).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._gemm import PRO_NONE, allow_tf32, has_nan, load_operand, mma
from .configs import autotune_configs, fixed_launch, interpreting, num_sms, prune_by
from .reductions import reduce_splits


@triton.jit
def _wgrad_store(acc, ws_ptr, C_in, C_out, KH, KW, pid_m, pid_n, tap, split, ATOMIC: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    """The tile into the workspace: atomically into ws[co, ci, tap], or into this split's ws[split, co, ci, tap]."""
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    taps = KH * KW
    out_off = (offs_m[:, None] * C_in + offs_n[None, :]) * taps + tap
    mask = (offs_m < C_out)[:, None] & (offs_n < C_in)[None, :]
    if ATOMIC:
        tl.atomic_add(ws_ptr + out_off, acc, mask=mask)
    else:
        tl.store(ws_ptr + split.to(tl.int64) * C_out * C_in * taps + out_off, acc, mask=mask)


EXACT_M = tl.constexpr(8)  # output channels per pass of the exact path


@triton.jit(noinline=True)
def _d_nonfinite(
    d_ptr, daux_ptr, NB, C_out, Ho, Wo, sdn, sdc, sdh, sdw, pix_per_split, pd_alpha, pd_beta, pd_gamma, pid_m, split,
    PRO_D: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """Whether D (after its prologue) holds an inf or a NaN in this program's rows and split: only then can a padded
    tap (X = 0) make a NaN. Called only for a tile whose sum made a NaN (a rare path, one pixel at a time)."""
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    r_mask = rows < C_out
    hw = Ho * Wo
    start = split * pix_per_split
    end = tl.minimum(start + pix_per_split, NB * hw)
    bad = tl.zeros((BLOCK_M,), dtype=tl.int32)
    for pix in tl.range(start, end, num_stages=1):
        rem = pix % hw
        d_off = rows * sdc + ((pix // hw).to(tl.int64) * sdn + (rem // Wo) * sdh + (rem % Wo) * sdw)
        d = load_operand(d_ptr, daux_ptr, d_off, r_mask, pd_alpha, pd_beta, pd_gamma, PRO_D).to(tl.float32)
        bad = tl.maximum(bad, (d * 0.0 != 0.0).to(tl.int32))  # d * 0 is NaN exactly for an inf or a NaN
    return tl.max(bad) > 0


@triton.jit(noinline=True)
def _wgrad_exact(
    x_ptr, xaux_ptr, d_ptr, daux_ptr, ws_ptr, NB, C_in, H, W, C_out, Ho, Wo, sxn, sxc, sxh, sxw, sdn, sdc, sdh, sdw,
    KH, KW, SH, SW, pad_h, pad_w, pix_per_split, px_alpha, px_beta, px_gamma, pd_alpha, pd_beta, pd_gamma, pid_m,
    pid_n, tap, split, PRO_X: tl.constexpr, PRO_D: tl.constexpr, ATOMIC: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):  # fmt: skip
    """The exact path of a tile whose sum made a NaN: the tile again, EXACT_M output channels and one pixel at a time
    (outer products in fp32, few registers), skipping the pixels where this tap is in the padding, as a direct
    convolution's gradient sums. Scalar arguments only (a noinline function's rule)."""
    i = tap // KW
    j = tap % KW
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < C_in
    hw = Ho * Wo
    start = split * pix_per_split
    end = tl.minimum(start + pix_per_split, NB * hw)
    taps = KH * KW
    for r0 in range(0, BLOCK_M, EXACT_M):
        rows = pid_m * BLOCK_M + r0 + tl.arange(0, EXACT_M)
        r_mask = rows < C_out
        part = tl.zeros((EXACT_M, BLOCK_N), dtype=tl.float32)
        for pix in tl.range(start, end, num_stages=1):
            n_idx = pix // hw
            rem = pix % hw
            oh = rem // Wo
            ow = rem % Wo
            ih = oh * SH - pad_h + i
            iw = ow * SW - pad_w + j
            if (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W):
                d_off = rows * sdc + (n_idx.to(tl.int64) * sdn + oh * sdh + ow * sdw)
                d = load_operand(d_ptr, daux_ptr, d_off, r_mask, pd_alpha, pd_beta, pd_gamma, PRO_D)
                x_off = (n_idx.to(tl.int64) * sxn + ih * sxh + iw * sxw) + offs_n * sxc
                x = load_operand(x_ptr, xaux_ptr, x_off, n_mask, px_alpha, px_beta, px_gamma, PRO_X)
                part += d.to(tl.float32)[:, None] * x.to(tl.float32)[None, :]
        out_off = (rows[:, None] * C_in + offs_n[None, :]) * taps + tap
        mask = r_mask[:, None] & n_mask[None, :]
        if ATOMIC:
            tl.atomic_add(ws_ptr + out_off, part, mask=mask)
        else:
            tl.store(ws_ptr + split.to(tl.int64) * C_out * C_in * taps + out_off, part, mask=mask)


@triton.jit
def _conv_wgrad_kernel(
    x_ptr,
    xaux_ptr,
    d_ptr,
    daux_ptr,
    ws_ptr,
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
    sdn,
    sdc,
    sdh,
    sdw,
    KH,
    KW,
    SH,
    SW,
    pad_h,
    pad_w,
    pix_per_split,
    px_alpha,
    px_beta,
    px_gamma,
    pd_alpha,
    pd_beta,
    pd_gamma,
    PRO_X: tl.constexpr,
    PRO_D: tl.constexpr,
    ATOMIC: tl.constexpr,
    ALLOW_TF32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """ws[split, co, ci, tap] (or atomically ws[co, ci, tap]) for one (co, ci) tile, one tap, one split."""
    num_n = tl.cdiv(C_in, BLOCK_N)
    pid_m = tl.program_id(0) // num_n
    pid_n = tl.program_id(0) % num_n
    tap = tl.program_id(1)
    split = tl.program_id(2)
    i = tap // KW
    j = tap % KW
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < C_out
    n_mask = offs_n < C_in
    P = NB * Ho * Wo
    hw = Ho * Wo
    start = split * pix_per_split
    end = tl.minimum(start + pix_per_split, P)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, end - start, BLOCK_K):  # not past P: pixel indices stay below P + BLOCK_K
        pix = start + k0 + tl.arange(0, BLOCK_K)
        p_mask = pix < end
        n_idx = pix // hw
        rem = pix % hw
        oh = rem // Wo
        ow = rem % Wo
        d_off = offs_m[:, None] * sdc + (n_idx.to(tl.int64) * sdn + oh * sdh + ow * sdw)[None, :]
        d_mask = m_mask[:, None] & p_mask[None, :]
        d = load_operand(d_ptr, daux_ptr, d_off, d_mask, pd_alpha, pd_beta, pd_gamma, PRO_D)
        ih = oh * SH - pad_h + i
        iw = ow * SW - pad_w + j
        ok = p_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x_off = (n_idx.to(tl.int64) * sxn + ih * sxh + iw * sxw)[:, None] + offs_n[None, :] * sxc
        x_ok = ok[:, None] & n_mask[None, :]
        x = load_operand(x_ptr, xaux_ptr, x_off, x_ok, px_alpha, px_beta, px_gamma, PRO_X)
        acc = mma(d, x, acc, ALLOW_TF32)
    # X is 0 where this tap falls in the padding, and 0 * inf = NaN there if D holds an inf, where the convolution
    # has no term. Only a non-finite operand makes a NaN, and only then is the tile summed again, exactly, by a
    # function of its own (noinline and light: the main loop keeps its registers).
    exact = has_nan(acc)
    if exact:  # a NaN from X alone is the reference's too: the exact path only for a non-finite D
        exact = _d_nonfinite(
            d_ptr, daux_ptr, NB, C_out, Ho, Wo, sdn, sdc, sdh, sdw, pix_per_split, pd_alpha, pd_beta, pd_gamma, pid_m,
            split, PRO_D, BLOCK_M,
        )  # fmt: skip
    if exact:
        _wgrad_exact(
            x_ptr, xaux_ptr, d_ptr, daux_ptr, ws_ptr, NB, C_in, H, W, C_out, Ho, Wo, sxn, sxc, sxh, sxw, sdn, sdc, sdh,
            sdw, KH, KW, SH, SW, pad_h, pad_w, pix_per_split, px_alpha, px_beta, px_gamma, pd_alpha, pd_beta,
            pd_gamma, pid_m, pid_n, tap, split, PRO_X, PRO_D, ATOMIC, BLOCK_M, BLOCK_N,
        )  # fmt: skip
    else:
        _wgrad_store(acc, ws_ptr, C_in, C_out, KH, KW, pid_m, pid_n, tap, split, ATOMIC, BLOCK_M, BLOCK_N)


# The batch size is not in the key (see bi_conv2d.py); the split count, which depends on it, is a run-time argument.
# The prologues are: a chained launch has its own rows (configs.WGRAD_CHAINED_TABLE) and its own best tile.
_conv_wgrad_tuned = triton.autotune(
    configs=autotune_configs("wgrad"),
    key=["C_in", "C_out", "Ho", "Wo", "KH", "KW", "SH", "SW", "PRO_X", "PRO_D", "ATOMIC"],
    prune_configs_by=prune_by("wgrad", "x_ptr"),
    reset_to_zero=["ws_ptr"],
)(_conv_wgrad_kernel)


def choose_splits(tiles: int, pixels: int, block_k: int) -> int:
    """Splits of the pixel (K) axis: enough programs to fill the GPU twice, each with >= 4 K blocks."""
    want = triton.cdiv(2 * num_sms(), max(tiles, 1))
    return max(1, min(want, triton.cdiv(pixels, 4 * block_k), 256))


def wgrad(
    x: torch.Tensor,
    d: torch.Tensor,
    weight: torch.Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    *,
    pro_x: int = PRO_NONE.value,
    x_aux: torch.Tensor | None = None,
    pro_d: int = PRO_NONE.value,
    d_aux: torch.Tensor | None = None,
    x_act: tuple[float, float, float] = (1.0, 0.0, 1.0),
    d_act: tuple[float, float, float] = (1.0, 0.0, 1.0),
    log_scale: torch.Tensor | None = None,
    out_format: torch.memory_format | None = None,
    splits: int | None = None,
    deterministic: bool | None = None,
    dense: bool = False,
) -> torch.Tensor:
    """dW (shape and dtype of `weight`, memory format `out_format`, default the weight's strides) from
    X = x [N, C_in, H, W] and D = d [N, C_out, Ho, Wo], times e^s with a log_scale.

    pro_x / pro_d: prologue of each operand (see _gemm.py), with x_act / d_act its activation's parameters (PRO_ACT
    applies a(); PRO_ACT_GRAD multiplies by a'(aux)). splits: split-K count (None: chosen from the GPU size).
    deterministic: None follows torch.are_deterministic_algorithms_enabled(). dense: as conv2d's.
    """
    nb, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    ho, wo = d.shape[2], d.shape[3]
    x = x.contiguous(memory_format=torch.channels_last)
    d = d.contiguous(memory_format=torch.channels_last)
    if x_aux is not None:
        x_aux = x_aux.contiguous(memory_format=torch.channels_last)
        if x_aux.stride() != x.stride():
            x_aux = torch.empty_like(x).copy_(x_aux)
    if d_aux is not None:
        d_aux = d_aux.contiguous(memory_format=torch.channels_last)
        if d_aux.stride() != d.stride():
            d_aux = torch.empty_like(d).copy_(d_aux)
    dw = torch.empty_like(weight) if out_format is None else torch.empty_like(weight, memory_format=out_format)
    pixels = nb * ho * wo
    if pixels == 0 or dw.numel() == 0:
        return dw.zero_()
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    # Split-K needs the K block size before autotuning picks one: use the largest in the config set (a
    # smaller BLOCK_K divides it), so a split boundary always falls on a K-block boundary.
    block_k_max = max(64, *(cfg.kwargs["BLOCK_K"] for cfg in _conv_wgrad_tuned.configs))
    if splits is None:
        tiles = triton.cdiv(c_out, 64) * triton.cdiv(c_in, 64) * kh * kw
        splits = 1 if interpreting() else choose_splits(tiles, pixels, block_k_max)
    per_split = triton.cdiv(triton.cdiv(pixels, splits), block_k_max) * block_k_max
    splits = triton.cdiv(pixels, per_split)
    atomic = splits > 1 and not deterministic
    taps = kh * kw
    if atomic:
        ws = torch.zeros((1, c_out, c_in, kh, kw), dtype=torch.float32, device=x.device)
    else:
        ws = torch.empty((splits, c_out, c_in, kh, kw), dtype=torch.float32, device=x.device)
    grid = lambda meta: (triton.cdiv(c_out, meta["BLOCK_M"]) * triton.cdiv(c_in, meta["BLOCK_N"]), taps, splits)
    fixed = fixed_launch("wgrad", x.dtype, two_prologues=bool(pro_x and pro_d))
    (_conv_wgrad_tuned if fixed is None else _conv_wgrad_kernel)[grid](
        x,
        x_aux if x_aux is not None else x,
        d,
        d_aux if d_aux is not None else d,
        ws,
        nb,
        c_in,
        h,
        w,
        c_out,
        ho,
        wo,
        *x.stride(),
        *d.stride(),
        kh,
        kw,
        stride[0],
        stride[1],
        padding[0],
        padding[1],
        per_split,
        *x_act,
        *d_act,
        PRO_X=pro_x,
        PRO_D=pro_d,
        ATOMIC=atomic,
        ALLOW_TF32=allow_tf32(x.dtype, dense),
        **(fixed or {}),
    )
    return reduce_splits(ws, dw, log_scale)
