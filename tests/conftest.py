"""Shared test helpers: the tolerance table, relative-error measure, input layouts and reference comparison.

Every comparison follows DESIGN section 6: the relative norm ||out - ref|| / ||ref|| against a float64
reference computed from the same rounded inputs, for the value and for every gradient. NaN never passes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
import torch

import bvae_kernels as bk
from bvae_kernels import backends

# ----------------------------------------------------------------------------------------------------------
# the one tolerance table (relative norm against a float64 reference of the same rounded inputs)
# ----------------------------------------------------------------------------------------------------------
TOL: dict[torch.dtype, float] = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,  # tf32 off (CPU never uses tf32; the GPU tests switch it off)
    torch.float16: 2e-3,
    torch.bfloat16: 1e-2,
}
TOL_TF32 = 1e-3
# Low precision: our error must also be at most LOWP_RATIO x torch's own error in that dtype (plus a floor
# far below the dtype's rounding, so that a perfect torch result on a tiny case cannot fail us by luck).
LOWP_RATIO = 2.0
LOWP_FLOOR: dict[torch.dtype, float] = {torch.float16: 1e-4, torch.bfloat16: 5e-4}

ACTIVATIONS = ["gnova", "sigmoid", "identity", None, bk.GNoVa(0.05, 2.0, 0.5)]

# One intra-op thread: the shapes here are tiny, and on a shared 2-core machine OpenMP threads that spin
# while other processes hold the cores make a 1-second gradcheck take a minute. BVAE_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("BVAE_TEST_THREADS", "1")))

cpu_ops = pytest.mark.skipif(not bk.compiled_ops_available(), reason="bvae_kernels._C is not built")
gpu = pytest.mark.gpu


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU-marked tests skip without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _clean_backend_state(monkeypatch: pytest.MonkeyPatch):
    """Each test starts without $BVAE_BACKEND, with no cached backend choice and the warn-once memory cleared
    (a test that sets $BVAE_BACKEND calls set_env_backend, which refreshes the cache)."""
    monkeypatch.delenv("BVAE_BACKEND", raising=False)
    backends.refresh()
    yield
    backends.refresh()


def set_env_backend(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """$BVAE_BACKEND = value, read again (the package reads it once)."""
    monkeypatch.setenv("BVAE_BACKEND", value)
    backends.refresh()


# ----------------------------------------------------------------------------------------------------------
# the backends under test: every fused backend this machine can run, each on its device with its dtypes
# ----------------------------------------------------------------------------------------------------------
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@dataclass(frozen=True)
class Backend:
    """A fused backend as the op tests run it: where its tensors live and which dtypes it serves there."""

    name: str
    device: str
    dtypes: tuple[torch.dtype, ...]
    float64: bool  # gradcheck-able (float64 kernels)

    def __str__(self) -> str:
        return self.name


def _backends_under_test() -> list[Backend]:
    """`bk.available_backends()` minus the reference, narrowed by $BVAE_TEST_BACKENDS (comma-separated).

    The Triton interpreter (TRITON_INTERPRET=1, CPU tensors) cannot run a bfloat16 tl.dot and has no float64
    kernels: fp32 and fp16 there; on a GPU fp32, fp16 and bf16 for cuda and triton."""
    wanted = os.environ.get("BVAE_TEST_BACKENDS")
    out = []
    for name in bk.available_backends():
        if name == "torch" or (wanted and name not in wanted.split(",")):
            continue
        if name == "cpu":
            out.append(Backend("cpu", "cpu", (torch.float32, torch.bfloat16), True))
        elif name == "cuda":
            out.append(Backend("cuda", "cuda", (torch.float32, torch.float16, torch.bfloat16), True))
        elif INTERPRET:
            out.append(Backend("triton", "cpu", (torch.float32, torch.float16), False))
        else:
            out.append(Backend("triton", "cuda", (torch.float32, torch.float16, torch.bfloat16), False))
    return out


BACKENDS_UNDER_TEST = _backends_under_test()


def backend_dtype_params(interp_dtypes: tuple[torch.dtype, ...] | None = None) -> list:
    """pytest params (backend, dtype) for every backend under test and each dtype it serves (only
    `interp_dtypes` under the Triton interpreter, where a test's dtype does not change what it checks)."""
    return [
        pytest.param(b, d, id=f"{b.name}-{str(d)[6:]}")
        for b in BACKENDS_UNDER_TEST
        for d in b.dtypes
        if interp_dtypes is None or not interpreted(b) or d in interp_dtypes
    ]


def backend_params(float64: bool = False) -> list:
    """pytest params of the backends under test (only those with float64 kernels when `float64`)."""
    return [pytest.param(b, id=b.name) for b in BACKENDS_UNDER_TEST if b.float64 or not float64]


def interpreted(backend: Backend) -> bool:
    """True for the Triton interpreter (slow: the op tests run their `interp` cases there)."""
    return backend.name == "triton" and backend.device == "cpu"


@pytest.fixture(autouse=True)
def _gpu_numerics(monkeypatch: pytest.MonkeyPatch):
    """fp32 tolerances assume IEEE fp32 contractions (tf32 off); Triton uses one fixed tile config per family
    (no autotune benchmarking per shape; a test that wants autotuning deletes the variable itself)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    monkeypatch.setenv("BVAE_TRITON_FIXED_CONFIG", "1")
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ----------------------------------------------------------------------------------------------------------
# error measure
# ----------------------------------------------------------------------------------------------------------
def rel_err(out: torch.Tensor | None, ref: torch.Tensor | None) -> float:
    """||out - ref|| / ||ref|| in float64; inf on a shape mismatch, a missing tensor or any NaN/inf mismatch."""
    if out is None or ref is None:
        return 0.0 if out is None and ref is None else float("inf")
    if out.shape != ref.shape:
        return float("inf")
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    if out64.numel() == 0:
        return 0.0
    if not torch.isfinite(out64).all() or not torch.isfinite(ref64).all():
        same = torch.equal(out64.isnan(), ref64.isnan()) and torch.equal(
            out64.nan_to_num(0.0, 1.0, -1.0).isinf(), ref64.nan_to_num(0.0, 1.0, -1.0).isinf()
        )
        finite = torch.isfinite(ref64)
        if not same or not torch.equal(out64[~finite & ~ref64.isnan()], ref64[~finite & ~ref64.isnan()]):
            return float("inf")
        out64, ref64 = out64[finite], ref64[finite]
    denom = ref64.norm().item()
    diff = (out64 - ref64).norm().item()
    if denom == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / denom


def assert_rel(out: torch.Tensor | None, ref: torch.Tensor | None, tol: float, what: str) -> float:
    err = rel_err(out, ref)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e}"
    return err


# ----------------------------------------------------------------------------------------------------------
# inputs in a given memory layout: a leaf (what the gradient lands on) and the view the op sees
# ----------------------------------------------------------------------------------------------------------
LAYOUTS = ("contiguous", "channels_last", "sliced", "transposed")


@dataclass
class Arg:
    """One tensor argument: its rounded leaf values and how to turn the leaf into what the op receives."""

    leaf: torch.Tensor
    view: Callable[[torch.Tensor], torch.Tensor]

    def make(self, dtype: torch.dtype, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        leaf = self.leaf.detach().to(device=device, dtype=dtype).requires_grad_(True)
        return leaf, self.view(leaf)


def make_arg(
    shape: Sequence[int], dtype: torch.dtype, layout: str = "contiguous", scale: float = 1.0, device: str = "cpu"
) -> Arg:
    """Random values rounded to `dtype` once (the float64 reference sees exactly these), in `layout`."""
    shape = list(shape)
    if layout == "contiguous" or (layout == "channels_last" and len(shape) != 4) or len(shape) == 0:
        leaf, view = torch.randn(shape, dtype=torch.float64) * scale, lambda t: t
    elif layout == "channels_last":
        leaf = (torch.randn(shape, dtype=torch.float64) * scale).to(memory_format=torch.channels_last)
        view = lambda t: t
    elif layout == "sliced":
        leaf = torch.randn([*shape[:-1], 2 * shape[-1]], dtype=torch.float64) * scale
        view = lambda t: t[..., ::2]
    elif layout == "transposed":
        if len(shape) < 2:
            leaf, view = torch.randn(shape, dtype=torch.float64) * scale, lambda t: t
        else:
            leaf = torch.randn([*shape[:-2], shape[-1], shape[-2]], dtype=torch.float64) * scale
            view = lambda t: t.transpose(-1, -2)
    else:
        raise ValueError(f"unknown layout {layout!r}")
    leaf = leaf.to(dtype).to(torch.float64)  # round once
    return Arg(leaf.to(device), view)


# ----------------------------------------------------------------------------------------------------------
# running an op with its gradients, and the full comparison against the float64 reference
# ----------------------------------------------------------------------------------------------------------
def run_with_grads(
    fn: Callable[..., torch.Tensor],
    args: Sequence[Arg | None],
    dtype: torch.dtype,
    grad_out: torch.Tensor | None,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, list[torch.Tensor | None], torch.Tensor]:
    """Calls fn(*views); returns (y, grads of each leaf, the grad_out used)."""
    leaves, views = [], []
    for a in args:
        if a is None:
            leaves.append(None)
            views.append(None)
        else:
            leaf, view = a.make(dtype, device)
            leaves.append(leaf)
            views.append(view)
    y = fn(*views)
    if grad_out is None:
        grad_out = torch.randn(y.shape, dtype=torch.float64).to(dtype).to(torch.float64)
    g = grad_out.to(device=y.device, dtype=y.dtype)
    targets = [leaf for leaf in leaves if leaf is not None]
    grads = iter(torch.autograd.grad(y, targets, g, allow_unused=True))
    return y, [next(grads) if leaf is not None else None for leaf in leaves], grad_out


def compare_to_reference(
    ours: Callable[..., torch.Tensor],
    ref: Callable[..., torch.Tensor],
    args: Sequence[Arg | None],
    dtype: torch.dtype,
    names: Sequence[str],
    device: str | torch.device = "cpu",
    tol: float | None = None,
) -> dict[str, float]:
    """Value and every gradient of `ours` in `dtype` vs `ref` in float64 on the same rounded inputs.

    For float16/bfloat16 also checks err(ours) <= LOWP_RATIO * err(ref run in that dtype) + LOWP_FLOOR.
    Returns the measured errors by name ("y", "d<name>").
    """
    tol = TOL[dtype] if tol is None else tol
    y, grads, g = run_with_grads(ours, args, dtype, None, device)
    y64, grads64, _ = run_with_grads(ref, args, torch.float64, g, device)
    assert y.dtype == dtype, f"output dtype {y.dtype}, expected {dtype}"
    assert y.shape == y64.shape, f"output shape {tuple(y.shape)}, expected {tuple(y64.shape)}"
    errs = {"y": assert_rel(y, y64, tol, "value")}
    low = dtype in (torch.float16, torch.bfloat16)
    scalars = set()
    for name, gr, gr64 in zip(names, grads, grads64, strict=True):
        if gr64 is None:
            continue
        assert gr is not None, f"d{name} is missing"
        assert gr.dtype == dtype, f"d{name} has dtype {gr.dtype}"
        if low and gr.numel() == 1:
            # One number summed over every element (the reverse scale's gradient), often with cancellation: in
            # fp16/bf16 its relative error can be any size, whoever computes it. Bounded in absolute terms, a few
            # ulps at its own magnitude or 1 (fp32 and fp64 hold it to the relative tolerance).
            scalars.add(f"d{name}")
            err = abs(gr.double().item() - gr64.double().item())
            bound = 4 * torch.finfo(dtype).eps * (1 + abs(gr64.double().item()))
            assert err <= bound, f"d{name}: absolute error {err:.3e} > {bound:.1e}"
            errs[f"d{name}"] = err
            continue
        errs[f"d{name}"] = assert_rel(gr, gr64, tol, f"d{name}")
    if low:
        y_lp, grads_lp, _ = run_with_grads(ref, args, dtype, g, device)
        theirs = {"y": rel_err(y_lp, y64)}
        for name, gr_lp, gr64 in zip(names, grads_lp, grads64, strict=True):
            if gr64 is not None:
                theirs[f"d{name}"] = rel_err(gr_lp, gr64)
        for key, err in errs.items():
            if key in scalars:
                continue
            bound = LOWP_RATIO * theirs[key] + LOWP_FLOOR[dtype]
            assert err <= bound, f"{key}: error {err:.3e} > {LOWP_RATIO} x torch's own {dtype} error {theirs[key]:.3e}"
    return errs


@functools.cache
def has_cuda_kernels() -> bool:
    return bk.compiled_ops_available() and torch._C._dispatch_has_kernel_for_dispatch_key("bvae::bi_conv2d", "CUDA")


def env_backend() -> str | None:
    return os.environ.get("BVAE_BACKEND")
