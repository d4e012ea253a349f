"""What setup.py decides before compiling: which CUDA toolkit to build with, and whether an isolated build's torch
is the torch the extension will be loaded with. A module of its own so that the tests can check it."""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys


def _is_toolkit(path: str | None) -> bool:
    """A CUDA toolkit root: bin/nvcc and the runtime headers."""
    if not path:
        return False
    headers = [os.path.join(path, "include"), os.path.join(path, "targets", "x86_64-linux", "include")]
    return os.access(os.path.join(path, "bin", "nvcc"), os.X_OK) and any(
        os.path.isfile(os.path.join(h, "cuda_runtime_api.h")) for h in headers
    )


def find_cuda_home() -> str | None:
    """The CUDA toolkit to build with, or None (see the module docstring)."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if _is_toolkit(os.environ.get(var)):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = os.path.realpath(nvcc)
        candidates = [os.path.dirname(os.path.dirname(real))]
        try:
            with open(real, "rb") as f:
                head = f.read(4096)
            if head.startswith(b"#!"):  # a wrapper script: the nvcc it runs
                candidates += [
                    os.path.dirname(os.path.dirname(m.decode())) for m in re.findall(rb"(/[^\s'\"]+/bin/nvcc)\b", head)
                ]
        except OSError:
            pass
        for c in candidates:
            if _is_toolkit(c):
                return c
    for c in sorted(glob.glob("/usr/local/cuda*"), reverse=True):
        if _is_toolkit(c):
            return c
    return None


def user_torch() -> str | None:
    """`version cuda` of the torch this interpreter sees outside any build isolation, or None without torch."""
    import subprocess

    probe = "import torch; print(torch.__version__, torch.version.cuda)"
    try:  # -I: ignore PYTHONPATH and the build environment pip layers over site-packages
        out = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def isolation_problem(build_torch: str, user: str | None) -> str | None:
    """Why an extension built against `build_torch` ("version cuda") would not load with the user's torch."""
    if user == build_torch:
        return None
    have = f"torch {user}" if user else "no torch"
    return (
        f"bvae-kernels compiles a PyTorch extension, which loads only with the torch it was built against. pip's "
        f"build isolation fetched torch {build_torch} to build with, but this environment has {have}: the "
        "kernels would not load. Install torch first, then build against it:\n"
        "    pip install torch\n"
        "    pip install --no-build-isolation ."
    )


def check_build_torch() -> None:
    """Stops an isolated build (pip install . without --no-build-isolation) whose extension would not load."""
    import torch

    if "pip-build-env" not in (torch.__file__ or "") and os.environ.get("BVAE_KERNELS_CHECK_ISOLATION") != "1":
        return  # built against the environment's own torch
    problem = isolation_problem(f"{torch.__version__} {torch.version.cuda}", user_torch())
    if problem:
        sys.exit(problem)
