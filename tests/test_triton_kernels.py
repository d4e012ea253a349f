"""The Triton kernels called through their launchers, against float64 eager torch on the same rounded inputs.

Runs under TRITON_INTERPRET=1 on CPU tensors (fp32, fp16) or on a GPU (plus bf16). Each case exercises
one kernel family: conv (forward direction, with and without prologues), conv-transpose (reverse
direction, all stride phases, output_padding), wgrad (both directions, split-K deterministic and atomic),
the bias-gradient reduction and the pointwise G-NoVa kernels.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TOL, assert_rel, rel_err
from conftest_triton import DEVICE, DTYPES, skip_unless_runnable

skip_unless_runnable()

from bvae_kernels.activation import gnova_grad_reference, gnova_reference  # noqa: E402
from bvae_kernels.triton import gnova, reductions  # noqa: E402
from bvae_kernels.triton._gemm import PRO_ACT, PRO_ACT_GRAD, PRO_SLOPE  # noqa: E402
from bvae_kernels.triton.bi_conv2d import conv2d  # noqa: E402
from bvae_kernels.triton.bi_conv2d_reverse import conv_transpose2d  # noqa: E402
from bvae_kernels.triton.wgrad import wgrad  # noqa: E402

ACT = (0.1, 1.0, 1.0)
ACT2 = (0.05, 2.0, 0.5)

# (n, c_in, c_out, h, w, k, stride, padding): stride 1/2, padding 0/1/2, kernel 1/3/4/5, odd sizes, batch 1
CASES = [
    (2, 3, 5, 7, 9, 3, 1, 1),
    (1, 4, 6, 8, 8, 4, 2, 1),
    (2, 5, 4, 9, 7, 3, 2, 0),
    (1, 3, 7, 6, 5, 1, 1, 0),
    (2, 2, 3, 7, 7, 5, 2, 2),
    (1, 17, 33, 5, 6, 3, 1, 1),  # channel counts past one block
]
IDS = [f"n{c[0]}c{c[1]}-{c[2]}_{c[3]}x{c[4]}_k{c[5]}s{c[6]}p{c[7]}" for c in CASES]


def rnd(shape: tuple, dtype: torch.dtype, scale: float = 1.0) -> torch.Tensor:
    """Random values rounded to dtype, on the test device."""
    return (torch.randn(shape, dtype=torch.float64) * scale).to(dtype).to(DEVICE)


def d64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().double().cpu()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_conv_forward_epilogue(case: tuple, dtype: torch.dtype):
    n, ci, co, h, w, k, s, p = case
    x, weight, bias = rnd((n, ci, h, w), dtype), rnd((co, ci, k, k), dtype, 0.5), rnd((co,), dtype)
    y, u = conv2d(x, weight, bias, (s, s), (p, p), ACT2)
    u_ref = F.conv2d(d64(x), d64(weight), d64(bias), s, p)
    assert_rel(u, u_ref, TOL[dtype], "u")
    assert_rel(y, gnova_reference(u_ref, *ACT2), TOL[dtype], "y")
    assert y.is_contiguous()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_conv_prologues(dtype: torch.dtype):
    """PRO_ACT applies a() to the input on load (padding stays 0); PRO_ACT_GRAD multiplies by a'(aux); PRO_SLOPE by
    alpha."""
    n, ci, co, h, w, k, s, p = 2, 3, 4, 6, 7, 3, 2, 1
    x, aux, weight = rnd((n, ci, h, w), dtype), rnd((n, ci, h, w), dtype), rnd((co, ci, k, k), dtype, 0.5)
    y, u = conv2d(x, weight, None, (s, s), (p, p), None, prologue=PRO_ACT.value, prologue_act=ACT, store_u=False)
    assert u is None
    assert_rel(y, F.conv2d(gnova_reference(d64(x), *ACT), d64(weight), None, s, p), TOL[dtype], "prologue a()")
    y, _ = conv2d(
        x, weight, None, (s, s), (p, p), None, prologue=PRO_ACT_GRAD.value, aux=aux, prologue_act=ACT2, store_u=False
    )
    ref = F.conv2d(d64(x) * gnova_grad_reference(d64(aux), *ACT2), d64(weight), None, s, p)
    assert_rel(y, ref, TOL[dtype], "prologue a'()")
    y, _ = conv2d(x, weight, None, (s, s), (p, p), None, prologue=PRO_SLOPE.value, prologue_act=ACT2, store_u=False)
    assert_rel(y, F.conv2d(d64(x) * ACT2[0], d64(weight), None, s, p), TOL[dtype], "prologue alpha")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_conv_transpose_forward(case: tuple, dtype: torch.dtype):
    n, ci, co, h, w, k, s, p = case
    op = (s - 1) if k != 4 else 0  # output_padding where the stride allows it
    z, weight, bias = rnd((n, co, h, w), dtype), rnd((co, ci, k, k), dtype, 0.5), rnd((ci,), dtype)
    u_ref = F.conv_transpose2d(d64(z), d64(weight), d64(bias), s, p, op)
    y, u = conv_transpose2d(z, weight, bias, (s, s), (p, p), tuple(u_ref.shape[2:]), ACT)
    assert_rel(u, u_ref, TOL[dtype], "u")
    assert_rel(y, gnova_reference(u_ref, *ACT), TOL[dtype], "y")


def test_conv_transpose_empty_phase():
    """1x1 kernel, stride 2: odd output rows/cols receive no tap (only bias and a(bias))."""
    z, weight, bias = rnd((1, 3, 2, 2), torch.float32), rnd((3, 2, 1, 1), torch.float32), rnd((2,), torch.float32)
    u_ref = F.conv_transpose2d(d64(z), d64(weight), d64(bias), 2, 0, 1)
    y, u = conv_transpose2d(z, weight, bias, (2, 2), (0, 0), tuple(u_ref.shape[2:]), ACT)
    assert_rel(u, u_ref, TOL[torch.float32], "u")


# The split cases need enough pixels for several K splits: a split holds a multiple of 64 pixels (the largest
# BLOCK_K), so 2x12x12 = 288 output pixels give 3 splits where 3 are asked for, 2x10x10 = 200 give 2 (126 pixels
# would give one).
SPLIT_CASES = [
    pytest.param(CASES[0], None, True, id="s1p1-auto"),
    pytest.param((2, 3, 4, 12, 12, 3, 1, 1), 3, True, id="k3s1-12x12-split3-det"),
    pytest.param((2, 3, 5, 10, 10, 3, 1, 1), 2, False, id="k3s1-10x10-split2-atomic"),
    pytest.param(CASES[4], 1, True, id="k5s2p2"),
]


def _splits_used(pixels: int, splits: int | None) -> int:
    """The split count wgrad() ends up with (it rounds a split to whole 64-pixel K blocks)."""
    if splits is None:
        return 1
    cdiv = lambda a, b: (a + b - 1) // b  # noqa: E731
    per_split = cdiv(cdiv(pixels, splits), 64) * 64
    return cdiv(pixels, per_split)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("case", "splits", "deterministic"), SPLIT_CASES)
def test_wgrad_both_directions(case: tuple, splits: int | None, deterministic: bool, dtype: torch.dtype):
    n, ci, co, h, w, k, s, p = case
    x, weight = rnd((n, ci, h, w), dtype), rnd((co, ci, k, k), dtype, 0.5)
    u = F.conv2d(x.float(), weight.float(), None, s, p).to(dtype)
    if splits and splits > 1:
        assert _splits_used(u.shape[0] * u.shape[2] * u.shape[3], splits) == splits, "the case must really split"
    g = rnd(tuple(u.shape), dtype)
    du = d64(g) * gnova_grad_reference(d64(u), *ACT)
    w64 = d64(weight).requires_grad_()
    (dw_ref,) = torch.autograd.grad(F.conv2d(d64(x), w64, None, s, p), w64, du)
    kw = {"splits": splits, "deterministic": deterministic}
    dw = wgrad(x, g, weight, (s, s), (p, p), pro_d=PRO_ACT_GRAD.value, d_aux=u, d_act=ACT, **kw)
    assert dw.dtype == dtype and dw.shape == weight.shape
    assert_rel(dw, dw_ref, TOL[dtype], "dW forward direction")
    # reverse direction: X = du on the reverse output (x's shape), D = z; with a reverse scale e^s
    op = (h + 2 * p - k) % s
    z = rnd(tuple(u.shape), dtype)
    u_r = F.conv_transpose2d(z.float(), weight.float(), None, s, p, op).to(dtype)
    g_r = rnd(tuple(u_r.shape), dtype)
    du_r = d64(g_r) * gnova_grad_reference(d64(u_r), *ACT)
    w64 = d64(weight).requires_grad_()
    (dw_r_ref,) = torch.autograd.grad(F.conv_transpose2d(d64(z), w64, None, s, p, op), w64, du_r)
    log_scale = torch.tensor(0.4, device=DEVICE)
    dw_r = wgrad(
        g_r, z, weight, (s, s), (p, p), pro_x=PRO_ACT_GRAD.value, x_aux=u_r, x_act=ACT, log_scale=log_scale, **kw
    )
    assert_rel(dw_r, dw_r_ref * torch.exp(torch.tensor(0.4, dtype=torch.float64)), TOL[dtype], "dW reverse direction")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_wgrad_chained_input_reads_both_operands_through_their_own_activation(dtype: torch.dtype):
    """A chained layer's weight gradient: the input is the previous pre-activation, read through a_in (ACT2), and
    the gradient through a'(u) (ACT), in one call with a different activation per operand, both directions."""
    n, ci, co, h, k, s, p = 2, 5, 6, 9, 4, 2, 1
    x_pre, weight = rnd((n, ci, h, h), dtype), rnd((co, ci, k, k), dtype, 0.5)
    x_eff = gnova_reference(d64(x_pre), *ACT2).to(dtype)  # what the forward's prologue fed the contraction
    u = F.conv2d(x_eff.float(), weight.float(), None, s, p).to(dtype)
    g = rnd(tuple(u.shape), dtype)
    du = d64(g) * gnova_grad_reference(d64(u), *ACT)
    w64 = d64(weight).requires_grad_()
    (ref,) = torch.autograd.grad(F.conv2d(d64(x_eff), w64, None, s, p), w64, du)
    dw = wgrad(x_pre, g, weight, (s, s), (p, p), pro_x=PRO_ACT.value, x_act=ACT2, pro_d=PRO_ACT_GRAD.value, d_aux=u,
               d_act=ACT)  # fmt: skip
    assert_rel(dw, ref, TOL[dtype], "dW forward direction, chained input")
    z_pre = rnd(tuple(u.shape), dtype)
    z_eff = gnova_reference(d64(z_pre), *ACT2).to(dtype)
    u_r = F.conv_transpose2d(z_eff.float(), weight.float(), None, s, p, 1).to(dtype)
    g_r = rnd(tuple(u_r.shape), dtype)
    du_r = d64(g_r) * gnova_grad_reference(d64(u_r), *ACT)
    w64 = d64(weight).requires_grad_()
    (ref_r,) = torch.autograd.grad(F.conv_transpose2d(d64(z_eff), w64, None, s, p, 1), w64, du_r)
    dw_r = wgrad(g_r, z_pre, weight, (s, s), (p, p), pro_x=PRO_ACT_GRAD.value, x_aux=u_r, x_act=ACT,
                 pro_d=PRO_ACT.value, d_act=ACT2)  # fmt: skip
    assert_rel(dw_r, ref_r, TOL[dtype], "dW reverse direction, chained input")


def test_wgrad_deterministic_is_bitwise_repeatable():
    x, weight = rnd((2, 3, 9, 9), torch.float32), rnd((4, 3, 3, 3), torch.float32)
    g = rnd((2, 4, 9, 9), torch.float32)
    runs = [wgrad(x, g, weight, (1, 1), (1, 1), splits=4, deterministic=True) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


def test_wgrad_atomic_splits_combine_with_one_atomic_add():
    """The atomic split-K path must add each split's partial with tl.atomic_add and never read-modify-write ws.

    The interpreter runs the programs one after another, so a plain `tl.store(ws, tl.load(ws) + acc)` gives the
    right sum there (test_wgrad_both_directions' atomic case passes on it) and only races on a GPU; this reads the
    kernel's source instead. (A plain `tl.store(ws, acc)`, last split wins, fails the atomic case itself.)"""
    import ast
    import inspect

    import bvae_kernels.triton.wgrad as wgrad_module

    tree = ast.parse(inspect.getsource(wgrad_module))
    branches = [n for n in ast.walk(tree) if isinstance(n, ast.If) and ast.unparse(n.test) == "ATOMIC"]
    assert len(branches) >= 2, "the kernel's store and its exact path's store each have an ATOMIC branch"
    for branch in branches:
        calls = [ast.unparse(n) for stmt in branch.body for n in ast.walk(stmt) if isinstance(n, ast.Call)]
        on_ws = [c for c in calls if "ws_ptr" in c]
        assert any(c.startswith("tl.atomic_add(ws_ptr") for c in on_ws), calls
        assert not any(c.startswith(("tl.load(", "tl.store(")) for c in on_ws), on_ws


def test_wgrad_channels_last_weight():
    """dW comes back in the weight's own memory format."""
    x = rnd((1, 4, 6, 6), torch.float32)
    weight = rnd((5, 4, 3, 3), torch.float32).to(memory_format=torch.channels_last)
    g = rnd((1, 5, 6, 6), torch.float32)
    dw = wgrad(x, g, weight, (1, 1), (1, 1))
    assert dw.stride() == weight.stride()
    w64 = d64(weight).requires_grad_()
    (ref,) = torch.autograd.grad(F.conv2d(d64(x), w64, None, 1, 1), w64, d64(g))
    assert_rel(dw, ref, TOL[torch.float32], "dW")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bias_grad(dtype: torch.dtype):
    g, u = rnd((3, 5, 7, 6), dtype), rnd((3, 5, 7, 6), dtype, 3.0)
    ref = (d64(g) * gnova_grad_reference(d64(u), *ACT2)).sum((0, 2, 3))
    assert_rel(reductions.bias_grad(g, u, *ACT2), ref, TOL[dtype], "db")
    g2, u2 = rnd((9, 70), dtype), rnd((9, 70), dtype)  # linear rows, > one channel block
    ref2 = (d64(g2) * gnova_grad_reference(d64(u2), *ACT)).sum(0)
    assert_rel(reductions.bias_grad(g2, u2, *ACT), ref2, TOL[dtype], "db rows")
    assert_rel(reductions.bias_grad(g, None, 0.5, 0.0, 1.0), d64(g).sum((0, 2, 3)) * 0.5, TOL[dtype], "db slope")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gnova_pointwise(dtype: torch.dtype):
    u = rnd((4, 3, 5, 7), dtype, 4.0).to(memory_format=torch.channels_last)
    g = rnd((4, 3, 5, 7), dtype)
    for params in (ACT, ACT2, (0.0, 1.0, 1.0), (1.0, 0.0, 1.0)):
        y = gnova.gnova_forward(u, *params)
        assert y.stride() == u.stride()
        assert_rel(y, gnova_reference(d64(u), *params), TOL[dtype], f"a(u) {params}")
        du = gnova.gnova_backward(g, u, *params)
        assert_rel(du, d64(g) * gnova_grad_reference(d64(u), *params), TOL[dtype], f"a'(u) {params}")


def test_gnova_extremes():
    """No overflow for |u| > 88, no NaN from +-inf (sigmoid with alpha = 0 included)."""
    u = torch.tensor([-1e4, -100.0, -89.0, 0.0, 89.0, 100.0, 1e4, float("inf"), float("-inf")]).to(DEVICE)
    for params in (ACT, (0.0, 1.0, 1.0)):
        y = gnova.gnova_forward(u, *params)
        assert rel_err(y, gnova_reference(d64(u), *params)) <= 1e-6
        du = gnova.gnova_backward(torch.ones_like(u), u, *params)
        assert rel_err(du, gnova_grad_reference(d64(u), *params)) <= 1e-6
