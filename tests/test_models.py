"""BVAE / VAE models: shapes, parameter budgets, the reverse path against the reference ops, bad input."""

import pytest
import torch

from bvae import BVAE, VAE, BiResBlock, ModelConfig, build_model
from bvae.layers import BiConv2d, BiLinear
from bvae_kernels import reference as ref

DATASETS = {"fashion-mnist": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32), "celeba64": (3, 64, 64)}
SMALL = {"width": 4, "hidden": 16}


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_shapes_param_budget_and_summary(dataset):
    torch.manual_seed(0)
    bvae, vae = build_model("bvae", dataset, latent_dim=6), build_model("vae", dataset, latent_dim=6)
    assert isinstance(bvae, BVAE) and isinstance(vae, VAE)
    assert bvae.num_parameters() <= 0.55 * vae.num_parameters()
    for model in (bvae, vae):
        assert model.image_shape == DATASETS[dataset] and model.latent_dim == 6
        assert model.likelihood == ("bernoulli" if "mnist" in dataset else "gaussian")
        x = torch.rand(2, *DATASETS[dataset])
        mu, logvar = model.encode(x)
        assert mu.shape == logvar.shape == (2, 6)
        z = torch.randn(3, 6)
        recon = model.decode(z)  # no encode before: sizes come from the architecture
        assert recon.shape == (3, *DATASETS[dataset])
        out_act = torch.sigmoid if model.likelihood == "bernoulli" else (lambda t: t)
        assert torch.allclose(recon, out_act(model.decode_logits(z)))
        text = model.summary()
        assert "total" in text and f"{model.num_parameters():,d}" in text
        assert sum(model.parameter_counts().values()) == model.num_parameters()


def test_architectures_have_the_stated_layer_counts():
    def count(model, cls):
        return sum(isinstance(m, cls) for m in model.body.modules())

    assert count(build_model("bvae", "cifar10", **SMALL), BiConv2d) == 6
    assert count(build_model("bvae", "celeba64", **SMALL), BiConv2d) == 9
    fm = build_model("bvae", "fashion-mnist", **SMALL)
    assert count(fm, BiConv2d) == 2 + 2 and count(fm, BiResBlock) == 1  # default: a residual block at 7x7
    fm = build_model("bvae", "fashion-mnist", res_blocks=2, **SMALL)
    assert count(fm, BiConv2d) == 2 + 2 * 2 and count(fm, BiResBlock) == 2  # and one at 14x14


def _ref_act(model):
    return model.activation


def _randomize_reverse_scales(model):
    """Moves every reverse scale off exp(0) = 1, so a composition that forgot one cannot match."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("reverse_log_scale"):
                p.uniform_(-0.7, 0.7)


def _rs(layer):
    return layer.reverse_log_scale.exp()


def test_bvae_fashion_encode_and_decode_match_reference_composition():
    torch.manual_seed(0)
    model = build_model("bvae", "fashion-mnist", latent_dim=5, backend="torch", res_blocks=2, **SMALL).double()
    _randomize_reverse_scales(model)
    a = _ref_act(model)
    conv1, res1, conv2, res2, _, fc = model.body
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    h = ref.bi_conv2d(x, conv1.weight, conv1.bias, 2, 1, a)
    h = res1(h)
    h = ref.bi_conv2d(h, conv2.weight, conv2.bias, 2, 1, a)
    h = ref.bi_linear(res2(h).flatten(1), fc.weight, fc.bias, a)
    mu, logvar = model.encode(x)
    assert _rel(mu, ref.bi_linear(h, model.mu_head.weight, model.mu_head.bias, "identity")) < 1e-12
    assert _rel(logvar, h @ model.logvar_head.weight.T + model.logvar_head.bias) < 1e-12
    # decode: z enters through the mean head's weight, then every layer in reverse through its own weight,
    # each scaled by its reverse scale e^s
    z = torch.randn(3, 5, dtype=torch.float64)
    g = ref.bi_linear_reverse(z * _rs(model.mu_head), model.mu_head.weight, model.mu_head.reverse_bias, a)
    g = ref.bi_linear_reverse(g * _rs(fc), fc.weight, fc.reverse_bias, a).reshape(3, 8, 7, 7)
    g = res2.reverse(g, activation=a)  # residual reverse is checked against the reference in test_blocks
    g = ref.bi_conv2d_reverse(g * _rs(conv2), conv2.weight, conv2.reverse_bias, 2, 1, 0, a)  # 7 -> 14
    g = res1.reverse(g, activation=a)
    logits = ref.bi_conv2d_reverse(g * _rs(conv1), conv1.weight, conv1.reverse_bias, 2, 1, 0, "identity")  # 14 -> 28
    assert _rel(model.decode_logits(z), logits) < 1e-12
    assert _rel(model.decode(z), torch.sigmoid(logits)) < 1e-12


def test_bvae_cifar_decode_matches_reference_composition():
    torch.manual_seed(1)
    model = build_model("bvae", "cifar10", latent_dim=4, backend="torch", **SMALL).double()
    _randomize_reverse_scales(model)
    a = _ref_act(model)
    z = torch.randn(2, 4, dtype=torch.float64)
    layers = list(model.body)
    convs, fc = layers[:6], layers[7]
    g = ref.bi_linear_reverse(z * _rs(model.mu_head), model.mu_head.weight, model.mu_head.reverse_bias, a)
    g = ref.bi_linear_reverse(g * _rs(fc), fc.weight, fc.reverse_bias, a).reshape(2, 16, 4, 4)
    for i in range(5, -1, -1):
        c, act = convs[i], a if i > 0 else "identity"
        g = ref.bi_conv2d_reverse(g * _rs(c), c.weight, c.reverse_bias, c.stride, c.padding, 0, act)
    assert g.shape == (2, 3, 32, 32)
    assert _rel(model.decode(z), g) < 1e-12  # Gaussian: identity mean


@pytest.mark.parametrize("kind", ["bvae", "vae"])
def test_compiled_backend_matches_reference_backend(kind):
    torch.manual_seed(2)
    m_ref = build_model(kind, "fashion-mnist", latent_dim=4, backend="torch", **SMALL).double()
    m_cpu = build_model(kind, "fashion-mnist", latent_dim=4, backend=None, **SMALL).double()
    _randomize_reverse_scales(m_ref)
    m_cpu.load_state_dict(m_ref.state_dict())
    x, eps = torch.rand(3, 1, 28, 28, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    out_ref, out_cpu = m_ref(x, eps=eps), m_cpu(x, eps=eps)
    out_ref.loss.backward()
    out_cpu.loss.backward()
    assert abs(out_ref.loss.item() - out_cpu.loss.item()) < 1e-9 * abs(out_ref.loss.item())
    for (name, p_ref), p_cpu in zip(m_ref.named_parameters(), m_cpu.parameters(), strict=True):
        assert _rel(p_cpu.grad, p_ref.grad) < 1e-10, name


@pytest.mark.parametrize("variant", ["vae", "beta-vae", "beta-tcvae", "iwae"])
@pytest.mark.parametrize("kind", ["bvae", "vae"])
def test_every_parameter_gets_a_gradient(kind, variant):
    torch.manual_seed(3)
    model = build_model(kind, "fashion-mnist", latent_dim=4, variant=variant, dataset_size=100, k=2, **SMALL)
    out = model(torch.rand(4, 1, 28, 28))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing  # DDP needs no unused parameters; the VAE carries no biases for unused directions


def test_vae_twin_is_unidirectional():
    model = build_model("vae", "fashion-mnist", **SMALL)
    for layer in model.encoder.modules():
        if isinstance(layer, (BiConv2d, BiLinear)):
            assert layer.reverse_bias is None and layer.reverse_log_scale is None and layer.bias is not None
    for layer in model.decoder.modules():
        if isinstance(layer, (BiConv2d, BiLinear)):
            assert layer.bias is None and layer.reverse_bias is not None and layer.reverse_log_scale is not None
    enc = {p.data_ptr() for p in model.encoder.parameters()}
    assert not enc & {p.data_ptr() for p in model.decoder.parameters()}


def test_config_round_trip_and_bad_config():
    model = build_model("bvae", "mnist", latent_dim=7, variant="beta-vae", beta=4.0, **SMALL)
    cfg = model.config.to_dict()
    assert ModelConfig.from_dict(cfg) == model.config
    assert cfg["beta"] == 4.0 and cfg["kind"] == "bvae" and cfg["width"] == 4
    with pytest.raises(ValueError, match="unknown model config keys"):
        build_model("bvae", "mnist", depth=3)
    with pytest.raises(ValueError, match="kind"):
        build_model("ae")
    with pytest.raises(ValueError, match="dataset"):
        build_model("bvae", "svhn")
    with pytest.raises(ValueError, match="variant"):
        build_model("bvae", variant="wae")
    with pytest.raises(ValueError, match="latent_dim"):
        build_model("bvae", latent_dim=0)
    for name, bad in (("beta", -1.0), ("alpha", float("nan")), ("gamma", float("inf"))):
        with pytest.raises(ValueError, match=f"^{name} must be a finite number >= 0"):
            build_model("bvae", **{name: bad})
    with pytest.raises(ValueError, match="^gaussian_sigma must be a finite number > 0"):
        build_model("bvae", "cifar10", gaussian_sigma=0.0)
    with pytest.raises(ValueError, match="dataset_size must be a positive int"):
        build_model("bvae", variant="beta-tcvae", dataset_size=2.5)


def test_wrong_input_sizes_raise():
    model = build_model("bvae", "fashion-mnist", latent_dim=4, **SMALL)
    with pytest.raises(ValueError, match=r"x must have shape \[N, 1, 28, 28\]"):
        model.encode(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="x must have shape"):
        model(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match=r"z must have shape \[N, 4\]"):
        model.decode(torch.randn(2, 5))


def test_beta_tcvae_model_requires_dataset_size():
    model = build_model("bvae", "fashion-mnist", variant="beta-tcvae", **SMALL)
    with pytest.raises(ValueError, match="dataset_size is required"):
        model(torch.rand(2, 1, 28, 28))


@pytest.mark.parametrize("kind", ["bvae", "vae"])
def test_reverse_scale_is_one_scalar_per_layer_used_in_reverse(kind):
    with_scale = build_model(kind, "fashion-mnist", **SMALL)
    without = build_model(kind, "fashion-mnist", reverse_scale=False, **SMALL)
    scales = [n for n, _ in with_scale.named_parameters() if n.endswith("reverse_log_scale")]
    # residual body: conv, conv, res block (2 convs), fc, plus the mean head (BVAE) / decoder entry (VAE)
    assert len(scales) == 6
    assert with_scale.num_parameters() - without.num_parameters() == 6
    assert not any(n.endswith("reverse_log_scale") for n, _ in without.named_parameters())
    if kind == "vae":
        assert all(n.startswith("decoder") for n in scales)
    # a scale of exp(0) = 1 is the model without one: its weights load and decode identically
    torch.manual_seed(0)
    without.load_state_dict(with_scale.state_dict(), strict=False)
    z = torch.randn(2, with_scale.latent_dim)
    torch.testing.assert_close(with_scale.decode(z), without.decode(z), rtol=0, atol=0)
    _randomize_reverse_scales(with_scale)
    assert not torch.allclose(with_scale.decode(z), without.decode(z))
