"""GPU-only checks beyond the per-op tests (which run the cuda and triton backends on a GPU too): the BVAE layer
shapes in every dtype, the autotuned Triton configs, tf32, torch.compile and CUDA-graph capture of a training step.
Every test here is marked `gpu` and skips without a CUDA device."""

from __future__ import annotations

import pytest
import torch
from conftest import TOL_TF32, compare_to_reference, has_cuda_kernels
from op_cases import ConvCase, conv_args, conv_fns

import bvae_kernels as bk
from bvae_kernels import backends

pytestmark = pytest.mark.gpu

# BVAE layer shapes: batch 256; 28x28, 14x14, 7x7; 32-128 channels
LAYER_CASES = [
    ConvCase(256, 1, 32, 28, 28, 4, 2, 1),
    ConvCase(256, 32, 64, 14, 14, 4, 2, 1),
    ConvCase(256, 64, 128, 7, 7, 3, 2, 1, output_padding=1),
    ConvCase(256, 128, 128, 7, 7, 3, 1, 1),
]
GPU_BACKENDS = ["cuda", "triton"]


def _check(case: ConvCase, reverse: bool, backend: str, dtype: torch.dtype, tol: float | None = None) -> None:
    if backend not in bk.available_backends():
        pytest.skip(f"backend {backend!r} unavailable: {backends._unavailable_reason(backend, 'cuda')}")
    if reverse:
        case = ConvCase(
            case.n,
            case.c_in,
            case.c_out,
            case.h // case.stride,
            case.w // case.stride,
            case.k,
            case.stride,
            case.padding,
            case.output_padding,
        )
    ours, ref = conv_fns(case, reverse, backend=backend)
    args = conv_args(case, dtype, reverse, "channels_last", device="cuda", log_scale=reverse)
    names = ["inp", "weight", "bias", "log_scale"][: len(args)]
    compare_to_reference(ours, ref, args, dtype, names, "cuda", tol)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    "case", LAYER_CASES, ids=[f"c{c.c_in}-{c.c_out}_{c.h}x{c.w}_k{c.k}s{c.stride}" for c in LAYER_CASES]
)
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_layer_shapes(backend: str, case: ConvCase, dtype: torch.dtype, reverse: bool) -> None:
    _check(case, reverse, backend, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_triton_autotuned_configs(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype) -> None:
    """The autotuned (arch-pruned) configs, not just the fixed one, on a BVAE layer shape."""
    monkeypatch.delenv("BVAE_TRITON_FIXED_CONFIG", raising=False)
    case = ConvCase(64, 32, 64, 14, 14, 4, 2, 1)
    _check(case, False, "triton", dtype)
    _check(case, True, "triton", dtype)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_tf32_tolerance(backend: str) -> None:
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    _check(LAYER_CASES[2], False, backend, torch.float32, TOL_TF32)


def test_cuda_kernels_registered() -> None:
    """Fails when CUDA is available but the build lost the CUDA kernels (e.g. built without nvcc)."""
    assert has_cuda_kernels()
    assert "cuda" in bk.available_backends()


def _train_step(backend: str):  # noqa: ANN202
    from bvae.models import build_model

    torch.manual_seed(0)
    model = build_model(kind="bvae", dataset="fashion-mnist", latent_dim=16, backend=backend).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, capturable=True)
    x = torch.rand(64, 1, 28, 28, device="cuda").to(memory_format=torch.channels_last)
    eps = torch.randn(64, 16, device="cuda")

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=False)
        loss = model(x, eps=eps).loss
        loss.backward()
        opt.step()
        return loss.detach()

    return model, step


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_training_step_captures_in_a_cuda_graph(backend: str) -> None:
    """The fused step has no host syncs and no per-call allocation pattern changes: it captures in a CUDA graph
    after warm-up, and replaying the graph trains like running the step eagerly."""
    if backend not in bk.available_backends():
        pytest.skip(f"backend {backend!r} unavailable")
    _, eager_step = _train_step(backend)
    eager = [eager_step().item() for _ in range(6)]
    _, step = _train_step(backend)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        warm = [step().item() for _ in range(3)]  # warm-up: autotuning and allocator pools settle
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = step()
    replayed = []
    for _ in range(3):
        graph.replay()
        replayed.append(loss.item())
    assert warm == pytest.approx(eager[:3], rel=1e-4)
    assert replayed == pytest.approx(eager[3:], rel=1e-3)


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_torch_compile_train_step_triton(mode: str) -> None:
    """torch.compile of a model on the fused Triton ops (opaque custom ops: fake kernels at trace time, CUDA-graph
    trees under reduce-overhead) trains like eager."""
    if "triton" not in bk.available_backends():
        pytest.skip("triton unavailable")
    torch._dynamo.reset()
    model, _ = _train_step("triton")
    x = torch.rand(32, 1, 28, 28, device="cuda")
    eps = torch.randn(32, 16, device="cuda")
    eager = model(x, eps=eps).loss
    compiled = torch.compile(model, mode=mode)
    for _ in range(3):
        out = compiled(x, eps=eps).loss
    assert out.item() == pytest.approx(eager.item(), rel=1e-3)


def test_triton_non_finite_values_compiled() -> None:
    """The Triton kernels' exact path for a tile that made a NaN (a noinline function) compiled and run on the GPU:
    NaN / inf where the direct convolution has them, nowhere else (the interpreter runs the same test on the CPU)."""
    from conftest import BACKENDS_UNDER_TEST
    from test_op_edges import test_non_finite_values_land_where_the_reference_puts_them as check

    triton_backends = [b for b in BACKENDS_UNDER_TEST if b.name == "triton" and b.device != "cpu"]
    if not triton_backends:
        pytest.skip("the triton backend does not run on this machine's GPU")
    check(triton_backends[0])
