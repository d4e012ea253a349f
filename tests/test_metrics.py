"""bvae.metrics against cases whose answers are known in closed form or by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bvae import metrics

# ---------------------------------------------------------------------------------------------- PSNR / SSIM


def test_psnr_identical_is_inf_and_known_noise_is_20db():
    x = torch.rand(3, 1, 8, 8)
    assert torch.isinf(metrics.psnr_per_image(x, x)).all()
    target = torch.full((2, 1, 8, 8), 0.5)
    signs = torch.where(torch.rand(2, 1, 8, 8) < 0.5, -1.0, 1.0)
    noisy = target + 0.1 * signs  # MSE = 0.01 exactly -> PSNR = 10 log10(1 / 0.01) = 20 dB
    assert torch.allclose(metrics.psnr_per_image(noisy, target), torch.full((2,), 20.0), atol=1e-4)
    # data_range scales the peak: range 2 -> +20 log10(2) dB
    assert torch.allclose(
        metrics.psnr_per_image(noisy, target, data_range=2.0), torch.full((2,), 20 + 20 * math.log10(2))
    )


def test_ssim_identical_is_one_and_constant_images_match_hand_formula():
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(metrics.ssim_per_image(x, x), torch.ones(2), atol=1e-6)
    # constant images: variances and covariance vanish, SSIM = (2 m1 m2 + C1) / (m1^2 + m2^2 + C1), C1 = 0.01^2
    a, b = torch.full((1, 1, 28, 28), 0.5), torch.full((1, 1, 28, 28), 0.6)
    c1 = 0.01**2
    expected = (2 * 0.5 * 0.6 + c1) / (0.5**2 + 0.6**2 + c1)
    assert metrics.ssim_per_image(a, b).item() == pytest.approx(expected, abs=1e-5)


def test_image_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr_per_image(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 5))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        metrics.ssim_per_image(torch.rand(4, 4), torch.rand(4, 4))


# ------------------------------------------------------------------------------------------------------ NLL


class LinearGaussian:
    """p(z) = N(0, I), p(x|z) = N(W z + b, s^2 I): p(x) = N(b, W W^T + s^2 I) in closed form."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor, s: float, inflate: float = 1.0, shift: float = 0.0):
        self.w, self.b, self.s = w.double(), b.double(), s
        self.inflate, self.shift = inflate, shift
        dz = w.shape[1]
        self.post_cov = torch.linalg.inv(torch.eye(dz, dtype=torch.float64) + self.w.T @ self.w / s**2)

    def exact_log_px(self, x: torch.Tensor) -> torch.Tensor:
        cov = self.w @ self.w.T + self.s**2 * torch.eye(self.w.shape[0], dtype=torch.float64)
        dist = torch.distributions.MultivariateNormal(self.b, covariance_matrix=cov)
        return dist.log_prob(x.reshape(x.shape[0], -1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Diagonal q(z|x): the exact posterior when W^T W is diagonal (inflate=1, shift=0), else an approximation."""
        flat = x.reshape(x.shape[0], -1)
        mu = (flat - self.b) @ self.w @ self.post_cov.T / self.s**2 + self.shift
        logvar = torch.log(torch.diagonal(self.post_cov) * self.inflate).expand_as(mu)
        return mu, logvar

    def log_px_given_z(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        mean = z @ self.w.T + self.b
        flat = x.reshape(x.shape[0], -1)
        return -0.5 * (math.log(2 * math.pi * self.s**2) + (flat - mean) ** 2 / self.s**2).sum(1)


def _orthogonal_columns(dx: int, dz: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dx, dz, generator=g, dtype=torch.float64))
    return q * torch.tensor([2.0, 0.7, 1.3][:dz], dtype=torch.float64)  # W^T W diagonal


def test_nll_is_exact_when_q_is_the_true_posterior():
    """Every importance weight equals p(x) when q(z|x) = p(z|x): any K and any chunking give log p(x)."""
    w = _orthogonal_columns(4, 2, seed=0)
    model = LinearGaussian(w, torch.tensor([0.1, -0.2, 0.3, 0.0]), s=0.5)
    x = (torch.randn(16, 2, dtype=torch.float64) @ model.w.T + model.b + 0.5 * torch.randn(16, 4)).reshape(16, 1, 2, 2)
    exact = model.exact_log_px(x)
    for k, max_decode in ((1, 4096), (7, 20)):
        est = metrics.importance_log_px(x, model.encode, model.log_px_given_z, num_samples=k, max_decode=max_decode)
        torch.testing.assert_close(est, exact, rtol=0, atol=1e-9)


def test_nll_converges_to_closed_form_with_mismatched_q():
    """With a wider, shifted q the K=1 estimate is the ELBO (well below log p(x)); K=1000 is within 0.02 nats."""
    w = _orthogonal_columns(6, 3, seed=1) + 0.3 * torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    model = LinearGaussian(w, torch.zeros(6), s=0.6, inflate=1.5, shift=0.2)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(32, 3, generator=gen, dtype=torch.float64) @ model.w.T + 0.6 * torch.randn(32, 6, generator=gen)
    x = x.reshape(32, 1, 2, 3)
    exact = model.exact_log_px(x).mean().item()
    g = torch.Generator().manual_seed(4)
    est1 = metrics.importance_log_px(x, model.encode, model.log_px_given_z, 1, generator=g).mean().item()
    est1000 = metrics.importance_log_px(x, model.encode, model.log_px_given_z, 1000, max_decode=3000, generator=g)
    assert est1 < exact - 0.1  # the single-sample bound is loose for this q ...
    assert est1000.mean().item() == pytest.approx(exact, abs=0.02)  # ... and K=1000 converges
    assert est1000.mean().item() <= exact + 0.02


def test_noise_is_drawn_on_the_generators_device(monkeypatch):
    """A seeded CPU generator with a model on another device (CUDA): torch.randn refuses a generator of another
    device type, so the noise is drawn on the generator's device and moved (same numbers on every device)."""
    real = torch.randn

    def strict(*args, generator=None, device=None, **kwargs):  # noqa: ANN002, ANN003, ANN202 - torch.randn's
        where = torch.device(device if device is not None else "cpu")
        if generator is not None and where.type != generator.device.type:
            raise RuntimeError(f"Expected a '{where.type}' device type for generator")
        return real(*args, generator=generator, device=device, **kwargs)

    monkeypatch.setattr(torch, "randn", strict)
    from bvae.objectives import randn

    eps = randn((2, 3), torch.device("meta"), torch.float32, torch.Generator().manual_seed(0))
    assert eps.device.type == "meta" and eps.shape == (2, 3)
    want = real((2, 3), generator=torch.Generator().manual_seed(0))
    same = randn((2, 3), torch.device("cpu"), torch.float32, torch.Generator().manual_seed(0))
    torch.testing.assert_close(same, want)
    mu = torch.zeros(2, 3, device="meta")
    est = metrics.importance_log_px(
        mu, lambda x: (x, x), lambda x, z: z.sum(-1), 2, generator=torch.Generator().manual_seed(0)
    )
    assert est.device.type == "meta"


def test_nll_rejects_bad_k():
    with pytest.raises(ValueError, match="num_samples"):
        metrics.importance_log_px(torch.zeros(1, 1, 1, 1), lambda x: (x, x), lambda x, z: x, num_samples=0)


def test_bits_per_dim():
    assert metrics.bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    # a continuous density at 0 nats over data quantized to 256 levels costs 8 bits/dim
    assert metrics.bits_per_dim(0.0, 10, num_levels=256) == pytest.approx(8.0)
    with pytest.raises(ValueError, match="num_dims"):
        metrics.bits_per_dim(1.0, 0)


# ------------------------------------------------------------------------------------------------ active units


def test_active_units_on_constructed_means():
    rng = np.random.default_rng(0)
    n = 20000
    scales = np.array([1.0, 0.5, 0.2, 0.05, 0.01, 0.0])  # variances 1, .25, .04, .0025, 1e-4, 0
    means = rng.standard_normal((n, 6)) * scales + 3.0  # a constant offset must not matter
    count, variances = metrics.active_units(torch.from_numpy(means))
    assert count == 3
    np.testing.assert_allclose(variances, scales**2, rtol=0.05, atol=1e-6)
    assert metrics.active_units(means, threshold=0.001)[0] == 4
    with pytest.raises(ValueError, match="means"):
        metrics.active_units(np.zeros(5))
    for bad in (-0.01, float("nan")):
        with pytest.raises(ValueError, match="threshold must be a finite number >= 0"):
            metrics.active_units(means, threshold=bad)


# ------------------------------------------------------------------------------------------- downstream probe


def _separable_latents(seed: int, n: int, classes: int = 4, dim: int = 5):
    """Synthetic test fixture: class centres far apart plus small noise, so a probe must reach ~100%."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).standard_normal((classes, dim)) * 5
    y = rng.integers(0, classes, n)
    return centres[y] + 0.3 * rng.standard_normal((n, dim)), y


@pytest.mark.parametrize("classifier,hidden", [("linear", 0), ("mlp", 100)])
def test_downstream_accuracy_on_separable_latents(classifier, hidden):
    tz, ty = _separable_latents(0, 600)
    vz, vy = _separable_latents(1, 300)
    assert metrics.downstream_accuracy(tz, ty, vz, vy, classifier, hidden) >= 0.99
    # shuffled test labels: chance level (4 classes) -- the probe is scored on the test labels
    perm = np.random.default_rng(2).permutation(len(vy))
    assert metrics.downstream_accuracy(tz, ty, vz, vy[perm], classifier, hidden) < 0.45


def test_downstream_accuracy_rejects_bad_input():
    z, y = _separable_latents(0, 20)
    with pytest.raises(ValueError, match="classifier"):
        metrics.downstream_accuracy(z, y, z, y, classifier="svm")
    with pytest.raises(ValueError, match="same D"):
        metrics.downstream_accuracy(z, y, z[:, :3], y)
    assert metrics.classifier_for("fashion-mnist") == ("mlp", 100)
    assert metrics.classifier_for("MNIST") == ("linear", 0)
    with pytest.raises(ValueError, match="dataset"):
        metrics.classifier_for("imagenet")


# ------------------------------------------------------------------------------------------------------- FID


def test_frechet_distance_closed_form():
    mu1, mu2 = np.array([0.0, 1.0]), np.array([1.0, -1.0])
    d1, d2 = np.array([1.0, 4.0]), np.array([9.0, 0.25])
    # diagonal covariances: |dmu|^2 + sum (sqrt(d1) - sqrt(d2))^2
    expected = 5.0 + (1 - 3) ** 2 + (2 - 0.5) ** 2
    assert metrics.frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(expected, rel=1e-10)
    # a rotated pair: distance is invariant when both are rotated by the same orthogonal matrix
    r = np.array([[math.cos(0.3), -math.sin(0.3)], [math.sin(0.3), math.cos(0.3)]])
    got = metrics.frechet_distance(r @ mu1, r @ np.diag(d1) @ r.T, r @ mu2, r @ np.diag(d2) @ r.T)
    assert got == pytest.approx(expected, rel=1e-8)
    assert metrics.frechet_distance(mu1, np.diag(d1), mu1, np.diag(d1)) == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(ValueError, match="shape"):
        metrics.frechet_distance(mu1, np.eye(3), mu2, np.eye(3))


class TinyFeatures(torch.nn.Module):
    """A small fixed feature extractor: a linear map of the flattened image (features stay Gaussian)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = torch.nn.Linear(dim_in, dim_out, bias=False, dtype=torch.float64)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(dim_out, dim_in, generator=torch.Generator().manual_seed(0)))
        self.num_features = dim_out

    def forward(self, x):
        return self.proj(x.reshape(x.shape[0], -1).double())


def test_frechet_distance_metric_with_small_extractor_matches_closed_form_and_torchmetrics():
    """Images whose pixels are Gaussian map to Gaussian features A x: FD = |A dmu|^2 + tr(...) of A S A^T."""
    gen = torch.Generator().manual_seed(5)
    n, dim = 20000, 4
    extractor = TinyFeatures(dim, 3)
    mu_r, mu_f = torch.zeros(dim, dtype=torch.float64), torch.tensor([0.5, 0.0, -0.5, 0.2], dtype=torch.float64)
    sd_r, sd_f = torch.ones(dim, dtype=torch.float64), torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=torch.float64)
    real = (mu_r + sd_r * torch.randn(n, dim, generator=gen, dtype=torch.float64)).reshape(n, 1, 2, 2)
    fake = (mu_f + sd_f * torch.randn(n, dim, generator=gen, dtype=torch.float64)).reshape(n, 1, 2, 2)
    fd = metrics.FrechetDistance(extractor)
    for i in range(0, n, 5000):
        fd.update(real[i : i + 5000], real=True)
        fd.update(fake[i : i + 5000], real=False)
    a = extractor.proj.weight.detach().numpy()
    expected = metrics.frechet_distance(
        a @ mu_r.numpy(), a @ np.diag(sd_r.numpy() ** 2) @ a.T, a @ mu_f.numpy(), a @ np.diag(sd_f.numpy() ** 2) @ a.T
    )
    assert expected > 1.0
    assert fd.compute() == pytest.approx(expected, rel=0.05)

    tm_fid = pytest.importorskip("torchmetrics.image.fid")
    ref = tm_fid.FrechetInceptionDistance(feature=extractor)
    ref.update(real.float(), real=True)
    ref.update(fake.float(), real=False)
    assert fd.compute() == pytest.approx(float(ref.compute()), rel=1e-3)


def test_inception_fid_skips_cleanly_without_weights(tmp_path):
    extractor, reason = metrics.inception_extractor(None)
    assert extractor is None and "--fid-weights" in reason
    extractor, reason = metrics.inception_extractor(tmp_path / "missing.pth")
    assert extractor is None and "not found" in reason
    out = metrics.to_inception_input(torch.tensor([0.0, 0.5, 1.0]).reshape(1, 1, 1, 3))
    assert out.shape == (1, 3, 1, 3) and out.dtype == torch.uint8
    assert out[0, :, 0].tolist() == [[0, 128, 255]] * 3


def test_psnr_and_ssim_match_torchmetrics():
    """The one PSNR / SSIM (training's test PSNR and `bvae eval` use it) against torchmetrics' definitions."""
    tm = pytest.importorskip("torchmetrics.functional.image")
    g = torch.Generator().manual_seed(0)
    a = torch.rand(5, 1, 28, 28, generator=g)
    b = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    want = tm.structural_similarity_index_measure(b.double(), a.double(), data_range=1.0, reduction="none")
    assert torch.allclose(metrics.ssim_per_image(b, a).double(), want, atol=1e-6)
    c = torch.rand(2, 3, 16, 16, generator=g)  # several channels
    want = tm.structural_similarity_index_measure(c.double(), (c * 0.9).double(), data_range=1.0, reduction="none")
    assert torch.allclose(metrics.ssim_per_image(c, c * 0.9).double(), want, atol=1e-6)
    want = tm.peak_signal_noise_ratio(b.double(), a.double(), data_range=1.0, reduction="none", dim=(1, 2, 3))
    assert torch.allclose(metrics.psnr_per_image(b, a).double(), want, atol=1e-4)


def test_ssim_in_chunks_equals_one_call():
    """A whole test set's maps at once asked for 38 GB; chunks give the same numbers."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(23, 1, 28, 28, generator=g)
    b = (a + 0.05 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    assert torch.equal(metrics.ssim_per_image(a, b, batch_size=5), metrics.ssim_per_image(a, b, batch_size=1000))
