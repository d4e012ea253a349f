"""The test bodies both dense ops share (tests/test_bi_linear.py and tests/test_bi_linear_reverse.py call them
with their direction): values and every gradient against the float64 reference, per backend, dtype and layout."""

from __future__ import annotations

import pytest
import torch
from conftest import BACKENDS_UNDER_TEST, TOL, Backend, compare_to_reference, interpreted, make_arg, rel_err
from op_cases import linear_fns

NAMES = ["inp", "weight", "bias"]
LEADING = [(), (5,), (2, 3), (0,)]
IN_F, OUT_F = 6, 5


def reference_params() -> list:
    """(backend, dtype, leading, bias, layout): every combination on the compiled backends; contiguous inputs
    with and without a bias under the interpreter."""
    params = []
    for b in BACKENDS_UNDER_TEST:
        layouts = ("contiguous",) if interpreted(b) else ("contiguous", "sliced", "transposed")
        for d in b.dtypes:
            for lead in LEADING:
                lead_id = "x".join(map(str, lead)) or "1d"
                for bias in (True, False):
                    for lay in layouts:
                        bias_id = "bias" if bias else "nobias"
                        params.append(
                            pytest.param(b, d, lead, bias, lay, id=f"{b.name}-{str(d)[6:]}-{lead_id}-{bias_id}-{lay}")
                        )
    return params


def args_for(reverse: bool, dtype: torch.dtype, leading: tuple, bias: bool, layout: str, device: str) -> list:
    feat = OUT_F if reverse else IN_F
    inp_layout = layout if len(leading) >= 1 and leading != (0,) else "contiguous"
    return [
        make_arg([*leading, feat], dtype, inp_layout, device=device),
        make_arg([OUT_F, IN_F], dtype, layout, scale=0.4, device=device),
        make_arg([IN_F if reverse else OUT_F], dtype, device=device) if bias else None,
    ]


def matches_reference(reverse: bool, backend: Backend, dtype: torch.dtype, leading: tuple, bias: bool, layout: str):  # noqa: ANN201
    ours, ref = linear_fns(reverse, backend=backend.name)
    compare_to_reference(
        ours, ref, args_for(reverse, dtype, leading, bias, layout, backend.device), dtype, NAMES, backend.device
    )


def activations(reverse: bool, backend: Backend, dtype: torch.dtype, activation: object) -> None:
    ours, ref = linear_fns(reverse, activation, backend.name)
    compare_to_reference(
        ours, ref, args_for(reverse, dtype, (7,), True, "contiguous", backend.device), dtype, NAMES, backend.device
    )


def input_activation(reverse: bool, backend: Backend, dtype: torch.dtype, in_act: object) -> None:
    """A chained dense layer: the input is the previous pre-activation, read through a_in (the scale too)."""
    ours, ref = linear_fns(reverse, backend=backend.name, input_activation=in_act)
    args = args_for(reverse, dtype, (2, 7), True, "contiguous", backend.device)
    if reverse:
        args.append(make_arg([], dtype, scale=0.3, device=backend.device))
    compare_to_reference(ours, ref, args, dtype, NAMES + ["log_scale"] * reverse, backend.device)


def gradcheck_float64(reverse: bool, backend: Backend, input_activation: object = None) -> None:
    x = torch.randn(2, 3, OUT_F if reverse else IN_F, dtype=torch.float64, device=backend.device, requires_grad=True)
    w = torch.randn(OUT_F, IN_F, dtype=torch.float64, device=backend.device, requires_grad=True)
    b = torch.randn(IN_F if reverse else OUT_F, dtype=torch.float64, device=backend.device, requires_grad=True)
    act = __import__("bvae_kernels").GNoVa(0.2, 1.5, 0.7)
    ours, _ = linear_fns(reverse, act, backend.name, input_activation)
    assert torch.autograd.gradcheck(ours, (x, w, b))
    assert torch.autograd.gradgradcheck(ours, (x, w, b))


def double_backward(reverse: bool, backend: Backend, input_activation: object = None) -> None:
    ours, ref = linear_fns(reverse, backend=backend.name, input_activation=input_activation)
    args, results = args_for(reverse, torch.float32, (4,), True, "contiguous", backend.device), []
    for fn, dtype in ((ours, torch.float32), (ref, torch.float64)):
        x, w, b = (a.make(dtype, backend.device)[0] for a in args)
        gx, gw = torch.autograd.grad(fn(x, w, b).square().sum(), (x, w), create_graph=True)
        results.append(torch.autograd.grad(gx.square().sum() + gw.square().sum(), (x, w, b)))
    for name, a, b in zip(NAMES, *results, strict=True):
        assert rel_err(a, b) <= 1e-4, f"second derivative d{name}: {rel_err(a, b):.2e}"


def nonfinite_propagates(reverse: bool, backend: Backend) -> None:
    x = torch.randn(3, OUT_F if reverse else IN_F)
    x[1, 2] = float("nan")
    x[2, 0] = float("inf")
    w = torch.randn(OUT_F, IN_F)
    ours, ref = linear_fns(reverse, backend=backend.name)
    y = ours(x.to(backend.device), w.to(backend.device), None)
    y_ref = ref(x.double(), w.double(), None)
    assert y[1].isnan().all() and torch.isfinite(y[0]).all()
    assert rel_err(y, y_ref) <= TOL[torch.float32]
