"""Evaluation metrics of the paper: PSNR/SSIM, importance-sampled NLL, active units, downstream accuracy, FID.

Every function works on plain tensors or on any model that has `encode(x) -> (mu, logvar)` and
`decode(z)` / `decode_logits(z)` plus a `likelihood` attribute, so it serves the BVAE and its VAE twin
alike, and the tests can drive it with small stand-in models whose answers are known in closed form.
Inception-based FID needs local Inception weights and torch-fidelity; it is never downloaded here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._checks import non_negative
from .objectives import randn

LOG_2PI = math.log(2.0 * math.pi)

# Paper's downstream probes: linear on MNIST, one hidden layer of logistic units on Fashion-MNIST / CIFAR-10.
DOWNSTREAM_CLASSIFIERS: dict[str, tuple[str, int]] = {
    "mnist": ("linear", 0),
    "fashion-mnist": ("mlp", 100),
    "cifar10": ("mlp", 256),
    "cifar-10": ("mlp", 256),
}


# ----------------------------------------------------------------------------------------------- image quality
def _check_images(recon: torch.Tensor, target: torch.Tensor) -> None:
    if recon.shape != target.shape:
        raise ValueError(
            f"recon and target must have the same shape, got {tuple(recon.shape)} and {tuple(target.shape)}"
        )
    if recon.dim() != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(recon.shape)}")


def psnr_per_image(recon: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB of each image, 10 log10(range^2 / MSE), in float64; +inf for an exact reconstruction."""
    _check_images(recon, target)
    mse = (recon.double() - target.double()).square().flatten(1).mean(1)
    return (10 * torch.log10(data_range**2 / mse)).float()


def _gaussian_window(channels: int, window: int, sigma: float, device: torch.device) -> torch.Tensor:
    coords = torch.arange(window, dtype=torch.float64, device=device) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, window, window)


def _ssim(x: torch.Tensor, y: torch.Tensor, data_range: float, window: int, sigma: float) -> torch.Tensor:
    x, y = x.double(), y.double()
    c, pad = x.shape[1], (window - 1) // 2
    kernel = _gaussian_window(c, window, sigma, x.device)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(torch.nn.functional.pad(t, (pad,) * 4, mode="reflect"), kernel, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = (blur(x * x) - mu_x**2).clamp_min(0)
    syy = (blur(y * y) - mu_y**2).clamp_min(0)
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1).float()


def ssim_per_image(
    recon: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    batch_size: int = 500,
    window: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """SSIM of each image (Gaussian window 11, sigma 1.5, reflect padding: Wang et al. 2004, as torchmetrics, which
    the tests compare against), in float64.

    In chunks of `batch_size` images: the five float64 maps of every image, about 3.8 MB per 28x28 image, for a
    whole test set at once would ask for tens of GB."""
    _check_images(recon, target)
    parts = [
        _ssim(recon[i : i + batch_size], target[i : i + batch_size], data_range, window, sigma)
        for i in range(0, recon.shape[0], batch_size)
    ]
    return torch.cat(parts) if parts else torch.empty(0)


# ------------------------------------------------------------------------------------------------------- NLL
def log_normal_diag(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over the last dimension."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(-1)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last dimension."""
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)


LogLikelihoodFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def model_log_px_given_z(model: nn.Module) -> LogLikelihoodFn:
    """Return f(x, z) -> log p(x|z) per sample [B] for a model with `likelihood` and `decode(_logits)`.

    Uses `bvae.objectives.log_likelihood` so the decoder density is exactly the one the model trained with.
    """
    from bvae.objectives import DEFAULT_GAUSSIAN_SIGMA, log_likelihood

    likelihood = getattr(model, "likelihood", None)
    if likelihood not in ("bernoulli", "gaussian"):
        raise ValueError(f"model.likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
    sigma = getattr(getattr(model, "config", None), "gaussian_sigma", DEFAULT_GAUSSIAN_SIGMA)

    def log_px_given_z(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        out = model.decode_logits(z) if likelihood == "bernoulli" else model.decode(z)
        ll = log_likelihood(x, out, likelihood, sigma=sigma)
        return ll.reshape(ll.shape[0], -1).sum(1) if ll.dim() > 1 else ll

    return log_px_given_z


@torch.no_grad()
def importance_log_px(
    x: torch.Tensor,
    encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    log_px_given_z: LogLikelihoodFn,
    num_samples: int = 1000,
    max_decode: int = 4096,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Importance-sampled log p(x) per sample: log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x).

    The K samples are decoded in chunks of at most `max_decode` (samples x images) to bound memory; the
    log-weights are combined with a log-sum-exp (Burda et al. 2016). Returns a float64 tensor [B].
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if max_decode < 1:
        raise ValueError(f"max_decode must be >= 1, got {max_decode}")
    batch = x.shape[0]
    mu, logvar = encode(x)
    mu, logvar = mu.reshape(batch, -1), logvar.reshape(batch, -1)
    std = torch.exp(0.5 * logvar)
    chunk = max(1, min(num_samples, max_decode // max(batch, 1)))
    log_w = []
    for start in range(0, num_samples, chunk):
        k = min(chunk, num_samples - start)
        eps = randn((k, *mu.shape), mu.device, mu.dtype, generator)
        z = mu.unsqueeze(0) + std.unsqueeze(0) * eps  # [k, B, D]
        z_flat = z.reshape(k * batch, -1)
        x_rep = x.unsqueeze(0).expand(k, *x.shape).reshape(k * batch, *x.shape[1:])
        log_px_z = log_px_given_z(x_rep, z_flat).reshape(k, batch).double()
        log_pz = log_standard_normal(z).double()
        log_qz = log_normal_diag(z, mu.unsqueeze(0), logvar.unsqueeze(0)).double()
        log_w.append(log_px_z + log_pz - log_qz)
    log_w_all = torch.cat(log_w, 0)
    return torch.logsumexp(log_w_all, 0) - math.log(num_samples)


def bits_per_dim(nll_nats: float, num_dims: int, num_levels: int | None = None) -> float:
    """Convert an NLL in nats per example to bits per dimension.

    For a continuous density on data in [0, 1] quantized to `num_levels` values (e.g. 256 for a Gaussian
    decoder), add D log(num_levels) so the figure is that of the discretized data (Theis et al. 2016);
    for a Bernoulli decoder pass None.
    """
    if num_dims < 1:
        raise ValueError(f"num_dims must be >= 1, got {num_dims}")
    correction = num_dims * math.log(num_levels) if num_levels else 0.0
    return (nll_nats + correction) / (num_dims * math.log(2.0))


@torch.no_grad()
def estimate_nll(
    model: nn.Module,
    images: Iterable[torch.Tensor],
    num_samples: int = 1000,
    max_decode: int = 4096,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Mean importance-sampled NLL of a model over batches of images, in nats and bits/dim."""
    from tqdm.auto import tqdm

    log_px_given_z = model_log_px_given_z(model)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    total, count, dims = 0.0, 0, None
    for x in tqdm(images, desc=f"NLL (K={num_samples})", disable=not progress, leave=False):
        dims = int(np.prod(x.shape[1:]))
        log_px = importance_log_px(x, model.encode, log_px_given_z, num_samples, max_decode, generator)
        total += float(-log_px.sum())
        count += x.shape[0]
    if count == 0 or dims is None:
        raise ValueError("images must hold at least one batch")
    nll = total / count
    levels = 256 if getattr(model, "likelihood", None) == "gaussian" else None
    return {"nll": nll, "bits_per_dim": bits_per_dim(nll, dims, levels), "nll_samples": num_samples, "n": count}


# ---------------------------------------------------------------------------------------------- active units
def active_units(means: torch.Tensor | np.ndarray, threshold: float = 0.01) -> tuple[int, np.ndarray]:
    """Count latent units u with Cov_x(E_q[z_u | x]) > threshold (Burda et al. 2016).

    `means` is [N, D], the posterior means of N examples. Returns (count, per-unit variances).
    """
    m = np.asarray(means.detach().cpu().numpy() if isinstance(means, torch.Tensor) else means, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] < 2:
        raise ValueError(f"means must be [N, D] with N >= 2, got shape {m.shape}")
    non_negative("threshold", threshold)
    variances = m.var(axis=0)
    return int((variances > threshold).sum()), variances


# ------------------------------------------------------------------------------------------ downstream probe
def downstream_accuracy(
    train_z: np.ndarray | torch.Tensor,
    train_y: np.ndarray | torch.Tensor,
    test_z: np.ndarray | torch.Tensor,
    test_y: np.ndarray | torch.Tensor,
    classifier: str = "linear",
    hidden: int = 100,
    max_iter: int = 200,
    seed: int = 0,
) -> float:
    """Fit a probe on training latents, return its accuracy on test latents.

    classifier="linear": multinomial logistic regression; "mlp": one hidden layer of `hidden` logistic
    units (the paper's probe for Fashion-MNIST, 100, and CIFAR-10, 256). Latents are standardized with
    statistics of the training set.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    arrays = [
        np.asarray(a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a)
        for a in (train_z, train_y, test_z, test_y)
    ]
    tz, ty, vz, vy = arrays
    if tz.ndim != 2 or vz.ndim != 2 or tz.shape[1] != vz.shape[1]:
        raise ValueError(f"train_z and test_z must be [N, D] with the same D, got {tz.shape} and {vz.shape}")
    if len(ty) != len(tz) or len(vy) != len(vz):
        raise ValueError("labels must have one entry per latent vector")
    if classifier == "linear":
        clf = LogisticRegression(max_iter=max_iter, random_state=seed)
    elif classifier == "mlp":
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1 for the mlp probe, got {hidden}")
        clf = MLPClassifier(hidden_layer_sizes=(hidden,), activation="logistic", max_iter=max_iter, random_state=seed)
    else:
        raise ValueError(f"classifier must be 'linear' or 'mlp', got {classifier!r}")
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    model = make_pipeline(StandardScaler(), clf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(tz.astype(np.float64), ty)
    return float((model.predict(vz.astype(np.float64)) == vy).mean())


def classifier_for(dataset: str) -> tuple[str, int]:
    """The paper's probe for a dataset: ("linear", 0) or ("mlp", hidden units)."""
    key = dataset.lower()
    if key not in DOWNSTREAM_CLASSIFIERS:
        raise ValueError(f"dataset {dataset!r} has no downstream probe; known: {sorted(DOWNSTREAM_CLASSIFIERS)}")
    return DOWNSTREAM_CLASSIFIERS[key]


# ------------------------------------------------------------------------------------------------------- FID
def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2): |mu1-mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    tr((S1 S2)^(1/2)) is the sum of square roots of the eigenvalues of S1 S2 (real and >= 0 for PSD
    S1, S2; tiny negative or imaginary parts from round-off are dropped), computed in float64.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    eig = np.linalg.eigvals(s1 @ s2)
    tr_covmean = np.sqrt(np.clip(eig.real, 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


class FeatureStats:
    """Running mean and covariance of feature vectors, accumulated in float64."""

    def __init__(self) -> None:
        self.n = 0
        self.sum: np.ndarray | None = None
        self.outer: np.ndarray | None = None

    def update(self, features: torch.Tensor | np.ndarray) -> None:
        f = np.asarray(features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else features, np.float64)
        f = f.reshape(f.shape[0], -1)
        if self.sum is None:
            self.sum, self.outer = np.zeros(f.shape[1]), np.zeros((f.shape[1], f.shape[1]))
        self.sum += f.sum(0)
        self.outer += f.T @ f
        self.n += f.shape[0]

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2 or self.sum is None or self.outer is None:
            raise ValueError("need at least 2 feature vectors for a covariance")
        mean = self.sum / self.n
        cov = (self.outer - self.n * np.outer(mean, mean)) / (self.n - 1)
        return mean, cov


class FrechetDistance:
    """FID-style metric with any feature extractor: update(images, real=...) then compute().

    With an Inception-v3 extractor this is FID (generation) or rFID (reconstructions vs. originals).
    """

    def __init__(self, feature_extractor: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.feature_extractor = feature_extractor
        self.real, self.fake = FeatureStats(), FeatureStats()

    @torch.no_grad()
    def update(self, images: torch.Tensor, real: bool) -> None:
        (self.real if real else self.fake).update(self.feature_extractor(images))

    def compute(self) -> float:
        return frechet_distance(*self.real.mean_cov(), *self.fake.mean_cov())


def to_inception_input(images: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] in [0, 1] -> uint8 [B, 3, H, W] (grey images repeated), the input torch-fidelity expects."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [B, 1 or 3, H, W], got shape {tuple(images.shape)}")
    x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def inception_extractor(weights_path: str | Path | None) -> tuple[Callable[[torch.Tensor], torch.Tensor] | None, str]:
    """Build the FID Inception-v3 (2048-d pool features) from LOCAL weights, never downloading.

    Returns (extractor, "") or (None, reason) saying why FID is skipped.
    """
    if weights_path is None:
        return None, "FID skipped: no Inception weights given (pass --fid-weights PATH to a local pt_inception file)"
    path = Path(weights_path)
    if not path.is_file():
        return None, f"FID skipped: Inception weights not found at {path}"
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        return None, "FID skipped: torch-fidelity is not installed (pip install torch-fidelity)"
    try:
        net = FeatureExtractorInceptionV3(
            name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path)
        ).eval()
    except Exception as exc:  # a wrong file: say so rather than crash the whole evaluation
        return None, f"FID skipped: could not load Inception weights from {path}: {exc}"

    @torch.no_grad()
    def extract(images: torch.Tensor) -> torch.Tensor:
        (features,) = net(to_inception_input(images))
        return features.reshape(features.shape[0], -1)

    return extract, ""
