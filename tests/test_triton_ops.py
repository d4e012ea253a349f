"""The triton backend through the public API (bk.* with backend="triton"): values and every gradient
against the float64 eager reference, layouts, dispatch fallbacks, opcheck of the bvae::triton_* ops,
and (GPU only) BVAE layer shapes and torch.compile.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TOL, TOL_TF32, compare_to_reference, make_arg
from conftest_triton import DEVICE, DTYPES, HAS_CUDA, INTERPRET, _fixed_config, _no_tf32, skip_unless_runnable  # noqa: F401

import bvae_kernels as bk

skip_unless_runnable()

import bvae_kernels.triton as bt  # noqa: E402

ACT = bk.GNoVa(0.05, 2.0, 0.5)

# (n, c_in, c_out, h, w, k, stride, padding, output_padding)
CONV_CASES = [
    (2, 3, 5, 7, 9, 3, 1, 1, 0),
    (1, 4, 6, 8, 8, 4, 2, 1, 0),
    (2, 5, 4, 9, 7, 3, 2, 0, 1),
    (1, 3, 4, 5, 6, 1, 1, 0, 0),
    (2, 2, 3, 7, 7, 5, 2, 2, 1),
]
CONV_IDS = [f"n{c[0]}c{c[1]}-{c[2]}_{c[3]}x{c[4]}_k{c[5]}s{c[6]}p{c[7]}op{c[8]}" for c in CONV_CASES]


def conv_forward(case: tuple, activation: object = "gnova"):
    n, ci, co, h, w, k, s, p, _ = case

    def fn(backend: str):
        return lambda x, wt, b: bk.bi_conv2d(x, wt, b, stride=s, padding=p, activation=activation, backend=backend)

    return fn, [(n, ci, h, w), (co, ci, k, k), (co,)]


def conv_reverse(case: tuple, activation: object = "gnova"):
    n, ci, co, h, w, k, s, p, op = case

    def fn(backend: str):
        return lambda z, wt, b: bk.bi_conv2d_reverse(
            z, wt, b, stride=s, padding=p, output_padding=op, activation=activation, backend=backend
        )

    return fn, [(n, co, h, w), (co, ci, k, k), (ci,)]


def check(
    make: tuple,
    dtype: torch.dtype,
    names: tuple,
    layouts: tuple = (),
    bias: bool = True,
    device: str = DEVICE,
    tol: float | None = None,
) -> dict:
    fn, shapes = make
    layouts = layouts or ("contiguous",) * len(shapes)
    args = [
        make_arg(sh, dtype, lay, 0.5 if i == 1 else 1.0, device)
        for i, (sh, lay) in enumerate(zip(shapes, layouts, strict=True))
    ]
    if not bias:
        args[-1] = None
    return compare_to_reference(fn("triton"), fn("torch"), args, dtype, names, device, tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_bi_conv2d(case: tuple, dtype: torch.dtype):
    check(conv_forward(case), dtype, ("x", "weight", "bias"))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_bi_conv2d_reverse(case: tuple, dtype: torch.dtype):
    check(conv_reverse(case), dtype, ("z", "weight", "bias"))


@pytest.mark.parametrize(
    ("layouts", "bias", "activation"),
    [
        (("channels_last", "channels_last", "contiguous"), True, ACT),
        (("sliced", "contiguous", "contiguous"), False, "sigmoid"),
        (("contiguous", "channels_last", "contiguous"), True, None),
    ],
    ids=["channels_last", "sliced-nobias-sigmoid", "cl-weight-identity"],
)
def test_conv_layouts_and_activations(layouts: tuple, bias: bool, activation: object):
    case = CONV_CASES[1]
    check(conv_forward(case, activation), torch.float32, ("x", "weight", "bias"), layouts, bias)
    check(conv_reverse(case, activation), torch.float32, ("z", "weight", "bias"), layouts, bias)


def test_channels_last_in_channels_last_out():
    x = torch.randn(2, 3, 6, 6, device=DEVICE).to(memory_format=torch.channels_last)
    w = torch.randn(4, 3, 3, 3, device=DEVICE)
    y = bk.bi_conv2d(x, w, stride=1, padding=1, backend="triton")
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    y2 = bk.bi_conv2d_reverse(y, w, stride=1, padding=1, backend="triton")
    assert y2.is_contiguous(memory_format=torch.channels_last)


def test_unbatched_conv():
    x, w = torch.randn(3, 7, 7, device=DEVICE), torch.randn(4, 3, 3, 3, device=DEVICE)
    y = bk.bi_conv2d(x, w, stride=2, padding=1, backend="triton")
    ref = bk.bi_conv2d(x, w, stride=2, padding=1, backend="torch")
    assert y.shape == ref.shape and torch.allclose(y, ref, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lead", [(5,), (2, 3), ()], ids=["2d", "3d", "1d"])
def test_bi_linear(lead: tuple, reverse: bool, dtype: torch.dtype):
    d_in, d_out = 7, 40
    if reverse:
        fn = lambda backend: lambda z, w, b: bk.bi_linear_reverse(z, w, b, activation=ACT, backend=backend)
        shapes = [(*lead, d_out), (d_out, d_in), (d_in,)]
    else:
        fn = lambda backend: lambda x, w, b: bk.bi_linear(x, w, b, activation=ACT, backend=backend)
        shapes = [(*lead, d_in), (d_out, d_in), (d_out,)]
    check((fn, shapes), dtype, ("inp", "weight", "bias"))


def test_linear_transposed_input():
    fn = lambda backend: lambda x, w, b: bk.bi_linear(x, w, b, backend=backend)
    check(
        (fn, [(6, 9), (5, 9), (5,)]), torch.float32, ("x", "weight", "bias"), ("transposed", "transposed", "contiguous")
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gnova_op(dtype: torch.dtype):
    fn = lambda backend: lambda u: bk.gnova(u, 0.1, 1.5, 2.0, backend=backend)
    check((fn, [(3, 4, 5, 6)]), dtype, ("u",), ("channels_last",))


def test_both_directions_accumulate_in_one_weight_grad():
    """One weight used forward and reverse: both wgrad terms land in weight.grad (no copy of W)."""
    w = torch.randn(4, 3, 4, 4, device=DEVICE, dtype=torch.float64).float().requires_grad_()
    x = torch.randn(2, 3, 8, 8, device=DEVICE)
    out = bk.bi_conv2d_reverse(
        bk.bi_conv2d(x, w, stride=2, padding=1, backend="triton"), w, stride=2, padding=1, backend="triton"
    )
    (g,) = torch.autograd.grad(out.square().sum(), w)
    w64 = w.detach().double().requires_grad_()
    out64 = bk.bi_conv2d_reverse(
        bk.bi_conv2d(x.double(), w64, stride=2, padding=1, backend="torch"), w64, stride=2, padding=1, backend="torch"
    )
    (g64,) = torch.autograd.grad(out64.square().sum(), w64)
    assert ((g.double() - g64).norm() / g64.norm()).item() <= TOL[torch.float32]


def test_double_backward_goes_through_reference():
    x = torch.randn(1, 2, 5, 5, device=DEVICE, dtype=torch.float32, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, device=DEVICE, dtype=torch.float32, requires_grad=True)
    (gx,) = torch.autograd.grad(bk.bi_conv2d(x, w, padding=1, backend="triton").sum(), x, create_graph=True)
    (gw,) = torch.autograd.grad(gx.square().sum(), w)
    (gx_r,) = torch.autograd.grad(bk.bi_conv2d(x, w, padding=1, backend="torch").sum(), x, create_graph=True)
    (gw_r,) = torch.autograd.grad(gx_r.square().sum(), w)
    assert torch.allclose(gw, gw_r, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# dispatch
# ----------------------------------------------------------------------------------------------------------
def test_exports():
    assert bt.AVAILABLE and bt.UNAVAILABLE_REASON == ""
    assert set(bt.OPS) == {"gnova", "bi_conv2d", "bi_conv2d_reverse", "bi_linear", "bi_linear_reverse"}
    x, w = torch.randn(1, 2, 4, 4, device=DEVICE), torch.randn(3, 2, 3, 3, device=DEVICE)
    args = (x, w, None, [1, 1], [0, 0], 0.1, 1.0, 1.0)
    assert bt.unsupported_reason("bi_conv2d", args) is None
    assert "float64" in bt.unsupported_reason("bi_conv2d", (x.double(), w.double(), *args[2:]))
    big = torch.randn(3, 2, 9, 9, device=DEVICE)
    assert "taps" in bt.unsupported_reason("bi_conv2d", (x, big, *args[2:]))


def test_float64_falls_back_with_a_warning(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BVAE_BACKEND", "triton")
    x, w = torch.randn(1, 2, 5, 5, device=DEVICE, dtype=torch.float64), torch.randn(3, 2, 3, 3, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="float64"):
        y = bk.bi_conv2d(x, w.to(DEVICE), padding=1)
    assert torch.allclose(y, bk.bi_conv2d(x, w.to(DEVICE), padding=1, backend="torch"))
    with pytest.raises(ValueError, match="float64"):
        bk.bi_conv2d(x, w.to(DEVICE), padding=1, backend="triton")


@pytest.mark.skipif(not INTERPRET, reason="interpreter-only check")
def test_bf16_falls_back_under_the_interpreter(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BVAE_BACKEND", "triton")
    x, w = torch.randn(1, 2, 5, 5, dtype=torch.bfloat16), torch.randn(3, 2, 3, 3, dtype=torch.bfloat16)
    with pytest.warns(RuntimeWarning, match="bfloat16"):
        bk.bi_conv2d(x, w, padding=1)


@pytest.mark.parametrize("name", ["bi_conv2d", "bi_conv2d_reverse", "bi_linear", "bi_linear_reverse", "gnova"])
def test_opcheck(name: str):
    x = torch.randn(2, 3, 6, 6, device=DEVICE, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, device=DEVICE, requires_grad=True)
    z = torch.randn(2, 4, 3, 3, device=DEVICE, requires_grad=True)
    lin_w = torch.randn(5, 7, device=DEVICE, requires_grad=True)
    args = {
        "bi_conv2d": (x, w, torch.randn(4, device=DEVICE), [2, 2], [1, 1], 0.1, 1.0, 1.0),
        "bi_conv2d_reverse": (z, w, torch.randn(3, device=DEVICE), [2, 2], [1, 1], [1, 1], 0.1, 1.0, 1.0),
        "bi_linear": (torch.randn(4, 7, device=DEVICE), lin_w, None, 0.1, 1.0, 1.0),
        "bi_linear_reverse": (torch.randn(4, 5, device=DEVICE, requires_grad=True), lin_w, None, 0.1, 1.0, 1.0),
        "gnova": (torch.randn(3, 4, device=DEVICE, requires_grad=True), 0.1, 1.0, 1.0),
    }[name]
    op = getattr(torch.ops.bvae, f"triton_{name}").default
    torch.library.opcheck(op, args, test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


# ----------------------------------------------------------------------------------------------------------
# GPU only: BVAE layer shapes (batch 256; 28x28, 14x14, 7x7; 32-128 channels), bf16, tf32, torch.compile
# ----------------------------------------------------------------------------------------------------------
LAYER_CASES = [
    (256, 1, 32, 28, 28, 4, 2, 1, 0),
    (256, 32, 64, 14, 14, 4, 2, 1, 0),
    (256, 64, 128, 7, 7, 3, 2, 1, 1),
    (256, 128, 128, 7, 7, 3, 1, 1, 0),
]


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA or INTERPRET, reason="needs a CUDA device (not the interpreter)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", LAYER_CASES, ids=[f"c{c[1]}-{c[2]}_{c[3]}x{c[4]}_k{c[5]}s{c[6]}" for c in LAYER_CASES])
def test_gpu_layer_shapes(case: tuple, dtype: torch.dtype):
    check(conv_forward(case), dtype, ("x", "weight", "bias"), device="cuda")
    check(conv_reverse(case), dtype, ("z", "weight", "bias"), device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA or INTERPRET, reason="needs a CUDA device (not the interpreter)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_gpu_autotuned_configs(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype):
    """The autotuned (arch-pruned) configs, not just the fixed one, on a BVAE layer shape."""
    monkeypatch.delenv("BVAE_TRITON_FIXED_CONFIG", raising=False)
    case = (64, 32, 64, 14, 14, 4, 2, 1, 0)
    check(conv_forward(case), dtype, ("x", "weight", "bias"), device="cuda")
    check(conv_reverse(case), dtype, ("z", "weight", "bias"), device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA or INTERPRET, reason="needs a CUDA device (not the interpreter)")
def test_gpu_tf32_tolerance():
    torch.backends.cuda.matmul.allow_tf32 = True
    check(conv_forward(LAYER_CASES[2]), torch.float32, ("x", "weight", "bias"), device="cuda", tol=TOL_TF32)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA or INTERPRET, reason="needs a CUDA device (not the interpreter)")
def test_gpu_torch_compile_fullgraph():
    x = torch.randn(8, 3, 14, 14, device="cuda", requires_grad=True)
    w = torch.randn(6, 3, 4, 4, device="cuda", requires_grad=True)

    def f(x, w):
        y = bk.bi_conv2d(x, w, stride=2, padding=1, backend="triton")
        return bk.bi_conv2d_reverse(y, w, stride=2, padding=1, backend="triton").sum()

    compiled = torch.compile(f, fullgraph=True)
    out = compiled(x, w)
    ref = f(x, w)
    assert torch.allclose(out, ref, rtol=1e-4)
    g = torch.autograd.grad(out, (x, w))
    g_ref = torch.autograd.grad(ref, (x, w))
    for a, b in zip(g, g_ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
