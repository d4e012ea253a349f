"""The CPU kernels' conv contraction (csrc/bvae.h, conv_contraction): below about half a million multiply-adds
per call a float or double conv calls ATen's im2col + GEMM convolution directly, skipping at::convolution's
per-call backend choice (oneDNN's setup costs several times the arithmetic on small tensors); larger, grouped,
dilated or reduced-precision convs go through at::convolution; a direct result holding a NaN is computed again
through at::convolution. Each case checks which ATen ops ran (the profiler sees the dispatcher calls inside the
op) and that the result equals the float64 reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import rel_err
from torch.profiler import ProfilerActivity, profile

import bvae_kernels as bk

DIRECT = {"aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward", "aten::slow_conv_transpose2d"}
ATEN = {"aten::convolution", "aten::convolution_backward"}

# name: (batch, C_in, C_out, size, kernel, stride, dtype, dilation, groups, expected path)
CASES = {
    "small strided (oneDNN in at::convolution)": (2, 4, 8, 14, 4, 2, torch.float32, 1, 1, "direct"),
    "small float64": (2, 4, 8, 9, 3, 1, torch.float64, 1, 1, "direct"),
    "large": (16, 32, 64, 14, 3, 1, torch.float32, 1, 1, "aten"),
    "small dilated": (2, 4, 8, 14, 3, 1, torch.float32, 2, 1, "aten"),
    "small grouped": (2, 4, 8, 14, 3, 1, torch.float32, 1, 2, "aten"),
    "small bfloat16": (2, 4, 8, 14, 3, 1, torch.bfloat16, 1, 1, "aten"),
}


def _aten_ops(fn) -> set[str]:  # noqa: ANN001
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {event.key for event in prof.key_averages()}


@pytest.mark.parametrize("reverse", [False, True], ids=["bi_conv2d", "bi_conv2d_reverse"])
@pytest.mark.parametrize("case", list(CASES))
def test_contraction_path_and_result(case: str, reverse: bool) -> None:
    n, c_in, c_out, size, k, stride, dtype, dilation, groups, path = CASES[case]
    g = torch.Generator().manual_seed(0)
    w = torch.randn(c_out, c_in // groups, k, k, generator=g) * 0.2
    geometry = dict(stride=stride, padding=1, dilation=dilation, groups=groups)
    if reverse:  # z has the forward's output shape
        side = (size + 2 - dilation * (k - 1) - 1) // stride + 1
        inp = torch.randn(n, c_out, side, side, generator=g)
        op, reference_op = bk.bi_conv2d_reverse, F.conv_transpose2d
    else:
        inp = torch.randn(n, c_in, size, size, generator=g)
        op, reference_op = bk.bi_conv2d, F.conv2d

    def fused(i: torch.Tensor, wt: torch.Tensor) -> torch.Tensor:
        return op(i, wt, None, activation=None, **geometry)

    def reference(i: torch.Tensor, wt: torch.Tensor) -> torch.Tensor:
        return reference_op(i, wt, None, **geometry)

    leaves = [t.to(dtype).requires_grad_() for t in (inp, w)]
    outs: list[torch.Tensor] = []

    def run() -> None:
        y = fused(*leaves)
        outs.extend([y, *torch.autograd.grad(y, leaves, torch.ones_like(y))])

    ops = _aten_ops(run)
    if path == "direct":
        assert ops & DIRECT and not ops & ATEN, f"{case}: expected the direct path, ran {sorted(ops & (DIRECT | ATEN))}"
    else:
        assert ops & ATEN, f"{case}: expected at::convolution, ran {sorted(ops & (DIRECT | ATEN))}"

    ref_leaves = [t.double().requires_grad_() for t in (inp, w)]
    y64 = reference(*ref_leaves)
    refs = [y64, *torch.autograd.grad(y64, ref_leaves, torch.ones_like(y64))]
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2}[dtype]
    for name, out, ref in zip(("output", "d input", "d weight"), outs, refs, strict=True):
        assert out.dtype == dtype and out.shape == ref.shape, name
        assert rel_err(out.double(), ref) <= tol, f"{case}: {name} relative error {rel_err(out.double(), ref):.2e}"


@pytest.mark.parametrize("where", ["weight", "incoming gradient"])
def test_a_nan_from_im2col_padding_is_recomputed_through_at_convolution(where: str) -> None:
    """An inf weight (forward) or incoming gradient (weight gradient) meets im2col's zero padding: the direct
    result has NaNs at border pixels, so the call is computed again through at::convolution, whose result is
    finite there (it skips padded taps at this size)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 6, generator=g).requires_grad_()
    w = torch.randn(4, 3, 3, 3, generator=g) * 0.3
    if where == "weight":
        w[0, 0, 0, 0] = float("inf")
    w.requires_grad_()
    grads: list[torch.Tensor] = []

    def run() -> None:
        y = bk.bi_conv2d(x, w, None, stride=1, padding=1, activation=None)
        grad = torch.ones_like(y)
        if where == "incoming gradient":
            grad[0, 0, 0, 0] = float("inf")
        grads.append(y)
        grads.extend(torch.autograd.grad(y, (x, w), grad))

    ops = _aten_ops(run)
    assert ops & DIRECT and ops & ATEN, sorted(ops & (DIRECT | ATEN))
    ref = F.conv2d(x.detach(), w.detach(), None, 1, 1)
    checked = grads[0] if where == "weight" else grads[2]
    assert not torch.isnan(checked).any(), f"{where}: a NaN left in {'the output' if where == 'weight' else 'dW'}"
    if where == "weight":
        assert torch.equal(torch.isinf(grads[0]), torch.isinf(ref))
