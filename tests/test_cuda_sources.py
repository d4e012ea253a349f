"""Checks of the CUDA backend (csrc/cuda/, csrc/cuda_ops.cpp).

Without a GPU:
- `.ci/nvcc_check.sh` compiles every csrc/cuda/*.cu with `nvcc -c` for sm_80 and sm_90 (skipped without nvcc);
- the script reports a broken source as a failure and a missing nvcc as a skip;
- tests/cuda_host_math_test.cpp checks the kernels' per-element math (csrc/cuda/act_kernels.cuh compiled as
  plain C++) against a long-double reference and the stable-sigmoid edge cases (skipped without g++).

On a GPU (marked `gpu`): every op has a CUDA kernel, and the CUDA ops match a float64 formula of the same
rounded inputs on shapes that reach every launcher path; the bias gradient is bitwise reproducible.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "nvcc_check.sh"


def _find_nvcc() -> str | None:
    """The compiler .ci/nvcc_check.sh would pick (NVCC, PATH, CUDA_HOME, /usr/local/cuda), or None."""
    explicit = os.environ.get("NVCC")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    candidates = [shutil.which("nvcc")]
    if os.environ.get("CUDA_HOME"):
        candidates.append(os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc"))
    candidates.append("/usr/local/cuda/bin/nvcc")
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


NVCC = _find_nvcc()
CXX = shutil.which("g++") or shutil.which("c++")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found")


def _run(cmd: list[str], env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@needs_nvcc
def test_cuda_sources_compile_for_sm80_and_sm90():
    env = dict(os.environ, NVCC=NVCC)
    env.pop("NVCC_ARCHS", None)
    res = _run(["bash", str(SCRIPT)], env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    sources = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "csrc" / "cuda").glob("*.cu"))
    assert sources, "no csrc/cuda/*.cu found"
    for arch in ("80", "90"):
        for src in sources:
            assert f"ok    sm_{arch}  {src}" in out, out


@needs_nvcc
def test_nvcc_check_fails_on_a_compile_error(tmp_path):
    bad = tmp_path / "broken.cu"
    bad.write_text("__global__ void k(float* p) { p[0] = not_declared; }\n")
    res = _run(["bash", str(SCRIPT), str(bad)], env=dict(os.environ, NVCC=NVCC, NVCC_ARCHS="80"))
    assert res.returncode != 0
    assert "FAIL  sm_80" in res.stdout


def test_nvcc_check_skips_without_nvcc(tmp_path):
    res = _run(["bash", str(SCRIPT)], env=dict(os.environ, NVCC=str(tmp_path / "no-nvcc-here")), timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "nvcc not found: skipped" in res.stdout


def _cuda_include_dir() -> str | None:
    """A directory holding cuda_runtime_api.h (CUDA_HOME, next to nvcc, /usr/local/cuda), or None."""
    roots = [os.environ.get("CUDA_HOME"), os.path.dirname(os.path.dirname(os.path.realpath(NVCC))) if NVCC else None]
    for root in [*roots, "/usr/local/cuda"]:
        for sub in ("include", "targets/x86_64-linux/include"):
            if root and os.path.isfile(os.path.join(root, sub, "cuda_runtime_api.h")):
                return os.path.join(root, sub)
    return None


def _torch_cuda_headers() -> list[str] | None:
    """torch's include dirs when they ship the c10/cuda headers (CPU wheels do), else None."""
    from torch.utils.cpp_extension import include_paths

    paths = include_paths()
    return paths if any(os.path.isfile(os.path.join(p, "c10", "cuda", "CUDAGuard.h")) for p in paths) else None


@pytest.mark.slow
@pytest.mark.skipif(CXX is None, reason="no C++ compiler (g++/c++) found")
def test_cuda_binder_compiles_on_host():
    """csrc/cuda_ops.cpp (the tensor -> launcher binder) parses with torch's and CUDA's headers, no GPU needed."""
    torch_inc, cuda_inc = _torch_cuda_headers(), _cuda_include_dir()
    if torch_inc is None or cuda_inc is None:
        pytest.skip("torch's c10/cuda headers or the CUDA runtime headers are missing")
    import sysconfig

    includes = [*torch_inc, sysconfig.get_paths()["include"], cuda_inc]
    # The standard torch's BuildExtension compiles with (C++20 from torch 2.13; 2.14's headers require it).
    cmd = [CXX, "-fsyntax-only", "-std=c++20", "-Wall", "-Werror", "-DBVAE_WITH_CUDA=1"]
    # CPU wheels lack the generated c10/cuda/impl/cuda_cmake_macros.h; the flag makes CUDAMacros.h skip it.
    cmd += ["-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE"]
    cmd += [arg for inc in includes for arg in ("-isystem", inc)]
    cmd += ["-I", str(ROOT / "csrc"), str(ROOT / "csrc" / "cuda_ops.cpp")]
    res = _run(cmd, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.skipif(CXX is None, reason="no C++ compiler (g++/c++) found")
def test_cuda_kernel_math_on_host(tmp_path):
    exe = tmp_path / "cuda_host_math_test"
    build = _run(
        [
            CXX,
            "-std=c++17",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
            str(ROOT / "csrc" / "cuda"),
            str(ROOT / "tests" / "cuda_host_math_test.cpp"),
            "-o",
            str(exe),
        ],
        timeout=120,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    res = _run([str(exe)], timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "all checks passed" in res.stdout


# A launch `kernel<<<grid, block, smem, stream>>>(` (the kernel name with its template arguments, then the config).
_LAUNCH = re.compile(r"(\w+(?:<[^<>;]*>)?)\s*<<<(.*?)>>>\s*\(", re.S)


@pytest.mark.skipif(CXX is None, reason="no C++ compiler (g++/c++) found")
def test_cuda_kernels_run_in_host_emulation(tmp_path):
    """csrc/cuda/act_kernels.cu itself, kernels and launchers, compiled with g++ against tests/cuda_emu/ (a host
    stand-in for the CUDA runtime: a thread per CUDA thread, barriers for __syncthreads and the warp shuffles) and
    run by tests/cuda_kernels_emulated_test.cpp on every launcher path against a float64 reference. Catches index
    math bugs in the device code, which test_cuda_kernel_math_on_host (the .cuh helpers only) and, without a GPU,
    every other test miss: a grid-stride or tail loop bound one short or one long, a chunk's last row dropped, a
    partial sum skipped, a pack taken where the row or channel count is not a multiple of it."""
    src = (ROOT / "csrc" / "cuda" / "act_kernels.cu").read_text()
    emulated, launches = _LAUNCH.subn(r"::bvae_emu::Launch(\2).go(\1, ", src)
    assert launches and launches == src.count("<<<"), "a kernel launch the rewrite does not recognize"
    (tmp_path / "act_kernels_emu.cpp").write_text(emulated)
    exe = tmp_path / "cuda_kernels_emulated_test"
    includes = ["-I", str(ROOT / "tests" / "cuda_emu"), "-I", str(ROOT / "csrc" / "cuda")]
    sources = [str(tmp_path / "act_kernels_emu.cpp"), str(ROOT / "tests" / "cuda_kernels_emulated_test.cpp")]
    build = _run([CXX, "-std=c++17", "-O1", "-pthread", *includes, *sources, "-o", str(exe)], timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    res = _run([str(exe)], timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "all checks passed" in res.stdout


# ----------------------------------------------------------------------------------------------------------
# On a GPU: the CUDA primitives through torch.ops.bvae, against a float64 formula of the same rounded inputs.
# They cover every launcher path: flat (+ 16-byte packs, tail, misaligned view), channel-outer (bias in packs
# or not; warp rows < 1024 <= block rows; inner == 1), channel-inner (C % pack == 0 or not; many chunks).
# ----------------------------------------------------------------------------------------------------------

TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
PARAMS = [(0.1, 1.0, 1.0), (0.0, 1.0, 1.0), (1.0, 0.0, 1.0), (0.25, 2.0, 3.5)]
OP_NAMES = [
    "gnova",
    "gnova_bwd",
    *(
        f"{name}{part}"
        for name in ("bi_conv2d", "bi_conv2d_reverse", "bi_linear", "bi_linear_reverse")
        for part in ("", "_fwd", "_bwd")
    ),
]
# (x shape, weight shape, stride, padding, channels_last): output rows of 1024 (block path, packs), 81 (warp
# path, no packs), NHWC with C = 8 (packs) and C = 3 (none), a 1x1 output (inner == 1).
CONV_CASES = [
    ((2, 3, 34, 34), (4, 3, 3, 3), 1, 0, False),
    ((3, 5, 9, 9), (6, 5, 3, 3), 1, 1, False),
    ((2, 4, 10, 10), (8, 4, 3, 3), 1, 1, True),
    ((2, 4, 7, 7), (3, 4, 3, 3), 2, 1, True),
    ((4, 6, 3, 3), (5, 6, 3, 3), 1, 0, False),
]
# (rows, in, out): C = 16 (packs), C = 5 (none), 5000 rows (79 chunks of 64).
LINEAR_CASES = [(37, 20, 16), (37, 20, 5), (5000, 8, 24)]


def _cuda_ops_ready() -> None:
    import bvae_kernels as bk

    assert bk.compiled_ops_available(), "bvae_kernels._C is not built"
    assert bk.cuda_ops_available(), "CUDA is available but the bvae CUDA kernels are not registered"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double().cpu(), ref.double().cpu()
    assert not torch.isnan(out).any(), "NaN in the result"
    denom = ref.norm().item()
    return (out - ref).norm().item() / (denom if denom > 0 else 1.0)


def _act64(u: torch.Tensor, p: tuple) -> torch.Tensor:
    a, b, g = p
    u = u.double()
    return a * u + b * torch.sigmoid(g * u)


def _dact64(u: torch.Tensor, p: tuple) -> torch.Tensor:
    a, b, g = p
    s = torch.sigmoid(g * u.double())
    return a + b * g * s * (1 - s)


def _rand(shape: tuple, dtype: torch.dtype, channels_last: bool = False) -> torch.Tensor:
    t = torch.randn(shape, device="cuda", dtype=torch.float64).to(dtype)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


@pytest.mark.gpu
def test_cuda_kernels_registered_for_every_op():
    _cuda_ops_ready()
    missing = [n for n in OP_NAMES if not torch._C._dispatch_has_kernel_for_dispatch_key(f"bvae::{n}", "CUDA")]
    assert not missing, f"no CUDA kernel for {missing}"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("p", PARAMS)
def test_cuda_conv_forward_and_backward(case, dtype, p):
    _cuda_ops_ready()
    torch.manual_seed(0)
    xs, ws, stride, pad, cl = case
    x, w, b = _rand(xs, dtype, cl), _rand(ws, dtype, cl), _rand((ws[0],), dtype)
    y, u = torch.ops.bvae.bi_conv2d_fwd(x, w, b, [stride] * 2, [pad] * 2, *p)
    assert y.shape == u.shape and y.dtype == dtype and y.stride() == u.stride()
    z64 = torch.nn.functional.conv2d(x.double(), w.double(), None, stride, pad)
    u64 = z64 + b.double().view(1, -1, 1, 1)
    assert _rel(u, u64) <= TOL[dtype]
    # y is a(u) of the stored (rounded) u
    assert _rel(y, _act64(u, p)) <= TOL[dtype]

    g = _rand(tuple(u.shape), dtype)
    dx, dw, db = torch.ops.bvae.bi_conv2d_bwd(g, x, w, u, [stride] * 2, [pad] * 2, *p, [True, True, True])
    du64 = (g.double() * _dact64(u, p)).requires_grad_(False)
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    out = torch.nn.functional.conv2d(x64, w64, None, stride, pad)
    dx64, dw64 = torch.autograd.grad(out, (x64, w64), du64)
    assert _rel(db, du64.sum((0, 2, 3))) <= TOL[dtype]
    assert _rel(dx, dx64) <= TOL[dtype]
    assert _rel(dw, dw64) <= TOL[dtype]
    # deterministic bias gradient: bitwise equal on a second run
    db2 = torch.ops.bvae.bi_conv2d_bwd(g, x, w, u, [stride] * 2, [pad] * 2, *p, [False, False, True])[2]
    assert torch.equal(db, db2)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_conv_reverse(dtype):
    _cuda_ops_ready()
    torch.manual_seed(1)
    p = (0.1, 1.0, 1.0)
    z, w, b = _rand((2, 4, 8, 8), dtype), _rand((4, 3, 4, 4), dtype), _rand((3,), dtype)
    y, u = torch.ops.bvae.bi_conv2d_reverse_fwd(z, w, b, None, [2, 2], [1, 1], [0, 0], *p)
    u64 = torch.nn.functional.conv_transpose2d(z.double(), w.double(), None, 2, 1) + b.double().view(1, -1, 1, 1)
    assert u.shape == (2, 3, 16, 16)
    assert _rel(u, u64) <= TOL[dtype]
    assert _rel(y, _act64(u, p)) <= TOL[dtype]
    g = _rand(tuple(u.shape), dtype)
    dz, dw, db, _ = torch.ops.bvae.bi_conv2d_reverse_bwd(
        g, z, w, u, None, [2, 2], [1, 1], [0, 0], *p, [True] * 3 + [False]
    )
    du64 = g.double() * _dact64(u, p)
    z64, w64 = z.double().requires_grad_(), w.double().requires_grad_()
    dz64, dw64 = torch.autograd.grad(torch.nn.functional.conv_transpose2d(z64, w64, None, 2, 1), (z64, w64), du64)
    assert _rel(db, du64.sum((0, 2, 3))) <= TOL[dtype]
    assert _rel(dz, dz64) <= TOL[dtype]
    assert _rel(dw, dw64) <= TOL[dtype]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LINEAR_CASES)
def test_cuda_linear_forward_and_backward(case, dtype):
    _cuda_ops_ready()
    torch.manual_seed(2)
    rows, n_in, n_out = case
    p = (0.25, 2.0, 3.5)
    x, w, b = _rand((rows, n_in), dtype), _rand((n_out, n_in), dtype), _rand((n_out,), dtype)
    y, u = torch.ops.bvae.bi_linear_fwd(x, w, b, *p)
    assert _rel(u, x.double() @ w.double().t() + b.double()) <= TOL[dtype]
    assert _rel(y, _act64(u, p)) <= TOL[dtype]
    g = _rand((rows, n_out), dtype)
    dx, dw, db = torch.ops.bvae.bi_linear_bwd(g, x, w, u, *p, [True, True, True])
    du64 = g.double() * _dact64(u, p)
    assert _rel(db, du64.sum(0)) <= TOL[dtype]
    assert _rel(dx, du64 @ w.double()) <= TOL[dtype]
    assert _rel(dw, du64.t() @ x.double()) <= TOL[dtype]
    db2 = torch.ops.bvae.bi_linear_bwd(g, x, w, u, *p, [False, False, True])[2]
    assert torch.equal(db, db2)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset, numel", [(0, 4096), (0, 1003), (1, 1000), (3, 7)])
def test_cuda_gnova_flat(dtype, offset, numel):
    _cuda_ops_ready()
    torch.manual_seed(3)
    base = _rand((offset + numel,), dtype) * 6
    u = base[offset:]  # offset 1 or 3: not 16-byte aligned, the one-element path
    for p in PARAMS:
        y = torch.ops.bvae.gnova(u, *p)
        assert _rel(y, _act64(u, p)) <= TOL[dtype]
        g = _rand((numel,), dtype)
        du = torch.ops.bvae.gnova_bwd(g, u, *p)
        assert _rel(du, g.double() * _dact64(u, p)) <= TOL[dtype]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_gnova_edges(dtype):
    _cuda_ops_ready()
    inf, nan = float("inf"), float("nan")
    u = torch.tensor([inf, -inf, 100.0, -100.0, 0.0, nan], device="cuda", dtype=dtype)
    y = torch.ops.bvae.gnova(u, 0.0, 1.0, 1.0).double().cpu()  # sigmoid
    assert y[:5].tolist() == [1.0, 0.0, 1.0, pytest.approx(0.0, abs=1e-40), 0.5]
    assert torch.isnan(y[5])
    y = torch.ops.bvae.gnova(u, 0.1, 1.0, 1.0).double().cpu()
    assert y[0].item() == inf and y[1].item() == -inf and torch.isnan(y[5])
    du = torch.ops.bvae.gnova_bwd(torch.ones_like(u), u, 0.1, 1.0, 1.0).double().cpu()
    assert du[:2].tolist() == [pytest.approx(0.1, rel=1e-2)] * 2 and torch.isnan(du[5])
