"""The test bodies both conv ops share (tests/test_bi_conv2d.py and tests/test_bi_conv2d_reverse.py call them with
their direction): values and every gradient against the float64 reference, per backend, dtype and layout."""

from __future__ import annotations

import pytest
import torch
from conftest import BACKENDS_UNDER_TEST, LAYOUTS, TOL, Backend, compare_to_reference, interpreted, make_arg, rel_err
from op_cases import ConvCase, conv_args, conv_cases, conv_fns

NAMES = ["inp", "weight", "bias"]


def reference_params(reverse: bool) -> list:
    """(backend, dtype, case, layout) params: the whole table in every layout on the compiled backends; the
    interpreter's cases in the layouts a model uses."""
    params = []
    for b in BACKENDS_UNDER_TEST:
        for d in b.dtypes:
            # the interpreter: fp32 in both layouts a model uses, fp16 in the GPU's (channels_last)
            layouts = LAYOUTS if not interpreted(b) else ("contiguous",) * (d == torch.float32) + ("channels_last",)
            for c in conv_cases(reverse, interp_only=interpreted(b)):
                params += [pytest.param(b, d, c, lay, id=f"{b.name}-{str(d)[6:]}-{c}-{lay}") for lay in layouts]
    return params


def matches_reference(reverse: bool, backend: Backend, dtype: torch.dtype, case: ConvCase, layout: str) -> None:
    ours, ref = conv_fns(case, reverse, backend=backend.name)
    args = conv_args(case, dtype, reverse, layout, device=backend.device)
    compare_to_reference(ours, ref, args, dtype, NAMES, backend.device)


def activations(reverse: bool, backend: Backend, dtype: torch.dtype, activation: object) -> None:
    case = ConvCase(2, 6, 8, 7, 9, 3, 2, 1, output_padding=1 if reverse else 0)
    ours, ref = conv_fns(case, reverse, activation, backend.name)
    compare_to_reference(
        ours, ref, conv_args(case, dtype, reverse, device=backend.device), dtype, NAMES, backend.device
    )


def input_activation(reverse: bool, backend: Backend, dtype: torch.dtype, layout: str, in_act: object) -> None:
    """A chained layer: the input is the previous layer's pre-activation, read through a_in; values and every
    gradient (the input's is that of the pre-activation) against the reference, the reverse scale included."""
    case = ConvCase(2, 5, 6, 7, 9, 3, 2, 1, output_padding=1 if reverse else 0)
    ours, ref = conv_fns(case, reverse, backend=backend.name, input_activation=in_act)
    args = conv_args(case, dtype, reverse, layout, device=backend.device, log_scale=reverse)
    compare_to_reference(ours, ref, args, dtype, NAMES + ["log_scale"] * reverse, backend.device)


def gradcheck_float64(
    reverse: bool, backend: Backend, case: ConvCase, activation: object, input_activation: object = None
) -> None:
    ours, _ = conv_fns(case, reverse, activation, backend.name, input_activation)
    args = [a.make(torch.float64, backend.device)[1] for a in conv_args(case, torch.float64, reverse) if a is not None]
    fn = ours if case.bias else (lambda x, w: ours(x, w, None))
    assert torch.autograd.gradcheck(fn, tuple(args))
    assert torch.autograd.gradgradcheck(fn, tuple(args), fast_mode=True)


def double_backward(reverse: bool, backend: Backend, input_activation: object = None) -> None:
    """create_graph=True: the gradient is itself differentiable and matches the reference's (any dtype)."""
    case = ConvCase(1, 2, 3, 5, 5, 3, 2, 1, output_padding=1 if reverse else 0)
    ours, ref = conv_fns(case, reverse, backend=backend.name, input_activation=input_activation)
    args, results = conv_args(case, torch.float32, reverse), []
    for fn, dtype in ((ours, torch.float32), (ref, torch.float64)):
        x, w, b = (a.make(dtype, backend.device)[0] for a in args)
        gx, gw = torch.autograd.grad(fn(x, w, b).square().sum(), (x, w), create_graph=True)
        results.append(torch.autograd.grad((gx.square().sum() + gw.square().sum()), (x, w, b)))
    for name, a, b in zip(NAMES, *results, strict=True):
        assert rel_err(a, b) <= 1e-4, f"second derivative d{name}: {rel_err(a, b):.2e}"


def channels_last_weight(reverse: bool, backend: Backend, x_layout: str) -> None:
    """DESIGN keeps the weight channels_last (physical OHWI); any input layout must still be right."""
    case = ConvCase(2, 6, 8, 8, 8, 4, 2, 1, bias=False)
    ours, ref = conv_fns(case, reverse, backend=backend.name)
    args = conv_args(case, torch.float32, reverse, x_layout, weight_layout="channels_last", device=backend.device)
    compare_to_reference(ours, ref, args, torch.float32, NAMES, backend.device)


def output_layout_follows_input(reverse: bool, backend: Backend, memory_format: torch.memory_format) -> None:
    case = ConvCase(2, 3, 4, 6, 6, 3, 2, 1, output_padding=1 if reverse else 0)
    x, w, b = (a.make(torch.float32, backend.device)[0] for a in conv_args(case, torch.float32, reverse))
    x = x.detach().to(memory_format=memory_format).requires_grad_()
    ours, ref = conv_fns(case, reverse, backend=backend.name)
    y = ours(x, w, b)
    assert y.is_contiguous(memory_format=memory_format)
    assert rel_err(y, ref(x.double(), w.double(), b.double())) <= TOL[torch.float32]
    (gx,) = torch.autograd.grad(y.sum(), x)
    assert gx.is_contiguous(memory_format=memory_format)


def empty_batch(reverse: bool, backend: Backend, dtype: torch.dtype) -> None:
    """N=0: an empty output of the right shape; dW and db are zeros (not missing), dx is empty."""
    case = ConvCase(0, 3, 4, 7, 9, 3, 2, 1, output_padding=1 if reverse else 0)
    ours, ref = conv_fns(case, reverse, backend=backend.name)
    x, w, b = (a.make(dtype, backend.device)[0] for a in conv_args(case, dtype, reverse))
    y = ours(x, w, b)
    assert y.shape == ref(x.detach(), w.detach(), b.detach()).shape and y.shape[0] == 0
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert w.grad is not None and torch.equal(w.grad, torch.zeros_like(w))
    assert b.grad is not None and torch.equal(b.grad, torch.zeros_like(b))


def unbatched(reverse: bool, backend: Backend) -> None:
    case = ConvCase(1, 3, 4, 7, 9, 3, 2, 1, output_padding=1 if reverse else 0)
    ours, ref = conv_fns(case, reverse, backend=backend.name)
    args = conv_args(case, torch.float32, reverse, device=backend.device)
    single = make_arg(list(args[0].leaf.shape[1:]), torch.float32, device=backend.device)
    errs = compare_to_reference(ours, ref, [single, args[1], args[2]], torch.float32, NAMES, backend.device)
    assert set(errs) == {"y", "dinp", "dweight", "dbias"}
    assert ours(*(a.make(torch.float32, backend.device)[1] for a in (single, args[1], args[2]))).dim() == 3


def nonfinite_inputs_propagate(reverse: bool, backend: Backend, bad: float) -> None:
    """NaN and +-inf in the input give exactly the reference's NaN / inf positions and finite values."""
    case = ConvCase(1, 3, 4, 6, 6, 3, 2, 1, output_padding=1 if reverse else 0)
    x, w, b = (a.leaf.float().to(backend.device) for a in conv_args(case, torch.float32, reverse))
    x[0, 1, 2, 3] = bad
    ours, ref = conv_fns(case, reverse, backend=backend.name)
    y, y_ref = ours(x, w, b), ref(x.double(), w.double(), b.double())
    assert (~torch.isfinite(y_ref)).any(), "the case must produce non-finite outputs"
    assert torch.equal(y.isnan().cpu(), y_ref.isnan().cpu()), "NaN positions differ from the reference"
    assert rel_err(y, y_ref) <= 1e-5  # also checks +-inf positions and signs, and the finite values
