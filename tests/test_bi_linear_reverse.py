"""bi_linear_reverse (the reverse direction of a bidirectional dense layer, through the same weight) on every
backend under test against the float64 eager reference: values and every gradient per dtype, leading shape and
layout, with and without the reverse scale; gradcheck in float64."""

from __future__ import annotations

import math

import linear_suite as suite
import pytest
import torch
from conftest import (
    ACTIVATIONS,
    BACKENDS_UNDER_TEST,
    backend_dtype_params,
    backend_params,
    compare_to_reference,
    make_arg,
)
from op_cases import ACTIVATION_IDS, INPUT_ACTIVATION_IDS, INPUT_ACTIVATIONS, linear_fns

import bvae_kernels as bk

REVERSE = True
pytestmark = pytest.mark.skipif(not BACKENDS_UNDER_TEST, reason="no fused backend on this machine")


@pytest.mark.parametrize(("backend", "dtype", "leading", "bias", "layout"), suite.reference_params())
def test_matches_reference(backend, dtype: torch.dtype, leading: tuple, bias: bool, layout: str) -> None:
    suite.matches_reference(REVERSE, backend, dtype, leading, bias, layout)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=ACTIVATION_IDS)
@pytest.mark.parametrize(("backend", "dtype"), backend_dtype_params(interp_dtypes=(torch.float32,)))
def test_activations(backend, dtype: torch.dtype, activation) -> None:
    suite.activations(REVERSE, backend, dtype, activation)


@pytest.mark.parametrize("backend", backend_params(float64=True))
def test_gradcheck_float64(backend) -> None:
    suite.gradcheck_float64(REVERSE, backend)


@pytest.mark.parametrize("backend", backend_params())
def test_double_backward(backend) -> None:
    suite.double_backward(REVERSE, backend)


@pytest.mark.parametrize("in_act", INPUT_ACTIVATIONS, ids=INPUT_ACTIVATION_IDS)
@pytest.mark.parametrize(("backend", "dtype"), backend_dtype_params(interp_dtypes=(torch.float32,)))
def test_input_activation(backend, dtype: torch.dtype, in_act) -> None:
    suite.input_activation(REVERSE, backend, dtype, in_act)


@pytest.mark.parametrize("backend", backend_params(float64=True))
def test_input_activation_gradcheck_float64(backend) -> None:
    suite.gradcheck_float64(REVERSE, backend, bk.GNoVa(0.05, 2.0, 0.5))


@pytest.mark.parametrize("backend", backend_params())
def test_input_activation_double_backward(backend) -> None:
    suite.double_backward(REVERSE, backend, input_activation="gnova")


@pytest.mark.parametrize("backend", backend_params())
def test_nonfinite_propagates(backend) -> None:
    suite.nonfinite_propagates(REVERSE, backend)


@pytest.mark.parametrize(("backend", "dtype"), backend_dtype_params())
def test_reverse_scale(backend, dtype: torch.dtype) -> None:
    """a(e^s z W + b) in one op: the value and the gradients of z, W, b and s."""
    ours, ref = linear_fns(REVERSE, backend=backend.name)
    args = suite.args_for(REVERSE, dtype, (2, 3), True, "contiguous", backend.device)
    args.append(make_arg([], dtype, scale=0.3, device=backend.device))
    errs = compare_to_reference(ours, ref, args, dtype, ["z", "weight", "bias", "log_scale"], backend.device)
    assert set(errs) == {"y", "dz", "dweight", "dbias", "dlog_scale"}


@pytest.mark.parametrize("backend", backend_params(float64=True))
def test_reverse_scale_gradcheck_float64(backend) -> None:
    ours, _ = linear_fns(REVERSE, bk.GNoVa(0.2, 1.5, 0.7), backend.name)
    dev = backend.device
    z = torch.randn(3, 4, dtype=torch.float64, device=dev, requires_grad=True)
    w = torch.randn(4, 5, dtype=torch.float64, device=dev, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, device=dev, requires_grad=True)
    s = torch.tensor(0.3, dtype=torch.float64, device=dev, requires_grad=True)
    assert torch.autograd.gradcheck(ours, (z, w, b, s))
    assert torch.autograd.gradgradcheck(ours, (z, w, b, s))


@pytest.mark.parametrize("backend", backend_params())
def test_hand_computed(backend) -> None:
    """A 1x2 @ 2x2 case checked against numbers computed by hand (not by the reference)."""
    w = torch.tensor([[1.0, 2.0], [3.0, -1.0]], device=backend.device)
    z = torch.tensor([[0.5, -1.0]], device=backend.device)
    # z W = [0.5 - 3, 1 + 1] = [-2.5, 2]; sigmoid
    y = bk.bi_linear_reverse(z, w, None, activation="sigmoid", backend=backend.name)
    torch.testing.assert_close(y.cpu(), torch.tensor([[1 / (1 + math.exp(2.5)), 1 / (1 + math.exp(-2.0))]]))
    # with s = ln 2: 2 z W = [-5, 4], identity
    s = torch.tensor(math.log(2.0), device=backend.device)
    y = bk.bi_linear_reverse(z, w, None, activation=None, log_scale=s, backend=backend.name)
    torch.testing.assert_close(y.cpu(), torch.tensor([[-5.0, 4.0]]))
