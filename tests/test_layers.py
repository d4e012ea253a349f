"""BiConv2d / BiLinear: drop-in for nn.Conv2d / nn.Linear, one weight for both directions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import cpu_ops, rel_err
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import bvae
import bvae_kernels as bk

BACKENDS = [pytest.param("cpu", marks=cpu_ops), "torch"]
TOL32 = 1e-5
TOL64 = 1e-12


class RecordWeights(TorchDispatchMode):
    """Records (op name, data_ptr, strides) of every tensor argument that has the watched weight's shape."""

    def __init__(self, shape: torch.Size) -> None:
        super().__init__()
        self.shape = shape
        self.seen: list[tuple[str, int, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        for a in list(args) + list((kwargs or {}).values()):
            if isinstance(a, torch.Tensor) and a.shape == self.shape:
                self.seen.append((str(func), a.data_ptr(), a.stride()))
        return func(*args, **(kwargs or {}))


def assert_grads_match(pairs: tuple[tuple[str, torch.Tensor, torch.Tensor], ...], tol: float) -> None:
    """Each (name, our parameter, reference leaf) pair has a gradient within `tol` (relative) of the reference's."""
    for name, ours, ref in pairs:
        assert ours.grad is not None, name
        assert rel_err(ours.grad, ref.grad) <= tol, f"{name}.grad: {rel_err(ours.grad, ref.grad):.2e}"


# ----------------------------------------------------------------------------------------------------------
# BiConv2d as a drop-in nn.Conv2d
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "conv_kw",
    [
        dict(kernel_size=3, stride=1, padding=1),
        dict(kernel_size=4, stride=2, padding=1),
        dict(kernel_size=(3, 1), stride=(2, 1), padding=(1, 0)),
        dict(kernel_size=3, stride=2, padding=0, bias=False),
        dict(kernel_size=3, padding="same"),
        dict(kernel_size=3, padding="valid"),
        dict(kernel_size=(5, 3), padding="same"),
    ],
    ids=["k3s1p1", "k4s2p1", "k31s21", "nobias", "same", "valid", "same53"],
)
def test_biconv2d_loads_conv2d_and_matches(conv_kw: dict, backend: str) -> None:
    conv = nn.Conv2d(3, 5, **conv_kw)
    layer = bvae.BiConv2d(3, 5, **conv_kw, backend=backend)
    reverse_bias_before = None if layer.reverse_bias is None else layer.reverse_bias.detach().clone()
    result = layer.load_state_dict(conv.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(layer.weight, conv.weight)
    if reverse_bias_before is not None:  # the twin has no reverse bias: ours is kept, not reset
        assert torch.equal(layer.reverse_bias, reverse_bias_before)
    x = torch.randn(2, 3, 9, 8)
    with torch.no_grad():
        expected = bk.gnova_reference(conv(x))
        y = layer(x)
    assert y.shape == expected.shape
    assert rel_err(y, expected) <= TOL32


def test_biconv2d_state_dict_roundtrip_and_keys() -> None:
    a, b = bvae.BiConv2d(3, 4, 3, padding=1), bvae.BiConv2d(3, 4, 3, padding=1)
    assert set(a.state_dict()) == {"weight", "bias", "reverse_bias"}
    b.load_state_dict(a.state_dict(), strict=True)
    z = torch.randn(1, 4, 5, 5)
    assert torch.equal(a.reverse(z), b.reverse(z))
    conv_nobias = nn.Conv2d(3, 4, 3, bias=False)
    with pytest.raises(RuntimeError, match="Missing key"):
        a.load_state_dict(conv_nobias.state_dict(), strict=True)  # a has a bias; the twin does not
    layer_nobias = bvae.BiConv2d(3, 4, 3, bias=False)
    assert layer_nobias.bias is None and layer_nobias.reverse_bias is None
    layer_nobias.load_state_dict(conv_nobias.state_dict(), strict=True)


def test_biconv2d_defaults_and_init_match_conv2d() -> None:
    layer = bvae.BiConv2d(3, 5, 3)
    assert layer.weight.shape == (5, 3, 3, 3) and layer.bias.shape == (5,) and layer.reverse_bias.shape == (3,)
    assert layer.stride == (1, 1) and layer.padding == (0, 0)
    bound = 1 / (3 * 9) ** 0.5  # nn.Conv2d's kaiming_uniform(a=sqrt(5)) bound = 1/sqrt(fan_in)
    assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
    assert layer.reverse_bias.abs().max() <= 1 / (5 * 9) ** 0.5
    layer64 = bvae.BiConv2d(3, 5, 3, dtype=torch.float64)
    assert layer64.weight.dtype == torch.float64 and layer64.reverse_bias.dtype == torch.float64


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(dilation=0), r"kernel_size, stride and dilation must be >= 1"),
        (dict(dilation=1.5), r"dilation must be an int or a pair of ints"),
        (dict(groups=2), r"must be divisible by groups \(2\)"),
        (dict(groups=0), r"groups must be a positive int"),
        (dict(padding_mode="mirror"), r"padding_mode must be 'zeros', 'reflect', 'replicate' or 'circular'"),
        (dict(padding="same", stride=2), r"padding='same' is not supported for strided"),
        (dict(padding="full"), r"padding must be an int, a pair, 'same' or 'valid'"),
        (dict(padding=-1), r"padding must be >= 0"),
        (dict(stride=0), r"kernel_size, stride and dilation must be >= 1"),
        (dict(stride=1.5), r"stride must be an int or a pair of ints"),
        (dict(kernel_size=(3, 3, 3)), r"kernel_size must be an int or a pair"),
        (dict(in_channels=0), r"in_channels must be a positive int"),
        (dict(out_channels=2.0), r"out_channels must be a positive int"),
        (dict(activation="relu"), r"activation must be"),
    ],
)
def test_biconv2d_rejects_unsupported(kw: dict, match: str) -> None:
    args = dict(in_channels=3, out_channels=3, kernel_size=3)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        bvae.BiConv2d(**args)


@pytest.mark.parametrize("backend", BACKENDS)
def test_biconv2d_reverse_output_size(backend: str) -> None:
    """28 -> 14 with k=3, s=2, p=1; reverse(z, output_size=28) must give 28, equal to ConvTranspose2d's."""
    layer = bvae.BiConv2d(1, 4, 3, stride=2, padding=1, backend=backend)
    x = torch.randn(2, 1, 28, 28)
    z = layer(x)
    assert z.shape == (2, 4, 14, 14)
    x2 = layer.reverse(z, output_size=x.shape)
    assert x2.shape == (2, 1, 28, 28)
    assert layer.reverse(z).shape == (2, 1, 27, 27)
    assert layer.reverse(z, output_size=(27, 27)).shape == (2, 1, 27, 27)
    tconv = nn.ConvTranspose2d(4, 1, 3, stride=2, padding=1)  # the same weight layout [C_out, C_in, kh, kw]
    with torch.no_grad():
        tconv.weight.copy_(layer.weight)
        tconv.bias.copy_(layer.reverse_bias)
        expected = bk.gnova_reference(tconv(z, output_size=[28, 28]))
        assert rel_err(x2, expected) <= TOL32
    with pytest.raises(ValueError, match=r"output_size \(30, 30\) is unreachable from input \(14, 14\)"):
        layer.reverse(z, output_size=(30, 30))
    with pytest.raises(ValueError, match="unreachable"):
        layer.reverse(z, output_size=(26, 28))
    with pytest.raises(ValueError, match=r"output_size must end in \(H, W\) ints, got \(28,\)"):
        layer.reverse(z, output_size=(28,))
    with pytest.raises(ValueError, match="output_size must end in"):
        layer.reverse(z, output_size=(28.0, 28.0))
    assert layer.reverse(z, output_size=28).shape == (2, 1, 28, 28)


@pytest.mark.parametrize("backend", BACKENDS)
def test_biconv2d_unbatched(backend: str) -> None:
    layer = bvae.BiConv2d(2, 3, 3, padding=1, backend=backend)
    x = torch.randn(2, 6, 6)
    y = layer(x)
    assert y.shape == (3, 6, 6)
    assert rel_err(y, layer(x.unsqueeze(0))[0]) == 0.0
    assert layer.reverse(y).shape == (2, 6, 6)


# ----------------------------------------------------------------------------------------------------------
# BiLinear as a drop-in nn.Linear
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bias", [True, False])
def test_bilinear_loads_linear_and_matches(bias: bool, backend: str) -> None:
    lin = nn.Linear(6, 4, bias=bias)
    layer = bvae.BiLinear(6, 4, bias=bias, backend=backend, activation="sigmoid")
    layer.load_state_dict(lin.state_dict(), strict=True)
    x = torch.randn(2, 3, 6)
    with torch.no_grad():
        assert rel_err(layer(x), torch.sigmoid(lin(x))) <= TOL32
        z = torch.randn(5, 4)
        pre = z @ lin.weight + (layer.reverse_bias if bias else 0)
        assert rel_err(layer.reverse(z), torch.sigmoid(pre)) <= TOL32
    assert layer(torch.randn(6)).shape == (4,)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(in_features=0), "in_features must be a positive int"),
        (dict(out_features=-2), "out_features must be a positive int"),
        (dict(activation="tanh"), "activation must be"),
    ],
)
def test_bilinear_rejects_bad_arguments(kw: dict, match: str) -> None:
    args = dict(in_features=3, out_features=2)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        bvae.BiLinear(**args)


# ----------------------------------------------------------------------------------------------------------
# the bidirectional property: one weight, read in place by both directions; gradients accumulate into it
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_reverse_reads_the_same_weight(kind: str, backend: str) -> None:
    if kind == "conv":
        layer = bvae.BiConv2d(3, 4, 3, stride=2, padding=1, backend=backend)
        x = torch.randn(2, 3, 8, 8)
    else:
        layer = bvae.BiLinear(6, 4, backend=backend)
        x = torch.randn(5, 6)
    if kind == "conv":  # DESIGN keeps conv weights channels_last; neither direction may re-lay it out
        layer.weight.data = layer.weight.data.to(memory_format=torch.channels_last)
    ptr, strides = layer.weight.data_ptr(), layer.weight.stride()
    with RecordWeights(layer.weight.shape) as rec:
        y = layer(x)
        layer.reverse(y)
    assert layer.weight.data_ptr() == ptr and layer.weight.stride() == strides
    direct = [entry for entry in rec.seen if not entry[0].startswith(("aten.detach", "aten.alias"))]
    assert len(direct) >= 2, rec.seen  # the weight reached an op in both directions
    for op_name, seen_ptr, seen_strides in direct:
        assert seen_ptr == ptr, f"{op_name} got a copy of the weight"
        assert seen_strides == strides, f"{op_name} got a re-laid-out weight {seen_strides} (layer's {strides})"
    assert not [e for e in rec.seen if e[0].startswith(("aten.clone", "aten.copy", "aten.flip", "aten._to_copy"))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_gradients_from_both_directions_accumulate_conv(dtype: torch.dtype, backend: str) -> None:
    """loss = f(reverse(forward(x))) + g(reverse(z)): one weight.grad, equal to the reference composition's."""
    layer = bvae.BiConv2d(3, 4, 3, stride=2, padding=1, backend=backend, dtype=dtype)
    x, z = torch.randn(2, 3, 8, 8, dtype=dtype), torch.randn(2, 4, 4, 4, dtype=dtype)
    g1, g2 = torch.randn(2, 3, 8, 8, dtype=dtype), torch.randn(2, 3, 7, 7, dtype=dtype)
    loss = (layer.reverse(layer(x), output_size=(8, 8)) * g1).sum() + (layer.reverse(z) * g2).sum()
    loss.backward()
    w, b, br = (p.detach().double().requires_grad_() for p in (layer.weight, layer.bias, layer.reverse_bias))
    act = bk.gnova_reference
    h = act(F.conv2d(x.double(), w, b, 2, 1))
    ref_loss = (act(F.conv_transpose2d(h, w, br, 2, 1, 1)) * g1.double()).sum()
    ref_loss = ref_loss + (act(F.conv_transpose2d(z.double(), w, br, 2, 1)) * g2.double()).sum()
    ref_loss.backward()
    tol = TOL64 if dtype == torch.float64 else TOL32
    assert rel_err(loss, ref_loss) <= tol
    assert_grads_match(
        (("weight", layer.weight, w), ("bias", layer.bias, b), ("reverse_bias", layer.reverse_bias, br)), tol
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_from_both_directions_accumulate_linear(backend: str) -> None:
    layer = bvae.BiLinear(6, 4, backend=backend, dtype=torch.float64)
    x, z = torch.randn(5, 6, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    out = layer.reverse(layer(x))
    loss = (out * torch.linspace(-1, 1, 6, dtype=torch.float64)).sum() + layer.reverse(z).square().sum()
    loss.backward()
    w, b, br = (p.detach().clone().requires_grad_() for p in (layer.weight, layer.bias, layer.reverse_bias))
    act = bk.gnova_reference
    ref_out = act(act(x @ w.t() + b) @ w + br)
    ref_loss = (ref_out * torch.linspace(-1, 1, 6, dtype=torch.float64)).sum() + act(z @ w + br).square().sum()
    ref_loss.backward()
    assert_grads_match(
        (("weight", layer.weight, w), ("bias", layer.bias, b), ("reverse_bias", layer.reverse_bias, br)), TOL64
    )


# ----------------------------------------------------------------------------------------------------------
# reverse_scale: one learned scalar per layer, reverse direction only
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_reverse_scale_conv_matches_scaled_transposed_conv(dtype: torch.dtype, backend: str) -> None:
    """reverse(z) = a(e^s conv_transpose2d(z, W) + b_r); forward is untouched; s gets its gradient."""
    torch.manual_seed(0)
    layer = bvae.BiConv2d(3, 5, 4, stride=2, padding=1, backend=backend, dtype=dtype, reverse_scale=True)
    assert layer.reverse_log_scale.item() == 0.0  # starts as the layer without a scale
    with torch.no_grad():
        layer.reverse_log_scale.fill_(0.6)
    x, z = torch.randn(2, 3, 8, 8, dtype=dtype), torch.randn(2, 5, 4, 4, dtype=dtype)
    loss = layer.reverse(z, output_size=(8, 8)).sin().sum() + layer(x).cos().sum()
    loss.backward()
    w, b, br, s = (
        p.detach().clone().requires_grad_()
        for p in (layer.weight, layer.bias, layer.reverse_bias, layer.reverse_log_scale)
    )
    act = bk.gnova_reference
    u_rev = s.exp() * F.conv_transpose2d(z, w, stride=2, padding=1) + br.view(1, -1, 1, 1)
    ref_loss = act(u_rev).sin().sum() + act(F.conv2d(x, w, b, stride=2, padding=1)).cos().sum()
    ref_loss.backward()
    tol = TOL64 if dtype == torch.float64 else TOL32
    assert rel_err(loss, ref_loss) <= tol
    pairs = (("weight", layer.weight, w), ("bias", layer.bias, b), ("reverse_bias", layer.reverse_bias, br))
    assert_grads_match((*pairs, ("reverse_log_scale", layer.reverse_log_scale, s)), tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reverse_scale_linear_matches_and_gradchecks(backend: str) -> None:
    torch.manual_seed(1)
    layer = bvae.BiLinear(6, 4, backend=backend, dtype=torch.float64, reverse_scale=True)
    with torch.no_grad():
        layer.reverse_log_scale.fill_(-0.4)
    z = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    u = torch.exp(torch.tensor(-0.4, dtype=torch.float64)) * (z @ layer.weight) + layer.reverse_bias
    assert rel_err(layer.reverse(z), bk.gnova_reference(u)) <= TOL64
    # the mirror rule's activation override goes through the same scaled path
    assert rel_err(layer.reverse(z, activation="identity"), u) <= TOL64
    params = (z, layer.weight, layer.reverse_bias, layer.reverse_log_scale)

    def layer_reverse(z_, w_, br_, s_):  # noqa: ANN001, ANN202  (the layer's own reverse, parameters swapped in)
        swapped = {"weight": w_, "reverse_bias": br_, "reverse_log_scale": s_}
        return torch.func.functional_call(layer, swapped, (z_,), {"activation": "default"}, strict=False)

    layer.forward, plain_forward = layer.reverse, layer.forward  # functional_call runs forward: route it to reverse
    try:
        assert torch.autograd.gradcheck(layer_reverse, params)
    finally:
        layer.forward = plain_forward


def test_reverse_scale_state_dicts() -> None:
    """nn.Conv2d / nn.Linear state_dicts still load (the scale stays 1); our own round-trips keep the scale."""
    conv = nn.Conv2d(3, 5, 3, padding=1)
    layer = bvae.BiConv2d(3, 5, 3, padding=1, reverse_scale=True)
    assert set(layer.state_dict()) == {"weight", "bias", "reverse_bias", "reverse_log_scale"}
    layer.load_state_dict(conv.state_dict(), strict=True)
    assert layer.reverse_log_scale.item() == 0.0 and torch.equal(layer.weight, conv.weight)
    with torch.no_grad():
        layer.reverse_log_scale.fill_(0.25)
    other = bvae.BiConv2d(3, 5, 3, padding=1, reverse_scale=True)
    other.load_state_dict(layer.state_dict(), strict=True)
    assert other.reverse_log_scale.item() == 0.25
    lin = bvae.BiLinear(4, 2, bias=False, reverse_scale=True)
    lin.load_state_dict(nn.Linear(4, 2, bias=False).state_dict(), strict=True)
    assert "reverse_scale=True" in repr(lin) and "reverse_scale" not in repr(bvae.BiLinear(4, 2))
    assert bvae.BiLinear(4, 2).reverse_log_scale is None


@cpu_ops
def test_reverse_scale_adds_no_saved_activation_and_double_backward() -> None:
    """The fused reverse op takes the scale inside (e^s in its epilogue, ds = <dz, z> in its backward): the scaled
    layer saves exactly what the plain one saves; second derivatives stay right."""
    torch.manual_seed(2)

    def saved_storages(layer: nn.Module, z: torch.Tensor) -> set[int]:
        ptrs: set[int] = set()

        def pack(t: torch.Tensor) -> torch.Tensor:
            if t.dim() > 1:  # activations, not scalars or biases
                ptrs.add(t.untyped_storage().data_ptr())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            layer.reverse(z).sum()
        return ptrs - {layer.weight.untyped_storage().data_ptr()}

    z = torch.randn(2, 5, 4, 4, dtype=torch.float64, requires_grad=True)
    plain = bvae.BiConv2d(3, 5, 3, padding=1, backend="cpu", dtype=torch.float64)
    scaled = bvae.BiConv2d(3, 5, 3, padding=1, backend="cpu", dtype=torch.float64, reverse_scale=True)
    assert len(saved_storages(scaled, z)) == len(saved_storages(plain, z)) == 2  # z and u
    with torch.no_grad():
        scaled.reverse_log_scale.fill_(0.3)

    def reverse(z_: torch.Tensor, s_: torch.Tensor) -> torch.Tensor:
        return bk.bi_conv2d_reverse(z_, scaled.weight, scaled.reverse_bias, padding=1, log_scale=s_, backend="cpu")

    s = scaled.reverse_log_scale
    assert torch.autograd.gradcheck(reverse, (z, s))
    assert torch.autograd.gradgradcheck(reverse, (z, s))


@cpu_ops
def test_reverse_scale_under_torch_compile_fullgraph() -> None:
    torch.manual_seed(3)
    layer = bvae.BiConv2d(3, 5, 3, padding=1, reverse_scale=True)
    with torch.no_grad():
        layer.reverse_log_scale.fill_(0.2)
    z = torch.randn(2, 5, 6, 6)

    def loss_fn(z_: torch.Tensor) -> torch.Tensor:
        return layer.reverse(z_).square().sum()

    compiled = torch.compile(loss_fn, fullgraph=True)(z)
    compiled.backward()
    reverse_params = (layer.weight, layer.reverse_bias, layer.reverse_log_scale)
    grads = [p.grad.clone() for p in reverse_params]
    layer.zero_grad()
    eager = loss_fn(z)
    eager.backward()
    assert rel_err(compiled, eager) <= TOL32
    for got, p in zip(grads, reverse_params, strict=True):
        assert rel_err(got, p.grad) <= TOL32
