"""`bvae bench`: the fused kernels against the naive path (eager and torch.compile): time, memory, roofline.

One list of cases (`CASES`) serves both this command and the pytest-benchmark suite under benchmarks/.
Each case runs under every backend that can serve the device:

- `torch`: the eager reference (bvae_kernels.reference), the baseline every speedup is measured against;
- `torch.compile`: torch.compile of that reference (default mode), timed after its warm-up; on CUDA also
  `torch.compile-max-autotune` (mode "max-autotune-no-cudagraphs");
- every compiled backend from `bk.available_backends()` that serves the device (`cpu`; `cuda`, `triton`).

Method (DESIGN.md section 7): backends are interleaved per repetition (with a rotating order) so that a
noisy machine slows them all alike; each sample times `number` calls (enough for ~1 ms on CPU); the
report gives the median and the p20-p80 band. On CUDA, samples are timed with CUDA events, inputs are
channels_last, cudnn.benchmark is on and TF32 is off for both matmul and cuDNN unless --tf32 turns both on.
Memory: saved-activation bytes (every tensor autograd saves, counted once per storage, parameters
excluded) on any device, and the CUDA peak allocation above the inputs. Roofline: FLOPs come from
torch.utils.flop_counter on the reference path (contractions only), minimum bytes from the tensors a
fused implementation must touch (see `_op_bytes`); the device's peak matmul rate (in the case dtype) and
copy bandwidth are measured once per run, and floor = max(FLOPs / peak, bytes / bandwidth).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import fnmatch
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

import bvae_kernels as bk
from bvae_kernels import reference as ref

from ._checks import int_arg, positive_int_arg

EAGER = "torch"
COMPILE = "torch.compile"
COMPILE_MAX = "torch.compile-max-autotune"
COMPILE_BACKENDS = (COMPILE, COMPILE_MAX)  # torch.compile of the eager reference
FUSED_BACKENDS = ("cpu", "cuda", "triton")
FUSED_COMPILE_BACKENDS = tuple(f"{b}+compile" for b in FUSED_BACKENDS)  # torch.compile of the fused path
ALL_BACKENDS = (EAGER, COMPILE, COMPILE_MAX, *FUSED_BACKENDS, *FUSED_COMPILE_BACKENDS)


def _fused_name(backend: str) -> str:
    """The fused backend a bench backend runs ("cpu+compile" -> "cpu"), or "torch" for the reference ones."""
    if backend == EAGER or backend in COMPILE_BACKENDS:
        return "torch"
    return backend.removesuffix("+compile")


def _compiled(backend: str) -> bool:
    return backend in COMPILE_BACKENDS or backend in FUSED_COMPILE_BACKENDS


MODES = ("fwd", "fwd+bwd", "train")

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
_SHORT_DTYPE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}


# ----------------------------------------------------------------------------------------------------------
# the cases
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Case:
    """One benchmark: an op or module, a mode, its sizes, a dtype and a memory layout.

    dtype None means the device default (float32 on CPU, bfloat16 on CUDA); layout "auto" means NCHW on CPU
    and channels_last on CUDA (the fair cuDNN baseline). `quick` cases form `bvae bench --quick`, `full`
    ones the default run; with --quick only `quick_compile` cases also time torch.compile (compiling is
    what makes a CPU run slow).
    """

    name: str
    mode: str
    dims: dict[str, int]
    dtype: str | None = None
    layout: str = "auto"
    devices: tuple[str, ...] = ("cpu",)
    quick: bool = False
    full: bool = True
    x_requires_grad: bool = True
    quick_compile: bool = False
    note: str = ""

    def dtype_for(self, device: str) -> str:
        return self.dtype or ("bfloat16" if device == "cuda" else "float32")

    def layout_for(self, device: str) -> str:
        if self.layout != "auto":
            return self.layout
        return "channels_last" if device == "cuda" else "nchw"

    @property
    def shape(self) -> str:
        """A compact shape label, e.g. `32x32x28x28>32 k3s1p1`."""
        d = self.dims
        if "k" in d:
            return f"{d['n']}x{d['cin']}x{d['h']}x{d['w']}>{d['cout']} k{d['k']}s{d['s']}p{d['p']}"
        if "fin" in d:
            return f"{d['n']}x{d['fin']}>{d['fout']}"
        if "latent" in d:
            return f"batch{d['n']} latent{d['latent']}"
        return "x".join(str(d[k]) for k in ("n", "c", "h", "w"))

    def group(self, device: str) -> str:
        """The comparison group: case + mode + shape + dtype (+ layout); backends are compared inside it."""
        layout = self.layout_for(device) if self.name not in ("bi_linear", "bvae_train_step") else ""
        parts = [self.name, self.mode, self.shape, _SHORT_DTYPE[self.dtype_for(device)], layout]
        return " ".join(p for p in parts if p)

    def id(self, device: str) -> str:
        return self.group(device).replace(" ", "-").replace(">", "to")


def _conv(n: int, cin: int, cout: int, h: int, k: int = 3, s: int = 1, p: int = 1) -> dict[str, int]:
    return {"n": n, "cin": cin, "cout": cout, "h": h, "w": h, "k": k, "s": s, "p": p}


def _build_cases() -> list[Case]:
    cases: list[Case] = []
    cpu, gpu = ("cpu",), ("cuda",)
    # G-NoVa alone: a pure bandwidth case.
    for mode in ("fwd", "fwd+bwd"):
        cases.append(Case("gnova", mode, {"n": 8, "c": 16, "h": 14, "w": 14}, devices=cpu, quick=True, full=False))
        cases.append(Case("gnova", mode, {"n": 32, "c": 32, "h": 28, "w": 28}, devices=cpu))
        cases.append(Case("gnova", mode, {"n": 256, "c": 128, "h": 64, "w": 64}, devices=gpu, quick=True))
    # The two directions of one bidirectional conv: the encoder/decoder shapes of a Fashion-MNIST BVAE.
    conv_cpu_quick = [_conv(8, 16, 16, 14)]
    conv_cpu = [_conv(32, 32, 32, 28), _conv(32, 32, 64, 14, k=4, s=2, p=1)]
    conv_gpu = [_conv(256, 64, 64, 32), _conv(256, 128, 128, 16), _conv(256, 64, 128, 32, k=4, s=2, p=1)]
    for name in ("bi_conv2d", "bi_conv2d_reverse"):
        for mode in ("fwd", "fwd+bwd"):
            cases += [Case(name, mode, d, devices=cpu, quick=True, full=False) for d in conv_cpu_quick]
            cases += [Case(name, mode, d, devices=cpu) for d in conv_cpu]
            cases += [Case(name, mode, d, devices=gpu, quick=i == 0) for i, d in enumerate(conv_gpu)]
    for mode in ("fwd", "fwd+bwd"):
        cases.append(Case("bi_linear", mode, {"n": 64, "fin": 256, "fout": 128}, devices=cpu, quick=True, full=False))
        cases.append(Case("bi_linear", mode, {"n": 256, "fin": 1024, "fout": 512}, devices=cpu))
        cases.append(Case("bi_linear", mode, {"n": 4096, "fin": 2048, "fout": 2048}, devices=gpu, quick=True))
    # THE key measurement (Foundation issue): bi_conv2d then bi_conv2d_reverse through the same weight,
    # forward + backward, float32, x is data (no grad), weight and both biases learn.
    for layout in ("nchw", "channels_last"):
        cases.append(
            Case(
                "bi_conv2d_chain",
                "fwd+bwd",
                _conv(32, 32, 32, 28),
                dtype="float32",
                layout=layout,
                devices=("cpu", "cuda"),
                quick=layout == "nchw",
                quick_compile=True,
                x_requires_grad=False,
                note="encode then decode through one weight; x needs no grad",
            )
        )
    # Modules from bvae.blocks / bvae.models (imported lazily: skipped with the reason when absent).
    for name in ("biresblock_forward", "biresblock_reverse"):
        cases.append(Case(name, "fwd+bwd", {"n": 8, "c": 16, "h": 14, "w": 14}, devices=cpu, quick=True, full=False))
        cases.append(Case(name, "fwd+bwd", {"n": 32, "c": 32, "h": 14, "w": 14}, devices=cpu))
        cases.append(Case(name, "fwd+bwd", {"n": 256, "c": 128, "h": 16, "w": 16}, devices=gpu, quick=True))
    cases.append(Case("bvae_train_step", "train", {"n": 16, "latent": 16}, devices=cpu, quick=True, full=False))
    cases.append(Case("bvae_train_step", "train", {"n": 64, "latent": 16}, devices=cpu))
    cases.append(Case("bvae_train_step", "train", {"n": 256, "latent": 16}, devices=gpu, quick=True))
    return cases


CASES: list[Case] = _build_cases()
CHAIN_CASE = "bi_conv2d_chain"


def select_cases(device: str, quick: bool = False, patterns: str | None = None) -> list[Case]:
    """The cases for `device`: the quick subset or the full list, filtered by comma-separated patterns.

    A pattern with glob characters is matched (fnmatch) against the case id; any other is a substring of it.
    The chain case (the key measurement, both layouts) is in the full list; `--cases bi_conv2d_chain` picks it.
    """
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    chosen = [c for c in CASES if device in c.devices and (c.quick if quick else c.full)]
    if patterns:
        pats = [p.strip() for p in patterns.split(",") if p.strip()]
        if not pats:
            raise ValueError(f"cases must name at least one pattern, got {patterns!r}")

        def hit(case: Case) -> bool:
            cid = case.id(device)
            return any(fnmatch.fnmatch(cid, p) if any(ch in p for ch in "*?[") else p in cid for p in pats)

        chosen = [c for c in chosen if hit(c)]
    return chosen


def backends_for(device: str, include_compile: bool = True) -> list[str]:
    """The backends to compare on `device`, the eager reference first."""
    names = [EAGER]
    if include_compile:
        names.append(COMPILE)
        if device == "cuda":
            names.append(COMPILE_MAX)
    available = bk.available_backends()
    serves = {"cpu": ("cpu",), "cuda": ("cuda", "triton")}[device]
    fused = [b for b in FUSED_BACKENDS if b in available and b in serves]
    names += fused
    if include_compile:
        names += [f"{b}+compile" for b in fused]
    return names


# ----------------------------------------------------------------------------------------------------------
# building one (case, backend) into a callable
# ----------------------------------------------------------------------------------------------------------
class SkipCase(Exception):
    """This case cannot run here (a module is missing, a backend cannot serve it); the message says why."""


@dataclass
class Prepared:
    """A ready-to-time case: `fn()` runs one iteration (forward, or forward + backward + zeroed grads)."""

    fn: Callable[[], object]
    params: list[torch.Tensor] = field(default_factory=list)
    min_bytes: int | None = None
    reference_fn: Callable[[], object] | None = None


def _fmt(layout: str) -> torch.memory_format:
    return torch.channels_last if layout == "channels_last" else torch.contiguous_format


def _compile(fn: Callable, backend: str) -> Callable:
    mode = "max-autotune-no-cudagraphs" if backend == COMPILE_MAX else None
    return torch.compile(fn, mode=mode, dynamic=False)


def _maybe_compile(fn: Callable, backend: str) -> Callable:
    return _compile(fn, backend) if _compiled(backend) else fn


def _reverse_output_padding(d: dict[str, int]) -> int:
    """The output_padding that makes the reverse direction map the conv's output size back to its input."""
    out = (d["h"] + 2 * d["p"] - d["k"]) // d["s"] + 1
    return d["h"] - ((out - 1) * d["s"] - 2 * d["p"] + d["k"])


def _op_forward(case: Case, backend: str) -> Callable:
    """The forward callable `(inp, weight, *biases) -> y` of an op case under `backend`."""
    naive = _fused_name(backend) == "torch"
    backend = _fused_name(backend)
    d = case.dims
    if case.name == "gnova":
        return (lambda u: ref.gnova(u)) if naive else (lambda u: bk.gnova(u, backend=backend))
    if case.name == "bi_linear":
        if naive:
            return lambda x, w, b: ref.bi_linear(x, w, b)
        return lambda x, w, b: bk.bi_linear(x, w, b, backend=backend)
    s, p = d["s"], d["p"]
    op = _reverse_output_padding(d)
    if case.name == "bi_conv2d":
        if naive:
            return lambda x, w, b: ref.bi_conv2d(x, w, b, s, p)
        return lambda x, w, b: bk.bi_conv2d(x, w, b, stride=s, padding=p, backend=backend)
    if case.name == "bi_conv2d_reverse":
        if naive:
            return lambda z, w, b: ref.bi_conv2d_reverse(z, w, b, s, p, op)
        return lambda z, w, b: bk.bi_conv2d_reverse(z, w, b, stride=s, padding=p, output_padding=op, backend=backend)
    if case.name == CHAIN_CASE:
        if naive:
            return lambda x, w, bf, br: ref.bi_conv2d_reverse(ref.bi_conv2d(x, w, bf, s, p), w, br, s, p, op)

        def chain(x: torch.Tensor, w: torch.Tensor, bf: torch.Tensor, br: torch.Tensor) -> torch.Tensor:
            h = bk.bi_conv2d(x, w, bf, stride=s, padding=p, backend=backend)
            return bk.bi_conv2d_reverse(h, w, br, stride=s, padding=p, output_padding=op, backend=backend)

        return chain
    raise ValueError(f"unknown op case {case.name!r}")


def _op_inputs(case: Case, device: str, dtype: torch.dtype, layout: str) -> tuple[list[torch.Tensor], list[bool]]:
    """Inputs of an op case (seeded) and which of them need grad in fwd+bwd."""
    gen = torch.Generator().manual_seed(0)
    d = case.dims

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)

    fmt = _fmt(layout)
    if case.name == "gnova":
        return [rand(d["n"], d["c"], d["h"], d["w"], scale=3.0).contiguous(memory_format=fmt)], [True]
    if case.name == "bi_linear":
        x = rand(d["n"], d["fin"])
        w = rand(d["fout"], d["fin"], scale=1 / math.sqrt(d["fin"]))
        return [x, w, rand(d["fout"], scale=0.1)], [case.x_requires_grad, True, True]
    w = rand(d["cout"], d["cin"], d["k"], d["k"], scale=1 / math.sqrt(d["cin"] * d["k"] * d["k"]))
    w = w.contiguous(memory_format=fmt)
    if case.name == "bi_conv2d_reverse":
        out_h = (d["h"] + 2 * d["p"] - d["k"]) // d["s"] + 1
        z = rand(d["n"], d["cout"], out_h, out_h).contiguous(memory_format=fmt)
        return [z, w, rand(d["cin"], scale=0.1)], [case.x_requires_grad, True, True]
    x = rand(d["n"], d["cin"], d["h"], d["w"]).contiguous(memory_format=fmt)
    if case.name == CHAIN_CASE:
        return [x, w, rand(d["cout"], scale=0.1), rand(d["cin"], scale=0.1)], [case.x_requires_grad, True, True, True]
    return [x, w, rand(d["cout"], scale=0.1)], [case.x_requires_grad, True, True]


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _layer_bytes(inp: int, w: int, b: int, out: int, inp_grad: bool, backward: bool) -> int:
    """Minimum DRAM traffic of one fused layer (sizes in bytes).

    Forward: input, weight and bias read once, y written once, and u written once when a backward follows.
    Backward: grad_y, u, the saved input and the weight read once; d_input (if wanted), dW and db written once.
    """
    if not backward:
        return inp + w + b + out
    return (inp + w + b + 2 * out) + (2 * out + inp + w + (inp if inp_grad else 0) + w + b)


def _op_bytes(case: Case, inputs: list[torch.Tensor], needs: list[bool], outputs: list[torch.Tensor]) -> int:
    """Minimum DRAM traffic of a fused implementation of an op case (see `_layer_bytes`)."""
    backward = case.mode != "fwd"
    size = [_nbytes(t) for t in inputs]
    if case.name == "gnova":  # read u, write y; backward: read grad and u, write du
        return size[0] * (5 if backward else 2)
    if case.name == CHAIN_CASE:  # x -> h -> y through one weight; h's gradient is needed, x's is not
        h, y = (_nbytes(t) for t in outputs)
        return _layer_bytes(size[0], size[1], size[2], h, needs[0], backward) + _layer_bytes(
            h, size[1], size[3], y, True, backward
        )
    return _layer_bytes(size[0], size[1], size[2], _nbytes(outputs[-1]), needs[0], backward)


def _prepare_op(case: Case, backend: str, device: str) -> Prepared:
    dtype = _DTYPES[case.dtype_for(device)]
    layout = case.layout_for(device)
    inputs, needs = _op_inputs(case, device, dtype, layout)
    forward = _maybe_compile(_op_forward(case, backend), backend)
    if case.mode == "fwd":

        def run_fwd() -> object:
            with torch.no_grad():
                return forward(*inputs)

        with torch.no_grad():
            outs = [_op_forward(case, EAGER)(*inputs)]
        return Prepared(run_fwd, [], _op_bytes(case, inputs, needs, outs))
    leaves = [t.detach().requires_grad_(n) for t, n in zip(inputs, needs, strict=True)]
    grad_leaves = [t for t in leaves if t.requires_grad]
    with torch.no_grad():
        y0 = _op_forward(case, EAGER)(*inputs)
        outs = [y0]
        if case.name == CHAIN_CASE:
            d = case.dims
            outs = [ref.bi_conv2d(inputs[0], inputs[1], inputs[2], d["s"], d["p"]), y0]
    grad_y = torch.randn(y0.shape, generator=torch.Generator().manual_seed(1)).to(device=device, dtype=dtype)
    if layout == "channels_last" and y0.dim() == 4:
        grad_y = grad_y.contiguous(memory_format=torch.channels_last)

    def run_fwd_bwd() -> object:
        y = forward(*leaves)
        y.backward(grad_y)
        for t in grad_leaves:
            t.grad = None
        return None

    # the parameters (weight, biases) are not activation memory: leave them out of the saved bytes
    return Prepared(run_fwd_bwd, leaves[1:], _op_bytes(case, inputs, needs, outs))


def _module_bytes(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """A loose floor for module cases: input and parameters read, output written, each gradient written."""
    params = sum(_nbytes(p) for p in module.parameters())
    return _nbytes(x) + 2 * params + 2 * _nbytes(y) + (_nbytes(x) if x.requires_grad else 0)


def _prepare_block(case: Case, backend: str, device: str) -> Prepared:
    from .blocks import BiResBlock

    d = case.dims
    dtype = _DTYPES[case.dtype_for(device)]
    torch.manual_seed(0)
    block = BiResBlock(d["c"], backend=_fused_name(backend))
    block = block.to(device=device, dtype=dtype, memory_format=_fmt(case.layout_for(device)))
    x = torch.randn(d["n"], d["c"], d["h"], d["w"], device=device, dtype=dtype)
    x = x.contiguous(memory_format=_fmt(case.layout_for(device))).requires_grad_(case.x_requires_grad)
    direction = block.forward if case.name == "biresblock_forward" else block.reverse
    call = _maybe_compile(direction, backend)
    params = list(block.parameters())
    with torch.no_grad():
        y0 = direction(x)
    grad_y = torch.randn_like(y0)

    def run() -> object:
        y = call(x)
        y.backward(grad_y)
        for t in (*params, x):
            t.grad = None
        return None

    return Prepared(run, params, _module_bytes(block, x, y0))


def _loss_of(out: object) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict) and "loss" in out:
        return out["loss"]
    loss = getattr(out, "loss", None)
    if isinstance(loss, torch.Tensor):
        return loss
    raise SkipCase(f"cannot find the loss in the model output of type {type(out).__name__}")


def _prepare_train(case: Case, backend: str, device: str) -> Prepared:
    from .models import build_model

    d = case.dims
    dtype = _DTYPES[case.dtype_for(device)]
    torch.manual_seed(0)
    model = build_model(kind="bvae", dataset="fashion-mnist", latent_dim=d["latent"], backend=_fused_name(backend))
    model = model.to(device=device, dtype=dtype)
    x = torch.rand(d["n"], 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    step_model = _maybe_compile(model, backend)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    params = list(model.parameters())

    def run() -> object:
        opt.zero_grad(set_to_none=True)
        loss = _loss_of(step_model(x))
        loss.backward()
        opt.step()
        return None

    with torch.no_grad():
        _loss_of(model(x))
    return Prepared(run, params, _nbytes(x) + 4 * sum(_nbytes(p) for p in params))


def prepare(case: Case, backend: str, device: str) -> Prepared:
    """Builds `case` under `backend` on `device`; raises SkipCase with the reason when it cannot run."""
    if backend not in ALL_BACKENDS:
        raise ValueError(f"backend must be one of {ALL_BACKENDS}, got {backend!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise SkipCase("no CUDA device")
    if backend == COMPILE_MAX and device != "cuda":
        raise SkipCase("max-autotune-no-cudagraphs is timed on CUDA only")
    fused = _fused_name(backend)
    if fused in FUSED_BACKENDS and fused not in backends_for(device, include_compile=False):
        raise SkipCase(f"backend {fused!r} is not available for {device} tensors here")
    if case.name.startswith("biresblock"):
        return _prepare_block(case, backend, device)
    if case.name == "bvae_train_step":
        return _prepare_train(case, backend, device)
    return _prepare_op(case, backend, device)


# ----------------------------------------------------------------------------------------------------------
# measurement
# ----------------------------------------------------------------------------------------------------------
def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_once(fn: Callable[[], object], device: str, number: int) -> float:
    """Milliseconds per call, over `number` back-to-back calls (CUDA events on CUDA, perf_counter on CPU)."""
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(number):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / number
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) * 1e3 / number


def warm_up(fn: Callable[[], object], device: str, min_calls: int = 3, min_seconds: float = 0.1) -> float:
    """Runs `fn` until it is warm (compile, cudnn.benchmark, allocator); returns the last call's ms."""
    t_end = time.perf_counter() + min_seconds
    calls, last = 0, float("inf")
    while calls < min_calls or time.perf_counter() < t_end:
        last = time_once(fn, device, 1)
        calls += 1
        if calls > 200:
            break
    return last


def saved_activation_bytes(fn: Callable[[], object], exclude: list[torch.Tensor]) -> int:
    """Bytes autograd saves for backward during `fn`, counted once per storage; `exclude` (parameters) not counted."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in skip and ptr != 0:
                seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
        except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. functional wrappers)
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def peak_cuda_bytes(fn: Callable[[], object]) -> int:
    """Peak CUDA allocation during one call of `fn`, above what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def do_bench_ms(fn: Callable[[], object]) -> float | None:
    """Triton's device-side median (L2 flushed between calls), or None without Triton."""
    try:
        from triton.testing import do_bench
    except ImportError:
        return None
    return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))


def count_flops(case: Case, device: str) -> int:
    """FLOPs of one iteration, counted by torch.utils.flop_counter on the eager reference (contractions)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        prepared = prepare(case, EAGER, device)
    except SkipCase:
        return 0
    counter = FlopCounterMode(display=False)
    with counter:
        prepared.fn()
    return int(counter.get_total_flops())


def _samples(fn: Callable[[], object], device: str, min_reps: int, seconds: float) -> list[float]:
    """Milliseconds of single calls: at least `min_reps`, and more until `seconds` have passed (at most 200)."""
    time_once(fn, device, 1)  # warm-up
    out: list[float] = []
    t_end = time.perf_counter() + seconds
    while len(out) < min_reps or (time.perf_counter() < t_end and len(out) < 200):
        out.append(time_once(fn, device, 1))
    return out


@functools.cache
def measure_peaks(device: str, dtype_name: str, quick: bool = False) -> dict[str, float]:
    """The device's measured peak matmul rate (FLOP/s, in `dtype_name`) and copy bandwidth (bytes/s)."""
    dtype = _DTYPES[dtype_name]
    n = 8192 if device == "cuda" else 1024
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    # the best of many short samples: on a shared CPU most samples are slowed by other processes
    budget = 0.5 if quick else 1.5
    mm = _samples(lambda: torch.mm(a, b), device, min_reps=20 if device == "cuda" else 8, seconds=budget)
    elems = (1 << 28) if device == "cuda" else (1 << (23 if quick else 25))  # well past the last-level cache
    src = torch.empty(elems, device=device, dtype=torch.float32).normal_()
    dst = torch.empty_like(src)
    cp = _samples(lambda: dst.copy_(src), device, min_reps=20 if device == "cuda" else 8, seconds=budget)
    return {
        "peak_flops": 2 * n**3 / (min(mm) * 1e-3),
        "peak_bytes_per_s": 2 * elems * 4 / (min(cp) * 1e-3),
        "matmul_n": n,
        "copy_bytes": elems * 4,
    }


def _quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _number_for(ms: float, device: str) -> int:
    """Calls per sample so that one sample lasts about 1 ms (CPU timer resolution and call jitter)."""
    target = 1.0 if device == "cpu" else 0.5
    return max(1, min(1000, math.ceil(target / max(ms, 1e-4))))


def run_case(
    case: Case,
    backends: list[str],
    device: str,
    reps: int,
    round_index: int = 0,
    peaks: dict[str, float] | None = None,
) -> list[dict]:
    """Measures one case under every backend, interleaved per repetition; returns one row per backend."""
    dtype_name = case.dtype_for(device)
    base = {
        "case": case.name,
        "mode": case.mode,
        "shape": case.shape,
        "dtype": dtype_name,
        "layout": case.layout_for(device),
        "group": case.group(device),
        "device": device,
        "round": round_index,
    }
    rows: dict[str, dict] = {}
    prepared: dict[str, Prepared] = {}
    numbers: dict[str, int] = {}
    torch._dynamo.reset()  # a fresh cache per case: recompile limits must never drop a case back to eager
    for backend in backends:
        row = {**base, "backend": backend, "status": "ok", "reason": ""}
        rows[backend] = row
        try:
            p = prepare(case, backend, device)
            ms = warm_up(p.fn, device)
            prepared[backend] = p
            numbers[backend] = _number_for(ms, device)
        except SkipCase as exc:
            row.update(status="skipped", reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - one broken backend must not stop the comparison
            row.update(status="error", reason=f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
    samples: dict[str, list[float]] = {b: [] for b in prepared}
    order = list(prepared)
    for rep in range(reps):
        shift = rep % max(1, len(order))
        for backend in order[shift:] + order[:shift]:
            samples[backend].append(time_once(prepared[backend].fn, device, numbers[backend]))
    flops = count_flops(case, device) if prepared else 0
    eager = samples.get(EAGER)
    compiled = [samples[b] for b in COMPILE_BACKENDS if b in samples]
    best_compile = min(compiled, key=statistics.median) if compiled else None
    for backend, p in prepared.items():
        s = samples[backend]
        row = rows[backend]
        med = statistics.median(s)
        row.update(
            median_ms=med,
            p20_ms=_quantile(s, 0.2),
            p80_ms=_quantile(s, 0.8),
            min_ms=min(s),
            n_samples=len(s),
            calls_per_sample=numbers[backend],
            samples_ms=s,
            flops=flops,
            min_bytes=p.min_bytes,
        )
        if eager:
            ratios = [e / x for e, x in zip(eager, s, strict=True)]
            row.update(
                speedup_vs_eager=statistics.median(eager) / med,
                speedup_p20=_quantile(ratios, 0.2),
                speedup_p80=_quantile(ratios, 0.8),
            )
        if best_compile is not None:
            row["speedup_vs_compile"] = statistics.median(best_compile) / med
        row["tflops"] = flops / (med * 1e-3) / 1e12 if flops else None
        row["gbs"] = p.min_bytes / (med * 1e-3) / 1e9 if p.min_bytes else None
        if case.mode != "fwd":
            try:
                row["saved_mb"] = saved_activation_bytes(p.fn, p.params) / 2**20
            except Exception as exc:  # noqa: BLE001 - a hook failure must not lose the timing
                row["saved_mb"] = None
                row["reason"] = f"saved-bytes hook failed: {type(exc).__name__}"
        if device == "cuda":
            row["peak_mem_mb"] = peak_cuda_bytes(p.fn) / 2**20
            row["do_bench_ms"] = do_bench_ms(p.fn)
        if peaks:
            floor_s = max(flops / peaks["peak_flops"], (p.min_bytes or 0) / peaks["peak_bytes_per_s"])
            row["floor_ms"] = floor_s * 1e3
            row["pct_of_floor"] = 100 * floor_s * 1e3 / med if floor_s > 0 else None
    return [rows[b] for b in backends]


# ----------------------------------------------------------------------------------------------------------
# metadata, output files
# ----------------------------------------------------------------------------------------------------------
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict:
    """Device, versions, date and machine facts recorded with every result."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    info = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else _cpu_name(),
        "torch_version": torch.__version__,
        "triton_version": triton_version,
        "cuda_version": torch.version.cuda,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "available_backends": bk.available_backends(),
        "command": " ".join(["bvae", *sys.argv[1:]]) if sys.argv else "",
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        info.update(
            capability=f"{props.major}.{props.minor}",
            sm_count=props.multi_processor_count,
            cudnn_version=torch.backends.cudnn.version(),
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
    return info


CSV_COLUMNS = (
    "case mode shape dtype layout device backend round status median_ms p20_ms p80_ms min_ms n_samples "
    "calls_per_sample speedup_vs_eager speedup_p20 speedup_p80 speedup_vs_compile peak_mem_mb saved_mb flops "
    "min_bytes tflops gbs floor_ms pct_of_floor do_bench_ms device_name torch_version triton_version date reason"
).split()


def _cell(value: object, digits: int = 3) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


TABLE_HEADER = (
    "case",
    "shape",
    "dtype",
    "backend",
    "median ms",
    "x eager",
    "x compile",
    "peak MB",
    "saved MB",
    "TFLOP/s",
    "GB/s",
    "% floor",
)


def table_rows(rows: list[dict]) -> list[list[str]]:
    out = []
    for r in rows:
        if r.get("status") != "ok":
            continue
        case = f"{r['case']} {r['mode']}" + (f" {r['layout']}" if r["layout"] == "channels_last" else "")
        if r.get("round"):
            case += f" r{r['round']}"
        out.append(
            [
                case,
                r["shape"],
                _SHORT_DTYPE.get(r["dtype"], r["dtype"]),
                r["backend"],
                _cell(r.get("median_ms")),
                _cell(r.get("speedup_vs_eager")),
                _cell(r.get("speedup_vs_compile")),
                _cell(r.get("peak_mem_mb")),
                _cell(r.get("saved_mb")),
                _cell(r.get("tflops")),
                _cell(r.get("gbs")),
                _cell(r.get("pct_of_floor"), 2),
            ]
        )
    return out


def format_table(rows: list[dict], markdown: bool = False) -> str:
    """The comparison table (one line per case and backend), as aligned text or markdown."""
    body = table_rows(rows)
    if markdown:
        lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(TABLE_HEADER)]
    fmt = lambda cells: "  ".join(
        c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )
    return "\n".join([fmt(TABLE_HEADER), fmt(["-" * w for w in widths]), *(fmt(r) for r in body)])


def chain_summary(rows: list[dict]) -> list[dict]:
    """The key measurement: per layout and round, the `cpu`/`cuda` backend's speedup over the eager reference."""
    out = []
    for r in rows:
        if r["case"] == CHAIN_CASE and r["backend"] in FUSED_BACKENDS and r.get("status") == "ok":
            out.append(
                {
                    "layout": r["layout"],
                    "device": r["device"],
                    "backend": r["backend"],
                    "round": r["round"],
                    "eager_ms": r["median_ms"] * r["speedup_vs_eager"],
                    "fused_ms": r["median_ms"],
                    "ratio": r["speedup_vs_eager"],
                    "ratio_p20": r.get("speedup_p20"),
                    "ratio_p80": r.get("speedup_p80"),
                    "n_samples": r["n_samples"],
                }
            )
    return out


def summary_markdown(result: dict, title: str | None = None) -> str:
    """Markdown for one results.json: machine facts, the key chain measurement if present, the table."""
    meta, rows = result["meta"], result["rows"]
    peaks = meta.get("peaks", {})
    lines = [f"### {title or meta.get('title') or 'bvae bench'}", ""]
    lines.append(
        f"{meta.get('device_name')} ({meta.get('device')}, {meta.get('torch_threads')} torch threads), "
        f"torch {meta.get('torch_version')}, triton {meta.get('triton_version')}, {meta.get('date')}; "
        f"command `{meta.get('command')}`."
    )
    if meta.get("load_average_before") or meta.get("load_average"):
        lines.append(
            f"Machine load average (1, 5, 15 min) before: {meta.get('load_average_before')}, "
            f"after: {meta.get('load_average')} on {meta.get('cpu_count')} cores."
        )
    for dtype, pk in peaks.items():
        lines.append(
            f"Measured peaks ({dtype}): matmul {pk['peak_flops'] / 1e12:.3g} TFLOP/s, "
            f"copy {pk['peak_bytes_per_s'] / 1e9:.3g} GB/s."
        )
    chain = chain_summary(rows)
    if chain:
        lines += ["", "Key measurement: bi_conv2d then bi_conv2d_reverse, forward + backward (speedup over eager):", ""]
        lines += ["| layout | backend | round | eager ms | fused ms | speedup | p20-p80 of paired ratios | samples |"]
        lines += ["|---|---|---|---|---|---|---|---|"]
        for c in chain:
            lines.append(
                f"| {c['layout']} | {c['backend']} | {c['round']} | {c['eager_ms']:.2f} | {c['fused_ms']:.2f} | "
                f"**{c['ratio']:.2f}x** | {_cell(c['ratio_p20'])}-{_cell(c['ratio_p80'])} | {c['n_samples']} |"
            )
    lines += ["", format_table(rows, markdown=True)]
    skipped = [r for r in rows if r.get("status") != "ok"]
    if skipped:
        lines += ["", "Not measured:", ""]
        seen = set()
        for r in skipped:
            key = (r["case"], r["backend"], r["reason"])
            if key not in seen:
                seen.add(key)
                lines.append(f"- {r['case']} / {r['backend']}: {r['status']}: {r['reason']}")
    return "\n".join(lines) + "\n"


def write_plot(rows: list[dict], path: Path) -> None:
    """Speedup over eager by case (median, p20-p80 band of paired ratios), one marker per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    ok = [r for r in rows if r.get("status") == "ok" and r.get("speedup_vs_eager") is not None]
    groups = list(dict.fromkeys(r["group"] for r in ok))
    backends = [b for b in ALL_BACKENDS if b != EAGER and any(r["backend"] == b for r in ok)]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(groups) + 2), 6.5))
    width = 0.8 / max(1, len(backends))
    for j, backend in enumerate(backends):
        xs, ys, lo, hi = [], [], [], []
        for i, g in enumerate(groups):
            rs = [r for r in ok if r["group"] == g and r["backend"] == backend]
            if not rs:
                continue
            ratios = [r["speedup_vs_eager"] for r in rs]
            y = statistics.median(ratios)
            xs.append(i + (j - (len(backends) - 1) / 2) * width)
            ys.append(y)
            lo.append(y - min(r.get("speedup_p20") or y for r in rs))
            hi.append(max(r.get("speedup_p80") or y for r in rs) - y)
        ax.bar(xs, ys, width=width, label=backend, yerr=[[max(0, v) for v in lo], [max(0, v) for v in hi]], capsize=2)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log")  # ratios: 2x faster and 2x slower sit at equal distances from 1
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.set_ylabel("speedup vs eager (median, p20-p80 band)")
    dev = ok[0]["device"] if ok else "?"
    ax.set_title(f"bvae bench on {dev}")
    if backends:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(result: dict, out: Path) -> dict[str, Path]:
    """Writes results.json, results.csv, speedup.png and summary.md under `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / v for k, v in (("json", "results.json"), ("csv", "results.csv"), ("png", "speedup.png"))}
    paths["md"] = out / "summary.md"
    paths["json"].write_text(json.dumps(result, indent=1, default=str) + "\n")
    meta = result["meta"]
    with paths["csv"].open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in result["rows"]:
            facts = {k: meta.get(k) for k in ("device_name", "torch_version", "triton_version", "date")}
            writer.writerow({**facts, **row})
    write_plot(result["rows"], paths["png"])
    paths["md"].write_text(summary_markdown(result))
    return paths


# ----------------------------------------------------------------------------------------------------------
# the command
# ----------------------------------------------------------------------------------------------------------
def configure_device(device: str, tf32: bool = False) -> None:
    """Fair baselines: cudnn.benchmark on, TF32 matched (both off unless asked) on CUDA."""
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


def run_benchmarks(
    device: str = "cpu",
    quick: bool = False,
    cases: str | None = None,
    reps: int | None = None,
    rounds: int = 1,
    backends: list[str] | None = None,
    include_compile: bool = True,
    tf32: bool = False,
    progress: bool = True,
    checkpoint: Path | None = None,
) -> dict:
    """Runs the selected cases `rounds` times; returns {"meta": ..., "rows": [...]}.

    With `checkpoint`, the rows so far are written there (JSON) after every case, so a run cut short by a
    time limit (a GPU session's 10-minute commands) still leaves its measurements.
    """
    from tqdm.auto import tqdm

    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' asked for, but torch.cuda.is_available() is False")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if reps is not None and reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    configure_device(device, tf32)
    chosen = select_cases(device, quick, cases)
    if not chosen:
        raise ValueError(f"cases={cases!r} matches no case for {device}; see `bvae bench --list`")
    names = backends or backends_for(device, include_compile)
    for b in names:
        if b not in ALL_BACKENDS:
            raise ValueError(f"backends must be among {ALL_BACKENDS}, got {b!r}")
    if EAGER not in names:
        names = [EAGER, *names]
    reps = reps or (5 if quick else 30)
    dtypes = sorted({c.dtype_for(device) for c in chosen})
    peaks = {dt: measure_peaks(device, dt, quick) for dt in dtypes}
    rows: list[dict] = []
    bar = tqdm(total=len(chosen) * rounds, desc="bvae bench", unit="case", disable=not progress)
    load_before = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    for r in range(rounds):
        for case in chosen:
            bar.set_postfix_str(case.id(device)[:40])
            case_backends = names
            if quick and not case.quick_compile:
                case_backends = [b for b in names if not _compiled(b)]
            rows += run_case(case, case_backends, device, reps, r, peaks[case.dtype_for(device)])
            bar.update()
            if checkpoint is not None:
                checkpoint.parent.mkdir(parents=True, exist_ok=True)
                partial = {"meta": {**machine_info(device), "partial": True, "peaks": peaks}, "rows": rows}
                checkpoint.write_text(json.dumps(partial, default=str) + "\n")
    bar.close()
    meta = machine_info(device)
    meta["load_average_before"] = load_before
    meta.update(quick=quick, reps=reps, rounds=rounds, backends=names, peaks=peaks, tf32=tf32, cases=cases)
    for row in rows:
        for k in ("device_name", "torch_version", "triton_version", "date"):
            row.setdefault(k, meta[k])
    return {"meta": meta, "rows": rows}


def profile_case(case: Case, backend: str, device: str, iterations: int = 10, top: int = 15) -> str:
    """torch.profiler table of `iterations` warm calls of one case: where the time goes, op by op."""
    from torch.profiler import ProfilerActivity, profile

    prepared = prepare(case, backend, device)
    warm_up(prepared.fn, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(iterations):
            prepared.fn()
        sync(device)
    sort_by = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    title = f"== {case.id(device)} / {backend}: {iterations} iterations, sorted by {sort_by}"
    return title + "\n" + prof.key_averages().table(sort_by=sort_by, row_limit=top, max_name_column_width=60)


def _cmd_profile(args: argparse.Namespace, device: str) -> int:
    backends = [b.strip() for b in args.backends.split(",")] if args.backends else backends_for(device, False)
    configure_device(device, args.tf32)
    texts = []
    for case in select_cases(device, args.quick, args.cases):
        for backend in backends:
            try:
                texts.append(profile_case(case, backend, device, args.profile))
            except SkipCase as exc:
                texts.append(f"== {case.id(device)} / {backend}: skipped: {exc}")
            print(texts[-1])
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "profile.txt").write_text("\n\n".join(texts) + "\n")
        print(f"wrote {out / 'profile.txt'}")
    return 0


def _cmd_host(args: argparse.Namespace) -> int:
    """`bvae bench --host`: thread CPU time per call against the eager chain (see bvae/bench_host.py)."""
    from tqdm.auto import tqdm

    from . import bench_host

    torch.set_num_threads(args.threads or 1)
    cases = bench_host.select(bench_host.all_cases(), args.cases)
    if not cases:
        raise ValueError(f"--cases {args.cases!r} matches no host case; see `bvae bench --host --list`")
    if args.list:
        for c in cases:
            print(f"{c.name} [{c.mode}]")
        return 0
    rounds = args.reps or (5 if args.quick else 21)
    load_before = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    rows: list[dict] = []
    for case in tqdm(cases, desc="bvae bench --host", unit="case", disable=args.no_progress):
        rows += bench_host.measure(case, rounds=rounds)
    table = bench_host.markdown(rows)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        meta = {**machine_info("cpu"), "load_average_before": load_before, "rounds": rounds, "clock": "thread_time"}
        (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
        head = (
            f"Host time per call (thread CPU time, tiny tensors, {rounds} interleaved samples, "
            f"{torch.get_num_threads()} torch thread), {meta['device_name']}, torch {meta['torch_version']}, "
            f"{meta['date']}; command `{meta['command']}`.\n\n"
        )
        (out / "summary.md").write_text(head + table + "\n")
        print(f"wrote {out / 'results.json'}, {out / 'summary.md'}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.host:
        return _cmd_host(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.list:
        for c in select_cases(device, args.quick, args.cases):
            print(c.id(device))
        return 0
    if args.profile:
        return _cmd_profile(args, device)
    backends = [b.strip() for b in args.backends.split(",")] if args.backends else None
    include_compile = not args.no_compile
    result = run_benchmarks(
        device,
        args.quick,
        args.cases,
        args.reps,
        args.rounds,
        backends,
        include_compile,
        args.tf32,
        progress=not args.no_progress,
        checkpoint=Path(args.out) / "results.partial.json" if args.out else None,
    )
    print(format_table(result["rows"]))
    for c in chain_summary(result["rows"]):
        print(
            f"chain {c['layout']:<13} {c['backend']} round {c['round']}: eager {c['eager_ms']:.2f} ms, "
            f"fused {c['fused_ms']:.2f} ms, speedup {c['ratio']:.3f}x"
        )
    for r in result["rows"]:
        if r.get("status") != "ok":
            print(f"{r['status']}: {r['case']} {r['mode']} / {r['backend']}: {r['reason']}")
    if args.out:
        paths = write_results(result, Path(args.out))
        (Path(args.out) / "results.partial.json").unlink(missing_ok=True)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Adds `bvae bench`."""
    p = subparsers.add_parser(
        "bench",
        help="benchmark fused kernels vs eager and torch.compile",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--quick", action="store_true", help="small cases, few reps (< 2 min on 2 CPU cores)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    p.add_argument("--out", default=None, help="write results.json, results.csv, speedup.png, summary.md here")
    p.add_argument("--cases", default=None, help="comma-separated substrings or globs of case ids (see --list)")
    p.add_argument("--backends", default=None, help=f"comma-separated subset of {', '.join(ALL_BACKENDS)}")
    p.add_argument(
        "--reps", type=positive_int_arg, default=None, help="samples per backend (default 30; 5 with --quick)"
    )
    p.add_argument("--rounds", type=positive_int_arg, default=1, help="repeat the whole measurement this many times")
    p.add_argument("--threads", type=positive_int_arg, default=None, help="torch.set_num_threads before measuring")
    p.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    p.add_argument("--tf32", action="store_true", help="allow TF32 in both matmul and cuDNN (matched)")
    p.add_argument(
        "--profile",
        type=int_arg(0),
        default=0,
        metavar="N",
        help="instead of timing, print torch.profiler tables of N calls",
    )
    p.add_argument(
        "--host",
        action="store_true",
        help="measure host overhead instead: thread CPU time per call on tiny CPU tensors, fused vs the eager chain",
    )
    p.add_argument("--list", action="store_true", help="list the selected case ids and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_bench)
