"""BVAE and its unidirectional twin VAE, with one architecture per dataset.

BVAE: ONE bidirectional network. encode(x) runs the body forward to a hidden vector h and two heads give
mu (a BiLinear with identity activation) and logvar (a plain linear layer, used only forward: its output
has no place in the reverse direction). decode(z) enters the network through the mean head's weight in
reverse (z W_mu + b_r, G-NoVa: the activation that produced h in the forward direction) and runs the body in
reverse through the same weights, ending in identity logits (Bernoulli: decode applies the sigmoid;
Gaussian: the identity mean). Every reverse layer ends in the activation that produced its output in the
forward direction (the mirror rule in bvae/blocks.py).

Reverse scale (`reverse_scale=True`, the default): every layer used in reverse carries one learned scalar s
and decodes with a(e^s W^T z + b_r). Tying forces both directions of a layer to one gain, but they want
different gains: in the demo's trained VAE twin the decoder entry has 7.6x the norm of the mean head and
the decoder FC 2.7x the encoder FC (the KL term keeps mu small). Without s the tied layers compromise
(demo, mean of seeds 0-2: -0.86 dB against the twin; with s and bvae.train's recipe -0.33 dB). s costs one
parameter per layer and stays inside the fused reverse op (its `log_scale`, applied in the epilogue). The VAE's
decoder carries the same scalars (redundant there: they fold into its own weights), so both models train
the same parameterization.

VAE: the unidirectional twin. The encoder is the same body and heads used only forward; the decoder is a
second body of the same block types plus a BiLinear entry layer, used only in reverse, so both models run
the same kernels and differ only in weight sharing. Unused directions carry no parameters: the encoder's
layers have no reverse biases, the decoder's no forward biases. The BVAE has about half the parameters.

Architectures (width w, hidden size h):
  mnist / fashion-mnist 28x28x1 (residual): conv4s2(1->w) 14x14, [res(w)], conv4s2(w->2w) 7x7, res(2w), fc(98w->h)
    (res_blocks=1, the default, keeps only the 7x7 residual block; res_blocks=2 adds the 14x14 one)
  cifar10 32x32x3 (6 conv + 2 FC): [conv3(->c), conv4s2(c->c)] for c = w, 2w, 4w (32->16->8->4), fc(64w->h), head
  celeba64 64x64x3 (9 conv + 2 FC): [conv3, conv3, conv4s2] for c = w, 2w, 4w (64->32->16->8), fc(256w->h), head
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bvae_kernels import bi_linear
from bvae_kernels.activation import IDENTITY, GNoVa

from ._checks import non_negative, positive, positive_int
from .blocks import BiFlatten, BiResBlock, BiSequential, layer_output_shape, reverse_layer
from .layers import BiConv2d, BiLinear, apply_activation
from .objectives import DEFAULT_GAUSSIAN_SIGMA, ModelOutput, get_objective, randn

torch.fx.wrap("bi_linear")  # the log-var head's fused call: one graph node under torch.fx (see layers.py)

# name -> (image shape, likelihood, architecture, default width, default hidden)
DATASETS: dict[str, tuple[tuple[int, int, int], str, str, int, int]] = {
    "mnist": ((1, 28, 28), "bernoulli", "residual", 16, 128),
    "fashion-mnist": ((1, 28, 28), "bernoulli", "residual", 16, 128),
    "cifar10": ((3, 32, 32), "gaussian", "conv6", 32, 256),
    "celeba64": ((3, 64, 64), "gaussian", "conv9", 32, 256),
}
VARIANTS = ("vae", "beta-vae", "beta-tcvae", "iwae")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model (JSON-able): architecture, activation and objective settings."""

    kind: str = "bvae"
    dataset: str = "fashion-mnist"
    latent_dim: int = 16
    variant: str = "vae"
    width: int | None = None
    hidden: int | None = None
    backend: str | None = None
    gnova_alpha: float = 0.1
    gnova_beta: float = 1.0
    gnova_gamma: float = 1.0
    gaussian_sigma: float = DEFAULT_GAUSSIAN_SIGMA
    beta: float = 1.0
    alpha: float = 1.0
    gamma: float = 1.0
    k: int = 5
    dataset_size: int | None = None
    res_blocks: int = 1
    reverse_scale: bool = True

    def __post_init__(self) -> None:
        if self.kind not in MODELS:
            raise ValueError(f"kind must be one of {tuple(MODELS)}, got {self.kind!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {tuple(DATASETS)}, got {self.dataset!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        _, _, _, width, hidden = DATASETS[self.dataset]
        self.width = width if self.width is None else self.width
        self.hidden = hidden if self.hidden is None else self.hidden
        for name in ("latent_dim", "width", "hidden", "k"):
            positive_int(name, getattr(self, name))
        size = self.dataset_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"dataset_size must be a positive int or None, got {size!r}")
        for name in ("beta", "alpha", "gamma"):  # the objectives' weights
            non_negative(name, getattr(self, name))
        positive("gaussian_sigma", self.gaussian_sigma)
        if not isinstance(self.reverse_scale, bool):
            raise ValueError(f"reverse_scale must be a bool, got {self.reverse_scale!r}")
        if self.res_blocks not in (0, 1, 2):
            raise ValueError(f"res_blocks must be 0, 1 or 2 (residual architecture), got {self.res_blocks!r}")
        GNoVa(self.gnova_alpha, self.gnova_beta, self.gnova_gamma)  # validates

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; valid keys: {sorted(names)}")
        return cls(**data)

    def objective_kwargs(self) -> dict[str, Any]:
        """The hyperparameters the variant's objective takes."""
        if self.variant == "beta-vae":
            return {"beta": self.beta}
        if self.variant == "beta-tcvae":
            return {"dataset_size": self.dataset_size, "alpha": self.alpha, "beta": self.beta, "gamma": self.gamma}
        if self.variant == "iwae":
            return {"k": self.k}
        return {}


def _body_layers(config: ModelConfig, act: GNoVa) -> list[nn.Module]:
    """The (bidirectional) body of one architecture, from the image to the hidden vector."""
    (channels, _, _), _, arch, w, hidden = DATASETS[config.dataset]
    w, hidden, be, rs = config.width, config.hidden, config.backend, config.reverse_scale
    conv = lambda cin, cout, k, s, p: BiConv2d(
        cin, cout, k, stride=s, padding=p, activation=act, backend=be, reverse_scale=rs
    )
    if arch == "residual":
        layers: list[nn.Module] = [conv(channels, w, 4, 2, 1)]
        if config.res_blocks >= 2:
            layers.append(BiResBlock(w, activation=act, backend=be, reverse_scale=rs))
        layers.append(conv(w, 2 * w, 4, 2, 1))
        if config.res_blocks >= 1:
            layers.append(BiResBlock(2 * w, activation=act, backend=be, reverse_scale=rs))
    elif arch == "conv6":
        layers, cin = [], channels
        for c in (w, 2 * w, 4 * w):
            layers += [conv(cin, c, 3, 1, 1), conv(c, c, 4, 2, 1)]
            cin = c
    elif arch == "conv9":
        layers, cin = [], channels
        for c in (w, 2 * w, 4 * w):
            layers += [conv(cin, c, 3, 1, 1), conv(c, c, 3, 1, 1), conv(c, c, 4, 2, 1)]
            cin = c
    else:  # pragma: no cover - DATASETS is fixed
        raise ValueError(f"unknown architecture {arch!r}")
    shape = DATASETS[config.dataset][0]
    for layer in layers:
        shape = layer_output_shape(layer, shape)
    fc = BiLinear(shape[0] * shape[1] * shape[2], hidden, activation=act, backend=be, reverse_scale=rs)
    layers += [BiFlatten(shape), fc]
    return layers


def _strip_unused(module: nn.Module, direction: str) -> None:
    """Removes the parameters of the unused direction ("forward" or "reverse") from every bidirectional layer:
    the forward bias, or the reverse bias and reverse scale."""
    names = ("bias",) if direction == "forward" else ("reverse_bias", "reverse_log_scale")
    for layer in module.modules():
        if isinstance(layer, (BiConv2d, BiLinear)):
            for name in names:
                setattr(layer, name, None)


def _fans(layer: nn.Module) -> tuple[int, int]:
    """(forward fan-in, reverse fan-in) of a BiConv2d / BiLinear; a strided conv's reverse sees k*k/s^2 taps."""
    if isinstance(layer, BiLinear):
        return layer.in_features, layer.out_features
    kh, kw = layer.kernel_size
    sh, sw = layer.stride
    taps, groups = kh * kw, layer.groups
    return layer.in_channels // groups * taps, max(1, layer.out_channels // groups * taps // (sh * sw))


def init_weights(module: nn.Module, act: GNoVa, directions: str = "both", identity_layers: tuple = ()) -> None:
    """Variance-preserving init for G-NoVa networks: W ~ N(0, (g / a'(0))^2 / fan), biases 0.

    Sigmoid-like activations have slope a'(0) = alpha + beta * gamma / 4 (0.35 for G-NoVa's defaults), so
    PyTorch's default init shrinks the signal ~5x per layer and a 16-layer encode + decode path collapses to
    the mean image. fan is the forward fan-in, the reverse fan-in, or their geometric mean for layers used in
    `directions` "forward", "reverse" or "both". Layers in `identity_layers` (heads, the output layer) use
    gain 1.
    """
    slope = act.alpha + act.beta * act.gamma / 4
    for layer in module.modules():
        if not isinstance(layer, (BiConv2d, BiLinear)):
            continue
        fwd, rev = _fans(layer)
        fan = {"forward": fwd, "reverse": rev, "both": (fwd * rev) ** 0.5}[directions]
        gain = 1.0 if any(layer is t for t in identity_layers) else 1.0 / slope
        with torch.no_grad():
            layer.weight.normal_(0.0, gain / fan**0.5)
            for bias in (layer.bias, layer.reverse_bias):
                if bias is not None:
                    bias.zero_()


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class _BaseVAE(nn.Module):
    """What BVAE and VAE share: input checks, decode, forward through the variant's objective, summary."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.image_shape, self.likelihood, self.architecture, _, _ = DATASETS[config.dataset]
        self.latent_dim = config.latent_dim
        self.activation = GNoVa(config.gnova_alpha, config.gnova_beta, config.gnova_gamma)
        self._objective = get_objective(config.variant)

    # -- checks ------------------------------------------------------------------------------------------
    def _check_x(self, x: torch.Tensor) -> None:
        if isinstance(x, torch.fx.Proxy):  # torch.fx tracing: the graph's ops check their inputs when it runs
            return
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            want = ", ".join(map(str, self.image_shape))
            raise ValueError(f"x must have shape [N, {want}] for dataset {self.config.dataset!r}, got {shape}")

    def _check_z(self, z: torch.Tensor) -> None:
        if isinstance(z, torch.fx.Proxy):
            return
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != self.latent_dim:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must have shape [N, {self.latent_dim}], got {shape}")

    # -- the two directions ------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x): (mu, logvar), each [N, latent_dim]."""
        self._check_x(x)
        return self._encode(x)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder output before the output activation: logits (Bernoulli) or the mean (Gaussian)."""
        self._check_z(z)
        return self._decode_params(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """p(x|z)'s mean: sigmoid probabilities (Bernoulli) or the identity mean (Gaussian)."""
        params = self.decode_logits(z)
        return torch.sigmoid(params) if self.likelihood == "bernoulli" else params

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """decode(mu(x)): the deterministic reconstruction used for PSNR/SSIM."""
        return self.decode(self.encode(x)[0])

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images decoded from z ~ N(0, I)."""
        p = next(self.parameters())
        z = randn((n, self.latent_dim), p.device, p.dtype, generator)
        return self.decode(z)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None, reg_weight: float = 1.0) -> ModelOutput:
        """The variant's loss on a batch (see bvae.objectives); `reg_weight` < 1 is a KL warm-up step."""
        self._check_x(x)
        return self._objective(self, x, eps=eps, reg_weight=reg_weight, **self.config.objective_kwargs())

    # -- reporting ---------------------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        raise NotImplementedError

    def num_parameters(self) -> int:
        return _count(self)

    def summary(self) -> str:
        """Parameters per part and in total, as a small text table."""
        lines = [f"{type(self).__name__} ({self.config.dataset}, {self.architecture}, latent {self.latent_dim}):"]
        for part, count in self.parameter_counts().items():
            lines.append(f"  {part:<28s}{count:>12,d}")
        lines.append(f"  {'total':<28s}{self.num_parameters():>12,d}")
        return "\n".join(lines)


def _heads(
    body: BiSequential, mu_head: BiLinear, logvar_head: nn.Linear, x: torch.Tensor, backend: str | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, log var) of x: the body's last pre-activation goes to both heads, which read it through the body's
    output activation (the log-var head, an nn.Linear, through the same fused op on its own weights), so the
    encoder keeps one activation per layer for its backward (see BiConv2d.forward_pre)."""
    if not body.chains(x):  # the eager reference: the layers as an eager model runs them
        h = body(x)
        return mu_head(h), logvar_head(h)
    u, act = body.forward_pre(x)
    mu, _ = mu_head.forward_pre(u, act)  # the mean head ends in the identity
    in_act = None if act == IDENTITY else act
    logvar = bi_linear(u, logvar_head.weight, logvar_head.bias, activation=None, input_activation=in_act,
                          backend=backend)  # fmt: skip
    return mu, logvar


def _decode(entry: BiLinear, body: BiSequential, z: torch.Tensor, backend: str | None) -> torch.Tensor:
    """The decoder's output parameters (identity at the end): the entry layer's reverse, then the body's, passing
    pre-activations between them."""
    if not body.chains(z):
        return body.reverse(reverse_layer(entry, z, body.output_activation), activation=IDENTITY)
    h, act = entry.reverse_pre(z, activation=body.output_activation)
    u, last = body.reverse_pre(h, activation=IDENTITY, input_activation=act)
    return apply_activation(u, last, backend)


class BVAE(_BaseVAE):
    """Bidirectional VAE: one network, encode = forward pass, decode = reverse pass through the same weights."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        act, be = self.activation, config.backend
        self.body = BiSequential(*_body_layers(config, act), input_shape=self.image_shape, input_activation=IDENTITY)
        self.mu_head = BiLinear(
            config.hidden, config.latent_dim, activation=IDENTITY, backend=be, reverse_scale=config.reverse_scale
        )
        self.logvar_head = nn.Linear(config.hidden, config.latent_dim)
        init_weights(self.body, act, "both")
        init_weights(self.mu_head, act, "both", identity_layers=(self.mu_head,))

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _heads(self.body, self.mu_head, self.logvar_head, x, self.config.backend)

    def _decode_params(self, z: torch.Tensor) -> torch.Tensor:
        return _decode(self.mu_head, self.body, z, self.config.backend)

    def parameter_counts(self) -> dict[str, int]:
        return {
            "body (shared, both ways)": _count(self.body),
            "mean head (shared)": _count(self.mu_head),
            "log-var head (forward)": _count(self.logvar_head),
        }


class VAE(_BaseVAE):
    """The unidirectional twin: the same blocks, a forward-only encoder and a separate reverse-only decoder."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        act, be = self.activation, config.backend
        self.encoder = BiSequential(*_body_layers(config, act), input_shape=self.image_shape, input_activation=IDENTITY)
        self.mu_head = BiLinear(config.hidden, config.latent_dim, activation=IDENTITY, backend=be)
        self.logvar_head = nn.Linear(config.hidden, config.latent_dim)
        self.decoder = BiSequential(*_body_layers(config, act), input_shape=self.image_shape, input_activation=IDENTITY)
        self.decoder_head = BiLinear(
            config.hidden, config.latent_dim, activation=IDENTITY, backend=be, reverse_scale=config.reverse_scale
        )
        _strip_unused(self.encoder, "reverse")
        _strip_unused(self.mu_head, "reverse")
        _strip_unused(self.decoder, "forward")
        _strip_unused(self.decoder_head, "forward")
        init_weights(self.encoder, act, "forward")
        init_weights(self.mu_head, act, "forward", identity_layers=(self.mu_head,))
        init_weights(self.decoder, act, "reverse")
        init_weights(self.decoder_head, act, "reverse")

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _heads(self.encoder, self.mu_head, self.logvar_head, x, self.config.backend)

    def _decode_params(self, z: torch.Tensor) -> torch.Tensor:
        return _decode(self.decoder_head, self.decoder, z, self.config.backend)

    def parameter_counts(self) -> dict[str, int]:
        return {
            "encoder body (forward)": _count(self.encoder),
            "encoder heads (forward)": _count(self.mu_head) + _count(self.logvar_head),
            "decoder body (reverse)": _count(self.decoder),
            "decoder entry (reverse)": _count(self.decoder_head),
        }


MODELS: dict[str, type[_BaseVAE]] = {"bvae": BVAE, "vae": VAE}


def build_model(
    kind: str = "bvae",
    dataset: str = "fashion-mnist",
    latent_dim: int = 16,
    variant: str = "vae",
    backend: str | None = None,
    **config: Any,
) -> nn.Module:
    """A BVAE ("bvae") or its VAE twin ("vae") for `dataset`, trained with `variant`'s objective.

    Extra keywords are ModelConfig fields (width, hidden, beta, alpha, gamma, k, dataset_size, ...).
    """
    if kind not in MODELS:
        raise ValueError(f"kind must be one of {tuple(MODELS)}, got {kind!r}")
    cfg = ModelConfig.from_dict(
        {"kind": kind, "dataset": dataset, "latent_dim": latent_dim, "variant": variant, "backend": backend, **config}
    )
    return MODELS[kind](cfg)
