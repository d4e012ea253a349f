"""GPU correctness smoke: every op x backend x dtype, forward and backward, against the float64 reference.

    python -m bvae_kernels.bench.smoke --dtypes bf16 fp16 --out smoke-bf16.json    # one worker
    python -m bvae_kernels.bench.smoke --probe-8-warps --out probe.json            # an 8-warp Triton tile

Each check rounds random inputs to the dtype, runs the op (forward with grad, then backward with a fixed
incoming gradient) and the package's float64 reference on the same rounded values (on the CPU), and compares
the output and every gradient normwise: ||out - ref|| / ||ref||. The `torch` backend (eager ATen in the same
dtype) is measured too; a fused backend passes when its error is within the dtype's tolerance, or within twice
the torch backend's own error in that dtype (low precision rounds differently, not worse). The forward without
grad (which stores no pre-activation) is compared with the forward with grad. Triton launches use one fixed
config per kernel (BVAE_TRITON_FIXED_CONFIG=1): a smoke compiles each specialization once, never autotunes.
Workers for different dtypes run in parallel processes (their compiles are CPU-bound; Triton's cache is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp32-tf32": torch.float32}
# normwise relative error allowed per dtype (tf32: 10-bit mantissa products, fp32 accumulation)
# (a smoke: a wrong index or a missed term gives errors of order 1; the test suite holds the tight bounds)
TOLERANCE = {"bf16": 2e-2, "fp16": 4e-3, "fp32": 1e-5, "fp32-tf32": 2e-3}
BACKENDS = ("torch", "cpu", "cuda", "triton")
ACT = (0.1, 1.0, 1.0)

# (name, dims): the forward-direction conv cases (reverse cases run the same layer backwards)
CONV_CASES = (
    ("k4s2p1", dict(n=4, cin=16, cout=32, h=12, k=4, s=2, p=1)),  # a BVAE downsampling layer
    ("k3s1p1-odd", dict(n=3, cin=5, cout=6, h=9, k=3, s=1, p=1)),  # channels off every tile edge
)
LINEAR_CASE = dict(n=5, fin=24, fout=40)


def _rel(out: torch.Tensor | None, ref: torch.Tensor | None) -> float:
    if out is None or ref is None:
        return 0.0 if out is None and ref is None else float("inf")
    if out.shape != ref.shape:
        return float("inf")
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(out64).all():
        return float("inf")
    denom = ref64.norm().item()
    return (out64 - ref64).norm().item() / (denom if denom > 0 else 1.0)


def _cases(device: str) -> list[tuple[str, Callable, Callable, list[torch.Tensor]]]:
    """(name, op(backend) -> fn(*inputs), reference fn(*inputs), float64 CPU inputs)."""
    import bvae_kernels as bk
    from bvae_kernels import reference as ref
    from bvae_kernels.activation import GNoVa

    act = GNoVa(*ACT)
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(shape, generator=g, dtype=torch.float64) * scale

    out: list = [
        (
            "gnova",
            lambda be: lambda u: bk.gnova(u, *ACT, backend=be),
            lambda u: ref.gnova(u, *ACT),
            [rand(4, 8, 6, 6, scale=3.0)],
        )
    ]
    for label, d in CONV_CASES:
        s, p, k = d["s"], d["p"], d["k"]
        x0 = rand(d["n"], d["cin"], d["h"], d["h"])
        w0 = rand(d["cout"], d["cin"], k, k, scale=1 / (d["cin"] * k * k) ** 0.5)
        ho = (d["h"] + 2 * p - k) // s + 1
        op = d["h"] - ((ho - 1) * s - 2 * p + k)
        out.append(
            (
                f"bi_conv2d {label}",
                lambda be, s=s, p=p: (
                    lambda x, w, b: bk.bi_conv2d(x, w, b, stride=s, padding=p, activation=act, backend=be)
                ),
                lambda x, w, b, s=s, p=p: ref.bi_conv2d(x, w, b, s, p, act),
                [x0, w0, rand(d["cout"], scale=0.1)],
            )
        )
        z0 = rand(d["n"], d["cout"], ho, ho)
        out.append(
            (
                f"bi_conv2d_reverse {label}",
                lambda be, s=s, p=p, op=op: (
                    lambda z, w, b, ls: bk.bi_conv2d_reverse(
                        z, w, b, stride=s, padding=p, output_padding=op, activation=act, log_scale=ls, backend=be
                    )
                ),
                lambda z, w, b, ls, s=s, p=p, op=op: ref.bi_conv2d_reverse(z, w, b, s, p, op, act, ls),
                [z0, w0, rand(d["cin"], scale=0.1), torch.tensor(0.3, dtype=torch.float64)],
            )
        )
    d = LINEAR_CASE
    w0 = rand(d["fout"], d["fin"], scale=1 / d["fin"] ** 0.5)
    out.append(
        (
            "bi_linear",
            lambda be: lambda x, w, b: bk.bi_linear(x, w, b, activation=act, backend=be),
            lambda x, w, b: ref.bi_linear(x, w, b, act),
            [rand(d["n"], d["fin"]), w0, rand(d["fout"], scale=0.1)],
        )
    )
    out.append(
        (
            "bi_linear_reverse",
            lambda be: lambda z, w, b, ls: bk.bi_linear_reverse(z, w, b, activation=act, log_scale=ls, backend=be),
            lambda z, w, b, ls: ref.bi_linear_reverse(z, w, b, act, ls),
            [rand(d["n"], d["fout"]), w0, rand(d["fin"], scale=0.1), torch.tensor(-0.2, dtype=torch.float64)],
        )
    )
    return out


def _run(fn: Callable, inputs: list[torch.Tensor], dtype: torch.dtype) -> tuple[torch.Tensor, list, torch.Tensor]:
    """Forward with grad, backward with a seeded incoming gradient rounded to `dtype`: (y, input grads, the
    no-grad forward)."""
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    y = fn(*leaves)
    grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    y.backward(grad.to(device=y.device, dtype=y.dtype))
    with torch.no_grad():
        y_nograd = fn(*[t.detach() for t in inputs])
    return y.detach(), [t.grad for t in leaves], y_nograd


def _prepare(t: torch.Tensor, dtype: torch.dtype, device: str) -> torch.Tensor:
    """The rounded input on the device (activations and weights channels_last, as a GPU user would have them)."""
    out = t.to(dtype).to(device)
    return out.contiguous(memory_format=torch.channels_last) if out.dim() == 4 else out


def check_dtype(dtype_name: str, device: str = "cuda", backends: tuple[str, ...] = BACKENDS) -> list[dict]:
    """One row per (op case, backend) in this dtype: errors of y and each gradient, pass/fail and why."""
    import bvae_kernels as bk

    dtype = DTYPES[dtype_name]
    tf32 = dtype_name == "fp32-tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    available = [b for b in backends if b in bk.available_backends()]
    rows = []
    for name, make, reference, inputs64 in _cases(device):
        rounded = [t.to(dtype).to(torch.float64) for t in inputs64]
        y64, grads64, _ = _run(reference, rounded, dtype)
        errors: dict[str, dict] = {}
        for backend in available:
            row = {"op": name, "dtype": dtype_name, "backend": backend, "status": "ok"}
            start = time.perf_counter()
            try:
                y, grads, y_nograd = _run(make(backend), [_prepare(t, dtype, device) for t in inputs64], dtype)
                if device == "cuda":
                    torch.cuda.synchronize()
                errs = {"y": _rel(y, y64)}
                errs.update({f"d{i}": _rel(gr, g64) for i, (gr, g64) in enumerate(zip(grads, grads64, strict=True))})
                errs["y_nograd_vs_y"] = _rel(y_nograd, y)
                row["errors"] = errs
                row["dtype_out"] = str(y.dtype).removeprefix("torch.")
                errors[backend] = errs
            except Exception as exc:  # noqa: BLE001 - every failure is a row of the report
                row.update(status="error", error=f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
            row["seconds"] = round(time.perf_counter() - start, 2)
            rows.append(row)
        for row in rows[-len(available) :]:
            if row["status"] != "ok":
                continue
            torch_errs = errors.get("torch", {})
            bad = []
            for key, err in row["errors"].items():
                allowed = TOLERANCE[dtype_name]
                if key != "y_nograd_vs_y" and row["backend"] != "torch" and key in torch_errs:
                    allowed = max(allowed, 2 * torch_errs[key])
                if not err <= allowed:
                    bad.append(f"{key} {err:.2e} > {allowed:.1e}")
            if row["dtype_out"] != str(dtype).removeprefix("torch."):
                bad.append(f"output dtype {row['dtype_out']}")
            if bad:
                row.update(status="fail", error="; ".join(bad))
    return rows


def probe_8_warps(device: str = "cuda") -> list[dict]:
    """The bf16 conv ops forward and backward on the Triton backend with an 8-warp tile (128 x 128 x 32, 3 stages,
    for the GEMM and the weight gradient): the tables list 4-warp tiles only until this passes on a GPU."""
    from bvae_kernels.triton import configs

    tile = (128, 128, 32, 8, 3)
    configs.FIXED_GPU["gemm"]["16bit"] = tile
    configs.FIXED_GPU["wgrad"]["16bit"] = tile
    rows = [r for r in check_dtype("bf16", device, ("torch", "triton")) if r["op"].startswith("bi_conv2d")]
    for r in rows:
        r["tile"] = "x".join(map(str, tile[:3])) + f" w{tile[3]} s{tile[4]}"
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", choices=tuple(DTYPES), default=list(DTYPES))
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS, default=None, help="default: all that serve --device"
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--probe-8-warps", action="store_true", help="only the 8-warp Triton tile probe")
    parser.add_argument("--out", default=None, help="write the rows here (JSON)")
    args = parser.parse_args(argv)
    os.environ.setdefault("BVAE_TRITON_FIXED_CONFIG", "1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device (use --device cpu to try the torch and cpu backends)")
    start = time.perf_counter()
    if args.probe_8_warps:
        rows = probe_8_warps(args.device)
    else:
        backends = args.backends or (["torch", "cuda", "triton"] if args.device == "cuda" else ["torch", "cpu"])
        rows = [row for dt in args.dtypes for row in check_dtype(dt, args.device, tuple(backends))]
    failed = [r for r in rows if r["status"] != "ok"]
    for r in rows:
        worst = max(r.get("errors", {}).values(), default=float("nan"))
        print(
            f"{r['status']:<5} {r['op']:<28} {r['dtype']:<9} {r['backend']:<6} worst {worst:.2e} {r.get('error', '')}"
        )
    print(f"{len(rows) - len(failed)}/{len(rows)} checks passed in {time.perf_counter() - start:.1f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "seconds": time.perf_counter() - start}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
