"""nn.Conv2d's whole geometry on BiConv2d (stride, padding ints / 'same' / 'valid', dilation, groups, every
padding_mode): the forward direction equals nn.Conv2d (values and gradients, float64), the reverse direction equals
nn.ConvTranspose2d on the same weight, a stride-1 layer decodes H x W back to H x W, and chained layers (which pass
pre-activations through an explicit input pad) compute what the layers one by one compute."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import BACKENDS_UNDER_TEST, TOL, rel_err
from torch import nn

import bvae.blocks as blocks
from bvae.blocks import BiSequential
from bvae.layers import BiConv2d

BACKENDS = ["torch", *(b.name for b in BACKENDS_UNDER_TEST if b.float64 and b.device == "cpu")]  # float64, CPU
MODES = ("zeros", "reflect", "replicate", "circular")
GEOMETRIES = [
    (k, s, p, d, g, mode)
    for k, s, p, d, g, mode in itertools.product((1, 2, 3), (1, 2), (0, 1, "same", "valid"), (1, 2), (1, 2), MODES)
    if not (p == "same" and s != 1)
]


def _twins(k, s, p, d, g, mode, backend):  # noqa: ANN001, ANN202
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, k, stride=s, padding=p, dilation=d, groups=g, padding_mode=mode, dtype=torch.float64)
    ours = BiConv2d(4, 6, k, stride=s, padding=p, dilation=d, groups=g, padding_mode=mode, activation=None,
                    backend=backend, dtype=torch.float64)  # fmt: skip
    ours.load_state_dict(conv.state_dict())
    return conv, ours


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_matches_nn_conv2d_on_every_geometry(backend: str) -> None:
    """All 160 geometries: the same output and the same input / weight / bias gradients as nn.Conv2d in float64, and
    nn.Conv2d's attributes; a stride-1 layer's reverse maps the output back to the input's H x W."""
    for k, s, p, d, g, mode in GEOMETRIES:
        conv, ours = _twins(k, s, p, d, g, mode, backend)
        label = f"k{k} s{s} p{p} d{d} g{g} {mode}"
        assert (ours.padding, ours.dilation, ours.groups, ours.padding_mode) == (
            conv.padding, conv.dilation, conv.groups, conv.padding_mode
        ), label  # fmt: skip
        assert ours.weight.shape == conv.weight.shape and ours.reverse_bias.shape == (4,), label
        x = torch.randn(2, 4, 9, 8, dtype=torch.float64, requires_grad=True)
        results = []
        for model in (conv, ours):
            y = model(x)
            grads = torch.autograd.grad(y.square().sum(), (x, model.weight, model.bias))
            results.append((y, *grads))
        for a, b in zip(*results, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=label)
        if s == 1:
            back = ours.reverse(results[1][0].detach(), output_size=x.shape[-2:])
            assert back.shape == x.shape, label
            if p != "same":  # an odd 'same' total is cropped at the end instead (checked below)
                assert ours.reverse(results[1][0].detach()).shape == x.shape, label


@pytest.mark.parametrize("backend", BACKENDS)
def test_reverse_matches_nn_conv_transpose2d(backend: str) -> None:
    """The reverse direction is nn.ConvTranspose2d on the same weight, stride, dilation and groups (zero padding:
    nn.ConvTranspose2d has no other mode), output_padding chosen by output_size; gradients included."""
    for k, s, p, d, g in itertools.product((1, 2, 3), (1, 2), (0, 1), (1, 2), (1, 2)):
        _, ours = _twins(k, s, p, d, g, "zeros", backend)
        t = nn.ConvTranspose2d(6, 4, k, stride=s, padding=p, dilation=d, groups=g, dtype=torch.float64)
        t.weight, t.bias = ours.weight, ours.reverse_bias
        x = torch.randn(2, 4, 9, 8, dtype=torch.float64)
        z = ours(x).detach().requires_grad_()
        t.output_padding = ours.output_padding_for(z.shape[-2:], x.shape[-2:])
        results = []
        for y in (t(z), ours.reverse(z, output_size=x.shape[-2:])):
            results.append((y, *torch.autograd.grad(y.square().sum(), (z, ours.weight, ours.reverse_bias))))
        for a, b in zip(*results, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=f"k{k} s{s} p{p} d{d} g{g}")


def test_padding_modes_reverse_crops_what_the_forward_padded() -> None:
    """Reverse of a reflect-padded conv = the transposed conv with zero padding of the same width; 'same' with an
    even kernel pads one pixel more after, and the reverse crops that pixel at the end."""
    _, reflect = _twins(3, 1, 1, 1, 1, "reflect", "torch")
    _, zeros = _twins(3, 1, 1, 1, 1, "zeros", "torch")
    zeros.load_state_dict(reflect.state_dict())
    z = torch.randn(2, 6, 7, 7, dtype=torch.float64)
    torch.testing.assert_close(reflect.reverse(z), zeros.reverse(z), rtol=0, atol=0)
    _, even = _twins(2, 1, "same", 1, 1, "zeros", "torch")
    full = torch.nn.functional.conv_transpose2d(z, even.weight) + even.reverse_bias.view(-1, 1, 1)  # 8 x 8
    torch.testing.assert_close(even.reverse(z), full[..., :7, :7], rtol=0, atol=0)


def _geometry_net(backend: str, dtype: torch.dtype, device: str) -> BiSequential:
    """Chained layers whose input goes through an explicit pad: reflect / circular modes and 'same' with an even
    kernel (zero pad after; a_in(0) != 0, so the layer activates before padding), dilation and groups."""
    torch.manual_seed(0)
    layers = [
        BiConv2d(2, 6, 3, padding=1, padding_mode="reflect", backend=backend, reverse_scale=True),
        BiConv2d(6, 6, 2, padding="same", groups=3, backend=backend),
        BiConv2d(6, 4, 3, padding=2, dilation=2, padding_mode="circular", backend=backend),
        BiConv2d(4, 4, 4, stride=2, padding=1, groups=2, backend=backend),
    ]
    return BiSequential(*layers, input_shape=(2, 8, 8)).to(device=device, dtype=dtype)


@pytest.mark.parametrize("backend", [pytest.param(b, id=b.name) for b in BACKENDS_UNDER_TEST])
def test_chained_geometry_computes_what_the_layers_one_by_one_compute(backend, monkeypatch) -> None:
    dtype = torch.float64 if backend.float64 else torch.float32
    tol = 1e-12 if dtype == torch.float64 else TOL[torch.float32]
    net = _geometry_net(backend.name, dtype, backend.device)
    x = torch.randn(2, 2, 8, 8, dtype=dtype, device=backend.device)
    runs = []
    for chained in (True, False):
        monkeypatch.setattr(blocks, "CHAINING", chained)
        xx = x.clone().requires_grad_()
        h = net(xx)
        back = net.reverse(torch.sigmoid(h))
        assert back.shape == x.shape
        grads = torch.autograd.grad(h.square().sum() + back.square().sum(), [xx, *net.parameters()])
        runs.append([h, back, *grads])
    for i, (a, b) in enumerate(zip(*runs, strict=True)):
        assert rel_err(a, b) <= tol, f"tensor {i}: {rel_err(a, b):.2e}"


def test_grouped_init_and_meta_construction() -> None:
    """The fan-ins of a grouped layer are per group (as nn.Conv2d's); a meta-built grouped layer loads with
    assign=True and gets a reverse bias of C_in entries."""
    layer = BiConv2d(8, 8, 3, groups=4)
    assert layer.weight.shape == (8, 2, 3, 3) and layer.reverse_bias.shape == (8,)
    assert layer.bias.abs().max() <= 1 / (2 * 9) ** 0.5 and layer.reverse_bias.abs().max() <= 1 / (2 * 9) ** 0.5
    meta = BiConv2d(8, 8, 3, groups=4, device="meta")
    meta.load_state_dict(nn.Conv2d(8, 8, 3, groups=4).state_dict(), assign=True)
    assert not meta.reverse_bias.is_meta and meta.reverse_bias.shape == (8,)
    assert "groups=4" in repr(layer) and "dilation" not in repr(layer)
