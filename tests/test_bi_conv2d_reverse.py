"""bi_conv2d_reverse (the reverse direction of a bidirectional conv, through the forward layer's own weight) on
every backend under test against the float64 eager reference: values and every gradient, per dtype and layout,
with and without the reverse scale; gradcheck where the backend has float64."""

from __future__ import annotations

import conv_suite as suite
import pytest
import torch
from conftest import (
    ACTIVATIONS,
    BACKENDS_UNDER_TEST,
    TOL,
    backend_dtype_params,
    backend_params,
    compare_to_reference,
    rel_err,
)
from op_cases import ACTIVATION_IDS, INPUT_ACTIVATION_IDS, INPUT_ACTIVATIONS, ConvCase, conv_args, conv_fns

import bvae_kernels as bk

REVERSE = True
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
        pytest.param(
            ConvCase(1, 4, 6, 4, 3, 3, 2, 2, output_padding=1, dilation=2, groups=2), "gnova", id="dilated-grouped"
        ),
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


@pytest.mark.parametrize(("backend", "dtype"), backend_dtype_params())
def test_reverse_scale(backend, dtype: torch.dtype) -> None:
    """a(e^s conv_transpose2d(z, W) + b) in one op: the value and the gradients of z, W, b and s."""
    case = ConvCase(2, 6, 8, 7, 9, 4, 2, 1, output_padding=1)
    ours, ref = conv_fns(case, REVERSE, backend=backend.name)
    args = conv_args(case, dtype, REVERSE, device=backend.device, log_scale=True)
    errs = compare_to_reference(ours, ref, args, dtype, ["z", "weight", "bias", "log_scale"], backend.device)
    assert set(errs) == {"y", "dz", "dweight", "dbias", "dlog_scale"}


@pytest.mark.parametrize("backend", backend_params(float64=True))
def test_reverse_scale_gradcheck_float64(backend) -> None:
    case = ConvCase(1, 2, 3, 4, 3, 3, 2, 1, output_padding=1)
    ours, _ = conv_fns(case, REVERSE, backend=backend.name)
    args = tuple(
        a.make(torch.float64, backend.device)[1] for a in conv_args(case, torch.float64, REVERSE, log_scale=True)
    )
    assert torch.autograd.gradcheck(ours, args)
    assert torch.autograd.gradgradcheck(ours, args, fast_mode=True)


@pytest.mark.parametrize("backend", backend_params())
def test_both_directions_accumulate_in_one_weight_grad(backend) -> None:
    """One weight used forward and reverse: both weight-gradient terms land in weight.grad (no copy of W)."""
    w = (torch.randn(4, 3, 4, 4, dtype=torch.float64) * 0.3).float().to(backend.device).requires_grad_()
    x = torch.randn(2, 3, 8, 8).to(backend.device)
    name = backend.name
    out = bk.bi_conv2d_reverse(
        bk.bi_conv2d(x, w, stride=2, padding=1, backend=name), w, stride=2, padding=1, backend=name
    )
    (g,) = torch.autograd.grad(out.square().sum(), w)
    w64 = w.detach().double().requires_grad_()
    ref = bk.bi_conv2d_reverse(
        bk.bi_conv2d(x.double(), w64, stride=2, padding=1, backend="torch"), w64, stride=2, padding=1, backend="torch"
    )
    (g64,) = torch.autograd.grad(ref.square().sum(), w64)
    assert rel_err(g, g64) <= TOL[torch.float32]
