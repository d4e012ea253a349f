# ruff: noqa: ANN001, ANN201 - @triton.jit kernels take untyped tensors/scalars (annotations mean constexpr to Triton)
"""gnova on Triton: the elementwise G-NoVa forward and backward kernels and their launchers.

a(u) = alpha * u + beta * sigmoid(gamma * u);  a'(u) = alpha + beta * gamma * s * (1 - s),  s = sigmoid(gamma * u).
All arithmetic is fp32 (the helpers in _gemm.py). A dense tensor of any strides is one flat buffer here, and the
output keeps the input's strides (a non-dense input is made contiguous first), as the compiled op does.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._gemm import gnova_f32, gnova_grad_f32
from .configs import pointwise_block


@triton.jit
def _gnova_fwd_kernel(u_ptr, y_ptr, numel, alpha, beta, gamma, BLOCK: tl.constexpr):
    """y = a(u) over a flat dense buffer."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, gnova_f32(u, alpha, beta, gamma).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gnova_bwd_kernel(g_ptr, u_ptr, out_ptr, numel, alpha, beta, gamma, BLOCK: tl.constexpr):
    """du = g * a'(u) over flat dense buffers with one layout."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, (g * gnova_grad_f32(u, alpha, beta, gamma)).to(out_ptr.dtype.element_ty), mask=mask)


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
        _gnova_fwd_kernel[(triton.cdiv(numel, block),)](u, y, numel, alpha, beta, gamma, BLOCK=block)
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
        _gnova_bwd_kernel[(triton.cdiv(numel, block),)](grad, u, out, numel, alpha, beta, gamma, BLOCK=block)
    return out
