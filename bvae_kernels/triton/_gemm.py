# ruff: noqa: ANN001, ANN201 - @triton.jit kernels take untyped tensors/scalars (annotations mean constexpr to Triton)
"""Shared Triton code of the GEMM-like kernels: G-NoVa in fp32, operand loads with their prologue, the MMA, the
fused epilogue and the program-to-tile map. Everything here is inlined into the kernels that call it.

Prologues (what a kernel does to an operand as it loads it; passed as the PROLOGUE / PRO_X / PRO_D constexpr):
  PRO_NONE       load as is
  PRO_ACT        apply a() on load: the operand is a pre-activation (a fused chain reads the previous layer's u)
  PRO_ACT_GRAD   multiply by a'(aux) recomputed from aux = u: the operand is an incoming gradient g, and g * a'(u)
                 (= du) is never written to memory
  PRO_SLOPE      multiply by alpha: the same for an activation with a constant slope (a'(u) = alpha; no aux read)
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

PRO_NONE = tl.constexpr(0)
PRO_ACT = tl.constexpr(1)
PRO_ACT_GRAD = tl.constexpr(2)
PRO_SLOPE = tl.constexpr(3)


@triton.jit
def sigmoid_f32(x):
    """Stable logistic: exp(-|x|) never overflows; inf gives 1/0, NaN stays NaN."""
    e = tl.exp(-tl.abs(x))
    r = 1.0 / (1.0 + e)
    return tl.where(x >= 0, r, e * r)


@triton.jit
def gnova_f32(u, alpha, beta, gamma):
    """a(u) = alpha * u + beta * sigmoid(gamma * u) in fp32; alpha * u is skipped when alpha == 0 (no 0 * inf)."""
    s = beta * sigmoid_f32(gamma * u)
    return tl.where(alpha != 0.0, alpha * u + s, s)


@triton.jit
def gnova_grad_f32(u, alpha, beta, gamma):
    """a'(u) = alpha + beta * gamma * s * (1 - s) in fp32; exactly alpha when beta * gamma == 0 (even at u = NaN)."""
    bg = beta * gamma
    s = sigmoid_f32(gamma * u)
    return tl.where(bg != 0.0, alpha + bg * (s * (1.0 - s)), alpha)


@triton.jit
def load_operand(ptr, aux_ptr, off, mask, p_alpha, p_beta, p_gamma, PROLOGUE: tl.constexpr):
    """Loads a tile and applies the prologue; masked (padding) entries are exactly 0 after it."""
    a = tl.load(ptr + off, mask=mask, other=0.0)
    if PROLOGUE == PRO_ACT:
        a = tl.where(mask, gnova_f32(a.to(tl.float32), p_alpha, p_beta, p_gamma), 0.0).to(ptr.dtype.element_ty)
    elif PROLOGUE == PRO_ACT_GRAD:
        aux = tl.load(aux_ptr + off, mask=mask, other=0.0).to(tl.float32)
        a = (a.to(tl.float32) * gnova_grad_f32(aux, p_alpha, p_beta, p_gamma)).to(ptr.dtype.element_ty)
    elif PROLOGUE == PRO_SLOPE:
        a = (a.to(tl.float32) * p_alpha).to(ptr.dtype.element_ty)
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
def has_nan(acc):
    """Whether a tile holds a NaN: one reduction per program, after its main loop."""
    return tl.max((acc != acc).to(tl.int32)) > 0


@triton.jit(noinline=True)
def weight_nonfinite(w_ptr, pid_n, N, K, KH, KW, sn, sk, sh, sw, BLOCK_N: tl.constexpr):
    """Whether the weight columns of program pid_n (N of them in all, K channels deep, KH x KW taps) hold an inf or
    a NaN. Called only for a tile whose sum made a NaN: a NaN from the input alone needs no exact path (a padded
    tap multiplies a zero by the weight, and only a non-finite weight makes that a NaN)."""
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    bad = tl.zeros((BLOCK_N,), dtype=tl.int32)
    for tap in range(0, KH * KW):
        base = offs_n * sn + (tap // KW) * sh + (tap % KW) * sw
        for c in tl.range(0, K, num_stages=1):
            v = tl.load(w_ptr + base + c * sk, mask=n_mask, other=0.0).to(tl.float32)
            bad = tl.maximum(bad, (v * 0.0 != 0.0).to(tl.int32))  # v * 0 is NaN exactly for an inf or a NaN
    return tl.max(bad) > 0


@triton.jit
def gemm_epilogue(
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
    HAS_SCALE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    APPLY_ACT: tl.constexpr,
    STORE_U: tl.constexpr,
):
    """u = e^s * acc + bias (e^s read from the one-element log-scale tensor: no host sync), store u, y = a(u)
    (or u), cast and store; out_row: per-pixel offsets, channel stride syc."""
    if HAS_SCALE:
        acc = acc * tl.exp(tl.load(scale_ptr).to(tl.float32))
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


def allow_tf32(dtype: torch.dtype, dense: bool = False) -> bool:
    """fp32 operands use tf32 under the flag that governs the ATen op a kernel replaces: cuDNN's for the convs
    (torch.backends.cudnn.allow_tf32, on by default, as for F.conv2d), matmul's for the dense layers (off)."""
    if dtype != torch.float32:
        return False
    return bool(torch.backends.cuda.matmul.allow_tf32 if dense else torch.backends.cudnn.allow_tf32)


def act_args(act: tuple[float, float, float] | None) -> tuple[float, float, float]:
    """An epilogue's activation parameters; None (no activation) passes the identity's."""
    return act if act is not None else (1.0, 0.0, 1.0)


def grad_prologue(u: torch.Tensor | None, act: tuple[float, float, float]) -> int:
    """The prologue that turns an incoming gradient into du = g * a'(u): PRO_SLOPE without u (constant slope)."""
    return PRO_SLOPE.value if u is None or act[1] * act[2] == 0 else PRO_ACT_GRAD.value
