"""bvae.convert swaps a plain torch.nn model's convs and dense layers for the bidirectional ones: the same outputs
and gradients in float64, the same state_dict, DDP with default settings; plus the drop-in details it relies on
(reverse_bias=False, `input=`, integer-like sizes, nn.Conv2d's attributes)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from ddp_harness import run_ranks
from torch import nn

import bvae
from bvae import BiConv2d, BiLinear


class Block(nn.Module):
    """A residual block with a depthwise, a grouped dilated, a reflect-padded and an even 'same' conv."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.depthwise = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.dilated = nn.Conv2d(c, c, 3, padding=2, dilation=2, groups=2)
        self.reflect = nn.Conv2d(c, c, 3, padding=1, padding_mode="reflect")
        self.even_same = nn.Conv2d(c, c, 2, padding="same", bias=False)
        self.conv2 = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv1(x)))
        return x + self.conv2(self.even_same(self.reflect(self.dilated(self.depthwise(h)))))


def small_resnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        Block(8),
        nn.Conv2d(8, 8, 3, padding="same"),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )


def test_convert_keeps_outputs_gradients_and_state_dict():
    original = small_resnet().double()
    converted = small_resnet().double()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every conv converts: nothing is left behind with a warning
        assert bvae.convert(converted, backend="cpu") is converted
    swapped = [m for m in converted.modules() if isinstance(m, (BiConv2d, BiLinear))]
    assert len(swapped) == 9 and all(m.reverse_bias is None for m in swapped)
    assert not any(type(m) is nn.Conv2d for m in converted.modules())
    block = converted[2]
    assert (block.depthwise.groups, block.dilated.dilation, block.reflect.padding_mode) == (8, (2, 2), "reflect")
    assert set(converted.state_dict()) == set(original.state_dict())
    x = torch.randn(2, 3, 10, 10, dtype=torch.float64, requires_grad=True)
    outs = []
    for model in (original, converted):
        y = model(x)
        (gx,) = torch.autograd.grad(y.square().sum(), x)
        outs.append((y, gx))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(outs[1][1], outs[0][1], rtol=1e-12, atol=1e-12)
    for p_orig, p_conv in zip(original.parameters(), converted.parameters(), strict=True):
        assert p_orig.shape == p_conv.shape
    back = small_resnet().double()
    back.load_state_dict(converted.state_dict())  # loads into the plain model
    torch.testing.assert_close(back(x), outs[0][0], rtol=1e-12, atol=1e-12)


def test_convert_keeps_the_parameter_objects_and_gives_a_reverse_direction():
    model = nn.Sequential(nn.Linear(4, 3))
    weight = model[0].weight
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    bvae.convert(model)
    assert isinstance(model[0], BiLinear) and model[0].weight is weight
    model(torch.randn(2, 4)).sum().backward()
    opt.step()  # the optimizer still holds the layer's parameters
    assert model[0].reverse(torch.randn(2, 3)).shape == (2, 4)
    single = bvae.convert(nn.Conv2d(2, 3, 3))
    assert isinstance(single, BiConv2d) and single.reverse_bias is None
    with pytest.raises(TypeError, match="must be an nn.Module"):
        bvae.convert("model")


def test_drop_in_details():
    conv = BiConv2d(np.int64(3), np.int64(4), np.int64(3), stride=np.int64(2), padding=(np.int64(1), 1))
    assert (conv.in_channels, conv.stride, conv.padding) == (3, (2, 2), (1, 1)) and type(conv.in_channels) is int
    assert (conv.groups, conv.dilation, conv.padding_mode, conv.output_padding) == (1, (1, 1), "zeros", (0, 0))
    assert conv(input=torch.randn(1, 3, 8, 8)).shape == (1, 4, 4, 4)
    lin = BiLinear(np.int32(5), torch.tensor(2), reverse_bias=False)
    assert lin(input=torch.randn(3, 5)).shape == (3, 2) and lin.reverse_bias is None and lin.bias is not None
    for bad in (True, 2.0, np.float32(2), torch.tensor(True)):
        with pytest.raises(ValueError, match="must be a positive int"):
            BiLinear(bad, 2)


def _ddp_worker(rank: int, world: int, out: str) -> None:
    model = small_resnet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bvae.convert(model, backend="cpu")
    ddp = nn.parallel.DistributedDataParallel(model)  # default settings: every parameter must get a gradient
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(rank)
    for _ in range(3):
        x, target = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 5, generator=g)
        opt.zero_grad()
        nn.functional.mse_loss(ddp(x), target).backward()
        opt.step()
    torch.save(model.state_dict(), os.path.join(out, f"rank{rank}.pt"))


@pytest.mark.slow
def test_a_converted_model_trains_under_ddp_with_default_settings(tmp_path):
    run_ranks(_ddp_worker, tmp_path)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    start = small_resnet().state_dict()
    for name, w0 in r0.items():
        if "running_" not in name and "num_batches" not in name:  # BatchNorm's buffers are each rank's own
            assert torch.equal(w0, r1[name]), name  # gradients all-reduced every step
    assert not torch.equal(r0["6.weight"], start["6.weight"])


def test_meta_device_construction():
    """Layers and models build on the meta device; a twin's state_dict loaded with assign=True materializes every
    parameter, the reverse-only ones included (initialized as reset_parameters would)."""
    with torch.device("meta"):
        model = bvae.build_model("bvae", "fashion-mnist")
        conv, lin = BiConv2d(3, 4, 3, reverse_scale=True), BiLinear(5, 2)
    assert all(p.is_meta for p in model.parameters())
    conv.load_state_dict(nn.Conv2d(3, 4, 3).state_dict(), assign=True)
    lin.load_state_dict(nn.Linear(5, 2).state_dict(), assign=True)
    for layer in (conv, lin):
        assert not any(p.is_meta for p in layer.parameters()), [n for n, p in layer.named_parameters() if p.is_meta]
    assert conv.reverse_log_scale.item() == 0 and conv.reverse_bias.abs().max() <= 1 / 36**0.5
    model.to_empty(device="cpu")
    model.load_state_dict(bvae.build_model("bvae", "fashion-mnist").state_dict())
    assert torch.isfinite(model.reconstruct(torch.rand(2, 1, 28, 28))).all()


def test_fx_symbolic_trace_records_one_node_per_layer():
    """torch.fx traces through the layers (their ops are recorded as calls): a converted model's graph computes
    what the model computes, and graph passes (shape propagation) run over it."""
    from torch.fx.passes.shape_prop import ShapeProp

    model = small_resnet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bvae.convert(model, backend="cpu")
    traced = torch.fx.symbolic_trace(model.eval())
    ops = [n.target.__name__ for n in traced.graph.nodes if n.op == "call_function" and hasattr(n.target, "__name__")]
    assert ops.count("bi_conv2d") == 8 and ops.count("bi_linear") == 1, ops
    x = torch.randn(2, 3, 10, 10)
    assert torch.equal(traced(x), model(x))
    ShapeProp(traced).propagate(x)
    layer = bvae.BiLinear(4, 3, activation="sigmoid")
    assert torch.equal(torch.fx.symbolic_trace(layer)(torch.ones(2, 4)), layer(torch.ones(2, 4)))


class _Reverse(nn.Module):
    """A module whose forward is `net.reverse` (symbolic_trace traces forward)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net.reverse(z)


def test_fx_symbolic_trace_through_the_containers_both_directions():
    """BiSequential (strided convs, a residual block, an even 'same' conv, flatten, dense) traces through its layers in
    both directions, chained as it runs, and the graph computes what the module computes (gradients included);
    the reverse reads z's size when the graph runs, so the traced decoder takes another batch size."""
    from bvae.blocks import BiFlatten, BiResBlock, BiSequential

    torch.manual_seed(0)
    net = BiSequential(
        BiConv2d(1, 4, 4, stride=2, padding=1, backend="cpu"),
        BiResBlock(4, backend="cpu", reverse_scale=True),
        BiConv2d(4, 4, 2, padding="same", groups=2, backend="cpu"),
        BiFlatten((4, 4, 4)),
        BiLinear(64, 8, backend="cpu"),
        input_shape=(1, 8, 8),
    ).double()
    forward, reverse = torch.fx.symbolic_trace(net), torch.fx.symbolic_trace(_Reverse(net))
    nodes = [n.target.__name__ for n in reverse.graph.nodes if n.op == "call_function" and callable(n.target)]
    assert nodes.count("bi_conv2d_reverse") == 4 and nodes.count("bi_linear_reverse") == 1, nodes
    for traced, fn, shape in ((forward, net, (3, 1, 8, 8)), (reverse, net.reverse, (5, 8))):
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        got, want = traced(x), fn(x)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        grads = [torch.autograd.grad(y.square().sum(), x)[0] for y in (got, want)]
        torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["bvae", "vae"])
def test_fx_symbolic_trace_of_a_model_encode_and_decode(kind: str):
    """A model's encode / decode trace through their ops (the objective in `forward`, a loss that branches on
    dtypes, does not: trace encode / decode / reconstruct)."""
    from torch.fx.passes.shape_prop import ShapeProp

    model = bvae.build_model(kind=kind, dataset="fashion-mnist", latent_dim=4, backend="cpu")

    class Reconstruct(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model.decode(self.model.encode(x)[0])

    traced = torch.fx.symbolic_trace(Reconstruct())
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(traced(x), model.reconstruct(x))
    ShapeProp(traced).propagate(x)


def test_jit_trace_of_both_directions():
    conv = BiConv2d(3, 4, 4, stride=2, padding=1)

    class Roundtrip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = conv

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv.reverse(self.conv(x), output_size=(9, 9))

    x = torch.randn(2, 3, 9, 9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the output_padding choice is fixed at trace time
        traced = torch.jit.trace(Roundtrip(), x)
    assert torch.equal(traced(x), Roundtrip()(x)) and traced(x).shape == (2, 3, 9, 9)
