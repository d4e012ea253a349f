"""Backend availability, selection (backend= > $BVAE_BACKEND > device default) and warn-once fallbacks."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
from conftest import cpu_ops, gpu, rel_err, set_env_backend
from torch.utils._python_dispatch import TorchDispatchMode

import bvae_kernels as bk
from bvae_kernels import backends, reference


class RecordOps(TorchDispatchMode):
    """Records the name of every op that reaches the dispatcher (bvae.* custom ops or aten.*)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))

    def used_bvae(self) -> bool:
        return any(name.startswith("bvae.") for name in self.ops)


def _run_all_ops(backend: str | None = None) -> list[torch.Tensor]:
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    return [
        bk.bi_conv2d(x, w, torch.randn(3), padding=1, backend=backend),
        bk.bi_conv2d_reverse(torch.randn(1, 3, 3, 3), w, backend=backend),
        bk.bi_linear(torch.randn(2, 4), torch.randn(3, 4), backend=backend),
        bk.bi_linear_reverse(torch.randn(2, 3), torch.randn(3, 4), backend=backend),
        bk.gnova(torch.randn(4), backend=backend),
    ]


@cpu_ops
def test_available_backends_on_this_machine() -> None:
    names = bk.available_backends()
    assert names[:2] == ["torch", "cpu"]
    assert ("cuda" in names) == (torch.cuda.is_available() and backends.cuda_ops_available())
    assert set(names) <= set(bk.BACKENDS)


@cpu_ops
def test_default_for_cpu_tensors_is_cpu() -> None:
    assert backends.resolve_backend(None, torch.device("cpu")) == "cpu"
    with RecordOps() as rec:
        _run_all_ops()
    for name in ("bi_conv2d", "bi_conv2d_reverse", "bi_linear", "bi_linear_reverse", "gnova"):
        assert f"bvae.{name}.default" in rec.ops


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_explicit_backend_for_wrong_device_raises(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match=f"backend='{backend}' cannot run this call"):
        bk.bi_conv2d(torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3), backend=backend)
    with pytest.raises(ValueError, match=f"backend='{backend}' cannot run this call"):
        bk.gnova(torch.randn(3), backend=backend)


def test_cuda_backend_on_cpu_names_the_device() -> None:
    with pytest.raises(ValueError, match="the cuda backend serves CUDA tensors, not cpu"):
        bk.bi_linear(torch.randn(2, 3), torch.randn(4, 3), backend="cuda")


def test_env_torch_forces_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env_backend(monkeypatch, "torch")
    torch.manual_seed(1)
    with RecordOps() as rec:
        outs = _run_all_ops()
    assert not rec.used_bvae(), [op for op in rec.ops if op.startswith("bvae.")]
    torch.manual_seed(1)
    refs = _run_all_ops(backend="torch")
    for out, ref in zip(outs, refs, strict=True):
        assert torch.equal(out, ref)


@cpu_ops
def test_explicit_backend_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env_backend(monkeypatch, "torch")
    with RecordOps() as rec:
        _run_all_ops(backend="cpu")
    assert "bvae.bi_conv2d.default" in rec.ops and "bvae.gnova.default" in rec.ops


@cpu_ops
def test_env_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env_backend(monkeypatch, "cpu")
    with RecordOps() as rec:
        y = bk.bi_conv2d(torch.randn(1, 2, 5, 5), w := torch.randn(3, 2, 3, 3))
    assert "bvae.bi_conv2d.default" in rec.ops
    assert y.shape == (1, 3, 3, 3) and w.shape == (3, 2, 3, 3)


@cpu_ops
def test_env_fallback_warns_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """$BVAE_BACKEND=cuda on CPU tensors falls back (to cpu) with one RuntimeWarning saying why."""
    set_env_backend(monkeypatch, "cuda")
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with pytest.warns(RuntimeWarning, match=r"using backend 'cpu' instead of 'cuda': the cuda backend serves CUDA"):
        with RecordOps() as rec:
            y = bk.bi_conv2d(x, w)
    assert "bvae.bi_conv2d.default" in rec.ops
    assert rel_err(y, reference.bi_conv2d(x.double(), w.double())) <= 1e-5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bk.bi_conv2d(x, w)
        bk.bi_linear(torch.randn(2, 3), torch.randn(4, 3))
    assert not [c for c in caught if issubclass(c.category, RuntimeWarning)], [str(c.message) for c in caught]


def test_env_triton_falls_back_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env_backend(monkeypatch, "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with pytest.warns(RuntimeWarning, match="instead of 'triton'"):
        y = bk.bi_conv2d(x, w)
    assert rel_err(y, reference.bi_conv2d(x.double(), w.double())) <= 1e-5


def test_import_without_compiled_ops() -> None:
    """`import bvae_kernels` works without _C: only the torch backend, the ops still run, cpu is refused."""
    code = (
        "import sys, torch; sys.modules['bvae_kernels._C'] = None\n"
        "import bvae_kernels as bk\n"
        "assert bk.available_backends() == ['torch'], bk.available_backends()\n"
        "assert not bk.compiled_ops_available()\n"
        "x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)\n"
        "y = bk.bi_conv2d(x, w)\n"
        "assert torch.equal(y, bk.reference.bi_conv2d(x, w))\n"
        "try:\n"
        "    bk.bi_conv2d(x, w, backend='cpu')\n"
        "except ValueError as e:\n"
        "    assert 'could not be imported' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('backend=cpu without _C did not raise')\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


# ----------------------------------------------------------------------------------------------------------
# backend choice under torch.compile: made once at trace time, no graph break
# ----------------------------------------------------------------------------------------------------------
def test_resolve_backend_traces_fullgraph(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA chain probes the dispatcher (cuda_ops_available), which Dynamo cannot trace: it must not break."""
    torch._dynamo.reset()
    set_env_backend(monkeypatch, "cuda")  # put the cuda probe first in the chain

    def f(x: torch.Tensor) -> torch.Tensor:
        return x + len(backends.resolve_backend(None, torch.device("cuda")))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the fallback warning, where there are no CUDA kernels
        eager = backends.resolve_backend(None, torch.device("cuda"))
        out = torch.compile(f, fullgraph=True, backend="eager")(torch.zeros(1))
    assert out.item() == len(eager)


@cpu_ops
def test_compile_fullgraph_with_env_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """$BVAE_BACKEND=triton on CPU tensors under fullgraph compile: falls back (warning at trace time), no break."""
    torch._dynamo.reset()
    set_env_backend(monkeypatch, "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with pytest.warns(RuntimeWarning, match="instead of 'triton'"):
        y = torch.compile(lambda x: bk.bi_conv2d(x, w), fullgraph=True, backend="eager")(x)
    assert rel_err(y, reference.bi_conv2d(x.double(), w.double())) <= 1e-5


def test_compile_bad_backend_is_still_a_value_error() -> None:
    torch._dynamo.reset()
    w = torch.randn(3, 2, 3, 3)
    with pytest.raises(ValueError, match="backend must be one of"):
        torch.compile(lambda x: bk.bi_conv2d(x, w, backend="gpu"), backend="eager")(torch.randn(1, 2, 5, 5))


# ----------------------------------------------------------------------------------------------------------
# GPU machines
# ----------------------------------------------------------------------------------------------------------
@gpu
def test_cuda_kernels_registered() -> None:
    """Fails when CUDA is available but the build lost the CUDA kernels (e.g. built without nvcc)."""
    assert torch.cuda.is_available()
    for name in (
        "gnova",
        "bi_conv2d",
        "bi_conv2d_fwd",
        "bi_conv2d_bwd",
        "bi_conv2d_reverse",
        "bi_linear",
        "bi_linear_bwd",
    ):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"bvae::{name}", "CUDA"), f"no CUDA kernel for {name}"
    assert "cuda" in bk.available_backends()


@gpu
def test_default_for_cuda_tensors() -> None:
    chosen = backends.resolve_backend(None, torch.device("cuda"))
    expected = next(name for name in ("triton", "cuda", "torch") if backends._unavailable_reason(name, "cuda") is None)
    assert chosen == expected
    with pytest.raises(ValueError, match="the cpu backend serves CPU tensors, not cuda"):
        bk.bi_conv2d(torch.randn(1, 2, 5, 5, device="cuda"), torch.randn(3, 2, 3, 3, device="cuda"), backend="cpu")
