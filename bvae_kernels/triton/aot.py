"""Ahead-of-time compile every Triton kernel for sm_80 / sm_90 without a GPU, as a CI check.

    python -m bvae_kernels.triton.aot --arch 80 90            # every kernel (several minutes on 2 cores)
    python -m bvae_kernels.triton.aot --arch 80 90 --quick    # each family once (the CI test)

Uses triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", cap, 32)) (the
API of Triton 3.6 through 3.9), prints a table (kernel, variant, arch, registers and spill-store bytes
from ptxas -v on the PTX, shared memory, whether the PTX contains wgmma) and exits non-zero on any
failure. The sm_90 GEMM kernels must lower their tl.dot to wgmma (a missing wgmma is a failure unless
--no-require-wgmma).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

_FLOAT_ARGS = {"alpha", "beta", "gamma", "p_alpha", "p_beta", "p_gamma"}
_TL_DTYPE = {"fp16": "fp16", "bf16": "bf16", "fp32": "fp32"}


@dataclass
class Job:
    """One kernel specialization to compile."""

    name: str
    fn: object  # triton JITFunction
    dtype: str
    constexprs: dict
    num_warps: int = 4
    num_stages: int = 3
    gemm: bool = False  # holds a tl.dot: sm_90 should use wgmma
    fp32_ptrs: tuple = ()
    result: dict = field(default_factory=dict)


def _signature(fn: object, dtype: str, constexprs: dict, fp32_ptrs: tuple) -> dict[str, str]:
    sig = {}
    for param in fn.params:
        name = param.name
        if param.is_constexpr or name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*fp32" if name in fp32_ptrs else f"*{_TL_DTYPE[dtype]}"
        elif name in _FLOAT_ARGS:
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


def _constexpr_defaults(fn: object) -> dict:
    return {p.name: p.default for p in fn.params if p.is_constexpr and p.has_default}


def quick_jobs(arch: int) -> list[Job]:
    """A CI-sized subset (compiles in about a minute): each kernel family once, fp16, few taps."""
    keep = {
        ("conv2d dgrad-rev k3s1", "fp16"),
        ("conv_transpose2d dgrad-fwd k3s2", "fp16"),
        ("wgrad rev-dir atomic k3s2", "fp16"),
        ("gnova fwd", "bf16"),
        ("bias_grad", "fp32"),
    }
    jobs = [job for job in jobs_for_arch(arch) if (job.name, job.dtype) in keep]
    for job in jobs:
        if job.name.startswith("conv2d"):  # a 1x1 conv: one tap, same GEMM core and epilogue code
            job.name = "conv2d dgrad-rev k1s1"
            job.constexprs.update(KH=1, KW=1)
    return jobs


def jobs_for_arch(arch: int) -> list[Job]:
    """Representative specializations of every kernel at the arch's first (largest) tile config."""
    from . import bi_conv2d, bi_conv2d_reverse, gnova, reductions, wgrad
    from ._gemm import PRO_ACT_GRAD, PRO_NONE

    gemm = (
        {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32}
        if arch >= 90
        else {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}
    )
    warps = 8 if arch >= 90 else 4
    wg = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64}
    pro_none, pro_grad = PRO_NONE.value, PRO_ACT_GRAD.value
    common = {"HAS_SCALE": False, "HAS_BIAS": True, "APPLY_ACT": True, "STORE_U": True, "ALLOW_TF32": False}
    jobs: list[Job] = []
    for dtype in ("fp16", "bf16", "fp32"):
        tf32 = {"ALLOW_TF32": dtype == "fp32"}
        jobs.append(
            Job(
                "conv2d fwd k4s2",
                bi_conv2d._bi_conv2d_fwd_kernel,
                dtype,
                {**common, **tf32, **gemm, "KH": 4, "KW": 4, "SH": 2, "SW": 2, "PROLOGUE": pro_none},
                warps,
                3,
                gemm=True,
            )
        )
        jobs.append(
            Job(
                "conv_transpose2d rev k4s2",
                bi_conv2d_reverse._bi_conv2d_reverse_fwd_kernel,
                dtype,
                {**common, **tf32, **gemm, "KH": 4, "KW": 4, "SH": 2, "SW": 2, "PROLOGUE": pro_none, "HAS_SCALE": True},
                warps,
                3,
                gemm=True,
                fp32_ptrs=("scale_ptr",),
            )
        )
        jobs.append(
            Job(
                "wgrad fwd-dir k4s2",
                wgrad._conv_wgrad_kernel,
                dtype,
                {
                    **wg,
                    **tf32,
                    "KH": 4,
                    "KW": 4,
                    "SH": 2,
                    "SW": 2,
                    "PRO_X": pro_none,
                    "PRO_D": pro_grad,
                    "ATOMIC": False,
                },
                4,
                3,
                gemm=True,
                fp32_ptrs=("ws_ptr",),
            )
        )
    # backward-only specializations (fp16): dgrad with the a'(u) prologue, reverse-direction wgrad, atomics
    no_epi = {"HAS_SCALE": False, "HAS_BIAS": False, "APPLY_ACT": False, "STORE_U": False, "ALLOW_TF32": False}
    jobs.append(
        Job(
            "conv2d dgrad-rev k3s1",
            bi_conv2d._bi_conv2d_fwd_kernel,
            "fp16",
            {**no_epi, **gemm, "KH": 3, "KW": 3, "SH": 1, "SW": 1, "PROLOGUE": pro_grad, "HAS_SCALE": True},
            warps,
            3,
            gemm=True,
            fp32_ptrs=("scale_ptr",),
        )
    )
    jobs.append(
        Job(
            "conv_transpose2d dgrad-fwd k3s2",
            bi_conv2d_reverse._bi_conv2d_reverse_fwd_kernel,
            "fp16",
            {**no_epi, **gemm, "KH": 3, "KW": 3, "SH": 2, "SW": 2, "PROLOGUE": pro_grad},
            warps,
            3,
            gemm=True,
        )
    )
    jobs.append(
        Job(
            "wgrad rev-dir atomic k3s2",
            wgrad._conv_wgrad_kernel,
            "fp16",
            {
                **wg,
                "ALLOW_TF32": False,
                "KH": 3,
                "KW": 3,
                "SH": 2,
                "SW": 2,
                "PRO_X": pro_grad,
                "PRO_D": pro_none,
                "ATOMIC": True,
            },
            4,
            3,
            gemm=True,
            fp32_ptrs=("ws_ptr",),
        )
    )
    for dtype in ("fp16", "bf16", "fp32"):
        jobs.append(Job("gnova fwd", gnova._gnova_fwd_kernel, dtype, {"BLOCK": 1024}))
        jobs.append(Job("gnova bwd", gnova._gnova_bwd_kernel, dtype, {"BLOCK": 1024}))
        jobs.append(
            Job(
                "bias_grad",
                reductions._bias_grad_kernel,
                dtype,
                {"HAS_U": True, "BLOCK_P": 64, "BLOCK_C": 64},
                fp32_ptrs=("ws_ptr",),
            )
        )
        jobs.append(
            Job(
                "reduce_splits",
                reductions._reduce_splits_kernel,
                dtype,
                {"HAS_SCALE": True, "BLOCK": 1024},
                fp32_ptrs=("ws_ptr", "scale_ptr"),
            )
        )
    for job in jobs:
        for name, value in _constexpr_defaults(job.fn).items():
            job.constexprs.setdefault(name, value)
    return jobs


def _ptxas_registers(ptx: str, arch: int) -> tuple[str, str]:
    """(registers per thread, spill-store bytes) as reported by Triton's bundled ptxas -v, or '?'."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        try:
            tool = get_ptxas(arch)  # Triton >= 3.7 takes the arch
        except TypeError:
            tool = get_ptxas()
        ptxas = getattr(tool, "path", tool)
    except Exception:  # noqa: BLE001 - optional information
        return "?", "?"
    suffix = "a" if arch >= 90 else ""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        proc = subprocess.run(
            [ptxas, "-v", f"--gpu-name=sm_{arch}{suffix}", src, "-o", os.path.join(tmp, "k.cubin")],
            capture_output=True,
            text=True,
            check=False,
        )
    regs = re.findall(r"Used (\d+) registers", proc.stderr)
    spills = re.findall(r"(\d+) bytes spill stores", proc.stderr)
    return (regs[-1] if regs else "?"), (spills[-1] if spills else "?")


def compile_job(job: Job, arch: int) -> dict:
    """Compiles one job; returns {ok, regs, shared, wgmma, seconds, error}."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    fn = job.fn
    while not isinstance(fn, JITFunction):  # unwrap an Autotuner / heuristics wrapper
        fn = fn.fn
    start = time.time()
    try:
        src = ASTSource(
            fn=fn, signature=_signature(fn, job.dtype, job.constexprs, job.fp32_ptrs), constexprs=job.constexprs
        )
        compiled = triton.compile(
            src, target=GPUTarget("cuda", arch, 32), options={"num_warps": job.num_warps, "num_stages": job.num_stages}
        )
        ptx = compiled.asm["ptx"]
        regs, spill = _ptxas_registers(ptx, arch)
        return {
            "ok": True,
            "regs": regs,
            "spill": spill,
            "shared": getattr(compiled.metadata, "shared", "?"),
            "wgmma": "wgmma" in ptx,
            "mma": "mma" in ptx,
            "seconds": time.time() - start,
            "ptx": ptx,
        }
    except Exception as exc:  # noqa: BLE001 - every failure is reported in the table
        return {
            "ok": False,
            "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
            "seconds": time.time() - start,
        }


def run(
    archs: list[int], require_wgmma: bool = True, dump_dir: str | None = None, quick: bool = False
) -> list[tuple[Job, int, dict]]:
    """Compiles every job (or the quick subset) for every arch; returns (job, arch, result) rows."""
    from tqdm import tqdm

    make = quick_jobs if quick else jobs_for_arch
    work = [(job, arch) for arch in archs for job in make(arch)]
    rows = []
    for job, arch in tqdm(work, desc="AOT compile", unit="kernel", file=sys.stderr):
        res = compile_job(job, arch)
        if res["ok"] and require_wgmma and arch >= 90 and job.gemm and not res["wgmma"]:
            res = {**res, "ok": False, "error": "no wgmma in the sm_90 PTX"}
        if dump_dir and res.get("ptx"):
            os.makedirs(dump_dir, exist_ok=True)
            fname = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{job.name}_{job.dtype}_sm{arch}.ptx")
            with open(os.path.join(dump_dir, fname), "w") as f:
                f.write(res["ptx"])
        rows.append((job, arch, res))
    return rows


def format_table(rows: list[tuple[Job, int, dict]]) -> str:
    head = (
        f"{'kernel':34} {'dtype':5} {'arch':5} {'warps':5} {'regs':>5} {'spill':>6} {'shared':>7} {'wgmma':5} "
        f"{'s':>5}  status"
    )
    lines = [head, "-" * len(head)]
    for job, arch, res in rows:
        status = "ok" if res["ok"] else f"FAIL {res.get('error', '')}"
        wg = ("yes" if res.get("wgmma") else "no") if "wgmma" in res else "-"
        lines.append(
            f"{job.name:34} {job.dtype:5} sm_{arch:<2} {job.num_warps:5} {res.get('regs', '-'):>5} "
            f"{res.get('spill', '-'):>6} "
            f"{res.get('shared', '-'):>7} {wg:5} {res['seconds']:5.1f}  {status}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90], help="compute capabilities, e.g. 80 90")
    parser.add_argument("--no-require-wgmma", action="store_true", help="do not fail when sm_90 PTX lacks wgmma")
    parser.add_argument("--quick", action="store_true", help="compile the CI subset (each family once)")
    parser.add_argument("--dump-ptx", default=None, help="directory to write every kernel's PTX to")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("unset TRITON_INTERPRET: AOT compilation needs the real @triton.jit functions")
    for arch in args.arch:
        if arch < 70:
            parser.error(f"--arch must be >= 70, got {arch}")
    rows = run(args.arch, not args.no_require_wgmma, args.dump_ptx, args.quick)
    print(format_table(rows))
    failed = [r for r in rows if not r[2]["ok"]]
    print(f"{len(rows) - len(failed)}/{len(rows)} kernels compiled" + (f", {len(failed)} FAILED" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
