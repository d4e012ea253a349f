"""bi_conv2d (the forward direction of a bidirectional conv) on every backend under test against the float64
eager reference: values and every gradient, per dtype and layout; gradcheck where the backend has float64."""

from __future__ import annotations

import conv_suite as suite
import pytest
import torch
from conftest import ACTIVATIONS, BACKENDS_UNDER_TEST, backend_dtype_params, backend_params
from op_cases import ACTIVATION_IDS, INPUT_ACTIVATION_IDS, INPUT_ACTIVATIONS, ConvCase

import bvae_kernels as bk

REVERSE = False
pytestmark = pytest.mark.skipif(not BACKENDS_UNDER_TEST, reason="no fused backend on this machine")


@pytest.mark.parametrize(("backend", "dtype", "case", "layout"), suite.reference_params(REVERSE))
def test_matches_reference(backend, dtype: torch.dtype, case: ConvCase, layout: str) -> None:
    suite.matches_reference(REVERSE, backend, dtype, case, layout)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=ACTIVATION_IDS)
@pytest.mark.parametrize(("backend", "dtype"), backend_dtype_params(interp_dtypes=(torch.float32,)))
def test_activations(backend, dtype: torch.dtype, activation) -> None:
    suite.activations(REVERSE, backend, dtype, activation)


@pytest.mark.parametrize(
    ("case", "activation"),
    [
        pytest.param(ConvCase(1, 2, 2, 4, 5, 3, 1, 1), "gnova", id="k3s1p1"),
        pytest.param(ConvCase(2, 2, 2, 3, 4, 1, 1, 0, bias=False), "gnova", id="k1-nobias"),
        pytest.param(ConvCase(1, 2, 3, 5, 4, 4, 2, 1), ACTIVATIONS[-1], id="k4s2-custom-act"),
        pytest.param(ConvCase(1, 4, 6, 7, 6, 3, 2, 2, dilation=2, groups=2), "gnova", id="k3s2-dilated-grouped"),
    ],
)
@pytest.mark.parametrize("backend", backend_params(float64=True))
def test_gradcheck_float64(backend, case: ConvCase, activation) -> None:
    suite.gradcheck_float64(REVERSE, backend, case, activation)


@pytest.mark.parametrize("backend", backend_params())
def test_double_backward(backend) -> None:
    suite.double_backward(REVERSE, backend)


@pytest.mark.parametrize("in_act", INPUT_ACTIVATIONS, ids=INPUT_ACTIVATION_IDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize(("backend", "dtype"), backend_dtype_params(interp_dtypes=(torch.float32,)))
def test_input_activation(backend, dtype: torch.dtype, layout: str, in_act) -> None:
    suite.input_activation(REVERSE, backend, dtype, layout, in_act)


@pytest.mark.parametrize("backend", backend_params(float64=True))
def test_input_activation_gradcheck_float64(backend) -> None:
    suite.gradcheck_float64(REVERSE, backend, ConvCase(1, 2, 3, 5, 4, 3, 2, 1), "gnova", bk.GNoVa(0.05, 2.0, 0.5))


@pytest.mark.parametrize("backend", backend_params())
def test_input_activation_double_backward(backend) -> None:
    suite.double_backward(REVERSE, backend, input_activation="gnova")


@pytest.mark.parametrize("x_layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("backend", backend_params())
def test_channels_last_weight(backend, x_layout: str) -> None:
    suite.channels_last_weight(REVERSE, backend, x_layout)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("backend", backend_params())
def test_output_layout_follows_input(backend, fmt: torch.memory_format) -> None:
    suite.output_layout_follows_input(REVERSE, backend, fmt)


@pytest.mark.parametrize(("backend", "dtype"), backend_dtype_params())
def test_empty_batch(backend, dtype: torch.dtype) -> None:
    suite.empty_batch(REVERSE, backend, dtype)


@pytest.mark.parametrize("backend", backend_params())
def test_unbatched(backend) -> None:
    suite.unbatched(REVERSE, backend)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("backend", backend_params())
def test_nonfinite_inputs_propagate(backend, bad: float) -> None:
    suite.nonfinite_inputs_propagate(REVERSE, backend, bad)


def test_strided_forward_then_reverse_restores_the_shape() -> None:
    """k=3, s=2, p=1: 28 -> 14 forward; the reverse with output_padding=1 gives back 28."""
    w = torch.randn(8, 1, 3, 3)
    y = bk.bi_conv2d(torch.randn(2, 1, 28, 28), w, stride=2, padding=1)
    assert y.shape == (2, 8, 14, 14)
    assert bk.bi_conv2d_reverse(y, w, stride=2, padding=1, output_padding=1).shape == (2, 1, 28, 28)
