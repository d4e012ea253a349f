"""Smoke tests of `bvae bench` on CPU: it runs, writes results.json / results.csv / speedup.png / summary.md
with the required columns, and its FLOP, byte and saved-memory accounting matches hand computations.
No timing assertions: the machine is shared and noisy.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch

import bvae_kernels as bk
from bvae.cli import main
from bvae_kernels import bench
from bvae_kernels.bench.report import CSV_COLUMNS

REQUIRED_ROW_KEYS = {
    "case",
    "backend",
    "median_ms",
    "shape",
    "dtype",
    "device",
    "speedup_vs_eager",
    "saved_mb",
    "flops",
    "min_bytes",
    "pct_of_floor",
    "tflops",
    "gbs",
}
REQUIRED_META_KEYS = {"device", "device_name", "torch_version", "triton_version", "date", "platform", "peaks"}


def _run(tmp_path, *extra: str) -> dict:
    out = tmp_path / "bench"
    rc = main(["bench", "--device", "cpu", "--no-progress", "--out", str(out), *extra])
    assert rc == 0
    for name in ("results.json", "results.csv", "speedup.png", "summary.md"):
        assert (out / name).is_file(), name
    assert (out / "speedup.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((out / "results.json").read_text())
    with (out / "results.csv").open() as fh:
        header = next(csv.reader(fh))
    assert set(CSV_COLUMNS) <= set(header)
    assert REQUIRED_META_KEYS <= set(result["meta"])
    return result


def test_bench_quick_subset_writes_results(tmp_path, capsys):
    result = _run(tmp_path, "--quick", "--cases", "bi_linear-fwd+bwd", "--reps", "3")
    rows = [r for r in result["rows"] if r["status"] == "ok"]
    backends = {r["backend"] for r in rows}
    assert "torch" in backends
    if "cpu" in bk.available_backends():
        assert "cpu" in backends
    for row in rows:
        assert REQUIRED_ROW_KEYS <= set(row), REQUIRED_ROW_KEYS - set(row)
        assert row["median_ms"] > 0 and row["n_samples"] == 3
        assert row["torch_version"] == torch.__version__
    eager = next(r for r in rows if r["backend"] == "torch")
    assert eager["speedup_vs_eager"] == pytest.approx(1.0)
    # hand count for x [64, 256] -> [64, 128], x needs grad: forward, dgrad and wgrad GEMMs, 2 FLOPs a MAC
    assert eager["flops"] == 3 * 2 * 64 * 256 * 128
    x, w, b, y = 64 * 256 * 4, 128 * 256 * 4, 128 * 4, 64 * 128 * 4
    # forward reads x, W, b and writes y and u; backward reads grad, u, x, W and writes dx, dW, db
    assert eager["min_bytes"] == (x + w + b + 2 * y) + (2 * y + x + w + x + w + b)
    # eager autograd saves x (for dW) and sigmoid's output; the weight is a parameter, not counted
    assert eager["saved_mb"] * 2**20 == pytest.approx(x + y)
    for row in rows:
        assert row["saved_mb"] <= eager["saved_mb"] + 1e-9
    printed = capsys.readouterr().out
    assert "median ms" in printed and "x eager" in printed and "% floor" in printed


def test_bench_chain_case_is_the_foundation_measurement():
    chain = [c for c in bench.CASES if c.name == bench.CHAIN_CASE]
    assert {c.layout for c in chain} == {"nchw", "channels_last"}
    for case in chain:
        assert case.dims == {"n": 32, "cin": 32, "cout": 32, "h": 28, "w": 28, "k": 3, "s": 1, "p": 1}
        assert case.dtype == "float32" and case.mode == "fwd+bwd" and not case.x_requires_grad
    prepared = bench.prepare(chain[0], "torch", "cpu")
    assert [t.requires_grad for t in prepared.params] == [True, True, True]  # weight and both biases


def test_bench_rejects_bad_arguments():
    with pytest.raises(ValueError, match="device"):
        bench.select_cases("tpu")
    with pytest.raises(ValueError, match="cases"):
        bench.run_benchmarks("cpu", quick=True, cases="no-such-case", progress=False)
    with pytest.raises(ValueError, match="reps"):
        bench.run_benchmarks("cpu", quick=True, cases="bi_linear", reps=0, progress=False)
    with pytest.raises(ValueError, match="backend"):
        bench.prepare(bench.CASES[0], "numpy", "cpu")
    with pytest.raises(ValueError, match="backend"):
        bench.run_benchmarks("cpu", quick=True, cases="bi_linear", backends=["numpy"], progress=False)


def test_backends_apply_per_case():
    """conv-only times op cases' contractions; CUDA graphs and reduce-overhead time the training step on CUDA."""
    by_name = {c.name: c for c in bench.CASES}
    assert bench.applicable(by_name["bi_conv2d"], "conv-only", "cuda")
    assert not bench.applicable(by_name["gnova"], "conv-only", "cuda")
    assert bench.applicable(by_name["bvae_train_step"], "triton+cudagraph", "cuda")
    assert not bench.applicable(by_name["bvae_train_step"], "triton+cudagraph", "cpu")
    assert not bench.applicable(by_name["bi_conv2d"], "torch.compile-reduce-overhead", "cuda")
    cuda_defaults = bench.backends_for("cuda")
    assert cuda_defaults[0] == "torch" and "conv-only" in cuda_defaults and "torch+cudagraph" in cuda_defaults
    assert "conv-only" not in bench.backends_for("cpu")


def test_conv_only_is_the_bare_contraction():
    """conv-only computes F.conv2d without bias and activation: its output is the reference's pre-activation."""
    case = next(c for c in bench.CASES if c.name == "bi_conv2d" and c.mode == "fwd" and "cpu" in c.devices)
    y = bench.prepare(case, "conv-only", "cpu").fn()
    ref = bench.prepare(case, "torch", "cpu").fn()
    assert y.shape == ref.shape and not torch.allclose(y, ref)


@pytest.mark.slow
def test_bench_quick_full_run(tmp_path):
    result = _run(tmp_path, "--quick")
    cases = {r["case"] for r in result["rows"] if r["status"] == "ok"}
    assert {"gnova", "bi_conv2d", "bi_conv2d_reverse", "bi_linear", "bi_conv2d_chain"} <= cases
    chain = [r for r in result["rows"] if r["case"] == "bi_conv2d_chain" and r["status"] == "ok"]
    assert {"torch", "torch.compile"} <= {r["backend"] for r in chain}


@pytest.mark.parametrize(
    ("option", "value"), [("--reps", "0"), ("--rounds", "-1"), ("--threads", "0"), ("--profile", "-1")]
)
def test_bad_counts_are_usage_errors(capsys, option, value):
    with pytest.raises(SystemExit) as exc:
        main(["bench", option, value])
    assert exc.value.code == 2
    assert f"argument {option}: must be" in capsys.readouterr().err
