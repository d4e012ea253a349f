"""setup.py's decisions (build_support.py): which CUDA toolkit it builds with, and refusing an isolated build
whose extension would not load with the user's torch."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import build_support  # noqa: E402


def _fake_toolkit(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\necho fake\n")
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IEXEC)
    (root / "include" / "cuda_runtime_api.h").write_text("")
    return root


def test_cuda_home_through_a_wrapper_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The nvcc on PATH is a script that execs the real one (as on the project's machines): the toolkit is the
    real nvcc's, not the folder above the script (torch's guess)."""
    toolkit = _fake_toolkit(tmp_path / "cuda-13.0")
    wrappers = tmp_path / "wrappers" / "bin"
    wrappers.mkdir(parents=True)
    wrapper = wrappers / "nvcc"
    wrapper.write_text(f'#!/bin/sh\nexec {toolkit}/bin/nvcc "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", f"{wrappers}{os.pathsep}{os.environ['PATH']}")
    assert build_support.find_cuda_home() == str(toolkit)
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "not-a-toolkit"))  # an invalid CUDA_HOME is not trusted
    assert build_support.find_cuda_home() == str(toolkit)
    monkeypatch.setenv("CUDA_HOME", str(toolkit))
    assert build_support.find_cuda_home() == str(toolkit)


def test_user_torch_is_this_environment_s() -> None:
    assert build_support.user_torch() == f"{torch.__version__} {torch.version.cuda}"


def test_isolated_build_against_another_torch_stops_with_what_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_support.isolation_problem("2.13.0+cpu None", "2.13.0+cpu None") is None
    message = build_support.isolation_problem("2.14.1 13.0", "2.13.0+cpu None")
    assert "torch 2.14.1" in message and "torch 2.13.0+cpu" in message
    assert "pip install --no-build-isolation ." in message
    assert "no torch" in build_support.isolation_problem("2.14.1 13.0", None)
    # what setup.py runs: an isolated build (forced here) whose torch differs from the user's exits with it
    monkeypatch.setenv("BVAE_KERNELS_CHECK_ISOLATION", "1")
    monkeypatch.setattr(build_support, "user_torch", lambda: "1.0.0 None")
    with pytest.raises(SystemExit, match="--no-build-isolation"):
        build_support.check_build_torch()
    monkeypatch.setattr(build_support, "user_torch", lambda: f"{torch.__version__} {torch.version.cuda}")
    build_support.check_build_torch()  # the same torch: the build goes on


def test_every_package_is_in_the_wheel() -> None:
    """pyproject lists the packages a (non-editable) install ships: every folder with an __init__.py is there."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("bvae_kernels", "bvae")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert listed == found
