"""Ahead-of-time compile the Triton kernels for sm_80 / sm_90 without a GPU: registers, spills, shared memory,
occupancy and compile time of every config a launcher can choose.

    python -m bvae_kernels.triton.aot --arch 80 90                 # every config of every family (minutes)
    python -m bvae_kernels.triton.aot --arch 80 90 --quick         # each family's fixed config (the CI check)
    python -m bvae_kernels.triton.aot --arch 80 90 --out DIR       # also DIR/aot.json and DIR/aot.md

Each kernel is compiled with triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget(...))
(Triton 3.6 through 3.9) and the specialization a GPU launch of a BVAE layer gets from Triton's JIT: the integer
arguments of a representative layer (256 x 64 x 14 x 14 channels_last in, 128 channels out, kernel 4, stride 2,
a contiguous weight) turned into constants where they are 1 and divisibility hints where they are multiples of
16, and every pointer 16-byte aligned. Without them the compiler sees no unit stride and no alignment, and the
register counts are those of a kernel no launch runs.

A row fails on a register spill in the kernel, unless its SASS (cuobjdump) puts every spill outside the kernel's
loops (a few values parked once per program around the call of the noinline exact path, which runs only for a
tile that made a NaN; that path's own spills are reported beside); on a GEMM kernel for sm_90 whose PTX lacks
wgmma where the tile can use it (16-bit or tf32 operands, BLOCK_M >= 64); and on a bandwidth-bound kernel above
64 registers per thread.
Occupancy is resident warps per SM over the arch's 64, from registers, shared memory and the block size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

_FLOAT_ARGS = {"alpha", "beta", "gamma", "p_alpha", "p_beta", "p_gamma", "px_alpha", "px_beta", "px_gamma", "pd_alpha",
               "pd_beta", "pd_gamma"}  # fmt: skip
_TL_DTYPE = {"fp16": "fp16", "bf16": "bf16", "fp32": "fp32", "fp32-tf32": "fp32"}
_SMEM_PER_SM = {80: 164 * 1024, 90: 228 * 1024}
BANDWIDTH_MAX_REGS = 64

# A representative BVAE layer: x [256, 64, 14, 14] channels_last -> y [256, 128, 7, 7], k=4, s=2, p=1.
N, C_IN, C_OUT, H, W, K, S, P = 256, 64, 128, 14, 14, 4, 2, 1
HO = WO = (H + 2 * P - K) // S + 1
_CONV_INTS = dict(
    NB=N, C_in=C_IN, H=H, W=W, C_out=C_OUT, Ho=HO, Wo=WO,
    sxn=H * W * C_IN, sxc=1, sxh=W * C_IN, sxw=C_IN,
    swo=C_IN * K * K, swi=K * K, swh=K, sww=1,
    syn=HO * WO * C_OUT, syc=1, syh=WO * C_OUT, syw=C_OUT,
    KH=K, KW=K, SH=S, SW=S, pad_h=P, pad_w=P,
)  # fmt: skip
_REVERSE_INTS = dict(
    NB=N, C_z=C_OUT, Hz=HO, Wz=WO, C_o=C_IN, Ho=H, Wo=W,
    szn=HO * WO * C_OUT, szc=1, szh=WO * C_OUT, szw=C_OUT,
    swo=C_IN * K * K, swi=K * K, swh=K, sww=1,
    syn=H * W * C_IN, syc=1, syh=W * C_IN, syw=C_IN,
    KH=K, KW=K, SH=S, SW=S, pad_h=P, pad_w=P,
)  # fmt: skip
_WGRAD_INTS = dict(
    NB=N, C_in=C_IN, H=H, W=W, C_out=C_OUT, Ho=HO, Wo=WO,
    sxn=H * W * C_IN, sxc=1, sxh=W * C_IN, sxw=C_IN,
    sdn=HO * WO * C_OUT, sdc=1, sdh=WO * C_OUT, sdw=C_OUT,
    KH=K, KW=K, SH=S, SW=S, pad_h=P, pad_w=P, pix_per_split=256,
)  # fmt: skip
_BIAS_INTS = dict(
    C=C_OUT, HW=HO * WO, W=WO, P=N * HO * WO, pix_per_split=256,
    sgn=HO * WO * C_OUT, sgc=1, sgh=WO * C_OUT, sgw=C_OUT, sun=HO * WO * C_OUT, suc=1, suh=WO * C_OUT, suw=C_OUT,
)  # fmt: skip
_REDUCE_INTS = dict(E=C_OUT * C_IN * K * K, SPLITS=8, D1=C_IN, D2=K, D3=K, so0=C_IN * K * K, so1=K * K, so2=K, so3=1)


@dataclass
class Job:
    """One kernel specialization to compile."""

    family: str
    variant: str
    fn: object  # triton JITFunction
    dtype: str  # bf16, fp16, fp32, fp32-tf32
    constexprs: dict
    ints: dict
    num_warps: int = 4
    num_stages: int = 3
    gemm: bool = False  # holds a tl.dot: sm_90 should use wgmma where the tile allows it
    bandwidth: bool = False  # a bandwidth-bound kernel: at most BANDWIDTH_MAX_REGS registers
    fp32_ptrs: tuple = ()
    result: dict = field(default_factory=dict)

    @property
    def config(self) -> str:
        tile = "x".join(str(self.constexprs[k]) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K") if k in self.constexprs)
        for k in ("BLOCK_P", "BLOCK_C", "BLOCK"):
            if k in self.constexprs:
                tile += ("x" if tile else "") + str(self.constexprs[k])
        return f"{tile} w{self.num_warps} s{self.num_stages}"


def _unwrap(fn: object) -> object:
    from triton.runtime.jit import JITFunction

    while not isinstance(fn, JITFunction):  # an Autotuner / heuristics wrapper
        fn = fn.fn
    return fn


def specialization(fn: object, job: Job) -> tuple[dict, dict, dict]:
    """(signature, constexprs, attrs) as Triton's JIT builds them for the job's integer arguments."""
    consts = dict(job.constexprs)
    attrs: dict = {}
    names = fn.arg_names
    for name, value in job.ints.items():
        if value == 1:
            consts[name] = 1
        elif value % 16 == 0:
            attrs[(names.index(name),)] = [["tt.divisibility", 16]]
    sig = {}
    for i, param in enumerate(fn.params):
        name = param.name
        if param.is_constexpr or name in consts:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*fp32" if name in job.fp32_ptrs else f"*{_TL_DTYPE[job.dtype]}"
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in _FLOAT_ARGS:
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    for p in fn.params:  # the kernel's own constexpr defaults (GROUP_M)
        if p.is_constexpr and p.has_default:
            consts.setdefault(p.name, p.default)
    return sig, consts, attrs


def _conv_jobs(dtype: str, rows: list, quick: bool) -> list[Job]:
    from ._gemm import PRO_ACT, PRO_ACT_GRAD, PRO_NONE
    from .bi_conv2d import _bi_conv2d_fwd_kernel
    from .bi_conv2d_reverse import _bi_conv2d_reverse_fwd_kernel

    tf32 = dtype == "fp32-tf32"
    forward = {"PROLOGUE": PRO_NONE.value, "HAS_SCALE": False, "HAS_BIAS": True, "APPLY_ACT": True, "STORE_U": True}
    dgrad = {"PROLOGUE": PRO_ACT_GRAD.value, "HAS_SCALE": True, "HAS_BIAS": False, "APPLY_ACT": False}
    dgrad["STORE_U"] = False
    jobs = []
    for m, n, k, warps, stages in rows:
        tile = {"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "ALLOW_TF32": tf32}
        for family, fn, ints in (
            ("bi_conv2d", _bi_conv2d_fwd_kernel, _CONV_INTS),
            ("bi_conv2d_reverse", _bi_conv2d_reverse_fwd_kernel, _REVERSE_INTS),
        ):
            fwd = {**forward, "HAS_SCALE": family == "bi_conv2d_reverse"}
            chained = {**fwd, "PROLOGUE": PRO_ACT.value, "STORE_U": False, "APPLY_ACT": False}
            variants = (("fwd", fwd), ("dgrad", dgrad), ("fwd, chained input", chained))
            for variant, flags in variants[:1] if quick else variants:
                jobs.append(
                    Job(
                        family,
                        variant,
                        _unwrap(fn),
                        dtype,
                        {**tile, **flags},
                        ints,
                        warps,
                        stages,
                        gemm=True,
                        fp32_ptrs=("scale_ptr",),
                    )
                )
    return jobs


def _wgrad_jobs(dtype: str, rows: list, quick: bool, chained_rows: list | None = None) -> list[Job]:
    """The wgrad variants on `rows`; the chained ones (a prologue on both operands) on `chained_rows`."""
    from ._gemm import PRO_ACT, PRO_ACT_GRAD, PRO_NONE
    from .wgrad import _conv_wgrad_kernel

    tf32 = dtype == "fp32-tf32"
    variants = (
        ("forward direction", {"PRO_X": PRO_NONE.value, "PRO_D": PRO_ACT_GRAD.value, "ATOMIC": False}),
        ("reverse direction, atomic", {"PRO_X": PRO_ACT_GRAD.value, "PRO_D": PRO_NONE.value, "ATOMIC": True}),
        ("forward, chained input", {"PRO_X": PRO_ACT.value, "PRO_D": PRO_ACT_GRAD.value, "ATOMIC": False}),
        ("reverse, chained input", {"PRO_X": PRO_ACT_GRAD.value, "PRO_D": PRO_ACT.value, "ATOMIC": True}),
    )
    jobs = []
    chosen = [(row, v) for row in rows for v in (variants[:1] if quick else variants[:2])]
    chosen += [(row, v) for row in (chained_rows or []) for v in variants[2:]]
    for (m, n, k, warps, stages), (variant, flags) in chosen:
        tile = {"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "ALLOW_TF32": tf32}
        job = Job("wgrad", variant, _unwrap(_conv_wgrad_kernel), dtype, {**tile, **flags}, _WGRAD_INTS, warps, stages)
        job.gemm, job.fp32_ptrs = True, ("ws_ptr",)
        jobs.append(job)
    return jobs


def _pointwise_jobs(dtype: str) -> list[Job]:
    from .configs import POINTWISE_BLOCK
    from .gnova import _gnova_bwd_kernel, _gnova_fwd_kernel
    from .reductions import BIAS_BLOCK_C, BIAS_BLOCK_P, BIAS_WARPS, _bias_grad_kernel, _reduce_splits_kernel

    block = {"BLOCK": POINTWISE_BLOCK}
    numel = {"numel": 1 << 20}
    return [
        Job("gnova", "forward", _gnova_fwd_kernel, dtype, block, numel, 4, 1, bandwidth=True),
        Job("gnova", "backward", _gnova_bwd_kernel, dtype, block, numel, 4, 1, bandwidth=True),
        Job(
            "bias_grad",
            "g * a'(u)",
            _bias_grad_kernel,
            dtype,
            {"HAS_U": True, "BLOCK_P": BIAS_BLOCK_P, "BLOCK_C": BIAS_BLOCK_C},
            _BIAS_INTS,
            BIAS_WARPS,
            1,
            bandwidth=True,
            fp32_ptrs=("ws_ptr",),
        ),
        Job(
            "reduce_splits",
            "x e^s",
            _reduce_splits_kernel,
            dtype,
            {"HAS_SCALE": True, **block},
            _REDUCE_INTS,
            4,
            1,
            bandwidth=True,
            fp32_ptrs=("ws_ptr", "scale_ptr"),
        ),
    ]


def jobs_for_arch(arch: int, quick: bool = False) -> list[Job]:
    """Every config the launchers can choose on `arch` (quick: each family's fixed config) in every dtype."""
    from .configs import FIXED_GPU, table_rows

    bucket = 90 if arch >= 90 else 80
    jobs: list[Job] = []
    dtypes = ("bf16", "fp32", "fp32-tf32") if quick else ("bf16", "fp16", "fp32", "fp32-tf32")
    for dtype in dtypes:
        cls = "32bit" if dtype.startswith("fp32") else "16bit"
        if quick:
            gemm_rows, wgrad_rows, chained_rows = [FIXED_GPU["gemm"][cls]], [FIXED_GPU["wgrad"][cls]], []
        else:
            gemm_rows = table_rows("gemm", cls, bucket)
            wgrad_rows = table_rows("wgrad", cls, bucket)
            chained_rows = table_rows("wgrad", cls, bucket, two_prologues=True)
        jobs += _conv_jobs(dtype, gemm_rows, quick) + _wgrad_jobs(dtype, wgrad_rows, quick, chained_rows)
        if dtype in ("bf16", "fp32"):
            jobs += _pointwise_jobs(dtype)
    return jobs


def _ptxas_registers(ptx: str, arch: int) -> tuple[str, str, int]:
    """(registers per thread, the kernel's spill-store bytes, the most spill-store bytes of any noinline function
    it calls) as reported by Triton's bundled ptxas -v, or '?'. The noinline functions are the kernels' exact
    paths, which run only for a tile whose sum made a NaN: their spills cost nothing on the hot path."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        try:
            tool = get_ptxas(arch)  # Triton >= 3.7 takes the arch
        except TypeError:
            tool = get_ptxas()
        ptxas = getattr(tool, "path", tool)
    except Exception:  # noqa: BLE001 - optional information
        return "?", "?", 0
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
    entry = re.search(r"Compiling entry function '([^']+)'", proc.stderr)
    kernel_spill, helper_spill = "?", 0
    for name, spill in re.findall(r"Function properties for (\S+)\s+\d+ bytes stack frame, (\d+) bytes spill stores",
                                  proc.stderr):  # fmt: skip
        if entry is not None and name == entry.group(1):
            kernel_spill = spill
        else:
            helper_spill = max(helper_spill, int(spill))
    return (regs[-1] if regs else "?"), kernel_spill, helper_spill


def _cuobjdump() -> str | None:
    """Triton's bundled cuobjdump (beside its ptxas), or None."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        try:
            tool = get_ptxas(90)
        except TypeError:
            tool = get_ptxas()
        path = os.path.join(os.path.dirname(getattr(tool, "path", tool)), "cuobjdump")
    except Exception:  # noqa: BLE001 - optional information
        return None
    return path if os.path.exists(path) else None


def spills_in_loops(sass: str) -> tuple[int, int]:
    """(local-memory spill instructions inside the kernel's own loops, loops found) in a cuobjdump -sass listing.

    A loop is a backward branch; the kernel's own code ends where the first called (noinline) function starts.
    A spill outside every loop runs once per program (a prologue or epilogue value parked around the exact
    path's call); one inside the main loop runs every K step, which is the spill that costs time."""
    ins = []
    for line in sass.splitlines():
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if m:
            ins.append((int(m.group(1), 16), m.group(2)))
    calls = [int(t, 16) for _, op in ins for t in re.findall(r"CALL\.\S+\s+0x([0-9a-f]+)", op)]
    kernel_end = min(calls) if calls else float("inf")
    loops = []
    for addr, op in ins:
        m = re.search(r"\bBRA\s+0x([0-9a-f]+)", op)
        if m and int(m.group(1), 16) < addr < kernel_end:
            loops.append((int(m.group(1), 16), addr))
    spills = [a for a, op in ins if a < kernel_end and re.search(r"\b(STL|LDL)\b", op)]
    return sum(any(lo <= a <= hi for lo, hi in loops) for a in spills), len(loops)


def _loop_spills(cubin: bytes) -> tuple[int, int] | None:
    """spills_in_loops of a compiled kernel, or None without cuobjdump."""
    tool = _cuobjdump()
    if tool is None or not cubin:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        proc = subprocess.run([tool, "-sass", path], capture_output=True, text=True, check=False)
    return spills_in_loops(proc.stdout) if proc.returncode == 0 else None


def occupancy(regs: int, shared: int, warps: int, arch: int) -> float:
    """Resident warps per SM / 64 (register file 64K, 2048 threads, 32 blocks, the arch's shared memory)."""
    per_warp = ((regs + 7) // 8) * 8 * 32
    blocks = min(32, 2048 // (32 * warps), 65536 // max(per_warp * warps, 1))
    if shared:
        blocks = min(blocks, _SMEM_PER_SM[90 if arch >= 90 else 80] // shared)
    return blocks * warps / 64


def wants_wgmma(job: Job, arch: int) -> bool:
    return job.gemm and arch >= 90 and job.dtype != "fp32" and job.constexprs.get("BLOCK_M", 0) >= 64


def compile_job(job: Job, arch: int) -> dict:
    """Compiles one job; returns {ok, regs, spill, shared, occupancy, wgmma, seconds, error}."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _unwrap(job.fn)
    start = time.time()
    try:
        sig, consts, attrs = specialization(fn, job)
        src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
        compiled = triton.compile(
            src, target=GPUTarget("cuda", arch, 32), options={"num_warps": job.num_warps, "num_stages": job.num_stages}
        )
    except Exception as exc:  # noqa: BLE001 - every failure is reported in the table
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        return {"ok": False, "error": f"{type(exc).__name__}: {first}", "seconds": time.time() - start}
    ptx = compiled.asm["ptx"]
    regs, spill, helper_spill = _ptxas_registers(ptx, arch)
    shared = int(getattr(compiled.metadata, "shared", 0) or 0)
    res = {
        "ok": True,
        "regs": regs,
        "spill": spill,
        "helper_spill": helper_spill,
        "shared": shared,
        "occupancy": occupancy(int(regs), shared, job.num_warps, arch) if regs != "?" else None,
        "wgmma": "wgmma" in ptx,
        "seconds": time.time() - start,
        "ptx": ptx,
    }
    problems = []
    if spill not in ("0", "?"):
        # A spill fails unless the SASS shows it outside every loop of the kernel (see spills_in_loops).
        found = _loop_spills(compiled.asm.get("cubin", b""))
        res["loop_spills"] = found[0] if found is not None and found[1] > 0 else None
        if res["loop_spills"] != 0:
            problems.append(f"spills {spill} bytes" + (" inside a loop" if res["loop_spills"] else ""))
    if wants_wgmma(job, arch) and not res["wgmma"]:
        problems.append("no wgmma in the sm_90 PTX")
    if job.bandwidth and regs != "?" and int(regs) > BANDWIDTH_MAX_REGS:
        problems.append(f"{regs} registers for a bandwidth-bound kernel (at most {BANDWIDTH_MAX_REGS})")
    if problems:
        res.update(ok=False, error="; ".join(problems))
    return res


def run(archs: list[int], dump_dir: str | None = None, quick: bool = False, progress: bool = True) -> list[dict]:
    """Compiles every job for every arch; returns one row per (job, arch)."""
    from tqdm import tqdm

    work = [(job, arch) for arch in archs for job in jobs_for_arch(arch, quick)]
    rows = []
    for job, arch in tqdm(work, desc="AOT compile", unit="kernel", file=sys.stderr, disable=not progress):
        res = compile_job(job, arch)
        if dump_dir and res.get("ptx"):
            os.makedirs(dump_dir, exist_ok=True)
            name = f"{job.family}_{job.variant}_{job.dtype}_{job.config}_sm{arch}.ptx"
            fname = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
            with open(os.path.join(dump_dir, fname), "w") as f:
                f.write(res["ptx"])
        res.pop("ptx", None)
        rows.append({"kernel": job.family, "variant": job.variant, "dtype": job.dtype, "config": job.config,
                     "arch": f"sm_{arch}", **res})  # fmt: skip
    return rows


def format_table(rows: list[dict], markdown: bool = False) -> str:
    head = ["kernel", "variant", "dtype", "config", "arch", "regs", "spill B", "smem B", "occupancy", "wgmma", "s",
            "status"]  # fmt: skip
    body = []
    for r in rows:
        occ = f"{100 * r['occupancy']:.0f}%" if r.get("occupancy") is not None else "-"
        wg = ("yes" if r.get("wgmma") else "no") if "wgmma" in r else "-"
        status = "ok" if r["ok"] else f"FAIL {r.get('error', '')}"
        if r["ok"] and r.get("spill") not in (None, "0", "?"):
            status += " (its spills are outside its loops)"
        if r.get("helper_spill"):
            status += f" (exact path spills {r['helper_spill']} B)"
        cells = [r["kernel"], r["variant"], r["dtype"], r["config"], r["arch"], str(r.get("regs", "-"))]
        cells += [str(r.get("spill", "-")), str(r.get("shared", "-")), occ, wg, f"{r['seconds']:.1f}", status]
        body.append(cells)
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(head)]
    fmt = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))  # noqa: E731
    return "\n".join([fmt(head), "-" * (sum(widths) + 2 * len(widths)), *(fmt(row) for row in body)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90], help="compute capabilities, e.g. 80 90")
    parser.add_argument("--quick", action="store_true", help="each family's fixed config only (the CI check)")
    parser.add_argument("--dump-ptx", default=None, help="directory to write every kernel's PTX to")
    parser.add_argument("--out", default=None, help="write aot.json and aot.md (the table) here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("unset TRITON_INTERPRET: AOT compilation needs the real @triton.jit functions")
    for arch in args.arch:
        if arch < 70:
            parser.error(f"--arch must be >= 70, got {arch}")
    rows = run(args.arch, args.dump_ptx, args.quick, progress=not args.no_progress)
    print(format_table(rows))
    failed = [r for r in rows if not r["ok"]]
    print(f"{len(rows) - len(failed)}/{len(rows)} kernels compiled" + (f", {len(failed)} FAILED" if failed else ""))
    if args.out:
        import triton

        os.makedirs(args.out, exist_ok=True)
        meta = {"triton_version": triton.__version__, "archs": args.arch, "quick": args.quick,
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv)}  # fmt: skip
        with open(os.path.join(args.out, "aot.json"), "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
        with open(os.path.join(args.out, "aot.md"), "w") as f:
            f.write(f"Triton {meta['triton_version']}, {meta['date']}, `{meta['command']}`\n\n")
            f.write(format_table(rows, markdown=True) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
