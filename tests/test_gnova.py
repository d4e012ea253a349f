"""gnova (the G-NoVa activation, elementwise) on every backend under test: against an independent float64 formula,
the eager reference per dtype and layout, extreme inputs, and never writing to its input."""

from __future__ import annotations

import pytest
import torch
from conftest import (
    BACKENDS_UNDER_TEST,
    LAYOUTS,
    backend_dtype_params,
    backend_params,
    compare_to_reference,
    make_arg,
)

import bvae_kernels as bk

pytestmark = pytest.mark.skipif(not BACKENDS_UNDER_TEST, reason="no fused backend on this machine")
PARAMS = [(0.1, 1.0, 1.0), (0.0, 1.0, 1.0), (1.0, 0.0, 1.0), (0.3, 2.0, 0.25)]


def gnova_formula(u: torch.Tensor, alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """The formula in float64, written independently of bvae_kernels (stable sigmoid by cases)."""
    u = u.double()
    gu = gamma * u
    e = torch.exp(-gu.abs())
    s = torch.where(gu >= 0, 1 / (1 + e), e / (1 + e))
    return alpha * u + beta * s


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("backend", backend_params(float64=True))
def test_float64_matches_formula(backend, params: tuple) -> None:
    u = torch.randn(1000, dtype=torch.float64).to(backend.device) * 10
    y = bk.gnova(u, *params, backend=backend.name)
    torch.testing.assert_close(y.cpu(), gnova_formula(u, *params).cpu(), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("backend", backend_params())
def test_float32_matches_formula(backend, params: tuple) -> None:
    u = (torch.randn(1000) * 10).to(backend.device)
    y = bk.gnova(u, *params, backend=backend.name)
    torch.testing.assert_close(y.cpu(), gnova_formula(u, *params).float().cpu(), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("backend", "dtype"), backend_dtype_params())
def test_values_and_grad(backend, dtype: torch.dtype, layout: str) -> None:
    u = make_arg([2, 3, 4, 33], dtype, layout, scale=4.0, device=backend.device)  # 33: not a vector-width multiple
    compare_to_reference(
        lambda u: bk.gnova(u, 0.1, 1.5, 0.8, backend=backend.name),
        lambda u: bk.gnova_reference(u, 0.1, 1.5, 0.8),
        [u],
        dtype,
        ["u"],
        backend.device,
    )


@pytest.mark.parametrize("backend", backend_params(float64=True))
def test_gradcheck_float64(backend) -> None:
    u = (torch.randn(3, 4, dtype=torch.float64, device=backend.device) * 3).requires_grad_()
    fn = lambda u: bk.gnova(u, 0.1, 1.5, 0.8, backend=backend.name)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (u,))
    assert torch.autograd.gradgradcheck(fn, (u,))


@pytest.mark.parametrize("backend", backend_params())
def test_second_derivative(backend) -> None:
    """create_graph=True through gnova: the second derivative is the formula's a''(u) (every backend)."""
    u = (torch.randn(50) * 3).to(backend.device).requires_grad_()
    (g,) = torch.autograd.grad(bk.gnova(u, 0.1, 1.5, 0.8, backend=backend.name).sum(), u, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), u)
    s = torch.sigmoid(0.8 * u.detach().double())
    torch.testing.assert_close(gg.double().cpu(), (1.5 * 0.64 * s * (1 - s) * (1 - 2 * s)).cpu(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend", backend_params())
def test_second_derivative_through_the_incoming_gradient(backend) -> None:
    """Double backward with a grad_output that itself depends on u (the usual case: gnova inside a network). Catches a
    backward whose create_graph path treats the incoming gradient as a constant (e.g. detaches it for one op family):
    test_second_derivative's .sum() hands in a constant gradient, and only the cpu backend has a gradgradcheck."""
    fn = lambda u: bk.gnova(u, 0.1, 1.5, 0.8, backend=backend.name)  # noqa: E731
    u = (torch.randn(50) * 3).to(backend.device).requires_grad_()
    u64 = u.detach().double().cpu()
    s = torch.sigmoid(0.8 * u64)
    a, da, dda = 0.1 * u64 + 1.5 * s, 0.1 + 1.5 * 0.8 * s * (1 - s), 1.5 * 0.64 * s * (1 - s) * (1 - 2 * s)
    (g,) = torch.autograd.grad(fn(u).square().sum() / 2, u, create_graph=True)  # g = a(u) a'(u)
    (gg,) = torch.autograd.grad(g.sum(), u)
    torch.testing.assert_close(gg.double().cpu(), da * da + a * dda, rtol=1e-4, atol=1e-6)
    v = torch.randn(50).to(backend.device).requires_grad_()
    (gv,) = torch.autograd.grad(fn(u), u, v, create_graph=True)  # gv = v a'(u), so d(sum gv)/dv = a'(u)
    (dv,) = torch.autograd.grad(gv.sum(), v, allow_unused=True)
    assert dv is not None, "the gradient of the backward with respect to grad_output is missing"
    torch.testing.assert_close(dv.double().cpu(), da, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", backend_params())
def test_stable_for_large_inputs(backend) -> None:
    """float32, |u| > 88: exp(-u) overflows; the result must still be the formula, finite, no NaN."""
    u = torch.tensor([-1e30, -1000.0, -100.0, -89.0, -88.5, 88.5, 89.0, 100.0, 1000.0, 1e30]).to(backend.device)
    for params in [(0.1, 1.0, 1.0), (0.0, 1.0, 1.0), (0.1, 1.0, 3.0)]:
        y = bk.gnova(u, *params, backend=backend.name)
        assert torch.isfinite(y).all(), (params, y)
        torch.testing.assert_close(y.cpu(), gnova_formula(u, *params).float().cpu(), rtol=1e-6, atol=1e-30)
    ur = u.clone().requires_grad_()
    bk.gnova(ur, 0.1, 1.0, 1.0, backend=backend.name).sum().backward()
    torch.testing.assert_close(ur.grad.cpu(), torch.full((10,), 0.1))  # sigmoid' underflows to 0 at both ends


@pytest.mark.parametrize("backend", backend_params())
def test_infinities_and_nan(backend) -> None:
    u = torch.tensor([float("inf"), float("-inf"), float("nan"), 0.0]).to(backend.device).requires_grad_()
    y = bk.gnova(u, 0.1, 1.0, 1.0, backend=backend.name)
    assert y[0] == float("inf") and y[1] == float("-inf") and y[2].isnan() and y[3] == 0.5
    y.sum().backward()
    assert u.grad[0] == pytest.approx(0.1) and u.grad[1] == pytest.approx(0.1)
    assert u.grad[2].isnan()
    assert u.grad[3] == pytest.approx(0.1 + 0.25)
    sig = bk.gnova(u.detach(), 0.0, 1.0, 1.0, backend=backend.name)  # sigmoid: no 0 * inf = NaN at the ends
    assert sig[0] == 1.0 and sig[1] == 0.0 and sig[2].isnan()
    ident = bk.gnova(u.detach(), 1.0, 0.0, 1.0, backend=backend.name)
    assert ident[0] == float("inf") and ident[1] == float("-inf") and ident[2].isnan()
    uc = u.detach().clone().requires_grad_()  # a constant slope: a'(u) = alpha everywhere, NaN included
    bk.gnova(uc, 0.5, 0.0, 1.0, backend=backend.name).sum().backward()
    assert torch.equal(uc.grad.cpu(), torch.full((4,), 0.5))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced", "transposed", "scalar"])
@pytest.mark.parametrize("backend", backend_params())
def test_any_shape_and_layout(backend, layout: str) -> None:
    if layout == "scalar":
        u = torch.tensor(0.7, device=backend.device)
    else:
        u = make_arg([2, 3, 4, 5], torch.float32, layout, device=backend.device).make(torch.float32)[1].detach()
    y = bk.gnova(u, backend=backend.name)
    assert y.shape == u.shape
    torch.testing.assert_close(y.cpu(), gnova_formula(u, 0.1, 1.0, 1.0).float().cpu(), rtol=1e-6, atol=1e-7)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("backend", "dtype"), backend_dtype_params())
def test_never_writes_its_input(backend, dtype: torch.dtype) -> None:
    """The op is declared non-mutating: its input's bits (a signaling NaN included) come back unchanged."""
    u = torch.randn(64, dtype=dtype).to(backend.device)
    bits = u.view(torch.int16 if dtype.itemsize == 2 else torch.int32)
    bits[3] = 0x7D00 if dtype == torch.float16 else (0x7F81 if dtype == torch.bfloat16 else 0x7F800001)  # sNaN
    before = u.clone()
    u.requires_grad_()
    y = bk.gnova(u, 0.1, 1.0, 1.0, backend=backend.name)
    y.backward(torch.ones_like(y))
    assert torch.equal(u.detach().view(bits.dtype), before.view(bits.dtype))
