"""bi_linear (the forward direction of a bidirectional dense layer) on every backend under test against the
float64 eager reference: values and every gradient per dtype, leading shape and layout; gradcheck in float64."""

from __future__ import annotations

import math

import linear_suite as suite
import pytest
import torch
from conftest import ACTIVATIONS, BACKENDS_UNDER_TEST, backend_dtype_params, backend_params
from op_cases import ACTIVATION_IDS, INPUT_ACTIVATION_IDS, INPUT_ACTIVATIONS

import bvae_kernels as bk

REVERSE = False
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


@pytest.mark.parametrize("backend", backend_params())
def test_hand_computed(backend) -> None:
    """A 1x2 @ 2x2 case checked against numbers computed by hand (not by the reference)."""
    w = torch.tensor([[1.0, 2.0], [3.0, -1.0]], device=backend.device)
    x = torch.tensor([[0.5, -1.0]], device=backend.device)
    # x W^T = [0.5 - 2, 1.5 + 1] = [-1.5, 2.5]; identity + bias [1, -1] -> [-0.5, 1.5]
    b = torch.tensor([1.0, -1.0], device=backend.device)
    y = bk.bi_linear(x, w, b, activation="identity", backend=backend.name)
    torch.testing.assert_close(y.cpu(), torch.tensor([[-0.5, 1.5]]))
    # sigmoid: [1 / (1 + e^1.5), 1 / (1 + e^-2.5)] without the bias
    y = bk.bi_linear(x, w, None, activation="sigmoid", backend=backend.name)
    torch.testing.assert_close(y.cpu(), torch.tensor([[1 / (1 + math.exp(1.5)), 1 / (1 + math.exp(-2.5))]]))
