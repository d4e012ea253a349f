"""Every Triton kernel family AOT-compiles for sm_80 and sm_90 on this GPU-less machine, and the sm_90
GEMM kernels lower tl.dot to wgmma (DESIGN section 6). Runs the quick subset of
`python -m bvae_kernels.triton.aot` in a subprocess (the interpreter must be off for real compilation).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")


@pytest.mark.slow
def test_aot_quick_sm80_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-m", "bvae_kernels.triton.aot", "--arch", "80", "90", "--quick", "--dump-ptx", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if " sm_" in line]
    assert rows and all(row[-1] == "ok" for row in rows), proc.stdout
    gemm_sm90 = [p for p in tmp_path.iterdir() if p.name.startswith(("conv", "wgrad")) and p.name.endswith("sm90.ptx")]
    assert len(gemm_sm90) == 3, sorted(p.name for p in tmp_path.iterdir())
    for ptx in gemm_sm90:
        assert "wgmma" in ptx.read_text(), f"{ptx.name}: no wgmma on sm_90"
    for ptx in tmp_path.glob("*sm80.ptx"):
        assert "wgmma" not in ptx.read_text()


def test_config_pruning(monkeypatch):
    """Per-arch pruning keeps only that arch's configs; BVAE_TRITON_FIXED_CONFIG=1 gives one config."""
    from bvae_kernels.triton import configs

    table = [configs._config(m, n, k, w, s) for m, n, k, w, s, _ in configs._GEMM_TABLE]
    prune = configs.PRUNE["early_config_prune"]
    monkeypatch.delenv("BVAE_TRITON_FIXED_CONFIG", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    for arch in (80, 90):
        monkeypatch.setattr(configs, "_arch", lambda arch=arch: arch)
        kept = prune(table, {})
        want = [row for row in configs._GEMM_TABLE if arch in row[5]]
        assert [configs._key(c) for c in kept] == [row[:5] for row in want]
    monkeypatch.setenv("BVAE_TRITON_FIXED_CONFIG", "1")
    (only,) = prune(table, {})
    assert configs._key(only) == configs.FIXED_GPU["gemm"]
