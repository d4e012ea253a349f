"""What `bvae bench` measures: one list of cases, the backends that can run each, and how a case is built.

Backends:
- `torch`: the eager reference (bvae_kernels.reference, or the module on backend="torch"), the baseline every
  speedup is measured against;
- `torch.compile` (default mode), `torch.compile-max-autotune` (mode "max-autotune-no-cudagraphs", CUDA, on
  request) of that reference, timed after their warm-up; `torch.compile-reduce-overhead` (training steps on
  CUDA: compiled and replayed as CUDA graphs);
- `conv-only`: the contraction alone in eager (F.conv2d / F.conv_transpose2d / F.linear: cuDNN / cuBLAS), no
  bias, no activation: the floor any path built on those libraries stands on;
- every compiled backend from `bk.available_backends()` that serves the device (`cpu`; `cuda`, `triton`), and
  the same under torch.compile (`cpu+compile`, ...);
- `<backend>+cudagraph` (training steps on CUDA): the whole step (forward, backward, AdamW) captured once in a
  CUDA graph and replayed, which takes the host out of the step.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

import bvae_kernels as bk
from bvae_kernels import reference as ref

from .roofline import layer_bytes, module_bytes, nbytes

EAGER = "torch"
COMPILE = "torch.compile"
COMPILE_MAX = "torch.compile-max-autotune"
COMPILE_RO = "torch.compile-reduce-overhead"
COMPILE_BACKENDS = (COMPILE, COMPILE_MAX, COMPILE_RO)  # torch.compile of the eager reference
CONV_ONLY = "conv-only"
FUSED_BACKENDS = ("cpu", "cuda", "triton")
FUSED_COMPILE_BACKENDS = tuple(f"{b}+compile" for b in FUSED_BACKENDS)  # torch.compile of the fused path
GRAPH_BACKENDS = tuple(f"{b}+cudagraph" for b in (EAGER, "cuda", "triton"))  # a captured training step
ALL_BACKENDS = (EAGER, COMPILE, COMPILE_MAX, COMPILE_RO, CONV_ONLY, *FUSED_BACKENDS, *FUSED_COMPILE_BACKENDS,
                *GRAPH_BACKENDS)  # fmt: skip

MODES = ("fwd", "fwd+bwd", "train")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
SHORT_DTYPE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}
CHAIN_CASE = "bi_conv2d_chain"
LAYER_CHAIN_CASE = "bisequential_chain4"
MODULE_CASES = ("biresblock_forward", "biresblock_reverse", LAYER_CHAIN_CASE, "bvae_train_step")
_CONTRACTION_CASES = ("bi_conv2d", "bi_conv2d_reverse", "bi_linear", CHAIN_CASE)


def fused_name(backend: str) -> str:
    """The package backend a bench backend runs ("cpu+compile" -> "cpu"), "torch" for the reference ones."""
    if backend in (EAGER, CONV_ONLY) or backend in COMPILE_BACKENDS:
        return "torch"
    return backend.removesuffix("+compile").removesuffix("+cudagraph")


def compiled(backend: str) -> bool:
    return backend in COMPILE_BACKENDS or backend in FUSED_COMPILE_BACKENDS


# ----------------------------------------------------------------------------------------------------------
# the cases
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Case:
    """One benchmark: an op or module, a mode, its sizes, a dtype and a memory layout.

    dtype None means the device default (float32 on CPU, bfloat16 on CUDA); layout "auto" means NCHW on CPU
    and channels_last on CUDA (the fair cuDNN baseline). `quick` cases form `bvae bench --quick`, `full`
    ones the default run; with --quick only `quick_compile` cases also time torch.compile (compiling is
    what makes a CPU run slow). `note` says where a shape comes from.
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
        parts = [self.name, self.mode, self.shape, SHORT_DTYPE[self.dtype_for(device)], layout]
        return " ".join(p for p in parts if p)

    def id(self, device: str) -> str:
        return self.group(device).replace(" ", "-").replace(">", "to")


def conv_dims(n: int, cin: int, cout: int, h: int, k: int = 3, s: int = 1, p: int = 1) -> dict[str, int]:
    return {"n": n, "cin": cin, "cout": cout, "h": h, "w": h, "k": k, "s": s, "p": p}


# The layers of the package's models at batch 256 (bvae/models.py: CelebA-64 "conv9", width 32; Fashion-MNIST
# "residual", width 16): the GPU table. (dims, where it comes from, in the quick subset)
GPU_CONV_LAYERS = (
    (conv_dims(256, 3, 32, 64), "CelebA-64 layer 1 (3 input channels)", False),
    (conv_dims(256, 32, 32, 64), "CelebA-64 layer 2", True),
    (conv_dims(256, 32, 32, 64, k=4, s=2), "CelebA-64 layer 3 (downsampling)", True),
    (conv_dims(256, 128, 128, 16), "CelebA-64 layer 8", False),
    (conv_dims(256, 16, 32, 14, k=4, s=2), "Fashion-MNIST layer 2 (small: host-bound)", False),
)


def _build_cases() -> list[Case]:
    cases: list[Case] = []
    cpu, gpu = ("cpu",), ("cuda",)
    # G-NoVa alone: a pure bandwidth case.
    for mode in ("fwd", "fwd+bwd"):
        cases.append(Case("gnova", mode, {"n": 8, "c": 16, "h": 14, "w": 14}, devices=cpu, quick=True, full=False))
        cases.append(Case("gnova", mode, {"n": 32, "c": 32, "h": 28, "w": 28}, devices=cpu))
        cases.append(Case("gnova", mode, {"n": 256, "c": 32, "h": 64, "w": 64}, devices=gpu, quick=True))
    # The two directions of one bidirectional conv.
    conv_cpu_quick = [conv_dims(8, 16, 16, 14)]
    conv_cpu = [conv_dims(32, 32, 32, 28), conv_dims(32, 32, 64, 14, k=4, s=2, p=1)]
    for name in ("bi_conv2d", "bi_conv2d_reverse"):
        for mode in ("fwd", "fwd+bwd"):
            cases += [Case(name, mode, d, devices=cpu, quick=True, full=False) for d in conv_cpu_quick]
            cases += [Case(name, mode, d, devices=cpu) for d in conv_cpu]
            cases += [Case(name, mode, d, devices=gpu, quick=q, note=note) for d, note, q in GPU_CONV_LAYERS]
    for mode in ("fwd", "fwd+bwd"):
        cases.append(Case("bi_linear", mode, {"n": 64, "fin": 256, "fout": 128}, devices=cpu, quick=True, full=False))
        cases.append(Case("bi_linear", mode, {"n": 256, "fin": 1024, "fout": 512}, devices=cpu))
        cases.append(
            Case("bi_linear", mode, {"n": 256, "fin": 8192, "fout": 256}, devices=gpu, note="CelebA-64 dense layer")
        )
    # The key CPU measurement: bi_conv2d then bi_conv2d_reverse through the same weight, forward + backward,
    # float32, x is data (no grad), weight and both biases learn.
    for layout in ("nchw", "channels_last"):
        cases.append(
            Case(
                CHAIN_CASE,
                "fwd+bwd",
                conv_dims(32, 32, 32, 28),
                dtype="float32",
                layout=layout,
                devices=("cpu", "cuda"),
                quick=layout == "nchw",
                quick_compile=True,
                x_requires_grad=False,
                note="encode then decode through one weight; x needs no grad",
            )
        )
    for name in ("biresblock_forward", "biresblock_reverse"):
        cases.append(Case(name, "fwd+bwd", {"n": 8, "c": 16, "h": 14, "w": 14}, devices=cpu, quick=True, full=False))
        cases.append(Case(name, "fwd+bwd", {"n": 32, "c": 32, "h": 14, "w": 14}, devices=cpu))
        cases.append(
            Case(name, "fwd+bwd", {"n": 256, "c": 32, "h": 7, "w": 7}, devices=gpu, note="the Fashion-MNIST block")
        )
    # Four equal BiConv2d layers in a BiSequential, which hands each the previous pre-activation: the memory case.
    chain_note = "4 x BiConv2d k3 in a BiSequential (pre-activations chained)"
    cases.append(
        Case(LAYER_CHAIN_CASE, "fwd+bwd", {"n": 8, "c": 16, "h": 14, "w": 14}, devices=cpu, quick=True, full=False)
    )
    cases.append(Case(LAYER_CHAIN_CASE, "fwd+bwd", {"n": 32, "c": 32, "h": 14, "w": 14}, devices=cpu, note=chain_note))
    cases.append(Case(LAYER_CHAIN_CASE, "fwd+bwd", {"n": 256, "c": 32, "h": 28, "w": 28}, devices=gpu, note=chain_note))
    cases.append(Case("bvae_train_step", "train", {"n": 16, "latent": 16}, devices=cpu, quick=True, full=False))
    cases.append(Case("bvae_train_step", "train", {"n": 64, "latent": 16}, devices=cpu))
    cases.append(Case("bvae_train_step", "train", {"n": 256, "latent": 16}, devices=gpu, quick=True))
    return cases


CASES: list[Case] = _build_cases()


def select_cases(device: str, quick: bool = False, patterns: str | None = None) -> list[Case]:
    """The cases for `device`: the quick subset or the full list, filtered by comma-separated patterns.

    A pattern with glob characters is matched (fnmatch) against the case id; any other is a substring of it.
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
    """The default backends on `device`, the eager reference first (max-autotune only on request)."""
    names = [EAGER]
    if include_compile:
        names.append(COMPILE)
    if device == "cuda":
        names.append(CONV_ONLY)
    available = bk.available_backends()
    serves = {"cpu": ("cpu",), "cuda": ("cuda", "triton")}[device]
    fused = [b for b in FUSED_BACKENDS if b in available and b in serves]
    names += fused
    if include_compile:
        names += [f"{b}+compile" for b in fused]
    if device == "cuda":
        names += ([COMPILE_RO] if include_compile else []) + [f"{b}+cudagraph" for b in (EAGER, *fused)]
    return names


def not_applicable(case: Case, backend: str, device: str) -> str | None:
    """Why `backend` does not apply to `case` on `device` at all (None: it does)."""
    if backend not in ALL_BACKENDS:
        raise ValueError(f"backend must be one of {ALL_BACKENDS}, got {backend!r}")
    if backend == CONV_ONLY and case.name not in _CONTRACTION_CASES:
        return "conv-only times the contraction of an op case"
    if backend in (COMPILE_RO, *GRAPH_BACKENDS) and (case.name != "bvae_train_step" or device != "cuda"):
        return "CUDA graphs are timed on the training step on CUDA"
    if backend == COMPILE_MAX and device != "cuda":
        return "max-autotune-no-cudagraphs is timed on CUDA only"
    return None


def applicable(case: Case, backend: str, device: str) -> bool:
    return not_applicable(case, backend, device) is None


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


def memory_format(layout: str) -> torch.memory_format:
    return torch.channels_last if layout == "channels_last" else torch.contiguous_format


def _compile(fn: Callable, backend: str) -> Callable:
    mode = {COMPILE_MAX: "max-autotune-no-cudagraphs", COMPILE_RO: "reduce-overhead"}.get(backend)
    return torch.compile(fn, mode=mode, dynamic=False)


def _maybe_compile(fn: Callable, backend: str) -> Callable:
    return _compile(fn, backend) if compiled(backend) else fn


def reverse_output_padding(d: dict[str, int]) -> int:
    """The output_padding that makes the reverse direction map the conv's output size back to its input."""
    out = (d["h"] + 2 * d["p"] - d["k"]) // d["s"] + 1
    return d["h"] - ((out - 1) * d["s"] - 2 * d["p"] + d["k"])


def _op_forward(case: Case, backend: str) -> Callable:
    """The forward callable `(inp, weight, *biases) -> y` of an op case under `backend`."""
    naive = fused_name(backend) == "torch"
    only = backend == CONV_ONLY
    backend = fused_name(backend)
    d = case.dims
    if case.name == "gnova":
        return (lambda u: ref.gnova(u)) if naive else (lambda u: bk.gnova(u, backend=backend))
    if case.name == "bi_linear":
        if only:
            return lambda x, w, b: F.linear(x, w)
        if naive:
            return lambda x, w, b: ref.bi_linear(x, w, b)
        return lambda x, w, b: bk.bi_linear(x, w, b, backend=backend)
    s, p = d["s"], d["p"]
    op = reverse_output_padding(d)
    if case.name == "bi_conv2d":
        if only:
            return lambda x, w, b: F.conv2d(x, w, None, s, p)
        if naive:
            return lambda x, w, b: ref.bi_conv2d(x, w, b, s, p)
        return lambda x, w, b: bk.bi_conv2d(x, w, b, stride=s, padding=p, backend=backend)
    if case.name == "bi_conv2d_reverse":
        if only:
            return lambda z, w, b: F.conv_transpose2d(z, w, None, s, p, op)
        if naive:
            return lambda z, w, b: ref.bi_conv2d_reverse(z, w, b, s, p, op)
        return lambda z, w, b: bk.bi_conv2d_reverse(z, w, b, stride=s, padding=p, output_padding=op, backend=backend)
    if case.name == CHAIN_CASE:
        if only:
            return lambda x, w, bf, br: F.conv_transpose2d(F.conv2d(x, w, None, s, p), w, None, s, p, op)
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

    fmt = memory_format(layout)
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


def _op_bytes(case: Case, inputs: list[torch.Tensor], needs: list[bool], outputs: list[torch.Tensor]) -> int:
    """Minimum DRAM traffic of a fused implementation of an op case (see roofline.layer_bytes)."""
    backward = case.mode != "fwd"
    size = [nbytes(t) for t in inputs]
    if case.name == "gnova":  # read u, write y; backward: read grad and u, write du
        return size[0] * (5 if backward else 2)
    if case.name == CHAIN_CASE:  # x -> h -> y through one weight; h's gradient is needed, x's is not
        h, y = (nbytes(t) for t in outputs)
        return layer_bytes(size[0], size[1], size[2], h, needs[0], backward) + layer_bytes(
            h, size[1], size[3], y, True, backward
        )
    return layer_bytes(size[0], size[1], size[2], nbytes(outputs[-1]), needs[0], backward)


def _prepare_op(case: Case, backend: str, device: str) -> Prepared:
    dtype = DTYPES[case.dtype_for(device)]
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


def _bvae(module: str) -> object:
    """A module of the `bvae` model package (the module-level cases need it)."""
    import importlib

    try:
        return importlib.import_module(f"bvae.{module}")
    except ImportError as exc:
        raise SkipCase(f"the module-level cases need the bvae package: {exc}") from exc


def _prepare_block(case: Case, backend: str, device: str) -> Prepared:
    d = case.dims
    dtype = DTYPES[case.dtype_for(device)]
    fmt = memory_format(case.layout_for(device))
    torch.manual_seed(0)
    blocks = _bvae("blocks")
    if case.name == LAYER_CHAIN_CASE:
        conv = _bvae("layers").BiConv2d
        block = blocks.BiSequential(
            *[conv(d["c"], d["c"], 3, padding=1, backend=fused_name(backend)) for _ in range(4)]
        )
    else:
        block = blocks.BiResBlock(d["c"], backend=fused_name(backend))
    block = block.to(device=device, dtype=dtype, memory_format=fmt)
    x = torch.randn(d["n"], d["c"], d["h"], d["w"], device=device, dtype=dtype)
    x = x.contiguous(memory_format=fmt).requires_grad_(case.x_requires_grad)
    direction = block.reverse if case.name == "biresblock_reverse" else block.forward
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

    return Prepared(run, params, module_bytes(block, x, y0))


def capture_step(step: Callable[[], object], warmup: int = 3) -> Callable[[], object]:
    """`step` captured once in a CUDA graph (after warm-up calls on a side stream); returns its replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def _prepare_train(case: Case, backend: str, device: str) -> Prepared:
    """One AdamW step of the Fashion-MNIST BVAE (VAE objective) on a fixed batch and fixed noise."""
    d = case.dims
    dtype = DTYPES[case.dtype_for(device)]
    torch.manual_seed(0)
    model = _bvae("models").build_model(
        kind="bvae", dataset="fashion-mnist", latent_dim=d["latent"], backend=fused_name(backend)
    )
    model = model.to(device=device, dtype=dtype)
    x = torch.rand(d["n"], 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    eps = torch.randn(d["n"], d["latent"], generator=torch.Generator().manual_seed(1)).to(device=device, dtype=dtype)
    graph = backend in GRAPH_BACKENDS
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, capturable=graph)
    step_model = _maybe_compile(model, backend)
    params = list(model.parameters())

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        step_model(x, eps=eps).loss.backward()
        opt.step()

    with torch.no_grad():
        model(x, eps=eps)
    run = capture_step(step) if graph else step
    return Prepared(run, params, nbytes(x) + 4 * sum(nbytes(p) for p in params))


def prepare(case: Case, backend: str, device: str) -> Prepared:
    """Builds `case` under `backend` on `device`; raises SkipCase with the reason when it cannot run."""
    if reason := not_applicable(case, backend, device):
        raise SkipCase(reason)
    if device == "cuda" and not torch.cuda.is_available():
        raise SkipCase("no CUDA device")
    fused = fused_name(backend)
    if fused in FUSED_BACKENDS and fused not in backends_for(device, include_compile=False):
        raise SkipCase(f"backend {fused!r} is not available for {device} tensors here")
    if case.name.startswith("biresblock") or case.name == LAYER_CHAIN_CASE:
        return _prepare_block(case, backend, device)
    if case.name == "bvae_train_step":
        return _prepare_train(case, backend, device)
    return _prepare_op(case, backend, device)
