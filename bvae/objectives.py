"""Training objectives for (B)VAEs: ELBO (BELBO for a BVAE), beta-VAE, beta-TCVAE and IWAE.

Every objective has the signature `fn(model, x, *, eps=None, **hyperparameters) -> ModelOutput` and reads
only `model.encode`, `model.decode_logits` and `model.likelihood`, so a BVAE and its VAE twin share them.
`eps` fixes the reparameterization noise (shape [N, D], or [k, N, D] for IWAE) for tests and evaluation.
`reg_weight` (default 1, the objective itself) multiplies the regularizer for KL warm-up during training:
the KL / (MI, TC, dimension-wise KL) terms, and for IWAE log p(z) - log q(z|x) inside each importance weight.
All per-sample quantities are summed over pixels / latent dimensions and averaged over the batch.

Likelihoods: "bernoulli" takes logits (pre-sigmoid decoder output; BCE-with-logits is stable);
"gaussian" takes the mean with a fixed standard deviation `sigma` (DEFAULT_GAUSSIAN_SIGMA = 0.1 for
images in [0, 1]). `log_likelihood` returns the full log density, constants included, so NLL estimates
by importance sampling are true NLLs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import non_negative, positive, positive_int

LOG_2PI = math.log(2 * math.pi)
DEFAULT_GAUSSIAN_SIGMA = 0.1
LIKELIHOODS = ("bernoulli", "gaussian")


@dataclass
class ModelOutput:
    """One output type for every model and objective (Pythae's convention)."""

    loss: torch.Tensor
    recon_loss: torch.Tensor
    reg_loss: torch.Tensor
    recon_x: torch.Tensor
    z: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# densities
# ----------------------------------------------------------------------------------------------------------
def log_normal_pdf(
    z: torch.Tensor, mu: torch.Tensor | float = 0.0, logvar: torch.Tensor | float = 0.0, reduce: bool = True
) -> torch.Tensor:
    """log N(z; mu, exp(logvar)), summed over the last dimension when `reduce` (elementwise otherwise)."""
    mu = torch.as_tensor(mu, dtype=z.dtype, device=z.device)
    logvar = torch.as_tensor(logvar, dtype=z.dtype, device=z.device)
    out = -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar))
    return out.sum(-1) if reduce else out


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Closed-form KL(N(mu, exp(logvar)) || N(0, I)) per sample, summed over the last dimension."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def log_likelihood(
    x: torch.Tensor, recon_or_logits: torch.Tensor, likelihood: str, *, sigma: float = DEFAULT_GAUSSIAN_SIGMA
) -> torch.Tensor:
    """log p(x | z) per sample, summed over all non-batch dimensions.

    bernoulli: `recon_or_logits` are logits; gaussian: it is the mean, with fixed std `sigma`.
    Broadcasts over leading sample dimensions ([k, N, ...] against x [N, ...]).
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    params = _full(recon_or_logits)
    event_dims = x.dim() - 1
    if event_dims < 1 or tuple(params.shape[-event_dims:]) != tuple(x.shape[1:]):
        raise ValueError(f"x {tuple(x.shape)} and recon_or_logits {tuple(params.shape)} do not match")
    x = x.to(params.dtype).expand_as(params)
    if likelihood == "bernoulli":
        per_pixel = -F.binary_cross_entropy_with_logits(params, x, reduction="none")
    else:
        positive("sigma", sigma)
        per_pixel = -0.5 * (((x - params) / sigma) ** 2 + LOG_2PI) - math.log(sigma)
    return per_pixel.flatten(per_pixel.dim() - event_dims).sum(-1)


def _model_log_likelihood(model: nn.Module, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    sigma = getattr(getattr(model, "config", None), "gaussian_sigma", DEFAULT_GAUSSIAN_SIGMA)
    return log_likelihood(x, params, model.likelihood, sigma=sigma)


def _output_activation(model: nn.Module, params: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(params) if model.likelihood == "bernoulli" else params


def randn(
    shape: tuple[int, ...], device: torch.device, dtype: torch.dtype, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Standard normal noise on `device`, drawn on the generator's own device when one is given (a seeded CPU
    generator then gives the same numbers for a CPU and a CUDA model)."""
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def _sample(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
    """Reparameterized z = mu + exp(logvar / 2) * eps."""
    if eps is None:
        eps = torch.randn(shape, dtype=mu.dtype, device=mu.device)
    elif tuple(eps.shape) != tuple(shape):
        raise ValueError(f"eps must have shape {tuple(shape)}, got {tuple(eps.shape)}")
    return mu + torch.exp(0.5 * logvar) * eps.to(mu.dtype)


def _check_reg_weight(reg_weight: float) -> float:
    """A KL warm-up weight must be a finite number >= 0 (0 = reconstruction only, 1 = the objective)."""
    return non_negative("reg_weight", reg_weight)


def _full(t: torch.Tensor) -> torch.Tensor:
    """Half precision (autocast) to float32; float32/float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _encode(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu, logvar = model.encode(x)
    return _full(mu), _full(logvar)


# ----------------------------------------------------------------------------------------------------------
# objectives
# ----------------------------------------------------------------------------------------------------------
def beta_vae(
    model: nn.Module,
    x: torch.Tensor,
    *,
    eps: torch.Tensor | None = None,
    beta: float = 1.0,
    reg_weight: float = 1.0,
) -> ModelOutput:
    """beta-VAE: -E_q[log p(x|z)] + beta * KL(q(z|x) || p(z)), closed-form KL, one reparameterized sample."""
    beta = non_negative("beta_vae: beta", beta)
    reg_weight = _check_reg_weight(reg_weight)
    mu, logvar = _encode(model, x)
    z = _sample(mu, logvar, eps, tuple(mu.shape))
    params = model.decode_logits(z)
    log_px = _model_log_likelihood(model, x, params)
    kl = gaussian_kl(mu, logvar)
    recon_loss = -log_px.mean()
    reg_loss = kl.mean()
    loss = recon_loss + reg_weight * beta * reg_loss
    metrics = {"elbo": (log_px - kl).mean().detach(), "kl": reg_loss.detach()}
    return ModelOutput(loss, recon_loss, reg_loss, _output_activation(model, params), z, mu, logvar, metrics)


def vae(model: nn.Module, x: torch.Tensor, *, eps: torch.Tensor | None = None, reg_weight: float = 1.0) -> ModelOutput:
    """The (B)ELBO: beta-VAE with beta = 1. The loss is the negative ELBO per sample."""
    return beta_vae(model, x, eps=eps, beta=1.0, reg_weight=reg_weight)


def tc_decomposition(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int
) -> dict[str, torch.Tensor]:
    """Per-sample MI, TC and dimension-wise KL by minibatch-weighted sampling (Chen et al., 2018).

    log q(z_i) ~= logsumexp_j log q(z_i | x_j) - log(N * M), and per dimension likewise, with N the batch
    size and M the dataset size. mi + tc + dwkl == log q(z|x) - log p(z) exactly, sample by sample.
    """
    n = z.shape[0]
    log_qz_x = log_normal_pdf(z, mu, logvar)
    log_pz = log_normal_pdf(z)
    mat = log_normal_pdf(z.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0), reduce=False)  # [N, N, D]
    log_nm = math.log(n * dataset_size)
    log_qz = torch.logsumexp(mat.sum(-1), dim=1) - log_nm
    log_prod_qzd = (torch.logsumexp(mat, dim=1) - log_nm).sum(-1)
    return {
        "mi": log_qz_x - log_qz,
        "tc": log_qz - log_prod_qzd,
        "dwkl": log_prod_qzd - log_pz,
        "log_qz_x": log_qz_x,
        "log_pz": log_pz,
    }


def beta_tcvae(
    model: nn.Module,
    x: torch.Tensor,
    *,
    eps: torch.Tensor | None = None,
    dataset_size: int | None = None,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
    reg_weight: float = 1.0,
) -> ModelOutput:
    """beta-TCVAE: recon + alpha * MI + beta * TC + gamma * dimension-wise KL (minibatch-weighted sampling).

    `dataset_size` (the number of training samples) is required: the estimator depends on it, and using
    the batch size instead would silently change the objective.
    """
    if dataset_size is None:
        raise ValueError("beta_tcvae: dataset_size is required (the size of the training set), got None")
    if isinstance(dataset_size, bool) or not isinstance(dataset_size, int) or dataset_size < x.shape[0]:
        raise ValueError(
            f"beta_tcvae: dataset_size must be an int >= the batch size {x.shape[0]}, got {dataset_size!r}"
        )
    alpha, beta, gamma = (
        non_negative(f"beta_tcvae: {n}", v) for n, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma))
    )
    reg_weight = _check_reg_weight(reg_weight)
    mu, logvar = _encode(model, x)
    z = _sample(mu, logvar, eps, tuple(mu.shape))
    params = model.decode_logits(z)
    log_px = _model_log_likelihood(model, x, params)
    terms = tc_decomposition(z, mu, logvar, dataset_size)
    mi, tc, dwkl = terms["mi"].mean(), terms["tc"].mean(), terms["dwkl"].mean()
    recon_loss = -log_px.mean()
    reg_loss = alpha * mi + beta * tc + gamma * dwkl
    kl = gaussian_kl(mu, logvar)
    metrics = {
        "mi": mi.detach(),
        "tc": tc.detach(),
        "dwkl": dwkl.detach(),
        "kl": kl.mean().detach(),
        "elbo": (log_px - kl).mean().detach(),
    }
    return ModelOutput(
        recon_loss + reg_weight * reg_loss,
        recon_loss,
        reg_loss,
        _output_activation(model, params),
        z,
        mu,
        logvar,
        metrics,
    )


def iwae(
    model: nn.Module, x: torch.Tensor, *, eps: torch.Tensor | None = None, k: int = 5, reg_weight: float = 1.0
) -> ModelOutput:
    """IWAE: loss = -(logsumexp_k log w_k - log k), log w = log p(x|z) + log p(z) - log q(z|x).

    The loss IS the negative k-sample bound (its gradient is the IWAE gradient); metrics["iwae_bound"]
    reports it. recon_loss and reg_loss are the sample-averaged -log p(x|z) and log q - log p (the
    single-sample ELBO pieces), so for k > 1 they do not sum to the loss.
    """
    positive_int("iwae: k", k)
    reg_weight = _check_reg_weight(reg_weight)
    mu, logvar = _encode(model, x)
    n, d = mu.shape
    z = _sample(mu.unsqueeze(0), logvar.unsqueeze(0), eps, (k, n, d))  # [k, N, D]
    params = model.decode_logits(z.reshape(k * n, d))
    params = params.reshape(k, n, *params.shape[1:])
    log_px = _model_log_likelihood(model, x, params)  # [k, N]
    log_pz = log_normal_pdf(z)
    log_qz_x = log_normal_pdf(z, mu.unsqueeze(0), logvar.unsqueeze(0))
    log_w = log_px + log_pz - log_qz_x
    bound = torch.logsumexp(log_w, dim=0) - math.log(k)
    if reg_weight != 1.0:  # KL warm-up: tempered weights log p(x|z) + w (log p(z) - log q(z|x))
        log_w_train = log_px + reg_weight * (log_pz - log_qz_x)
        loss = -(torch.logsumexp(log_w_train, dim=0) - math.log(k)).mean()
    else:
        loss = -bound.mean()
    metrics = {
        "iwae_bound": bound.mean().detach(),
        "elbo": log_w.mean().detach(),
        "kl": gaussian_kl(mu, logvar).mean().detach(),
    }
    return ModelOutput(
        loss,
        -log_px.mean(),
        (log_qz_x - log_pz).mean(),
        _output_activation(model, params[0]),
        z[0],
        mu,
        logvar,
        metrics,
    )


OBJECTIVES: dict[str, Callable[..., ModelOutput]] = {
    "vae": vae,
    "beta-vae": beta_vae,
    "beta-tcvae": beta_tcvae,
    "iwae": iwae,
}


def get_objective(variant: str) -> Callable[..., ModelOutput]:
    """The objective function registered under `variant`."""
    if variant not in OBJECTIVES:
        raise ValueError(f"variant must be one of {tuple(OBJECTIVES)}, got {variant!r}")
    return OBJECTIVES[variant]
