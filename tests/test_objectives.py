"""Objectives against hand computations and Monte-Carlo estimates."""

import math

import pytest
import torch
from torch import nn

from bvae import objectives as obj


class Toy(nn.Module):
    """A tiny linear (B)VAE stand-in: encode/decode_logits on 1x2x2 images, latent 3."""

    def __init__(self, likelihood="bernoulli"):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.likelihood = likelihood
        self.a = nn.Parameter(torch.randn(4, 3, generator=g, dtype=torch.float64))
        self.b = nn.Parameter(0.3 * torch.randn(4, 3, generator=g, dtype=torch.float64))
        self.c = nn.Parameter(torch.randn(3, 4, generator=g, dtype=torch.float64))

    def encode(self, x):
        f = x.flatten(1)
        return f @ self.a, f @ self.b - 0.5

    def decode_logits(self, z):
        return (z @ self.c).reshape(-1, 1, 2, 2)


def _x(n=5, seed=1):
    return torch.rand(n, 1, 2, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_log_likelihood_tiny_hand_cases():
    x = torch.tensor([[[[1.0, 0.0]]]], dtype=torch.float64)
    logits = torch.tensor([[[[0.0, math.log(3.0)]]]], dtype=torch.float64)
    # log sigmoid(0) + log(1 - sigmoid(log 3)) = log(1/2) + log(1/4)
    assert obj.log_likelihood(x, logits, "bernoulli").item() == pytest.approx(math.log(0.5) + math.log(0.25))
    mean = torch.tensor([[[[0.5, 0.25]]]], dtype=torch.float64)
    s = 0.1
    want = sum(
        -0.5 * ((xv - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi) for xv, m in [(1, 0.5), (0, 0.25)]
    )
    assert obj.log_likelihood(x, mean, "gaussian", sigma=s).item() == pytest.approx(want)
    with pytest.raises(ValueError, match="likelihood"):
        obj.log_likelihood(x, mean, "poisson")
    for bad in (0.0, -0.1, math.inf, math.nan):
        with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
            obj.log_likelihood(x, mean, "gaussian", sigma=bad)


def test_log_normal_pdf_matches_torch_distributions():
    torch.manual_seed(0)
    z, mu, logvar = torch.randn(3, 4, 5, dtype=torch.float64).unbind(0)
    want = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z)
    assert torch.allclose(obj.log_normal_pdf(z, mu, logvar, reduce=False), want)
    assert torch.allclose(obj.log_normal_pdf(z, mu, logvar), want.sum(-1))


def test_closed_form_kl_equals_monte_carlo_kl():
    torch.manual_seed(0)
    mu = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    logvar = torch.tensor([0.2, -1.5, 0.7], dtype=torch.float64)
    z = mu + (0.5 * logvar).exp() * torch.randn(400_000, 3, dtype=torch.float64)
    samples = obj.log_normal_pdf(z, mu, logvar) - obj.log_normal_pdf(z)
    mc, se = samples.mean().item(), samples.std().item() / math.sqrt(samples.numel())
    closed = obj.gaussian_kl(mu, logvar).item()
    assert abs(mc - closed) < 4 * se
    # a tiny hand case: mu = 1, var = e: 0.5 * (1 + e - 1 - 1)
    assert obj.gaussian_kl(torch.tensor([1.0]), torch.tensor([1.0])).item() == pytest.approx(0.5 * (math.e - 1))


def test_beta_vae_loss_is_recon_plus_beta_kl_by_hand():
    model, x = Toy(), _x()
    eps = torch.randn(5, 3, dtype=torch.float64)
    out = obj.beta_vae(model, x, eps=eps, beta=4.0)
    mu, logvar = model.encode(x)
    z = mu + (0.5 * logvar).exp() * eps
    logits = z @ model.c
    bce = nn.functional.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="none").sum(1)
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)
    assert out.recon_loss.item() == pytest.approx(bce.mean().item())
    assert out.reg_loss.item() == pytest.approx(kl.mean().item())
    assert out.loss.item() == pytest.approx((bce + 4.0 * kl).mean().item())
    assert torch.allclose(out.recon_x, torch.sigmoid(logits).reshape(5, 1, 2, 2))
    assert obj.vae(model, x, eps=eps).loss.item() == pytest.approx((bce + kl).mean().item())


def test_tc_terms_sum_to_log_q_minus_log_p_and_match_hand_loops():
    torch.manual_seed(0)
    n, d, m = 4, 3, 1000
    mu, logvar, z = torch.randn(n, d, dtype=torch.float64), torch.randn(n, d, dtype=torch.float64), None
    z = mu + (0.5 * logvar).exp() * torch.randn(n, d, dtype=torch.float64)
    t = obj.tc_decomposition(z, mu, logvar, m)
    total = t["mi"] + t["tc"] + t["dwkl"]
    assert torch.allclose(total, obj.log_normal_pdf(z, mu, logvar) - obj.log_normal_pdf(z))
    # minibatch-weighted sampling, written out with explicit loops
    for i in range(n):
        q = [math.exp(obj.log_normal_pdf(z[i], mu[j], logvar[j]).item()) for j in range(n)]
        log_qz = math.log(sum(q) / (n * m))
        log_prod = 0.0
        for k in range(d):
            qd = [
                math.exp(obj.log_normal_pdf(z[i, k : k + 1], mu[j, k : k + 1], logvar[j, k : k + 1]).item())
                for j in range(n)
            ]
            log_prod += math.log(sum(qd) / (n * m))
        assert t["tc"][i].item() == pytest.approx(log_qz - log_prod)
        assert t["mi"][i].item() == pytest.approx(obj.log_normal_pdf(z[i], mu[i], logvar[i]).item() - log_qz)


def test_beta_tcvae_weights_and_required_dataset_size():
    model, x = Toy(), _x()
    eps = torch.randn(5, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="dataset_size is required"):
        obj.beta_tcvae(model, x, eps=eps)
    with pytest.raises(ValueError, match="dataset_size"):
        obj.beta_tcvae(model, x, eps=eps, dataset_size=3)  # smaller than the batch
    out = obj.beta_tcvae(model, x, eps=eps, dataset_size=100, alpha=1.0, beta=1.0, gamma=1.0)
    mu, logvar = model.encode(x)
    z = mu + (0.5 * logvar).exp() * eps
    # alpha = beta = gamma = 1: the regularizer is the single-sample KL, log q(z|x) - log p(z)
    want = (obj.log_normal_pdf(z, mu, logvar) - obj.log_normal_pdf(z)).mean()
    assert out.reg_loss.item() == pytest.approx(want.item())
    out2 = obj.beta_tcvae(model, x, eps=eps, dataset_size=100, alpha=2.0, beta=6.0, gamma=0.5)
    m = out2.metrics
    assert out2.reg_loss.item() == pytest.approx(2 * m["mi"].item() + 6 * m["tc"].item() + 0.5 * m["dwkl"].item())
    for name in ("alpha", "beta", "gamma"):
        for bad in (-1.0, math.nan, math.inf):
            with pytest.raises(ValueError, match=f"beta_tcvae: {name} must be a finite number >= 0"):
                obj.beta_tcvae(model, x, eps=eps, dataset_size=100, **{name: bad})


def test_beta_vae_rejects_a_bad_beta():
    model, x = Toy(), _x()
    for bad in (-0.5, math.nan, math.inf, "4"):
        with pytest.raises(ValueError, match="beta_vae: beta must be a finite number >= 0"):
            obj.beta_vae(model, x, beta=bad)


def test_iwae_k1_equals_elbo_on_the_same_z():
    model, x = Toy(), _x()
    eps = torch.randn(1, 5, 3, dtype=torch.float64)
    out = obj.iwae(model, x, eps=eps, k=1)
    vae = obj.vae(model, x, eps=eps[0])
    mu, logvar = model.encode(x)
    z = mu + (0.5 * logvar).exp() * eps[0]
    elbo_same_z = -vae.recon_loss + (obj.log_normal_pdf(z) - obj.log_normal_pdf(z, mu, logvar)).mean()
    assert out.metrics["iwae_bound"].item() == pytest.approx(elbo_same_z.item())
    assert out.loss.item() == pytest.approx(-elbo_same_z.item())


def _hand_iwae_bound(model, x, eps, reg_weight=1.0):
    """Per-sample log-mean-exp over eps's k samples of log p(x|z) + w (log p(z) - log q(z|x)), Gaussian Toy."""
    mu, logvar = model.encode(x)
    log_w = []
    for e in eps:
        z = mu + (0.5 * logvar).exp() * e
        mean = (z @ model.c).reshape(x.shape)
        log_px = torch.distributions.Normal(mean, 0.1).log_prob(x).flatten(1).sum(1)
        log_w.append(log_px + reg_weight * (obj.log_normal_pdf(z) - obj.log_normal_pdf(z, mu, logvar)))
    lw = torch.stack(log_w)
    top = lw.max(0).values  # log-mean-exp, shifted by hand against underflow
    return top + (lw - top).exp().mean(0).log()


def test_iwae_bound_by_hand_for_k3():
    model, x = Toy("gaussian"), _x()
    eps = torch.randn(3, 5, 3, dtype=torch.float64)
    out = obj.iwae(model, x, eps=eps, k=3)
    bound = _hand_iwae_bound(model, x, eps)
    assert out.metrics["iwae_bound"].item() == pytest.approx(bound.mean().item())
    assert out.loss.item() == pytest.approx(-bound.mean().item())
    with pytest.raises(ValueError, match="k must"):
        obj.iwae(model, x, k=0)
    with pytest.raises(ValueError, match="eps must have shape"):
        obj.iwae(model, x, eps=eps, k=2)


def test_reg_weight_scales_only_the_regularizer_in_every_objective():
    """KL warm-up: reg_weight w multiplies the regularizer (inside the importance weights for IWAE)."""
    model, x, w = Toy("gaussian"), _x(), 0.3
    eps = torch.randn(5, 3, dtype=torch.float64)
    full = obj.beta_vae(model, x, eps=eps, beta=4.0)
    warm = obj.beta_vae(model, x, eps=eps, beta=4.0, reg_weight=w)
    assert warm.loss.item() == pytest.approx((full.recon_loss + w * 4.0 * full.reg_loss).item())
    assert warm.metrics["elbo"].item() == pytest.approx(full.metrics["elbo"].item())  # the true bound
    assert obj.vae(model, x, eps=eps, reg_weight=0.0).loss.item() == pytest.approx(full.recon_loss.item())
    tc_full = obj.beta_tcvae(model, x, eps=eps, dataset_size=100, beta=6.0)
    tc_warm = obj.beta_tcvae(model, x, eps=eps, dataset_size=100, beta=6.0, reg_weight=w)
    assert tc_warm.loss.item() == pytest.approx((tc_full.recon_loss + w * tc_full.reg_loss).item())
    eps3 = torch.randn(3, 5, 3, dtype=torch.float64)
    out = obj.iwae(model, x, eps=eps3, k=3, reg_weight=w)
    assert out.loss.item() == pytest.approx(-_hand_iwae_bound(model, x, eps3, w).mean().item())
    assert out.metrics["iwae_bound"].item() == pytest.approx(obj.iwae(model, x, eps=eps3, k=3).loss.neg().item())
    for bad in (-0.1, math.nan, math.inf, True, "1"):
        with pytest.raises(ValueError, match="reg_weight"):
            obj.vae(model, x, eps=eps, reg_weight=bad)
        with pytest.raises(ValueError, match="reg_weight"):
            obj.iwae(model, x, eps=eps3, k=3, reg_weight=bad)


def test_get_objective_registry():
    assert obj.get_objective("iwae") is obj.iwae
    with pytest.raises(ValueError, match="variant"):
        obj.get_objective("wae")
