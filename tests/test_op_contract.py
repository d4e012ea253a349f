"""The op contract across ops: every bvae op passes torch.library.opcheck on arguments captured from a real
forward + backward, has one schema, a fake and a C++ autograd kernel; a call with grad never enters Python;
the ops compile under torch.compile(fullgraph=True) and follow autocast; bvae_kernels imports in one direction."""

from __future__ import annotations

import ast
import functools
import re
import sys
from pathlib import Path

import pytest
import torch
from conftest import BACKENDS_UNDER_TEST, TOL, backend_params, cpu_ops, interpreted, rel_err
from op_cases import chain, chain_inputs
from torch.utils._python_dispatch import TorchDispatchMode

import bvae_kernels as bk
from bvae_kernels import _library

ROOT = Path(__file__).resolve().parent.parent
P = (0.1, 1.0, 1.0)
OPCHECK_ALL = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
OPCHECK_FAST = OPCHECK_ALL[:3]


class Capture(TorchDispatchMode):
    """Records every bvae op call that reaches the dispatcher below autograd, with its arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, list] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if func.namespace == "bvae":
            self.calls.setdefault(func._opname, []).append((func, args, kwargs or {}))
        return func(*args, **(kwargs or {}))


def _leaf(*shape: int, device: str) -> torch.Tensor:
    return torch.randn(shape, device=device).requires_grad_()


def _exercise(backend: str, device: str) -> None:
    """Forward + backward (x, W, biases and the reverse scale require grad) and a no-grad forward of every op, with
    and without an input activation."""
    x, w, b = _leaf(2, 3, 5, 7, device=device), _leaf(4, 3, 3, 3, device=device), _leaf(4, device=device)
    z, br, s = _leaf(2, 4, 3, 4, device=device), _leaf(3, device=device), _leaf(device=device)
    lx, lw, lb = _leaf(2, 3, 6, device=device), _leaf(5, 6, device=device), _leaf(5, device=device)
    lz, lbr = _leaf(4, 5, device=device), _leaf(6, device=device)
    u = _leaf(2, 3, 4, device=device)
    xg, wg, zg, bg = (
        _leaf(2, 4, 7, 7, device=device),
        _leaf(4, 2, 3, 3, device=device),
        _leaf(1, 4, 3, 3, device=device),
        _leaf(4, device=device),
    )  # grouped and dilated
    chained = bk.GNoVa(0.05, 2.0, 0.5)  # the input is a previous layer's pre-activation
    calls = [
        lambda: bk.gnova(u, *P, backend=backend),
        lambda: bk.bi_conv2d(x, w, b, stride=2, padding=1, backend=backend),
        lambda: bk.bi_conv2d(xg, wg, b, stride=2, padding=2, dilation=2, groups=2, backend=backend),
        lambda: bk.bi_conv2d(x, w, b, stride=2, padding=1, input_activation=chained, backend=backend),
        lambda: bk.bi_conv2d(
            x.detach().to(memory_format=torch.channels_last).requires_grad_(),
            w,
            None,
            padding=1,
            activation="identity",
            backend=backend,
        ),
        lambda: bk.bi_conv2d_reverse(
            zg, wg, bg, stride=2, padding=2, output_padding=1, dilation=2, groups=2, log_scale=s, backend=backend
        ),
        lambda: bk.bi_conv2d_reverse(z, w, br, stride=2, padding=1, output_padding=1, log_scale=s, backend=backend),
        lambda: bk.bi_conv2d_reverse(
            z, w, br, stride=2, padding=1, output_padding=1, log_scale=s, input_activation=chained, backend=backend
        ),
        lambda: bk.bi_linear(lx, lw, lb, backend=backend),
        lambda: bk.bi_linear(lx, lw, lb, input_activation=chained, backend=backend),
        lambda: bk.bi_linear_reverse(lz, lw, lbr, log_scale=s, backend=backend),
        lambda: bk.bi_linear_reverse(lz, lw, lbr, log_scale=s, input_activation=chained, backend=backend),
        lambda: bk.bi_linear_reverse(lz, lw, None, activation=None, backend=backend),
    ]
    _run_with_and_without_grad(calls)


def _run_with_and_without_grad(calls: list) -> None:
    """Each call forward + backward (the backward ops get captured), then once more without grad."""
    for call in calls:
        y = call()
        y.backward(torch.randn_like(y))
        with torch.no_grad():
            call()


@functools.cache
def _captured(backend: str, device: str, edges: bool = False) -> dict[str, list]:
    """The op calls of _exercise (or _exercise_edges), captured once per backend."""
    torch.manual_seed(0)
    with Capture() as cap:
        (_exercise_edges if edges else _exercise)(backend, device)
    return cap.calls


OPCHECK_PARAMS = [
    pytest.param(b, name, id=f"{b.name}-{name}") for b in BACKENDS_UNDER_TEST for name in _library.ALL_OPS
]


def _nhwc(t: torch.Tensor) -> torch.Tensor:
    """The same values with NHWC strides (for C = 1 or 1x1 spatial still NCHW-contiguous too)."""
    return t.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)


def _exercise_edges(backend: str, device: str) -> None:
    """Forward + backward and a no-grad forward of every op on the inputs at the edges of the op contract: C = 1
    (every MNIST batch: NCHW- and NHWC-contiguous at once, with NCHW or NHWC strides), 1x1 spatial (the same
    ambiguity), an empty batch and a non-contiguous input."""

    def leaf(*shape: int, nhwc: bool = False) -> torch.Tensor:
        t = torch.randn(shape)
        return (_nhwc(t) if nhwc else t).to(device).requires_grad_()

    def view(t: torch.Tensor, fn) -> torch.Tensor:  # noqa: ANN001 - a non-contiguous view of a fresh leaf
        return fn(t.detach().requires_grad_())

    w, b, br, s = leaf(4, 1, 3, 3), leaf(4), leaf(1), leaf()  # C_in = 1: the weight is ambiguous too
    w3, b3, wr = leaf(4, 3, 3, 3), leaf(3), leaf(1, 3, 4, 4)  # wr: a reverse layer that reads a C = 1 input
    w11 = leaf(4, 3, 1, 1)
    lw, lb, lbr = leaf(5, 1), leaf(5), leaf(1)  # one input feature: [M, 1] rows
    calls = [
        lambda: bk.gnova(leaf(2, 1, 3, 4), *P, backend=backend),
        lambda: bk.gnova(leaf(2, 1, 3, 4, nhwc=True), *P, backend=backend),
        lambda: bk.gnova(leaf(0, 3), *P, backend=backend),
        lambda: bk.gnova(view(torch.randn(5, 4, device=device), lambda t: t.t()), *P, backend=backend),
        lambda: bk.gnova(view(torch.randn(3, 8, device=device), lambda t: t[:, ::2]), *P, backend=backend),
        lambda: bk.bi_conv2d(leaf(2, 1, 6, 6), w, b, stride=2, padding=1, backend=backend),
        lambda: bk.bi_conv2d(leaf(2, 1, 6, 6, nhwc=True), w, b, padding=1, backend=backend),
        lambda: bk.bi_conv2d(leaf(2, 3, 1, 1), w11, b, backend=backend),
        lambda: bk.bi_conv2d(leaf(0, 3, 5, 5), w3, b, padding=1, backend=backend),
        lambda: bk.bi_conv2d(view(torch.randn(2, 3, 5, 9, device=device), lambda t: t[..., ::2]), w3, b,
                             backend=backend),
        lambda: bk.bi_conv2d_reverse(leaf(2, 1, 3, 3), wr, b3, stride=2, padding=1, output_padding=1, log_scale=s,
                                     backend=backend),
        lambda: bk.bi_conv2d_reverse(leaf(2, 1, 3, 3, nhwc=True), wr, b3, stride=2, padding=1, output_padding=1,
                                     backend=backend),
        lambda: bk.bi_conv2d_reverse(leaf(2, 4, 3, 3), w, br, stride=2, padding=1, output_padding=1, log_scale=s,
                                     backend=backend),  # a C = 1 output (an MNIST decoder's last layer)
        lambda: bk.bi_conv2d_reverse(leaf(2, 4, 1, 1, nhwc=True), w11, b3, log_scale=s, backend=backend),
        lambda: bk.bi_conv2d_reverse(leaf(0, 4, 3, 3), w3, b3, padding=1, log_scale=s, backend=backend),
        lambda: bk.bi_conv2d_reverse(view(torch.randn(2, 4, 4, 3, device=device), lambda t: t.transpose(2, 3)), w3,
                                     b3, log_scale=s, backend=backend),
        lambda: bk.bi_linear(leaf(3, 1), lw, lb, backend=backend),
        lambda: bk.bi_linear(leaf(0, 1), lw, lb, backend=backend),
        lambda: bk.bi_linear(view(torch.randn(6, 2, device=device), lambda t: t.t()), leaf(5, 6), lb,
                             backend=backend),
        lambda: bk.bi_linear_reverse(leaf(3, 5), lw, lbr, log_scale=s, backend=backend),
        lambda: bk.bi_linear_reverse(leaf(0, 5), lw, lbr, log_scale=s, backend=backend),
        lambda: bk.bi_linear_reverse(view(torch.randn(5, 2, device=device), lambda t: t.t()), leaf(5, 6), None,
                                     log_scale=s, backend=backend),
    ]  # fmt: skip
    _run_with_and_without_grad(calls)


@pytest.mark.parametrize(("backend", "name"), OPCHECK_PARAMS)
def test_opcheck_on_captured_arguments(backend, name: str) -> None:
    """Every op (the backward ones included) on the arguments a real training step hands it."""
    calls = _captured(backend.name, backend.device)
    prefix = "triton_" if backend.name == "triton" else ""
    assert f"{prefix}{name}" in calls, f"{prefix}{name} was never called: {sorted(calls)}"
    # The interpreter runs every program in numpy: there the Triton family (whose fakes and autograd the compiled
    # family's opcheck already traces through AOT) skips the AOT-dispatch test.
    utils = OPCHECK_FAST if interpreted(backend) else OPCHECK_ALL
    for func, args, kwargs in calls[f"{prefix}{name}"][:4]:
        torch.library.opcheck(func, args, kwargs, test_utils=utils)


@pytest.mark.parametrize(("backend", "name"), OPCHECK_PARAMS)
def test_opcheck_on_edge_inputs(backend, name: str) -> None:
    """Every op on the edge inputs of _exercise_edges (C = 1 and 1x1 spatial, which are NCHW- and NHWC-contiguous at
    once; an empty batch; a non-contiguous input), which the captured training step has none of. opcheck compares the
    fake kernels' output strides with the real ones': catches a layout rule (fake, Triton launcher or compiled
    kernel) that picks channels_last for an input contiguous in both layouts, and fakes or kernels that mishandle an
    empty or non-contiguous input."""
    calls = _captured(backend.name, backend.device, edges=True)
    prefix = "triton_" if backend.name == "triton" else ""
    assert f"{prefix}{name}" in calls, f"{prefix}{name} was never called: {sorted(calls)}"
    utils = OPCHECK_FAST if interpreted(backend) else OPCHECK_ALL
    for func, args, kwargs in calls[f"{prefix}{name}"]:
        torch.library.opcheck(func, args, kwargs, test_utils=utils)


def test_every_op_has_one_schema_a_fake_and_cpp_autograd() -> None:
    if not bk.compiled_ops_available():
        pytest.skip("bvae_kernels._C is not built")
    text = (ROOT / "csrc" / "bvae_ops.cpp").read_text()
    declared = re.findall(r'\{"(\w+)",\s*\n?\s*"\(', text)
    assert sorted(declared) == sorted(_library.ALL_OPS), "each op's schema is written exactly once"
    for prefix in ("", "triton_"):
        for name in _library.ALL_OPS:
            qualname = f"bvae::{prefix}{name}"
            for key in ("Autograd", "Meta"):  # Meta: the fake kernel's registration
                assert torch._C._dispatch_has_kernel_for_dispatch_key(qualname, key), f"{qualname}: no {key} kernel"
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"bvae::{name}", "CPU")
    for name in _library.BI_OPS:  # gnova is elementwise: it runs in its input's dtype, as eager pointwise ops do
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"bvae::{name}", "AutocastCPU")
    python = "\n".join(p.read_text() for p in (ROOT / "bvae_kernels").rglob("*.py"))
    assert "custom_op(" not in python and ".define(" not in python, "no second schema in Python"


@cpu_ops
@pytest.mark.parametrize("name", ["bi_conv2d", "bi_conv2d_reverse", "bi_linear", "bi_linear_reverse", "gnova"])
def test_a_call_with_grad_never_enters_python(name: str) -> None:
    """Forward + backward of a compiled op run no Python of ours or of torch.library (C++ autograd, checks)."""
    x, w = torch.randn(2, 3, 5, 5, requires_grad=True), torch.randn(4, 3, 3, 3, requires_grad=True)
    call = {
        "bi_conv2d": lambda: torch.ops.bvae.bi_conv2d.default(x, w, None, [1, 1], [1, 1], *P),
        "bi_conv2d_reverse": lambda: torch.ops.bvae.bi_conv2d_reverse.default(
            torch.randn(2, 4, 5, 5, requires_grad=True),
            w,
            None,
            torch.zeros((), requires_grad=True),
            [1, 1],
            [1, 1],
            [0, 0],
            *P,
        ),
        "bi_linear": lambda: torch.ops.bvae.bi_linear.default(x.flatten(1), torch.randn(4, 75), None, *P),
        "bi_linear_reverse": lambda: torch.ops.bvae.bi_linear_reverse.default(
            x.flatten(1), torch.randn(75, 4), None, None, *P
        ),
        "gnova": lambda: torch.ops.bvae.gnova.default(x, *P),
    }[name]
    frames: list[str] = []

    def profile(frame, event, arg):  # noqa: ANN001, ANN202
        if event == "call":
            frames.append(frame.f_code.co_filename)

    y = call()  # warm: first calls may import or register
    torch.autograd.grad(y.sum(), [t for t in (x, w) if y.grad_fn is not None and t.requires_grad], allow_unused=True)
    sys.setprofile(profile)
    try:
        y = call()
        torch.autograd.backward(y, torch.ones_like(y))
    finally:
        sys.setprofile(None)
    ours = [f for f in frames if "bvae_kernels" in f or "torch/_library" in f or f.endswith("torch/library.py")]
    assert not ours, f"Python entered during a call with grad: {sorted(set(ours))}"


def _import_graph() -> dict[str, set[str]]:
    """bvae_kernels module -> the bvae_kernels modules it imports (top level or inside functions)."""
    pkg = ROOT / "bvae_kernels"
    graph: dict[str, set[str]] = {}
    for path in pkg.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        mod = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = mod if rel.name == "__init__" else mod.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [f"{target}.{a.name}" for a in node.names]
                # `from . import x` imports the submodule x (its package is already initialized): x is the edge
                deps |= {
                    n for n in ([*names] if node.module is None else [target, *names]) if n.startswith("bvae_kernels")
                }
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("bvae_kernels")}
        graph[mod] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_bvae_kernels_imports_in_one_direction() -> None:
    """No import cycle inside bvae_kernels (lazy imports inside functions count), and the contract is a leaf."""
    graph = _import_graph()
    state: dict[str, int] = {}

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for dep in sorted(graph[mod]):
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path, mod, dep]))
            if dep not in state:
                visit(dep, [*path, mod])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [])
    assert graph["bvae_kernels._library"] <= {"bvae_kernels._C"}, graph["bvae_kernels._library"]


# ----------------------------------------------------------------------------------------------------------
# torch.compile and autocast, on a chain of all four bidirectional ops
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("backend", backend_params())
def test_compile_fullgraph_chain(backend, compile_backend: str) -> None:
    if compile_backend == "inductor" and interpreted(backend):
        pytest.skip("the ops are opaque to Inductor: the cpu run covers it; the interpreter would only be slower")
    torch._dynamo.reset()
    inputs = chain_inputs(device=backend.device)
    eager_leaves = [t.clone().requires_grad_() for t in inputs]
    comp_leaves = [t.clone().requires_grad_() for t in inputs]
    y_eager = chain(*eager_leaves, backend=backend.name)
    y_comp = torch.compile(chain, fullgraph=True, backend=compile_backend)(*comp_leaves, backend=backend.name)
    assert rel_err(y_comp, y_eager) <= TOL[torch.float32]
    g = torch.randn_like(y_eager)
    grads_eager = torch.autograd.grad(y_eager, eager_leaves, g)
    grads_comp = torch.autograd.grad(y_comp, comp_leaves, g)
    for i, (a, b) in enumerate(zip(grads_comp, grads_eager, strict=True)):
        assert rel_err(a, b) <= TOL[torch.float32], f"grad {i}"
    ref_leaves = [t.double().requires_grad_() for t in inputs]
    assert rel_err(y_comp, chain(*ref_leaves, backend="torch")) <= TOL[torch.float32]


@pytest.mark.parametrize("backend", [b for b in backend_params() if b.values[0].device == "cpu"])
def test_autocast_bfloat16_cpu(backend) -> None:
    """Under CPU autocast (bf16) the ops compute in bf16 like F.conv2d, and gradients reach fp32 leaves."""
    if backend.name == "triton":
        pytest.skip("the Triton interpreter cannot run a bfloat16 matmul (the op hands it to the cpu kernels)")
    inputs = chain_inputs()
    ours_leaves = [t.clone().requires_grad_() for t in inputs]
    ref_leaves = [t.clone().requires_grad_() for t in inputs]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = chain(*ours_leaves, backend=backend.name)
        y_ref_lp = chain(*ref_leaves, backend="torch")
    assert y.dtype == torch.bfloat16 and y_ref_lp.dtype == torch.bfloat16
    ref64 = [t.to(torch.bfloat16).double().requires_grad_() for t in inputs]
    y64 = chain(*ref64, backend="torch")
    err, err_torch = rel_err(y, y64), rel_err(y_ref_lp, y64)
    assert err <= TOL[torch.bfloat16] and err <= 2 * err_torch + 5e-4, (err, err_torch)
    g = torch.randn(y.shape, dtype=torch.float64).to(torch.bfloat16)
    grads = torch.autograd.grad(y, ours_leaves, g)
    grads64 = torch.autograd.grad(y64, ref64, g.double())
    for i, (a, b) in enumerate(zip(grads, grads64, strict=True)):
        assert a.dtype == torch.float32, f"grad {i} dtype {a.dtype}"
        assert rel_err(a, b) <= 2 * TOL[torch.bfloat16], f"grad {i}: {rel_err(a, b):.3e}"


@cpu_ops
def test_autocast_leaves_float64_alone() -> None:
    """Autocast casts float32 inputs only: a float64 call stays float64 (as F.conv2d does)."""
    x, w = torch.randn(1, 2, 5, 5, dtype=torch.float64), torch.randn(3, 2, 3, 3, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = bk.bi_conv2d(x, w, padding=1, backend="cpu")
    assert y.dtype == torch.float64
    assert rel_err(y, bk.reference.bi_conv2d(x, w, None, 1, 1)) <= 1e-12


@cpu_ops
@pytest.mark.parametrize("backend", BACKENDS_UNDER_TEST, ids=str)
def test_forward_mode_ad_gives_the_reference_tangent(backend) -> None:
    """Dual tensors through every fused op (the op runs its ATen composite): the reference's tangent, never zero."""
    import torch.autograd.forward_ad as fwAD

    dtype = torch.float64 if torch.float64 in backend.dtypes else torch.float32
    opts = {"dtype": dtype, "device": backend.device}
    g = torch.Generator().manual_seed(0)
    x, v, w = (torch.randn(*shape, generator=g).to(**opts) for shape in ((2, 5), (2, 5), (3, 5)))
    b, s = torch.randn(3, generator=g).to(**opts), torch.tensor(0.3, **opts)
    calls = {
        "bi_linear": lambda t, be: bk.bi_linear(t, w, b, input_activation="gnova", backend=be),
        "bi_linear_reverse": lambda t, be: bk.bi_linear_reverse(t @ w.T, w, None, log_scale=s, backend=be),
        "bi_conv2d": lambda t, be: bk.bi_conv2d(t.reshape(2, 1, 1, 5), w.reshape(3, 1, 1, 5), b, backend=be),
        "bi_conv2d_reverse": lambda t, be: bk.bi_conv2d_reverse(t.reshape(2, 5, 1, 1), w.T.reshape(5, 3, 1, 1), b,
                                                                log_scale=s, backend=be),
        "gnova": lambda t, be: bk.gnova(t, backend=be),
    }  # fmt: skip
    for name, call in calls.items():
        tangents = []
        for be in (backend.name, "torch"):
            with fwAD.dual_level():
                tangents.append(fwAD.unpack_dual(call(fwAD.make_dual(x, v), be)).tangent)
        assert tangents[0] is not None and tangents[0].abs().sum() > 0, name
        assert rel_err(tangents[0], tangents[1]) <= TOL[dtype], name


@pytest.mark.parametrize("backend", ["torch", *BACKENDS_UNDER_TEST], ids=str)
def test_degenerate_shapes_follow_one_rule_on_every_backend(backend) -> None:
    """The op contract: a weight with a zero dimension is refused in both directions (a layer without weights),
    stride / padding / dilation / groups / an output side of 2^31 or more is refused (the libraries take 32-bit
    sizes), an empty batch computes an empty output. The same ValueError on every backend."""
    name, device = (backend, "cpu") if backend == "torch" else (backend.name, backend.device)
    torch.set_default_device(device)
    try:
        _degenerate_shapes(name)
    finally:
        torch.set_default_device(None)


def _degenerate_shapes(backend: str) -> None:
    x, z = torch.randn(2, 3, 6, 6), torch.randn(2, 4, 4, 4)
    for shape in ((0, 3, 3, 3), (4, 0, 3, 3), (4, 3, 0, 3), (4, 3, 3, 0), (0, 0, 0, 0)):
        weight = torch.randn(shape)
        match = r"weight must have C_out >= 1, C_in >= 1 and a kernel of at least 1x1"
        with pytest.raises(ValueError, match=match):
            bk.bi_conv2d(x[:, : shape[1]], weight, backend=backend)
        with pytest.raises(ValueError, match=match):
            bk.bi_conv2d_reverse(z[:, : shape[0]], weight, backend=backend)
    for shape in ((0, 5), (3, 0), (0, 0)):
        weight = torch.randn(shape)
        match = r"weight must have out_features >= 1 and in_features >= 1"
        with pytest.raises(ValueError, match=match):
            bk.bi_linear(torch.randn(2, shape[1]), weight, backend=backend)
        with pytest.raises(ValueError, match=match):
            bk.bi_linear_reverse(torch.randn(2, shape[0]), weight, backend=backend)
    too_big = r"stride, padding, dilation and groups must be < 2\^31"
    for kw in (
        {"stride": 2**31},
        {"padding": 2**31},
        {"stride": (1, 2**40)},
        {"padding": (2**40, 0)},
        {"dilation": 2**31},
        {"groups": 2**31},
    ):
        with pytest.raises(ValueError, match=too_big):
            bk.bi_conv2d(x, torch.randn(4, 3, 3, 3), backend=backend, **kw)
        with pytest.raises(ValueError, match=too_big):
            bk.bi_conv2d_reverse(z, torch.randn(4, 3, 3, 3), backend=backend, **kw)
    with pytest.raises(ValueError, match=r"each side must be < 2\^31"):  # legal stride, an output too large
        bk.bi_conv2d_reverse(torch.randn(1, 1, 3, 1), torch.randn(1, 1, 1, 1), stride=2**31 - 1, backend=backend)
    w = torch.randn(4, 3, 3, 3)
    assert bk.bi_conv2d(x[:0], w, backend=backend).shape == (0, 4, 4, 4)
    assert bk.bi_conv2d_reverse(z[:0], w, backend=backend).shape == (0, 3, 6, 6)
    assert bk.bi_linear(torch.randn(0, 5), torch.randn(3, 5), backend=backend).shape == (0, 3)
    assert bk.bi_linear_reverse(torch.randn(0, 3), torch.randn(3, 5), backend=backend).shape == (0, 5)


@pytest.mark.parametrize(("backend", "name"), OPCHECK_PARAMS)
def test_every_tensor_argument_is_checked(backend, name: str) -> None:
    """Each tensor argument of every op with two or more (the backward ones included), in turn on the meta device,
    in another dtype or with one more element, on the arguments a training step hands the op: an error naming the
    problem, never a read of the wrong memory or a crash (the raw ops are public: torch.ops.bvae.*)."""
    calls = _captured(backend.name, backend.device)
    prefix = "triton_" if backend.name == "triton" else ""
    func, args, kwargs = calls[prefix + name][0]
    positions = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    if len(positions) < 2:
        pytest.skip("one tensor argument: any device, float dtype and shape of it is a valid call")
    for i in positions:
        t = args[i]
        other = torch.float64 if t.dtype != torch.float64 else torch.float32
        bad_versions = {
            "meta": torch.empty_like(t, device="meta"),
            "dtype": t.detach().to(other),
            "shape": torch.cat([t.detach().reshape(-1), t.detach().reshape(-1)[:1]]) if t.numel() > 1 else None,
        }
        for what, bad in bad_versions.items():
            if bad is None or (t.dim() == 0 and what != "meta"):  # the reverse scale may keep its own dtype
                continue
            broken = list(args)
            broken[i] = bad
            with pytest.raises((ValueError, TypeError, NotImplementedError, RuntimeError)) as info:
                func(*broken, **kwargs)
            message = str(info.value)
            assert "Segmentation" not in message
            if info.type is RuntimeError:  # only the dispatcher's own refusals (no kernel for meta) are accepted
                assert "meta" in message or "Meta" in message, (name, i, what, message[:200])
