"""The Triton kernels AOT-compile for sm_80 and sm_90 on this GPU-less machine with the specialization a GPU launch
gets, without register spills, and the sm_90 GEMM kernels lower tl.dot to wgmma. Runs the quick subset of
`python -m bvae_kernels.triton.aot` in a subprocess (real compilation needs the interpreter off).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")


@pytest.mark.slow
def test_aot_quick_sm80_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    ptx_dir, out_dir = tmp_path / "ptx", tmp_path / "out"
    cmd = [sys.executable, "-m", "bvae_kernels.triton.aot", "--arch", "80", "90", "--quick", "--no-progress"]
    cmd += ["--dump-ptx", str(ptx_dir), "--out", str(out_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads((out_dir / "aot.json").read_text())["rows"]
    families = {"bi_conv2d", "bi_conv2d_reverse", "wgrad", "gnova", "bias_grad", "reduce_splits"}
    assert {r["kernel"] for r in rows} == families
    assert {r["arch"] for r in rows} == {"sm_80", "sm_90"}
    for r in rows:
        assert r["ok"] and (r["spill"] == "0" or r.get("loop_spills") == 0), r
    gemm = [r for r in rows if r["kernel"] in ("bi_conv2d", "bi_conv2d_reverse", "wgrad")]
    for r in gemm:
        tensor_cores = r["arch"] == "sm_90" and r["dtype"] != "fp32"
        assert r["wgmma"] == tensor_cores, r
    for ptx in ptx_dir.glob("*sm80.ptx"):
        assert "wgmma" not in ptx.read_text(), ptx.name


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="needs the @triton.jit functions")
def test_specialization_matches_the_jit():
    """Integer arguments equal to 1 become constants and multiples of 16 get divisibility hints, as Triton's JIT
    does at a launch; every pointer is 16-byte aligned."""
    from bvae_kernels.triton import aot
    from bvae_kernels.triton.bi_conv2d import _bi_conv2d_fwd_kernel

    fn = aot._unwrap(_bi_conv2d_fwd_kernel)
    job = aot._conv_jobs("bf16", [(64, 64, 32, 4, 3)], quick=True)[0]
    sig, consts, attrs = aot.specialization(fn, job)
    assert consts["sxc"] == 1 and consts["sww"] == 1 and sig["sxc"] == "constexpr"
    names = fn.arg_names
    assert attrs[(names.index("C_in"),)] == [["tt.divisibility", 16]]  # 64
    assert (names.index("H"),) not in attrs  # 14
    assert sig["x_ptr"] == "*bf16" and attrs[(names.index("x_ptr"),)] == [["tt.divisibility", 16]]
    assert sig["alpha"] == "fp32" and sig["H"] == "i32"


def test_tables_prune_per_arch_and_dtype(monkeypatch):
    """A launch keeps the table rows of its dtype class and arch; a fixed launch takes each class's first row."""
    import torch

    from bvae_kernels.triton import configs

    monkeypatch.delenv("BVAE_TRITON_FIXED_CONFIG", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    for family, table in configs.TABLES.items():
        all_configs = configs.autotune_configs(family)
        prune = configs.prune_by(family, "x_ptr")["early_config_prune"]
        for arch in (80, 90):
            monkeypatch.setattr(configs, "_arch", lambda arch=arch: arch)
            for dtype, cls in ((torch.bfloat16, "16bit"), (torch.float16, "16bit"), (torch.float32, "32bit")):
                kept = prune(all_configs, {"x_ptr": torch.empty(0, dtype=dtype)})
                want = [row[:5] for row in table[cls] if arch in row[5]]
                assert sorted(configs._key(c) for c in kept) == sorted(want), (family, arch, cls)
        assert configs.fixed_launch(family, torch.float32) is None
    # a chained wgrad launch (a prologue on both operands) takes its own rows, a fixed one their first
    prune = configs.prune_by("wgrad", "x_ptr")["early_config_prune"]
    for dtype, cls in ((torch.bfloat16, "16bit"), (torch.float32, "32bit")):
        args = {"x_ptr": torch.empty(0, dtype=dtype)}
        chained = [configs._key(c) for c in prune(configs.autotune_configs("wgrad"), args, PRO_X=1, PRO_D=2)]
        single = [configs._key(c) for c in prune(configs.autotune_configs("wgrad"), args, PRO_X=0, PRO_D=2)]
        assert sorted(chained) == sorted(configs.table_rows("wgrad", cls, 90, two_prologues=True)), cls
        assert sorted(single) == sorted(configs.table_rows("wgrad", cls, 90)), cls
        monkeypatch.setenv("BVAE_TRITON_FIXED_CONFIG", "1")
        launch = configs.fixed_launch("wgrad", dtype, two_prologues=True)
        assert tuple(launch.values()) == configs.WGRAD_CHAINED_TABLE[cls][0][:5]
        monkeypatch.delenv("BVAE_TRITON_FIXED_CONFIG")
    monkeypatch.setenv("BVAE_TRITON_MAX_CONFIGS", "1")
    prune = configs.prune_by("gemm", "x_ptr")["early_config_prune"]
    kept = prune(configs.autotune_configs("gemm"), {"x_ptr": torch.empty(0)})
    assert [configs._key(c) for c in kept] == [configs.GEMM_TABLE["32bit"][0][:5]]
    monkeypatch.setenv("BVAE_TRITON_MAX_CONFIGS", "zero")
    with pytest.raises(ValueError, match="BVAE_TRITON_MAX_CONFIGS"):
        prune(configs.autotune_configs("gemm"), {"x_ptr": torch.empty(0)})
    monkeypatch.delenv("BVAE_TRITON_MAX_CONFIGS")
    monkeypatch.setenv("BVAE_TRITON_FIXED_CONFIG", "1")
    launch = configs.fixed_launch("gemm", torch.bfloat16)
    assert launch == dict(zip(("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages"),
                              configs.GEMM_TABLE["16bit"][0][:5], strict=True))  # fmt: skip


def test_wgrad_split_boundaries_fall_on_every_block_k():
    """wgrad sizes its split-K ranges in multiples of the largest BLOCK_K; every table BLOCK_K must divide it."""
    from bvae_kernels.triton import configs

    block_ks = [row[2] for rows in configs.WGRAD_TABLE.values() for row in rows]
    largest = max(64, *block_ks)
    assert all(largest % k == 0 for k in block_ks), block_ks
    for rows in (*configs.GEMM_TABLE.values(), *configs.WGRAD_TABLE.values()):
        for row in rows:
            assert row[3] == 4, f"{row}: 8-warp tiles are not yet verified numerically on a GPU"


def test_spills_in_loops_counts_only_the_kernels_own_loops():
    """The SASS rule behind the spill check: an STL/LDL inside a backward branch's range counts, one before or after
    the loop does not, and neither does one in a called (noinline) function."""
    from bvae_kernels.triton.aot import spills_in_loops

    def sass(*ops: str) -> str:
        return "\n".join(f"        /*{16 * i:04x}*/                   {op} ;" for i, op in enumerate(ops))

    outside = sass("STL [R1], R8", "HMMA R4, R8, R12, R4", "@P0 BRA 0x0010", "LDL R8, [R1]", "EXIT")
    assert spills_in_loops(outside) == (0, 1)
    inside = sass("MOV R1, R2", "HMMA R4, R8, R12, R4", "STL [R1], R8", "@P0 BRA 0x0010", "EXIT")
    assert spills_in_loops(inside) == (1, 1)
    in_callee = sass("CALL.REL.NOINC 0x0030", "EXIT", "NOP", "STL [R1], R8", "@P0 BRA 0x0030", "RET.REL.NODEC R8 0x0")
    assert spills_in_loops(in_callee) == (0, 0)
