#!/usr/bin/env python3
"""`make gpu-check`: everything a GPU session measures, as ONE command that ends inside its time budget.

    python scripts/gpu_check.py                      # all stages, 450 s budget, results under $OUT
    python scripts/gpu_check.py --budget 300         # later stages dropped when their estimate no longer fits
    python scripts/gpu_check.py --dry-run            # on any machine: the plan, its compile estimate, checks

Stages, in order (each a subprocess with a timeout; a stage starts only when its estimate fits the budget left):
  preflight     versions, GPU (read-only nvidia-smi query), optional packages
  build         pip install --no-build-isolation --no-deps -e . for this GPU's arch only (CUDA kernels included)
  smoke         every op x backend (torch, cuda, triton) x dtype (bf16, fp16, fp32, fp32+tf32), forward and
                backward, against the float64 reference, fixed Triton configs; plus an 8-warp Triton tile probe
                (one worker per dtype, in parallel: compiling is CPU-bound)
  e2e           a tiny `bvae train` (cuda and triton backends), `bvae eval` with NLL, `bvae sample`, on the GPU
  warm          the benchmark cases once each, in parallel processes: fills Triton's and Inductor's caches
  bench-layers  the BVAE layer shapes at batch 256, bf16: eager, torch.compile, conv-only (cuDNN), cuda, triton
  bench-train   a BVAE training step: eager, fused, compiled, and captured (CUDA graph, reduce-overhead)
  host          host (CPU) time per call on tiny CUDA tensors: the eager chain against cuda and triton
  gpu-tests     the GPU-only tests (tests/test_gpu.py), when time is left

Results: $OUT (default ./gpu-check-out) holds gpu-check.json (every stage's results, rewritten after each
stage, so a cut run still returns what it measured), summary.md (the tables so far) and gpu-check.log. The
device tool brings back at most 8 files from $OUT: keep it at these three. Triton's autotuning is capped at
two configs per kernel (BVAE_TRITON_MAX_CONFIGS=2) in the benchmarks and off (fixed configs) in the smoke.
Nothing here changes the GPU's clocks or settings; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


@dataclass(frozen=True)
class Stage:
    name: str
    estimate_s: int  # what the plan expects on the H200 machine (16 cores)
    cap_s: int  # the stage's own timeout
    what: str


STAGES = (
    Stage("preflight", 10, 60, "versions, GPU, optional packages"),
    Stage("build", 150, 330, "the extension for this GPU's arch, CUDA kernels included"),
    Stage("smoke", 80, 200, "op x backend x dtype vs float64 reference; 8-warp tile probe"),
    Stage("e2e", 45, 150, "bvae train (cuda, triton) / eval with NLL / sample on the GPU"),
    Stage("warm", 50, 150, "benchmark cases once, in parallel: Triton and Inductor caches"),
    Stage("bench-layers", 60, 150, "BVAE layer shapes, batch 256, bf16, five paths"),
    Stage("bench-train", 30, 100, "training step: eager, fused, compiled, CUDA graph"),
    Stage("host", 20, 60, "host time per call on tiny CUDA tensors"),
    Stage("gpu-tests", 40, 90, "tests/test_gpu.py: CUDA-graph capture, tf32, reduce-overhead, autotuned configs"),
)
SMOKE_DTYPES = ("bf16", "fp16", "fp32", "fp32-tf32")
LAYER_CASES = (  # the op cases, then the memory cases (a chain of 4 layers, a residual block: peak and saved MB)
    "bi_conv2d-*-256x*,bi_conv2d_reverse-*-256x*,bi_linear-*-256x8192*,gnova-*-256x*,bisequential_chain4-*-256x*,biresblock_*-256x*"
)
LAYER_BACKENDS = ("torch", "torch.compile", "conv-only", "cuda", "triton")
TRAIN_BACKENDS = ("torch", "cuda", "triton", "torch.compile", "cuda+compile", "triton+compile",
                  "torch.compile-reduce-overhead", "torch+cudagraph", "cuda+cudagraph", "triton+cudagraph")  # fmt: skip
BENCH_ENV = {"BVAE_TRITON_MAX_CONFIGS": "2"}
# --device cpu rehearses the whole run on a CPU machine (the torch and cpu backends, CPU-sized cases): the
# driver, its subprocesses, deadlines, partial results and reports, before a GPU minute is spent on them.
DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")
FUSED = ("cuda", "triton") if DEVICE == "cuda" else ("cpu",)


LOG: list = []  # the open gpu-check.log, when the driver runs


def log(msg: str) -> None:
    print(msg, flush=True)
    for fh in LOG:
        fh.write(msg + "\n")
        fh.flush()


# ----------------------------------------------------------------------------------------------------------
# the stages (each runs in its own process: `gpu_check.py --stage NAME`)
# ----------------------------------------------------------------------------------------------------------
def stage_preflight(work: Path, deadline: float) -> dict:
    import importlib.util

    info: dict = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    info["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    import torch

    info.update(torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count)
        info["gpu_memory_gib"] = round(p.total_memory / 2**30, 1)
    packages = ("triton", "numpy", "tqdm", "matplotlib", "torchvision", "pytest", "ninja", "setuptools", "packaging")
    info["packages"] = {}
    for name in packages:
        if importlib.util.find_spec(name) is None:
            info["packages"][name] = None
            continue
        try:
            info["packages"][name] = getattr(__import__(name), "__version__", "present")
        except Exception as exc:  # noqa: BLE001 - a broken optional package is a finding, not a crash
            info["packages"][name] = f"import failed: {type(exc).__name__}: {exc}"[:200]
    info["nvcc"] = shutil.which("nvcc")
    if info["nvcc"]:
        out = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, check=False).stdout
        info["nvcc_version"] = out.strip().splitlines()[-1] if out.strip() else None
    if shutil.which("nvidia-smi"):  # read-only queries; nothing here sets clocks, limits or modes
        fields = "name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu,mig.mode.current"
        q = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
        )
        info["nvidia_smi"] = dict(zip(fields.split(","), [v.strip() for v in q.stdout.split(",")], strict=False))
    return info


def stage_build(work: Path, deadline: float) -> dict:
    import torch

    env = dict(os.environ, MAX_JOBS=str(os.cpu_count() or 4))
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        env["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"  # this GPU only: one arch compiles in a third of the time
        env["BVAE_KERNELS_CUDA"] = "1"  # fail rather than build the CPU ops alone
    elif DEVICE == "cuda":
        return {"ok": False, "error": "no CUDA device visible to torch"}
    cmd = [PY, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", str(ROOT)]
    start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    result = {"command": " ".join(cmd), "arch_list": env.get("TORCH_CUDA_ARCH_LIST"), "rc": proc.returncode}
    result["seconds"] = round(time.time() - start, 1)
    result["log_tail"] = (proc.stdout + proc.stderr)[-3000:]
    check = subprocess.run(
        [PY, "-c", "import json, bvae_kernels as bk; print(json.dumps({'backends': bk.available_backends(), "
         "'cuda_ops': bk.cuda_ops_available(), 'compiled_ops': bk.compiled_ops_available()}))"],
        cwd=work, capture_output=True, text=True, check=False,
    )  # fmt: skip
    try:
        result.update(json.loads(check.stdout.strip().splitlines()[-1]))
    except (IndexError, json.JSONDecodeError):
        result["import_error"] = (check.stdout + check.stderr)[-1500:]
    result["ok"] = proc.returncode == 0 and bool(result.get("cuda_ops") or not torch.cuda.is_available())
    return result


def _parallel(commands: dict[str, list[str]], deadline: float, env: dict | None = None) -> dict[str, dict]:
    """Runs the commands concurrently, each until the deadline; {name: {rc, seconds, tail}}."""

    def one(item: tuple[str, list[str]]) -> tuple[str, dict]:
        name, cmd = item
        start = time.time()
        try:
            proc = subprocess.run(
                cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False,
                timeout=max(5.0, deadline - time.time()),
            )  # fmt: skip
            rc, out = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc, out = "timeout", (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        return name, {"rc": rc, "seconds": round(time.time() - start, 1), "tail": out[-2000:]}

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(commands)) as pool:
        return dict(pool.map(one, commands.items()))


def stage_smoke(work: Path, deadline: float) -> dict:
    env = dict(os.environ, BVAE_TRITON_FIXED_CONFIG="1")
    smoke = [PY, "-m", "bvae_kernels.bench.smoke", "--device", DEVICE]
    commands = {dt: [*smoke, "--dtypes", dt, "--out", str(work / f"smoke-{dt}.json")] for dt in SMOKE_DTYPES}
    if DEVICE == "cuda":
        commands["8-warps"] = [*smoke, "--probe-8-warps", "--out", str(work / "probe.json")]
    runs = _parallel(commands, deadline, env)
    rows, probe = [], []
    for name in commands:
        path = work / ("probe.json" if name == "8-warps" else f"smoke-{name}.json")
        if path.is_file():
            (probe if name == "8-warps" else rows).extend(json.loads(path.read_text())["rows"])
    failed = [r for r in rows if r["status"] != "ok"]
    result = {"workers": runs, "rows": rows, "probe_8_warps": probe, "checks": len(rows), "failed": len(failed)}
    result["ok"] = bool(rows) and not failed and all(runs[dt]["rc"] == 0 for dt in SMOKE_DTYPES)
    result["probe_8_warps_ok"] = bool(probe) and all(r["status"] == "ok" for r in probe)
    return result


def _bundled_fashion_mnist(data: Path) -> Path:
    """The bundled Fashion-MNIST sample under the file names `--data-dir` looks for."""
    src, dst = ROOT / "bvae" / "data", data / "fashion-mnist"
    dst.mkdir(parents=True, exist_ok=True)
    for split in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            shutil.copy(src / f"fashion-mnist-sample-{split}-{kind}-ubyte.gz", dst / f"{split}-{kind}-ubyte.gz")
    return data


def stage_e2e(work: Path, deadline: float) -> dict:
    data = str(_bundled_fashion_mnist(work / "data"))
    runs = work / "e2e"
    common = ["--dataset", "fashion-mnist", "--data-dir", data, "--device", DEVICE]
    steps: list[tuple[str, list[str]]] = []
    for backend in FUSED:
        out = str(runs / f"train-{backend}")
        steps.append((f"train {backend}", ["train", *common, "--epochs", "1", "--limit", "2048", "--batch-size",
                                           "256", "--backend", backend, "--out", out, "--no-progress"]))  # fmt: skip
    ckpt = str(runs / f"train-{FUSED[0]}" / "checkpoint.pt")
    steps.append(("eval", ["eval", ckpt, "--data-dir", data, "--device", DEVICE, "--metrics", "psnr,ssim,nll,au",
                           "--nll-samples", "16", "--nll-limit", "128", "--limit", "512", "--no-figures",
                           "--out", str(runs / "eval")]))  # fmt: skip
    steps.append(("sample", ["sample", ckpt, "--data-dir", data, "--device", DEVICE, "--n", "16",
                             "--out", str(runs / "sample")]))  # fmt: skip
    results = {}
    env = dict(os.environ, **BENCH_ENV)
    for name, args in steps:
        start = time.time()
        left = deadline - time.time()
        if left < 5:
            results[name] = {"rc": "not started: stage deadline"}
            continue
        try:
            proc = subprocess.run([PY, "-m", "bvae", *args], cwd=work, env=env, capture_output=True, text=True,
                                  check=False, timeout=left)  # fmt: skip
            rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-1500:]
        except subprocess.TimeoutExpired:
            rc, tail = "timeout", ""
        results[name] = {"rc": rc, "seconds": round(time.time() - start, 1), "tail": tail}
    files = {f"train {b}": f"train-{b}/metrics.json" for b in FUSED} | {"eval": "eval/eval.json"}
    for name, file in files.items():
        path = runs / file
        if path.is_file() and name in results:
            results[name]["result"] = json.loads(path.read_text())
    return {"steps": results, "ok": all(r.get("rc") == 0 for r in results.values())}


def _bench_args(kind: str) -> dict:
    """The cases (patterns), backends and case list (quick or full) of one benchmark stage on DEVICE."""
    if DEVICE != "cuda":
        backends = ["torch", "torch.compile", "cpu"]
        cases = "bi_conv2d-fwd+bwd-8x,bi_linear-fwd-64x" if kind == "layers" else "bvae_train_step"
        return {"cases": cases, "backends": backends, "quick": True}
    if kind == "layers":
        return {"cases": LAYER_CASES, "backends": list(LAYER_BACKENDS), "quick": False}
    return {"cases": "bvae_train_step-train-batch256", "backends": list(TRAIN_BACKENDS), "quick": False}


def stage_warm(work: Path, deadline: float) -> dict:
    """Every (case, backend) of both benchmarks once (1 rep, no memory details), spread over parallel processes:
    the compiles land in Triton's and Inductor's on-disk caches, which the measured stages then hit."""
    from bvae_kernels.bench import select_cases
    from bvae_kernels.bench.cases import applicable

    jobs = []
    for kind in ("train", "layers"):  # the training step's compiles are the longest: spread them first
        args = _bench_args(kind)
        for case in select_cases(DEVICE, args["quick"], args["cases"]):
            jobs += [f"{case.id(DEVICE)}|{b}" for b in args["backends"] if b != "torch" and applicable(case, b, DEVICE)]
    workers = max(1, min(6, (os.cpu_count() or 2) // 2, len(jobs)))
    commands = {
        f"worker {w}": [PY, str(Path(__file__).resolve()), "--warm", ";".join(jobs[w::workers])] for w in range(workers)
    }
    runs = _parallel(commands, deadline, dict(os.environ, **BENCH_ENV))
    return {"workers": runs, "jobs": len(jobs), "ok": all(r["rc"] == 0 for r in runs.values())}


def warm(jobs: str) -> int:
    """One pass of each "case id|backend" job (compiles, autotunes, warms up; keeps no measurement)."""
    from bvae_kernels.bench import run_benchmarks

    for job in filter(None, jobs.split(";")):
        case_id, backend = job.split("|")
        quick = DEVICE != "cuda"
        run_benchmarks(DEVICE, quick, case_id, reps=1, backends=[backend], progress=False, details=False)
    return 0


def _stage_bench(work: Path, deadline: float, kind: str) -> dict:
    from bvae_kernels.bench import run_benchmarks

    args = _bench_args(kind)
    partial = work / f"bench-{kind}.partial.json"
    stop = time.monotonic() + (deadline - time.time()) - 20  # run_benchmarks' deadline is on the monotonic clock
    result = run_benchmarks(
        DEVICE, args["quick"], args["cases"], reps=10, backends=args["backends"], progress=False, checkpoint=partial,
        deadline=stop,
    )  # fmt: skip
    result["ok"] = any(r["status"] == "ok" for r in result["rows"])
    return result


def stage_bench_layers(work: Path, deadline: float) -> dict:
    return _stage_bench(work, deadline, "layers")


def stage_bench_train(work: Path, deadline: float) -> dict:
    return _stage_bench(work, deadline, "train")


def stage_host(work: Path, deadline: float) -> dict:
    from bvae import bench_host

    rows = []
    for case in bench_host.device_cases(DEVICE, list(FUSED)):
        if time.time() > deadline - 5:
            break
        rows += bench_host.measure(case, rounds=11, sample_ms=20.0)
    return {"rows": rows, "markdown": bench_host.markdown(rows), "ok": bool(rows)}


def stage_gpu_tests(work: Path, deadline: float) -> dict:
    # the layer-shape tests overlap the smoke and the benchmarks and compile the most: left to a longer session
    cmd = [PY, "-m", "pytest", "tests/test_gpu.py", "-m", "gpu", "-k", "not test_layer_shapes", "-q", "-rs"]
    cmd += ["-p", "no:cacheprovider"]
    try:
        left = deadline - time.time()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, timeout=left)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-4000:]
    except subprocess.TimeoutExpired:
        rc, tail = "timeout", ""
    return {"rc": rc, "tail": tail, "ok": rc == 0}


STAGE_FUNCS = {
    "preflight": stage_preflight,
    "build": stage_build,
    "smoke": stage_smoke,
    "e2e": stage_e2e,
    "warm": stage_warm,
    "bench-layers": stage_bench_layers,
    "bench-train": stage_bench_train,
    "host": stage_host,
    "gpu-tests": stage_gpu_tests,
}


# ----------------------------------------------------------------------------------------------------------
# the driver
# ----------------------------------------------------------------------------------------------------------
def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)  # atomic: a cut run never leaves half a file


def summary_markdown(report: dict) -> str:
    lines = ["# gpu-check", ""]
    pre = report["stages"].get("preflight", {}).get("result", {})
    if pre:
        lines.append(
            f"{pre.get('gpu', 'no GPU')} (sm {pre.get('capability')}), torch {pre.get('torch')}, "
            f"CUDA {pre.get('cuda')}, triton {pre.get('packages', {}).get('triton')}, "
            f"Python {pre.get('python')}, {pre.get('date')}."
        )
        lines.append("")
    lines += ["| stage | status | seconds |", "|---|---|---|"]
    for name, st in report["stages"].items():
        lines.append(f"| {name} | {st['status']} | {st.get('seconds', '-')} |")
    smoke = report["stages"].get("smoke", {}).get("result")
    if smoke:
        lines += ["", f"Smoke: {smoke['checks'] - smoke['failed']}/{smoke['checks']} checks passed; 8-warp probe: "
                      f"{'passed' if smoke.get('probe_8_warps_ok') else 'FAILED or not run'}."]  # fmt: skip
        for r in smoke["rows"] + smoke.get("probe_8_warps", []):
            if r["status"] != "ok":
                lines.append(f"- {r['status']}: {r['op']} {r['dtype']} {r['backend']}: {r.get('error', '')}")
    for kind in ("bench-layers", "bench-train"):
        res = report["stages"].get(kind, {}).get("result")
        if res and res.get("rows"):
            try:
                sys.path.insert(0, str(ROOT))
                from bvae_kernels.bench.report import summary_markdown as bench_md

                lines += ["", bench_md(res, title=kind)]
            except Exception as exc:  # noqa: BLE001 - the JSON has it all; the summary is a convenience
                lines += ["", f"{kind}: could not render ({type(exc).__name__}: {exc})"]
    host = report["stages"].get("host", {}).get("result")
    if host and host.get("markdown"):
        lines += ["", f"### host time per call (thread CPU time, tiny {DEVICE} tensors)", "", host["markdown"]]
    return "\n".join(lines) + "\n"


def plan(budget: float) -> list[dict]:
    """The stages that fit the budget at their estimates, in order."""
    rows, used = [], 0
    for st in STAGES:
        fits = used + st.estimate_s <= budget
        rows.append({"stage": st.name, "estimate_s": st.estimate_s, "cap_s": st.cap_s, "what": st.what, "fits": fits})
        if fits:
            used += st.estimate_s
    return rows


def compile_estimate() -> dict:
    """Triton specializations and torch.compile graphs the run will compile, from the cases it runs.

    Model: a Triton op call in fwd+bwd compiles a forward GEMM (storing u), a dgrad GEMM, a wgrad GEMM, the bias
    reduction and the split reduction; a no-grad forward one GEMM; G-NoVa one kernel per direction. Distinct
    shapes are distinct specializations (the JIT keys on which integers are 1 or multiples of 16). Autotuning
    compiles each of its (capped) configs; the smoke compiles one config.
    """
    sys.path.insert(0, str(ROOT))
    from bvae_kernels.bench import select_cases
    from bvae_kernels.bench.smoke import CONV_CASES

    def per_call(name: str, mode: str) -> int:
        if name.startswith("gnova"):
            return 1 if mode == "fwd" else 2
        return 1 if mode == "fwd" else 5

    smoke_ops = 1 + 2 * len(CONV_CASES) + 2  # gnova, both conv directions per case, both dense directions
    smoke = len(SMOKE_DTYPES) * (smoke_ops - 1) * (5 + 1) + len(SMOKE_DTYPES) * 3  # + no-grad forwards; gnova
    probe = 2 * len(CONV_CASES) * 6
    capped = int(BENCH_ENV["BVAE_TRITON_MAX_CONFIGS"])
    layers = select_cases("cuda", False, LAYER_CASES)
    triton_bench = sum(per_call(c.name, c.mode) * (capped if not c.name.startswith("gnova") else 1) for c in layers)
    compile_graphs = len(layers)  # torch.compile of the reference, one graph (forward or joint) per case
    train_graphs = sum(1 for b in TRAIN_BACKENDS if "compile" in b)
    return {
        "triton_smoke": smoke,
        "triton_probe_8_warps": probe,
        "triton_bench_layers": triton_bench,
        "triton_train_step": "~30 (the model's 6 layers, shared with the e2e run)",
        "torch_compile_graphs": compile_graphs + train_graphs,
        "note": "smoke and warm compile in parallel processes (Triton and Inductor caches are shared on disk)",
    }


def run_stage_subprocess(st: Stage, work: Path, seconds: float) -> tuple[str, dict | None, float]:
    start = time.time()
    deadline = start + seconds
    cmd = [PY, str(Path(__file__).resolve()), "--stage", st.name, "--work", str(work), "--deadline", str(deadline)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if st.name in ("bench-layers", "bench-train", "e2e", "gpu-tests"):
        env.update(BENCH_ENV)
    out = work / f"{st.name}.json"
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pump = threading.Thread(target=lambda: [log(line.rstrip("\n")) for line in proc.stdout], daemon=True)
    pump.start()
    try:
        proc.wait(timeout=seconds + 15)
        status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        status = "timeout"
    pump.join(timeout=5)
    result = json.loads(out.read_text()) if out.is_file() else None
    partial = work / f"{st.name}.partial.json"
    if result is None and partial.is_file():  # a benchmark cut short: keep the cases it measured
        result = json.loads(partial.read_text())
        status += " (partial results)"
    if result is not None and result.get("ok") is False and status == "ok":
        status = "failed checks"
    return status, result, time.time() - start


def main(argv: list[str] | None = None) -> int:
    global DEVICE, FUSED  # noqa: PLW0603 - set by --device; the stage processes read it from the environment
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "gpu-check-out"))
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for the whole run (default 450)")
    parser.add_argument("--dry-run", action="store_true", help="the plan, the compile estimate and the GPU-free checks")
    parser.add_argument("--only", default=None, help="comma-separated stages to run (default: all that fit)")
    parser.add_argument(
        "--device", choices=("cuda", "cpu"), default=DEVICE, help="cpu: rehearse the run on a CPU machine (no build)"
    )
    parser.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warm", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.warm is not None:
        return warm(args.warm)
    if args.device != DEVICE:
        os.environ["GPU_CHECK_DEVICE"] = DEVICE = args.device
        FUSED = ("cuda", "triton") if DEVICE == "cuda" else ("cpu",)
    if args.stage:  # one stage, in its own process
        work = Path(args.work)
        result = STAGE_FUNCS[args.stage](work, args.deadline or time.time() + 600)
        _write_json(work / f"{args.stage}.json", result)
        return 0 if result.get("ok", True) else 1

    if args.budget <= 0:
        parser.error(f"--budget must be positive, got {args.budget}")
    only = set(args.only.split(",")) if args.only else None
    if only and not only <= set(STAGE_FUNCS):
        parser.error(f"--only takes stages among {', '.join(STAGE_FUNCS)}, got {args.only}")
    if not args.dry_run:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        LOG.append((Path(args.out) / "gpu-check.log").open("w"))
    stages_plan = plan(args.budget)
    log(f"gpu-check plan (budget {args.budget:.0f} s):")
    for row in stages_plan:
        mark = "run " if row["fits"] and (not only or row["stage"] in only) else "drop"
        log(f"  {mark} {row['stage']:<13} ~{row['estimate_s']:>4} s (cap {row['cap_s']:>3} s)  {row['what']}")
    estimate = compile_estimate()
    log("compile estimate: " + ", ".join(f"{k} {v}" for k, v in estimate.items() if k != "note"))
    if args.dry_run:
        pre = stage_preflight(Path("."), time.time() + 60)
        log(f"preflight here: torch {pre['torch']}, cuda available {pre['cuda_available']}, "
            f"packages {pre['packages']}")  # fmt: skip
        sys.path.insert(0, str(ROOT))
        from bvae_kernels.bench import select_cases

        for kind in ("layers", "train"):
            a = _bench_args(kind)
            cases = select_cases(DEVICE, a["quick"], a["cases"])
            log(f"bench-{kind}: {len(cases)} cases x {len(a['backends'])} backends: {[c.id(DEVICE) for c in cases]}")
            assert cases, f"bench-{kind}: no case matches {a['cases']!r}"
        for cmd in ("train", "eval", "sample"):
            proc = subprocess.run([PY, "-m", "bvae", cmd, "--help"], cwd=ROOT, capture_output=True, check=False)
            assert proc.returncode == 0, f"bvae {cmd} --help failed"
        log("dry run: the plan resolves (cases, commands); no device work was done")
        return 0

    out = Path(args.out)
    work = Path(os.environ.get("GPU_CHECK_WORK", "/tmp/bvae-gpu-check"))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    report = {"plan": stages_plan, "budget_s": args.budget, "compile_estimate": estimate, "stages": {}}
    t0 = time.time()
    for st in STAGES:
        left = args.budget - (time.time() - t0)
        if only and st.name not in only:
            continue
        if left < st.estimate_s:
            report["stages"][st.name] = {"status": f"dropped: {left:.0f} s left, estimate {st.estimate_s} s"}
            log(f"=== {st.name}: dropped ({left:.0f} s left)")
            continue
        if st.name != "preflight" and report["stages"].get("build", {}).get("status", "ok") not in ("ok",):
            report["stages"][st.name] = {"status": "skipped: the build failed"}
            continue
        log(f"=== {st.name} (t={time.time() - t0:.0f} s, {left:.0f} s left, cap {st.cap_s} s)")
        status, result, seconds = run_stage_subprocess(st, work, min(st.cap_s, left))
        report["stages"][st.name] = {"status": status, "seconds": round(seconds, 1), "result": result}
        log(f"--- {st.name}: {status} in {seconds:.0f} s")
        report["elapsed_s"] = round(time.time() - t0, 1)
        _write_json(out / "gpu-check.json", report)
        (out / "summary.md").write_text(summary_markdown(report))
    bad = {k: v["status"] for k, v in report["stages"].items() if v["status"] != "ok"}
    log(f"gpu-check done in {time.time() - t0:.0f} s; " + (f"not ok: {bad}" if bad else "every stage ok"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
