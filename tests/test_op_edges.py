"""Inputs at the edges of the op contract, for every public op on every backend under test: read-only memory
(an op that wrote to an input it does not declare as mutated would crash), signaling NaNs (propagated, the input
bits unchanged), tensors that are NCHW- and NHWC-contiguous at once (C=1, 1x1 spatial), float64 under autocast."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import BACKENDS_UNDER_TEST, TOL, interpreted, rel_err

import bvae_kernels as bk

pytestmark = pytest.mark.skipif(not BACKENDS_UNDER_TEST, reason="no fused backend on this machine")
PARAMS = [pytest.param(b, id=b.name) for b in BACKENDS_UNDER_TEST]


def op_calls(backend: str, make) -> dict:  # noqa: ANN001
    """Every public op on tensors from make(shape) (one maker for every argument), with grad-free arguments."""
    return {
        "gnova": lambda: bk.gnova(make((2, 3, 4, 4)), backend=backend),
        "bi_conv2d": lambda: bk.bi_conv2d(make((2, 3, 5, 5)), make((4, 3, 3, 3)), make((4,)), padding=1,
                                          backend=backend),
        "bi_conv2d_reverse": lambda: bk.bi_conv2d_reverse(make((2, 4, 3, 3)), make((4, 3, 3, 3)), make((3,)),
                                                          stride=2, log_scale=make(()), backend=backend),
        "bi_linear": lambda: bk.bi_linear(make((2, 5)), make((3, 5)), make((3,)), backend=backend),
        "bi_linear_reverse": lambda: bk.bi_linear_reverse(make((2, 3)), make((3, 5)), make((5,)), log_scale=make(()),
                                                          backend=backend),
    }  # fmt: skip


# Runs in its own process: a write to read-only memory is a SIGSEGV, which must not take pytest down.
READ_ONLY = textwrap.dedent(
    """
    import ctypes, mmap, sys, torch
    sys.path.insert(0, {tests!r})
    from test_op_edges import op_calls
    libc = ctypes.CDLL(None)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    backend, dtype, device = sys.argv[1], getattr(torch, sys.argv[2]), sys.argv[3]
    pages = []

    def read_only(shape):
        src = (torch.randn(shape) * 0.5).to(dtype)
        raw = src.reshape(-1).view(torch.uint8).numpy().tobytes()
        page = mmap.mmap(-1, max(mmap.PAGESIZE, len(raw)))
        page[: len(raw)] = raw
        address = ctypes.addressof(ctypes.c_char.from_buffer(page))
        assert libc.mprotect(address, len(page), mmap.PROT_READ) == 0
        pages.append(page)
        t = torch.frombuffer(page, dtype=torch.uint8, count=len(raw)).view(dtype).reshape(shape)
        return t if device == "cpu" else t.to(device)

    import warnings
    warnings.simplefilter("ignore")  # torch.frombuffer warns that the memory is not writable: that is the point
    for name, call in op_calls(backend, read_only).items():
        with torch.no_grad():
            call()
    print("ok")
    """
)


@pytest.mark.parametrize("backend", PARAMS)
def test_read_only_inputs_are_never_written(backend):
    dtypes = [d for d in (torch.float32, torch.bfloat16, torch.float16) if d in backend.dtypes]
    tests = str(Path(__file__).parent)
    for dtype in dtypes:
        proc = subprocess.run(
            [sys.executable, "-c", READ_ONLY.format(tests=tests), backend.name, str(dtype).split(".")[1],
             backend.device],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (dtype, proc.returncode, proc.stderr[-800:])


@pytest.mark.parametrize("backend", PARAMS)
def test_signaling_nans_propagate_and_leave_the_input_alone(backend):
    for dtype, bits in ((torch.float32, 0x7FA00000), (torch.float16, 0x7D00), (torch.bfloat16, 0x7FA0)):
        if dtype not in backend.dtypes:
            continue
        int_type = torch.int32 if dtype == torch.float32 else torch.int16

        def make(shape, dtype=dtype, int_type=int_type, bits=bits):  # noqa: ANN001, ANN202
            t = (torch.randn(shape) * 0.5).to(dtype)
            if t.numel():
                t.view(int_type).reshape(-1)[0] = bits  # one signaling NaN in every tensor
            return t.to(backend.device)

        for name in op_calls(backend.name, make):
            inputs = []
            original = make

            def recording(shape, original=original, inputs=inputs):  # noqa: ANN001, ANN202
                t = original(shape)
                inputs.append((t, t.clone()))
                return t

            out = op_calls(backend.name, recording)[name]()
            assert torch.isnan(out).any(), (name, dtype)
            for t, before in inputs:
                assert torch.equal(t.view(int_type), before.view(int_type)), (name, dtype, "an input was modified")


@pytest.mark.parametrize("backend", PARAMS)
def test_tensors_contiguous_in_both_layouts(backend):
    """C = 1 (every MNIST batch) and 1x1 spatial sizes are NCHW- and NHWC-contiguous at once: same numbers as
    the reference, outputs in a valid layout."""
    dtype = torch.float64 if torch.float64 in backend.dtypes else torch.float32
    opts = {"dtype": dtype, "device": backend.device}
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(**opts)

    cases = [
        ("C=1 forward", lambda be: bk.bi_conv2d(x1, w1, b1, stride=2, padding=1, backend=be)),
        ("1x1 forward", lambda be: bk.bi_conv2d(x11, w11, b11, backend=be)),
        ("C=1 reverse", lambda be: bk.bi_conv2d_reverse(z1, w1, r1, stride=2, padding=1, output_padding=1, backend=be)),
    ]  # fmt: skip
    x1, w1, b1, r1 = rand(3, 1, 6, 6), rand(4, 1, 4, 4), rand(4), rand(1)
    z1 = rand(3, 4, 3, 3)
    x11, w11, b11 = rand(2, 5, 1, 1), rand(3, 5, 1, 1), rand(3)
    for layout in (torch.contiguous_format, torch.channels_last):
        x1, x11 = x1.contiguous(memory_format=layout), x11.contiguous(memory_format=layout)
        for name, call in cases:
            got, want = call(backend.name), call("torch")
            assert got.is_contiguous() or got.is_contiguous(memory_format=torch.channels_last), name
            assert rel_err(got, want) <= TOL[dtype], (name, layout)


def test_float64_is_never_downcast_under_autocast():
    """Autocast leaves float64 alone (as F.conv2d does): an op that cast it to bf16 would lose ~14 digits."""
    if not any(b.name == "cpu" for b in BACKENDS_UNDER_TEST):
        pytest.skip("needs the cpu backend (float64)")
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((2, 3, 5, 5), (4, 3, 3, 3), (4,)))
    want = bk.bi_conv2d(x, w, b, backend="torch")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = bk.bi_conv2d(x, w, b, backend="cpu")
        lin = bk.bi_linear(x.reshape(2, -1)[:, :27], w.reshape(4, -1), b, backend="cpu")
    assert got.dtype == torch.float64 and lin.dtype == torch.float64
    assert rel_err(got, want) <= 1e-12
    assert rel_err(lin, bk.bi_linear(x.reshape(2, -1)[:, :27], w.reshape(4, -1), b, backend="torch")) <= 1e-12


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("backend", ["torch", *BACKENDS_UNDER_TEST], ids=str)
def test_float64_stays_float64_under_autocast_on_every_op_and_backend(backend, grad: bool):
    """Every public op, with a float64 input, weight, bias and reverse scale, under autocast on its device, with and
    without grad: float64 out, the same numbers and gradients as without autocast. Catches an autocast path that
    casts float64 to the autocast dtype where test_float64_is_never_downcast_under_autocast (cpu backend, two ops,
    no grad) does not look: the reverse ops, the triton family's Autocast kernels (the Triton op then hands float64
    to the compiled op) and the eager reference's autocast_inputs (backend "torch")."""
    name, device = (backend, "cpu") if backend == "torch" else (backend.name, backend.device)

    def maker(leaves: list):  # noqa: ANN202
        g = torch.Generator().manual_seed(0)

        def make(shape: tuple) -> torch.Tensor:
            t = (torch.randn(shape, generator=g, dtype=torch.float64) * 0.5).to(device).requires_grad_(grad)
            leaves.append(t)
            return t

        return make

    for op in op_calls(name, lambda shape: None):
        ours_leaves, ref_leaves = [], []
        with torch.autocast(device, dtype=torch.bfloat16):
            got = op_calls(name, maker(ours_leaves))[op]()
        want = op_calls("torch", maker(ref_leaves))[op]()
        assert got.dtype == torch.float64, (op, got.dtype)
        assert rel_err(got, want) <= 1e-12, (op, rel_err(got, want))
        if grad:
            out_grad = torch.randn(want.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            grads = torch.autograd.grad(got, ours_leaves, out_grad.to(device))
            for i, (a, b) in enumerate(zip(grads, torch.autograd.grad(want, ref_leaves, out_grad), strict=True)):
                assert a.dtype == torch.float64 and rel_err(a, b) <= 1e-10, (op, i, a.dtype, rel_err(a, b))


def _float64_raw_args(device: str) -> dict[str, tuple]:
    """Positional float64 arguments of each bidirectional raw op (X and X_fwd take the same), G-NoVa (0.1, 1, 1)."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=g, dtype=torch.float64).to(device)

    x, w, b, z, r, s = rand(2, 3, 5, 5), rand(4, 3, 3, 3), rand(4), rand(2, 4, 3, 3), rand(3), rand()
    lx, lw, lz = rand(2, 5), rand(3, 5), rand(2, 3)
    p = (0.1, 1.0, 1.0)
    return {
        "bi_conv2d": (x, w, b, [1, 1], [1, 1], *p),
        "bi_conv2d_reverse": (z, w, r, s, [2, 2], [1, 1], [1, 1], *p),
        "bi_linear": (lx, lw, rand(3), *p),
        "bi_linear_reverse": (lz, lw, rand(5), s, *p),
    }


@pytest.mark.parametrize("backend", PARAMS)
def test_raw_fwd_ops_leave_float64_alone_under_autocast(backend):
    """The public API reaches X's Autocast kernel only (autograd then calls X_fwd below autocast), but the raw ops
    torch.ops.bvae.[triton_]X_fwd are public and have Autocast kernels of their own: float64 (y, u) out of each,
    equal to the op outside autocast. Catches an X_fwd Autocast kernel that casts a float64 input."""
    prefix = "triton_" if backend.name == "triton" else ""
    for op_name, args in _float64_raw_args(backend.device).items():
        name = f"{op_name}_fwd"
        op = getattr(torch.ops.bvae, prefix + name).default
        want = op(*args)
        with torch.autocast(backend.device, dtype=torch.bfloat16):
            got = op(*args)
        for what, a, e in zip(("y", "u"), got, want, strict=True):
            assert a.dtype == torch.float64 and rel_err(a, e) <= 1e-12, (name, what, a.dtype, rel_err(a, e))


@pytest.mark.parametrize("backend", PARAMS)
def test_autocast_kernels_of_both_devices_leave_float64_alone(backend):
    """Each bidirectional op of the backend's family (X and X_fwd) has an AutocastCPU and an AutocastCUDA kernel, and
    both leave float64 alone: the AutocastCUDA one is entered directly (redispatch), so a machine without a GPU checks
    the CUDA registration too. Catches a missing Autocast registration and a cast that downcasts float64 on either
    device (on CPU tensors the CUDA kernel casts nothing else: they are not eligible for CUDA autocast)."""
    prefix = "triton_" if backend.name == "triton" else ""
    args = _float64_raw_args(backend.device)
    for name in (f"{op}{part}" for op in args for part in ("", "_fwd")):
        qualname = f"bvae::{prefix}{name}"
        for key in ("AutocastCPU", "AutocastCUDA"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(qualname, key), f"{qualname}: no {key} kernel"
            op = getattr(torch.ops.bvae, prefix + name).default
            call_args = args[name.removesuffix("_fwd")]
            want = op(*call_args)
            got = op.redispatch(torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key)), *call_args)
            for a, e in zip(*((t,) if isinstance(t, torch.Tensor) else t for t in (got, want)), strict=True):
                assert a.dtype == torch.float64 and rel_err(a, e) <= 1e-12, (qualname, key, a.dtype, rel_err(a, e))


def _significant_strides(t: torch.Tensor) -> tuple:
    """Strides of the dimensions longer than 1 (what torch's fake-vs-real and Inductor's layout checks compare)."""
    return tuple(st for st, n in zip(t.stride(), t.shape, strict=True) if n > 1)


@pytest.mark.parametrize("backend", PARAMS)
def test_inputs_contiguous_in_both_layouts_follow_the_nchw_rule_real_and_fake(backend):
    """An input that is NCHW- and NHWC-contiguous at once (C = 1 like every MNIST batch, 1x1 spatial; with NCHW or
    NHWC strides) is not channels_last: outputs and gradients come back NCHW-contiguous, on every backend and in the
    fake kernels (what torch.compile plans with) alike. Catches a layout rule that picks channels_last for such an
    input (e.g. `is_contiguous(channels_last)` without `not is_contiguous()`) in the fakes, the Triton launchers or
    the compiled kernels: test_tensors_contiguous_in_both_layouts accepts either layout, and opcheck's captured
    arguments have no such tensor."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    dtype = torch.float32
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int, nhwc: bool = False) -> torch.Tensor:
        t = torch.randn(shape, generator=g, dtype=dtype)
        if nhwc:  # the same values with NHWC strides: still NCHW-contiguous too (size-1 dimensions)
            t = t.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
        return t.to(backend.device)

    cases = {
        "C=1 forward": (lambda x, w, b, be: bk.bi_conv2d(x, w, b, stride=2, padding=1, backend=be), (3, 1, 6, 6),
                        (4, 1, 4, 4), 4),
        "1x1 forward": (lambda x, w, b, be: bk.bi_conv2d(x, w, b, backend=be), (2, 5, 1, 1), (3, 5, 1, 1), 3),
        "C=1 reverse": (lambda z, w, b, be: bk.bi_conv2d_reverse(z, w, b, stride=2, padding=1, output_padding=1,
                                                                 backend=be), (3, 1, 3, 3), (1, 4, 4, 4), 4),
        "1x1 reverse": (lambda z, w, b, be: bk.bi_conv2d_reverse(z, w, b, backend=be), (2, 3, 1, 1), (3, 5, 1, 1), 5),
        "gnova C=1": (lambda u, w, b, be: bk.gnova(u, backend=be), (3, 1, 4, 5), None, None),
    }  # fmt: skip
    for name, (call, inp_shape, w_shape, bias_len) in cases.items():
        for nhwc in (False, True):
            inp = rand(*inp_shape, nhwc=nhwc)
            assert inp.is_contiguous() and inp.is_contiguous(memory_format=torch.channels_last)
            tensors = [inp, rand(*w_shape) if w_shape else None, rand(bias_len) if bias_len else None]
            leaves = [t.requires_grad_() for t in tensors if t is not None]
            y = call(*tensors, backend.name)
            grads = torch.autograd.grad(y, leaves, torch.ones_like(y))
            with FakeTensorMode() as mode:
                fakes = [mode.from_tensor(t) for t in leaves]
                fake_args = iter(fakes)
                fy = call(*(next(fake_args) if t is not None else None for t in tensors), backend.name)
                fake_grads = torch.autograd.grad(fy, fakes, torch.ones_like(fy))
            what = f"{name}, {'NHWC' if nhwc else 'NCHW'} strides"
            for label, real, fake in zip(["y", "d_inp", "dW", "db"], [y, *grads], [fy, *fake_grads], strict=False):
                want = _significant_strides(torch.empty(real.shape))  # NCHW-contiguous: not channels_last
                assert _significant_strides(real) == want, f"{what}: {label} has strides {real.stride()}"
                assert _significant_strides(fake) == want, f"{what}: the fake's {label} has strides {fake.stride()}"


# (op, in channels, out channels, size, kernel, stride, padding, output_padding): borders and stride phases
NONFINITE_LAYERS = [
    ("bi_conv2d", 3, 4, 6, 3, 1, 1, 0),
    ("bi_conv2d", 3, 4, 7, 4, 2, 1, 0),
    ("bi_conv2d", 2, 3, 5, 5, 1, 2, 0),
    ("bi_conv2d_reverse", 4, 3, 4, 3, 1, 1, 0),
    ("bi_conv2d_reverse", 4, 3, 3, 4, 2, 1, 0),
    ("bi_conv2d_reverse", 4, 3, 3, 3, 2, 1, 1),
]

NONFINITE_VALUES = [("weight", float("inf")), ("weight", float("-inf")), ("weight", float("nan")),
                    ("input", float("inf")), ("input", float("nan")), ("grad", float("inf")),
                    ("grad", float("-inf"))]  # fmt: skip


def _same_finiteness(out: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    for kind in (torch.isnan, torch.isposinf, torch.isneginf):
        mismatch = (kind(out) != kind(ref)).sum().item()
        assert mismatch == 0, f"{what}: {kind.__name__} differs at {mismatch} of {ref.numel()} elements"
    finite = torch.isfinite(ref)
    assert torch.allclose(out[finite], ref[finite], rtol=1e-4, atol=1e-4), what


@pytest.mark.parametrize("backend", PARAMS)
def test_non_finite_values_land_where_the_reference_puts_them(backend):
    """One inf, -inf or NaN in the weight, the input or the incoming gradient: every output and gradient is NaN /
    +-inf exactly where the direct-convolution reference has it and equal elsewhere. An implicit GEMM that
    multiplies its zero padding by an inf (0 * inf) adds NaNs at border pixels where the reference, which skips
    padded taps, is finite (the Triton kernels did, in the output, the input gradient and the weight gradient)."""
    from bvae_kernels import reference

    # The cuda backend contracts through cuDNN and follows F.conv2d on the GPU; the others are held to the CPU's
    # direct convolution.
    ref_device = backend.device if backend.name == "cuda" else "cpu"
    g = torch.Generator().manual_seed(0)
    for layer_number, (op, c_in, c_out, size, k, stride, padding, output_padding) in enumerate(NONFINITE_LAYERS):
        geometry = dict(stride=stride, padding=padding, activation=None)
        if op == "bi_conv2d_reverse":
            geometry["output_padding"] = output_padding
        w_shape = (c_out, c_in, k, k) if op == "bi_conv2d" else (c_in, c_out, k, k)
        x_channels = c_in
        for number, (where, value) in enumerate(NONFINITE_VALUES):
            if interpreted(backend) and (number - layer_number) % 3:
                continue  # the interpreter runs every third (layer, value) pair: each value on two layers
            x = torch.randn(2, x_channels, size, size, generator=g)
            w = torch.randn(w_shape, generator=g) * 0.3
            target = {"weight": w, "input": x, "grad": None}[where]
            if target is not None:
                target.view(-1)[torch.randint(target.numel(), (1,), generator=g)] = value
            pick = torch.randint(1 << 30, (1,), generator=g).item()  # where an inf goes into the incoming gradient
            b = torch.randn(w_shape[0] if op == "bi_conv2d" else w_shape[1], generator=g)
            what = f"{op} k{k}s{stride}p{padding} {where}={value}"
            outs = []
            for fn, device in ((getattr(bk, op), backend.device), (getattr(reference, op), ref_device)):
                args = [t.to(device).requires_grad_() for t in (x, w, b)]
                kwargs = dict(geometry, backend=backend.name) if fn is getattr(bk, op) else geometry
                y = fn(*args, **kwargs)
                grad = torch.ones_like(y)
                if where == "grad":
                    grad.view(-1)[pick % grad.numel()] = value
                y.backward(grad)
                outs.append([y.detach().cpu()] + [a.grad.cpu() for a in args])
            for name, out, ref in zip(("output", "d input", "d weight", "d bias"), *outs, strict=True):
                _same_finiteness(out, ref, f"{what}: {name}")
