"""`make gpu-check` (scripts/gpu_check.py) on a CPU machine: the plan and its budget, the dry run, and a rehearsal
of the stages on the cpu backend (subprocesses, deadlines, the report) so that no GPU minute is lost to the driver.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def _module():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_plan_fits_the_budget_and_drops_the_later_stages():
    gc = _module()
    full = gc.plan(450)
    assert [r["stage"] for r in full][:3] == ["preflight", "build", "smoke"]
    assert sum(r["estimate_s"] for r in full if r["fits"]) <= 450
    assert all(r["cap_s"] <= 600 - 15 for r in full)  # no stage may outlive the device tool's 10-minute command
    short = gc.plan(250)
    assert [r["stage"] for r in short if r["fits"]] == ["preflight", "build", "smoke"]


def test_compile_estimate_counts_the_cases_it_runs():
    est = _module().compile_estimate()
    assert est["triton_smoke"] > 0 and est["triton_bench_layers"] > 0 and est["torch_compile_graphs"] > 0


def test_dry_run_prints_the_plan_and_touches_no_device(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gpu-check plan" in proc.stdout and "compile estimate" in proc.stdout
    assert "bench-layers: 27 cases" in proc.stdout and "no device work was done" in proc.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cpu_rehearsal_writes_the_report(tmp_path):
    """The stages on the cpu backend: each returns its JSON, the report and summary are rewritten after each."""
    out = tmp_path / "out"
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--only", "preflight,smoke,bench-train,host"]
    cmd += ["--budget", "400", "--out", str(out)]
    env = {**os.environ, "GPU_CHECK_WORK": str(tmp_path / "work")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "gpu-check.json").read_text())
    assert list(report["stages"]) == ["preflight", "smoke", "bench-train", "host"]
    assert all(st["status"] == "ok" for st in report["stages"].values()), report["stages"]
    smoke = report["stages"]["smoke"]["result"]
    assert smoke["checks"] >= 40 and smoke["failed"] == 0
    rows = report["stages"]["bench-train"]["result"]["rows"]
    assert {r["backend"] for r in rows if r["status"] == "ok"} >= {"torch", "cpu"}
    assert "gpu-check" in (out / "summary.md").read_text()
    assert "=== smoke" in (out / "gpu-check.log").read_text()
