"""BiResBlock / BiSequential / BiFlatten against compositions of the reference ops (float64)."""

import pytest
import torch

from bvae import BiConv2d, BiFlatten, BiLinear, BiResBlock, BiSequential
from bvae_kernels import reference as ref
from bvae_kernels.activation import GNoVa

ACT = GNoVa(0.1, 1.0, 1.0)
BACKENDS = ["torch", None]  # reference ops, and the default (compiled cpu where built)


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("reverse_scale", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_resblock_forward_and_reverse_match_reference(backend, reverse_scale):
    torch.manual_seed(0)
    block = BiResBlock(5, activation=ACT, backend=backend, reverse_scale=reverse_scale).double()
    c1, c2 = block.conv1, block.conv2
    g1 = g2 = 1.0
    if reverse_scale:
        with torch.no_grad():
            c1.reverse_log_scale.fill_(0.3)
            c2.reverse_log_scale.fill_(-0.5)
        g1, g2 = c1.reverse_log_scale.exp(), c2.reverse_log_scale.exp()
    x = torch.randn(2, 5, 6, 7, dtype=torch.float64)
    want = ACT(x + ref.bi_conv2d(ref.bi_conv2d(x, c1.weight, c1.bias, 1, 1, ACT), c2.weight, c2.bias, 1, 1, "identity"))
    assert _rel(block(x), want) < 1e-12
    z = torch.randn(2, 5, 6, 7, dtype=torch.float64)
    inner = ref.bi_conv2d_reverse(g2 * z, c2.weight, c2.reverse_bias, 1, 1, 0, ACT)  # mirror: ends in conv1's act
    inner = ref.bi_conv2d_reverse(g1 * inner, c1.weight, c1.reverse_bias, 1, 1, 0, "identity")
    assert _rel(block.reverse(z), ACT(z + inner)) < 1e-12
    # the outer activation can be replaced (a block at the start of a network ends in identity in reverse)
    assert _rel(block.reverse(z, activation="identity"), z + inner) < 1e-12


def _net(backend):
    return BiSequential(
        BiConv2d(2, 4, 3, stride=2, padding=1, activation=ACT, backend=backend),  # 14 -> 7: reverse needs op=1
        BiResBlock(4, activation=ACT, backend=backend),
        BiFlatten((4, 7, 7)),
        BiLinear(196, 8, activation="identity", backend=backend),
        input_shape=(2, 14, 14),
    ).double()


@pytest.mark.parametrize("backend", BACKENDS)
def test_sequential_reverse_is_mirrored_composition_with_recorded_sizes(backend):
    torch.manual_seed(1)
    net = _net(backend)
    conv, res, _, lin = net
    assert net.input_shapes == [(2, 14, 14), (4, 7, 7), (4, 7, 7), (196,)]
    assert net.output_shape == (8,)
    z = torch.randn(3, 8, dtype=torch.float64)
    # reverse without any prior forward call: sizes come from the architecture
    out = net.reverse(z)
    h = ref.bi_linear_reverse(z, lin.weight, lin.reverse_bias, ACT)  # ends in the activation that made lin's input
    h = h.reshape(3, 4, 7, 7)
    h = res.reverse(h, activation=ACT)  # checked against the reference in the test above
    want = ref.bi_conv2d_reverse(h, conv.weight, conv.reverse_bias, 2, 1, 1, "identity")  # data space: identity
    assert out.shape == (3, 2, 14, 14)
    assert _rel(out, want) < 1e-12
    x = torch.randn(3, 2, 14, 14, dtype=torch.float64)
    hf = ref.bi_conv2d(x, conv.weight, conv.bias, 2, 1, ACT)
    hf = res(hf).flatten(1)
    assert _rel(net(x), ref.bi_linear(hf, lin.weight, lin.bias, "identity")) < 1e-12


def test_sequential_last_reverse_activation_can_be_chosen():
    torch.manual_seed(2)
    net = _net("torch")
    z = torch.randn(2, 8, dtype=torch.float64)
    logits = net.reverse(z)
    assert torch.allclose(net.reverse(z, activation="sigmoid"), torch.sigmoid(logits))


def test_both_directions_accumulate_into_one_weight_grad():
    torch.manual_seed(3)
    layer = BiConv2d(3, 4, 3, padding=1, activation=ACT).double()
    seq = BiSequential(layer, input_shape=(3, 5, 5))
    ptr = layer.weight.data_ptr()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    z = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    (seq(x).square().sum() + seq.reverse(z).sin().sum()).backward()
    assert layer.weight.data_ptr() == ptr
    w = layer.weight.detach().clone().requires_grad_(True)
    loss = ref.bi_conv2d(x, w, layer.bias.detach(), 1, 1, ACT).square().sum()
    loss = loss + ref.bi_conv2d_reverse(z, w, layer.reverse_bias.detach(), 1, 1, 0, "identity").sin().sum()
    loss.backward()
    assert _rel(layer.weight.grad, w.grad) < 1e-12


def test_bad_inputs():
    with pytest.raises(ValueError, match="channels"):
        BiResBlock(0)
    with pytest.raises(ValueError, match="shape"):
        BiFlatten((4, 7))
    with pytest.raises(ValueError, match="cannot take input shape"):
        BiSequential(BiConv2d(2, 4, 3), input_shape=(3, 8, 8))
    net = _net("torch")
    with pytest.raises(ValueError):
        net(torch.randn(1, 2, 16, 16, dtype=torch.float64))
