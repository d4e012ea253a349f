"""G-NoVa, the generalized non-vanishing logistic activation, and how activations are named.

    a(u) = alpha * u + beta * sigmoid(gamma * u)
    a'(u) = alpha + beta * gamma * s * (1 - s),   s = sigmoid(gamma * u)

This parameterization is our reading of Kosko & Adigun's G-NoVa (the equation did not survive in the
sources we can reach). NoVa is beta = gamma = 1. Sigmoid (0, 1, 1) and identity (1, 0, 1) are members of
the same family, so one kernel serves all three.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


@dataclass(frozen=True)
class GNoVa:
    """The activation a(u) = alpha * u + beta * sigmoid(gamma * u); defaults are G-NoVa's."""

    alpha: float = 0.1
    beta: float = 1.0
    gamma: float = 1.0

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"GNoVa: {name} must be a finite number, got {value!r}")
            if abs(value) > _FLOAT32_MAX:  # the GPU kernels compute in float32: such a value would be inf there
                raise ValueError(f"GNoVa: {name} must be at most {_FLOAT32_MAX:.4g} in magnitude, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.alpha < 0 or self.beta < 0:
            raise ValueError(f"GNoVa: alpha and beta must be >= 0, got alpha={self.alpha}, beta={self.beta}")
        if self.gamma <= 0:
            raise ValueError(f"GNoVa: gamma must be > 0, got {self.gamma}")
        if self.alpha == 0 and self.beta == 0:
            raise ValueError("GNoVa: alpha and beta cannot both be 0 (the activation would be constant)")
        # (alpha, beta, gamma), read on every op call. A plain attribute, not a dataclass field: code that rebuilds
        # a GNoVa from its fields (torch.fx's code generation, dataclasses.replace) passes only the three.
        object.__setattr__(self, "params", (self.alpha, self.beta, self.gamma))

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        return gnova_reference(u, *self.params)


SIGMOID = GNoVa(alpha=0.0, beta=1.0, gamma=1.0)
IDENTITY = GNoVa(alpha=1.0, beta=0.0, gamma=1.0)
DEFAULT_GNOVA = GNoVa()

ActivationLike = str | GNoVa | None


def activation_params(activation: ActivationLike) -> tuple[float, float, float]:
    """(alpha, beta, gamma) of an activation; the fast path of every op call (a GNoVa or a common name)."""
    if isinstance(activation, GNoVa):
        return activation.params
    try:
        return _NAMED_PARAMS[activation]
    except (KeyError, TypeError):  # other spellings, or not a name at all: resolve_activation explains
        return resolve_activation(activation).params


def resolve_activation(activation: ActivationLike) -> GNoVa:
    """Maps "gnova" / "nova" / "sigmoid" / "identity" / None / a GNoVa to a GNoVa."""
    if isinstance(activation, GNoVa):
        return activation
    if activation is None:
        return IDENTITY
    if isinstance(activation, str):
        named = {
            "gnova": DEFAULT_GNOVA,
            "nova": GNoVa(0.1, 1.0, 1.0),
            "sigmoid": SIGMOID,
            "identity": IDENTITY,
            "linear": IDENTITY,
            "none": IDENTITY,
        }
        key = activation.lower()
        if key in named:
            return named[key]
    raise ValueError(
        f"activation must be 'gnova', 'sigmoid', 'identity', None or a bvae_kernels.GNoVa, got {activation!r}"
    )


def gnova_reference(u: torch.Tensor, alpha: float = 0.1, beta: float = 1.0, gamma: float = 1.0) -> torch.Tensor:
    """The eager formula (torch.sigmoid is stable for any |u|); the oracle for every kernel."""
    out = beta * torch.sigmoid(gamma * u) if beta != 0 else torch.zeros_like(u)
    return out + alpha * u if alpha != 0 else out


def gnova_grad_reference(u: torch.Tensor, alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """a'(u), by the closed form."""
    s = torch.sigmoid(gamma * u)
    return alpha + beta * gamma * s * (1 - s)


def gnova_second_grad_reference(u: torch.Tensor, alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """a''(u) = beta * gamma^2 * s (1 - s) (1 - 2 s); alpha drops out."""
    s = torch.sigmoid(gamma * u)
    return beta * gamma * gamma * s * (1 - s) * (1 - 2 * s)


_NAMED_PARAMS: dict = {
    None: IDENTITY.params,
    "gnova": DEFAULT_GNOVA.params,
    "sigmoid": SIGMOID.params,
    "identity": IDENTITY.params,
}
