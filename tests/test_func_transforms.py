"""torch.func through the layers: grad, jacrev, jvp, jacfwd, vmap, vmap(grad) (per-sample gradients) and hessian
give what they give for nn.Linear / nn.Conv2d / nn.ConvTranspose2d (identity activation, the same weights), and
for the eager reference with G-NoVa, on every backend under test. Under a transform the ops run their composite
of differentiable ATen ops (csrc/autograd.cpp, needs_composite), so the answers are exact, never a silent zero."""

from __future__ import annotations

import pytest
import torch
from conftest import BACKENDS_UNDER_TEST, TOL, rel_err
from torch import nn
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, jvp, vmap

import bvae

pytestmark = pytest.mark.skipif(not BACKENDS_UNDER_TEST, reason="no fused backend on this machine")


def _dtype(backend) -> torch.dtype:  # noqa: ANN001
    return torch.float64 if backend.float64 else torch.float32


def _pairs(backend) -> list[tuple[str, nn.Module, nn.Module, torch.Tensor]]:  # noqa: ANN001
    """(name, our layer as a function of x, the nn module it replaces, an input) for each direction."""
    torch.manual_seed(0)
    opts = {"dtype": _dtype(backend), "device": backend.device}
    lin = bvae.BiLinear(5, 3, activation=None, backend=backend.name).to(**opts)
    ref_lin = nn.Linear(5, 3).to(**opts)
    ref_lin.load_state_dict(lin.state_dict(), strict=False)
    conv = bvae.BiConv2d(2, 3, 3, stride=2, padding=1, activation=None, backend=backend.name).to(**opts)
    ref_conv = nn.Conv2d(2, 3, 3, stride=2, padding=1).to(**opts)
    ref_conv.load_state_dict(conv.state_dict(), strict=False)
    ref_t = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1).to(**opts)
    with torch.no_grad():
        ref_t.weight.copy_(conv.weight), ref_t.bias.copy_(conv.reverse_bias)

    class Reverse(nn.Module):
        def __init__(self, layer: bvae.BiConv2d, upsample: int = 2) -> None:
            super().__init__()
            self.layer, self.upsample = layer, upsample

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.layer.reverse(z, output_size=(self.upsample * z.shape[-2], self.upsample * z.shape[-1]))

    geometry = {"padding": 2, "dilation": 2, "groups": 2}  # grouped and dilated, reflect-padded forward
    grouped = bvae.BiConv2d(4, 4, 3, padding_mode="reflect", activation=None, backend=backend.name, **geometry)
    grouped = grouped.to(**opts)
    ref_grouped = nn.Conv2d(4, 4, 3, padding_mode="reflect", **geometry).to(**opts)
    ref_grouped.load_state_dict(grouped.state_dict(), strict=False)
    ref_grouped_t = nn.ConvTranspose2d(4, 4, 3, **geometry).to(**opts)
    with torch.no_grad():
        ref_grouped_t.weight.copy_(grouped.weight), ref_grouped_t.bias.copy_(grouped.reverse_bias)
    return [
        ("linear", lin, ref_lin, torch.randn(5, **opts)),
        ("conv2d", conv, ref_conv, torch.randn(2, 4, 4, **opts)),
        ("conv_transpose2d", Reverse(conv), ref_t, torch.randn(3, 2, 2, **opts)),
        ("conv2d-grouped-dilated", grouped, ref_grouped, torch.randn(4, 5, 5, **opts)),
        ("conv_transpose2d-grouped-dilated", Reverse(grouped, 1), ref_grouped_t, torch.randn(4, 5, 5, **opts)),
    ]


TRANSFORMS = {
    "grad": lambda m, x: grad(lambda t: m(t).square().sum())(x),
    "jacrev": lambda m, x: jacrev(m)(x),
    "jvp": lambda m, x: jvp(m, (x,), (torch.ones_like(x),))[1],
    "jacfwd": lambda m, x: jacfwd(m)(x),
    "vmap": lambda m, x: vmap(m)(torch.stack([x, 2 * x])),
    "hessian": lambda m, x: hessian(lambda t: m(t).square().sum())(x),
}


@pytest.mark.parametrize("transform", list(TRANSFORMS))
@pytest.mark.parametrize("backend", BACKENDS_UNDER_TEST, ids=str)
def test_transforms_match_the_nn_modules(backend, transform: str) -> None:
    for name, ours, ref, x in _pairs(backend):
        a, b = TRANSFORMS[transform](ours, x), TRANSFORMS[transform](ref, x)
        assert a.abs().sum() > 0, (name, transform)
        assert rel_err(a, b) <= TOL[_dtype(backend)], (name, transform, rel_err(a, b))


@pytest.mark.parametrize("backend", BACKENDS_UNDER_TEST, ids=str)
def test_per_sample_gradients_match_the_nn_modules(backend) -> None:
    """vmap(grad) over a batch, with respect to the parameters: the per-sample weight and bias gradients."""
    for name, ours, ref, x in _pairs(backend):
        batch = torch.stack([x, -x, 0.5 * x])
        out = []
        for module in (ours, ref):
            params = {k: v.detach() for k, v in module.named_parameters() if k.rsplit(".", 1)[-1] in ("weight", "bias")}

            def loss(p: dict, xi: torch.Tensor, module: nn.Module = module) -> torch.Tensor:
                return functional_call(module, p, (xi,)).square().sum()

            out.append(vmap(grad(loss), in_dims=(None, 0))(params, batch))
        for key in out[1]:
            mine = out[0][key if key in out[0] else f"layer.{key}"]
            want = out[1][key]
            if name.startswith("conv_transpose2d") and key == "bias":  # nn's bias is our reverse_bias
                continue
            assert rel_err(mine, want) <= TOL[_dtype(backend)], (name, key)


@pytest.mark.parametrize("backend", BACKENDS_UNDER_TEST, ids=str)
def test_transforms_through_gnova_match_the_reference(backend) -> None:
    """With G-NoVa (and the reverse scale) the eager reference (backend "torch") is the oracle."""
    torch.manual_seed(0)
    opts = {"dtype": _dtype(backend), "device": backend.device}
    layers = {}
    for be in (backend.name, "torch"):
        torch.manual_seed(0)
        layers[be] = bvae.BiLinear(4, 3, backend=be, reverse_scale=True).to(**opts)
        with torch.no_grad():
            layers[be].reverse_log_scale.fill_(0.2)
    x, z = torch.randn(4, **opts), torch.randn(3, **opts)
    for transform in ("grad", "jacrev", "jvp", "hessian"):
        for direction, t in (("forward", x), ("reverse", z)):
            got = [TRANSFORMS[transform](getattr(layers[be], direction), t) for be in (backend.name, "torch")]
            assert rel_err(got[0], got[1]) <= TOL[_dtype(backend)], (transform, direction)
