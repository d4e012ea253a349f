"""Chained layers (BiSequential, BiResBlock, the models pass pre-activations between fused layers): the same
numbers as the layers run one by one, on every backend under test, and one saved activation per layer."""

from __future__ import annotations

import pytest
import torch
from conftest import BACKENDS_UNDER_TEST, TOL, rel_err

import bvae.blocks as blocks
from bvae.blocks import BiFlatten, BiResBlock, BiSequential
from bvae.layers import BiConv2d, BiLinear
from bvae.models import build_model
from bvae_kernels.bench.timing import saved_activation_bytes

pytestmark = pytest.mark.skipif(not BACKENDS_UNDER_TEST, reason="no fused backend on this machine")
FUSED = [pytest.param(b, id=b.name) for b in BACKENDS_UNDER_TEST]


def _net(backend: str, dtype: torch.dtype, device: str) -> BiSequential:
    """conv k4s2 -> residual block -> conv -> flatten -> dense, with reverse scales: every chained case."""
    torch.manual_seed(0)
    act = blocks.resolve_activation(blocks.GNoVa(0.05, 2.0, 0.5))
    layers = [
        BiConv2d(3, 6, 4, stride=2, padding=1, backend=backend, reverse_scale=True),
        BiResBlock(6, backend=backend, reverse_scale=True),
        BiConv2d(6, 5, 3, padding=1, activation=act, backend=backend, reverse_scale=True),
        BiFlatten((5, 4, 4)),
        BiLinear(80, 7, backend=backend, reverse_scale=True),
    ]
    net = BiSequential(*layers, input_shape=(3, 8, 8))
    for p in net.parameters():  # non-zero reverse scales, so their gradients are exercised
        if p.dim() == 0:
            p.data.fill_(0.3)
    return net.to(device=device, dtype=dtype)


def _run(net: BiSequential, x: torch.Tensor, chained: bool, monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    monkeypatch.setattr(blocks, "CHAINING", chained)
    x = x.detach().requires_grad_()
    h = net(x)
    back = net.reverse(torch.sigmoid(h) * 2 - 1)
    (h.square().sum() + back.square().sum()).backward()
    grads = [x.grad] + [p.grad for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    return [h.detach(), back.detach(), *grads]


@pytest.mark.parametrize("backend", FUSED)
def test_chained_modules_compute_what_the_layers_one_by_one_compute(backend, monkeypatch):
    """Forward and reverse through a net with a residual block, values and every gradient (the reverse scales
    included): float64 to 1e-12 where the backend has it, float32 to its tolerance under the interpreter."""
    dtype = torch.float64 if backend.float64 else torch.float32
    tol = 1e-12 if dtype == torch.float64 else TOL[torch.float32]
    net = _net(backend.name, dtype, backend.device)
    x = torch.randn(2, 3, 8, 8, dtype=dtype, device=backend.device)
    chained, one_by_one = _run(net, x, True, monkeypatch), _run(net, x, False, monkeypatch)
    for i, (a, b) in enumerate(zip(chained, one_by_one, strict=True)):
        assert rel_err(a, b) <= tol, f"tensor {i}: {rel_err(a, b):.2e}"


@pytest.mark.parametrize("backend", FUSED)
def test_residual_skip_is_exact(backend, monkeypatch):
    """The block's skip adds a_in(x) itself: chained and unchained blocks agree bit for bit in float32 on the
    compiled backends (the same kernels in the same order), and forward and reverse stay finite at large inputs."""
    if backend.name == "triton":
        pytest.skip("the Triton path fuses a_in into the conv's operand load: equal to rounding, checked above")
    block = BiResBlock(4, backend=backend.name, reverse_scale=True).to(backend.device)
    x = torch.randn(2, 4, 5, 5, device=backend.device) * 10
    monkeypatch.setattr(blocks, "CHAINING", True)
    a = block(x), block.reverse(x)
    monkeypatch.setattr(blocks, "CHAINING", False)
    b = block(x), block.reverse(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def _saved(backend: str, make_loss) -> int:  # noqa: ANN001
    return saved_activation_bytes(make_loss, [])


@pytest.mark.parametrize("backend", FUSED)
def test_a_chain_of_four_layers_keeps_one_activation_per_layer(backend, monkeypatch):
    """n layers keep n + 1 activations (each layer's input, the last pre-activation) where eager keeps 2n (each
    layer's input and its sigmoid output): 5/8 for four equal layers. A second saved activation fails this."""
    torch.manual_seed(0)
    layers = [BiConv2d(4, 4, 3, padding=1, backend=backend.name) for _ in range(4)]
    net = BiSequential(*layers).to(backend.device)
    x = torch.randn(2, 4, 6, 6, device=backend.device)
    one = x.numel() * x.element_size()
    params = list(net.parameters())
    monkeypatch.setattr(blocks, "CHAINING", True)
    chained = saved_activation_bytes(lambda: net(x).sum().backward(), params)
    eager = BiSequential(*[BiConv2d(4, 4, 3, padding=1, backend="torch") for _ in range(4)]).to(backend.device)
    reference = saved_activation_bytes(lambda: eager(x).sum().backward(), list(eager.parameters()))
    assert chained == 5 * one, chained / one
    assert reference == 8 * one, reference / one


@pytest.mark.parametrize("backend", FUSED)
def test_a_bvae_training_step_keeps_at_most_0_6_of_the_eager_activations(backend, monkeypatch):
    """The Fashion-MNIST BVAE's step (every activation scales with the batch, so a small one gives the ratio; the
    interpreter gets the smallest)."""
    torch.manual_seed(0)
    batch = 2 if backend.name == "triton" else 8
    x = torch.rand(batch, 1, 28, 28, device=backend.device)
    eps = torch.randn(batch, 16, device=backend.device)

    def saved(name: str) -> int:
        torch.manual_seed(0)
        model = build_model(kind="bvae", dataset="fashion-mnist", latent_dim=16, backend=name).to(backend.device)
        return saved_activation_bytes(lambda: model(x, eps=eps).loss.backward(), list(model.parameters()))

    monkeypatch.setattr(blocks, "CHAINING", True)
    chained, eager = saved(backend.name), saved("torch")
    assert chained <= 0.6 * eager, chained / eager
    if backend.name != "triton":  # the saving is the chaining's (the interpreter is spared a third model)
        monkeypatch.setattr(blocks, "CHAINING", False)
        one_by_one = saved(backend.name)
        assert chained <= 0.7 * one_by_one, chained / one_by_one


def test_double_backward_through_a_chain_matches_the_reference(monkeypatch):
    """create_graph=True through chained layers (the ops' composites recompute a_in): second derivatives equal the
    eager reference's in float64."""
    if not any(b.name == "cpu" for b in BACKENDS_UNDER_TEST):
        pytest.skip("needs the cpu backend (float64)")
    monkeypatch.setattr(blocks, "CHAINING", True)
    results = []
    for backend in ("cpu", "torch"):
        net = _net(backend, torch.float64, "cpu")
        x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        x.requires_grad_()
        (gx,) = torch.autograd.grad(net(x).square().sum(), x, create_graph=True)
        results.append(  # the reverse biases and scales take no part in the forward: zeros for both
            torch.autograd.grad(gx.square().sum(), [x, *net.parameters()], allow_unused=True, materialize_grads=True)
        )
    for a, b in zip(*results, strict=True):
        assert rel_err(a, b) <= 1e-10
