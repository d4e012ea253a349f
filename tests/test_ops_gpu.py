"""The compiled `cuda` backend against the eager reference (GPU only): values, every gradient, opcheck, compile.

Same tolerance table as the CPU tests (conftest.TOL, tf32 off). Without CUDA every test here skips; with
CUDA but without the CUDA kernels they skip too, and tests/test_backends.py::test_cuda_kernels_registered
fails instead (one clear failure rather than fifty).
"""

from __future__ import annotations

import pytest
import torch
from conftest import TOL, compare_to_reference, has_cuda_kernels, make_arg, rel_err
from test_ops_cpu import CONV_CASES, CONV_IDS, OPCHECK_UTILS, P, _chain, _chain_inputs, conv_args, conv_fns

import bvae_kernels as bk
from bvae_kernels import reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        torch.cuda.is_available() and not has_cuda_kernels(),
        reason="bvae was built without CUDA kernels (test_backends.py::test_cuda_kernels_registered fails)",
    ),
]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DEV = "cuda"


@pytest.fixture(autouse=True)
def _no_tf32():
    """fp32 tolerances assume IEEE fp32 contractions."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _to_device(args):  # noqa: ANN001, ANN202
    for a in args:
        if a is not None:
            a.leaf = a.leaf.to(DEV)
    return args


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_conv_cuda_matches_reference(case, reverse: bool, dtype: torch.dtype, layout: str) -> None:
    if not reverse and case.output_padding:
        pytest.skip("output_padding is a reverse-direction argument")
    ours, ref = conv_fns(case, reverse, backend="cuda")
    args = _to_device(conv_args(case, dtype, reverse, layout))
    compare_to_reference(ours, ref, args, dtype, ["inp", "weight", "bias"], device=DEV)


@pytest.mark.parametrize("activation", ["sigmoid", "identity", bk.GNoVa(0.05, 2.0, 0.5)], ids=str)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_conv_cuda_activations(activation, reverse: bool) -> None:
    case = CONV_CASES[1]
    ours, ref = conv_fns(case, reverse, activation, backend="cuda")
    args = _to_device(conv_args(case, torch.float32, reverse, "contiguous"))
    compare_to_reference(ours, ref, args, torch.float32, ["inp", "weight", "bias"], device=DEV)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_conv_cuda_empty_batch_and_layout(reverse: bool) -> None:
    w = torch.randn(4, 3, 3, 3, device=DEV, requires_grad=True)
    op = bk.bi_conv2d_reverse if reverse else bk.bi_conv2d
    x = torch.randn(0, 4 if reverse else 3, 6, 6, device=DEV, requires_grad=True)
    y = op(x, w, None, stride=2, padding=1, backend="cuda")
    assert y.shape[0] == 0
    y.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w))
    xc = torch.randn(2, 4 if reverse else 3, 6, 6, device=DEV).to(memory_format=torch.channels_last)
    yc = op(xc, w.detach(), None, stride=2, padding=1, backend="cuda")
    assert yc.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("leading", [(), (5,), (2, 3)], ids=["1d", "2d", "3d"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_linear_cuda_matches_reference(reverse: bool, leading: tuple, dtype: torch.dtype) -> None:
    in_f, out_f = 24, 16
    args = _to_device(
        [
            make_arg([*leading, out_f if reverse else in_f], dtype),
            make_arg([out_f, in_f], dtype, "transposed" if leading else "contiguous", scale=0.3),
            make_arg([in_f if reverse else out_f], dtype),
        ]
    )
    op = bk.bi_linear_reverse if reverse else bk.bi_linear
    ref_op = reference.bi_linear_reverse if reverse else reference.bi_linear
    compare_to_reference(
        lambda x, w, b: op(x, w, b, backend="cuda"), ref_op, args, dtype, ["inp", "weight", "bias"], DEV
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gnova_cuda(dtype: torch.dtype) -> None:
    args = _to_device([make_arg([4, 1000], dtype, scale=4.0)])
    compare_to_reference(
        lambda u: bk.gnova(u, 0.1, 1.5, 0.8, backend="cuda"),
        lambda u: bk.gnova_reference(u, 0.1, 1.5, 0.8),
        args,
        dtype,
        ["u"],
        DEV,
    )
    special = torch.tensor([float("inf"), float("-inf"), float("nan"), -1e4, 1e4, -100.0, 100.0], device=DEV)
    y = bk.gnova(special, 0.0, 1.0, 1.0, backend="cuda")
    assert y[0] == 1 and y[1] == 0 and y[2].isnan() and y[3] == 0 and y[4] == 1
    assert torch.isfinite(bk.gnova(special[3:], backend="cuda")).all()


def test_gnova_cuda_float64_exact() -> None:
    u = torch.randn(10000, dtype=torch.float64, device=DEV) * 10
    y = bk.gnova(u, 0.1, 1.0, 1.0, backend="cuda")
    torch.testing.assert_close(y, 0.1 * u + 1 / (1 + torch.exp(-u)), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_opcheck_conv_cuda(reverse: bool, fmt: torch.memory_format) -> None:
    name = "bi_conv2d_reverse" if reverse else "bi_conv2d"
    x = torch.randn(2, 4 if reverse else 3, 5, 7, device=DEV).to(memory_format=fmt)
    w, b = torch.randn(4, 3, 3, 3, device=DEV), torch.randn(3 if reverse else 4, device=DEV)
    cfg = ([2, 2], [1, 1], [1, 1]) if reverse else ([2, 2], [1, 1])
    op, op_bw = getattr(torch.ops.bvae, name), getattr(torch.ops.bvae, f"{name}_backward")
    torch.library.opcheck(op.default, (x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), *cfg, *P))
    y, u = op(x.detach(), w.detach(), b.detach(), *cfg, *P)
    mask = [True, True, True]
    torch.library.opcheck(
        op_bw.default, (torch.randn_like(y), x.detach(), w.detach(), u, *cfg, *P, mask), test_utils=OPCHECK_UTILS
    )


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_opcheck_linear_and_gnova_cuda(reverse: bool) -> None:
    name = "bi_linear_reverse" if reverse else "bi_linear"
    x, w, b = torch.randn(2, 3, 4, device=DEV), torch.randn(4, 5, device=DEV), torch.randn(5, device=DEV)
    if not reverse:
        w = w.t().contiguous()
    op, op_bw = getattr(torch.ops.bvae, name), getattr(torch.ops.bvae, f"{name}_backward")
    torch.library.opcheck(op.default, (x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), *P))
    y, u = op(x.detach(), w.detach(), b.detach(), *P)
    torch.library.opcheck(op_bw.default, (torch.randn_like(y), x.detach(), w.detach(), u, *P, [True, True, True]))
    torch.library.opcheck(torch.ops.bvae.gnova.default, (u.clone().requires_grad_(), *P))
    torch.library.opcheck(torch.ops.bvae.gnova_backward.default, (torch.randn_like(u), u, *P))


def test_compile_fullgraph_chain_cuda() -> None:
    torch._dynamo.reset()
    inputs = [t.to(DEV) for t in _chain_inputs()]
    eager = [t.clone().requires_grad_() for t in inputs]
    comp = [t.clone().requires_grad_() for t in inputs]
    y_eager = _chain(*eager, backend="cuda")
    y_comp = torch.compile(_chain, fullgraph=True)(*comp, backend="cuda")
    assert rel_err(y_comp, y_eager) <= TOL[torch.float32]
    g = torch.randn_like(y_eager)
    for i, (a, b) in enumerate(
        zip(torch.autograd.grad(y_comp, comp, g), torch.autograd.grad(y_eager, eager, g), strict=True)
    ):
        assert rel_err(a, b) <= TOL[torch.float32], f"grad {i}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_autocast_cuda(dtype: torch.dtype) -> None:
    inputs = [t.to(DEV) for t in _chain_inputs()]
    ours = [t.clone().requires_grad_() for t in inputs]
    with torch.autocast("cuda", dtype=dtype):
        y = _chain(*ours, backend="cuda")
    assert y.dtype == dtype
    ref64 = [t.to(dtype).double().requires_grad_() for t in inputs]
    y64 = _chain(*ref64, backend="torch")
    assert rel_err(y, y64) <= TOL[dtype]
    g = torch.randn_like(y)
    for i, (a, b) in enumerate(
        zip(torch.autograd.grad(y, ours, g), torch.autograd.grad(y64, ref64, g.double()), strict=True)
    ):
        assert a.dtype == torch.float32 and rel_err(a, b) <= 2 * TOL[dtype], f"grad {i}"
