"""`bvae eval`, `bvae sample`, `bvae compare`: the paper's evaluation of a trained BVAE or VAE checkpoint.

eval    CHECKPOINT -> eval.json (PSNR, SSIM, NLL, active units, probe accuracy, FID/rFID when local Inception
        weights exist) + PNG figures (reconstructions, interpolation, N(0,I) and GMM samples, t-SNE), and a table.
sample  CHECKPOINT -> a grid of samples from N(0, I) or a Gaussian mixture fitted to training latents.
compare RUN_DIR... -> one markdown table (model, parameters, NLL, AU, FID, PSNR, SSIM, rFID, accuracy).

From Python: evaluate(EvalConfig(checkpoint=...)) and write_samples(SampleConfig(checkpoint=..., out=...)); the
configs' defaults are the commands'. Checkpoints are read by bvae.checkpoint, the loader training resumes with,
and the figures are drawn by bvae.figures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from bvae import checkpoint, metrics
from bvae._checks import non_negative_arg, positive_int_arg, seed_arg
from bvae.figures import save_grid, save_tsne

ALL_METRICS = ("psnr", "ssim", "nll", "au", "acc", "fid")
DEFAULT_BATCH = 256


class EvalError(Exception):
    """A user-facing failure (bad checkpoint, wrong dataset, missing data): printed without a traceback."""


# ---------------------------------------------------------------------------------------------------- config
@dataclass(frozen=True, kw_only=True)
class CheckpointJob:
    """What `bvae eval` and `bvae sample` share: the checkpoint, its data and how to run it (the CLI's defaults)."""

    checkpoint: str | Path
    dataset: str | None = None  # expected dataset: a checkpoint trained on another one is refused
    data_dir: str | None = None
    device: str = "cpu"
    batch_size: int = DEFAULT_BATCH
    seed: int = 0
    gmm_components: int = 10
    train_limit: int | None = None  # None: the whole training split (GMM, probe)


@dataclass(frozen=True, kw_only=True)
class EvalConfig(CheckpointJob):
    """Which metrics and figures `evaluate` computes for one checkpoint, and where it writes them."""

    out: str | Path = "eval_out"
    metrics: tuple[str, ...] = ALL_METRICS
    limit: int | None = None  # None: the whole test split
    nll_samples: int = 1000
    nll_limit: int | None = None
    nll_batch_size: int = 16
    au_threshold: float = 0.01
    probe_iters: int = 200
    fid_weights: str | None = None
    tsne: int = 1000  # points in the t-SNE plot (0: no plot)
    figures: bool = True


@dataclass(frozen=True, kw_only=True)
class SampleConfig(CheckpointJob):
    """How many images `write_samples` decodes, from which sampler, and where it writes them."""

    out: str | Path
    n: int = 64
    sampler: str = "normal"
    interpolate: bool = False


# --------------------------------------------------------------------------------------------------- loading
def _open_checkpoint(path: str | Path, dataset: str | None = None, device: str = "cpu") -> tuple[nn.Module, dict]:
    """bvae.checkpoint.load_model's (model, meta), its failures as EvalErrors worded for `bvae eval` / `sample`."""
    path = Path(path)
    try:
        model, meta = checkpoint.load_model(path, map_location=device, dataset=dataset)
    except FileNotFoundError as exc:
        raise EvalError(f"checkpoint not found: {path}") from exc
    except checkpoint.DatasetMismatchError as exc:
        raise EvalError(str(exc)) from exc
    except (ValueError, RuntimeError, OSError) as exc:
        raise EvalError(f"cannot load checkpoint {path}: {exc}") from exc
    return model, dict(meta)


def load_split(
    dataset: str, split: str, data_dir: str | None, limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `limit` images ([N, C, H, W] in [0, 1]) and labels of a split; never downloads."""
    try:
        from bvae.data import load_dataset
    except ImportError as exc:
        raise EvalError(f"bvae.data is unavailable: {exc}") from exc
    try:
        ds = load_dataset(dataset, split, data_dir=data_dir, download=False)
    except (FileNotFoundError, OSError, RuntimeError, ValueError) as exc:
        where = f" under {data_dir}" if data_dir else ""
        raise EvalError(f"cannot load the {split} split of {dataset}{where}: {exc} (pass --data-dir)") from exc
    n = len(ds) if limit is None else min(limit, len(ds))
    if n == 0:
        raise EvalError(f"the {split} split of {dataset} is empty")
    if isinstance(getattr(ds, "images", None), torch.Tensor) and ds.images.dtype == torch.uint8:
        return ds.images[:n].float().div_(255.0), ds.labels[:n].long()  # ImageTensorDataset: no per-item loop
    images, labels = [], []
    for i in range(n):
        x, y = ds[i]
        images.append(torch.as_tensor(x, dtype=torch.float32))
        labels.append(int(y))
    return torch.stack(images), torch.tensor(labels)


def _batches(x: torch.Tensor, batch_size: int, device: str) -> Any:
    for i in range(0, x.shape[0], batch_size):
        yield x[i : i + batch_size].to(device)


@torch.no_grad()
def encode_all(model: nn.Module, images: torch.Tensor, batch_size: int, device: str, desc: str) -> torch.Tensor:
    """Posterior means E_q[z|x] of all images, [N, latent_dim], on the CPU."""
    from tqdm.auto import tqdm

    out = []
    for xb in tqdm(
        _batches(images, batch_size, device), total=math.ceil(len(images) / batch_size), desc=desc, leave=False
    ):
        mu, _ = model.encode(xb)
        out.append(mu.reshape(mu.shape[0], -1).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def decode_all(model: nn.Module, z: torch.Tensor, batch_size: int, device: str) -> torch.Tensor:
    """Decoded images (Bernoulli probabilities or Gaussian means) clamped to [0, 1], on the CPU."""
    out = [model.decode(zb).float().clamp(0, 1).cpu() for zb in _batches(z, batch_size, device)]
    images = torch.cat(out)
    return images.reshape(images.shape[0], *model.image_shape) if hasattr(model, "image_shape") else images


def _check_gmm_components(components: int, train_images: int) -> None:
    """Before any encoding: a mixture needs at least as many training latents as components."""
    if components > train_images:
        raise EvalError(
            f"--gmm-components {components} needs at least as many training images, got {train_images} "
            "(raise --train-limit or lower --gmm-components)"
        )


def fit_gmm(train_mu: torch.Tensor, components: int = 10, seed: int = 0) -> Any:
    """A Gaussian mixture (full covariances) fitted to training latent means: the paper's GMM sampler."""
    from sklearn.mixture import GaussianMixture

    if components < 1:
        raise ValueError(f"components must be >= 1, got {components}")
    return GaussianMixture(n_components=components, covariance_type="full", random_state=seed).fit(
        train_mu.double().numpy()
    )


def sample_latents(n: int, latent_dim: int, sampler: str = "normal", gmm: Any = None, seed: int = 0) -> torch.Tensor:
    """n latent codes from N(0, I) or from a fitted mixture."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if sampler == "normal":
        return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))
    if sampler == "gmm":
        if gmm is None:
            raise ValueError("sampler='gmm' needs a fitted mixture (gmm=...)")
        gmm.random_state = seed
        z, _ = gmm.sample(n)
        return torch.from_numpy(z[np.random.default_rng(seed).permutation(n)]).float()
    raise ValueError(f"sampler must be 'normal' or 'gmm', got {sampler!r}")


def interpolate_latents(z0: torch.Tensor, z1: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """Convex combinations (1 - t) z0 + t z1 for t = 0, 1/(steps-1), ..., 1: [steps, D]."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    t = torch.linspace(0, 1, steps).unsqueeze(1)
    return (1 - t) * z0.reshape(1, -1) + t * z1.reshape(1, -1)


# ------------------------------------------------------------------------------------------------ evaluation
def _model_label(meta: dict) -> str:
    return f"{str(meta.get('kind', '?')).upper()} ({meta.get('variant', '?')})"


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("sklearn",):  # the GMM sampler and the downstream probes (PSNR / SSIM are bvae.metrics own)
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            pass
    return out


def _fid_on(extract: Any, real: torch.Tensor, fake: torch.Tensor, batch_size: int, desc: str) -> float:
    from tqdm.auto import tqdm

    fd = metrics.FrechetDistance(extract)
    for i in tqdm(range(0, len(real), batch_size), desc=desc, leave=False):
        fd.update(real[i : i + batch_size], real=True)
        fd.update(fake[i : i + batch_size], real=False)
    return fd.compute()


def evaluate(config: EvalConfig) -> dict[str, Any]:
    """Runs the configured metrics and figures for one checkpoint; writes and returns the eval.json payload."""
    wanted = [m.strip().lower() for m in config.metrics if m.strip()]
    unknown = sorted(set(wanted) - set(ALL_METRICS))
    if unknown:
        raise EvalError(f"--metrics: unknown {unknown}; choose from {','.join(ALL_METRICS)}")
    for name in ("limit", "train_limit", "nll_limit", "nll_samples", "batch_size"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise EvalError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    torch.manual_seed(config.seed)
    device = config.device
    model, meta = _open_checkpoint(config.checkpoint, config.dataset, device)
    dataset = meta["dataset"]
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    test_x, test_y = load_split(dataset, "test", config.data_dir, config.limit)
    need_train = "acc" in wanted or config.figures
    train_x = train_y = None
    if need_train:
        train_x, train_y = load_split(dataset, "train", config.data_dir, config.train_limit)
        if config.figures:
            _check_gmm_components(config.gmm_components, len(train_x))

    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    bs = config.batch_size
    test_mu = encode_all(model, test_x, bs, device, "encode test")
    recon = decode_all(model, test_mu, bs, device)

    if "psnr" in wanted:
        results["psnr"] = float(metrics.psnr_per_image(recon, test_x).mean())
    if "ssim" in wanted:
        results["ssim"] = float(metrics.ssim_per_image(recon, test_x).mean())
    if "au" in wanted:
        count, _ = metrics.active_units(test_mu, config.au_threshold)
        results["active_units"] = count
        results["latent_dim"] = int(test_mu.shape[1])
    if "nll" in wanted:
        nll_x = test_x[: config.nll_limit] if config.nll_limit else test_x
        nll = metrics.estimate_nll(
            model, _batches(nll_x, config.nll_batch_size, device), config.nll_samples, seed=config.seed
        )
        results["nll"] = nll["nll"]
        results["bits_per_dim"] = nll["bits_per_dim"]
        results["nll_samples"] = nll["nll_samples"]
        results["nll_n"] = nll["n"]
    train_mu = None
    if train_x is not None:
        train_mu = encode_all(model, train_x, bs, device, "encode train")
    if "acc" in wanted:
        kind, hidden = metrics.classifier_for(dataset)
        results["accuracy"] = metrics.downstream_accuracy(
            train_mu, train_y, test_mu, test_y, kind, hidden, max_iter=config.probe_iters, seed=config.seed
        )
        results["probe"] = f"{kind}" + (f"-{hidden}" if kind == "mlp" else "")
    if "fid" in wanted:
        extract, reason = metrics.inception_extractor(config.fid_weights)
        if extract is None:
            print(reason, file=sys.stderr)
            skipped["fid"] = skipped["rfid"] = reason
        else:
            z = sample_latents(len(test_x), model.latent_dim, "normal", seed=config.seed)
            samples = decode_all(model, z, bs, device)
            results["fid"] = _fid_on(extract, test_x, samples, bs, "FID")
            results["rfid"] = _fid_on(extract, test_x, recon, bs, "rFID")

    figures = []
    if config.figures:
        figures = make_figures(model, meta, test_x, test_y, test_mu, recon, train_mu, out, config)

    payload = {
        "checkpoint": str(config.checkpoint),
        "model": {k: meta.get(k) for k in ("kind", "dataset", "variant", "latent_dim", "epoch")},
        "label": _model_label(meta),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "metrics": results,
        "skipped": skipped,
        "settings": {
            "metrics": wanted,
            "limit": config.limit,
            "n_test": len(test_x),
            "n_train": None if train_x is None else len(train_x),
            "nll_samples": config.nll_samples,
            "au_threshold": config.au_threshold,
            "reconstruction": "decode(E_q[z|x]), clamped to [0, 1]",
            "nll_estimator": "log-mean-exp of p(x|z)p(z)/q(z|x) over K samples of q(z|x)",
            "seed": config.seed,
            "device": device,
        },
        "figures": [str(f.name) for f in figures],
        "versions": _versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if hasattr(model, "config") and hasattr(model.config, "to_dict"):
        payload["config"] = model.config.to_dict()
    training = {k: meta[k] for k in ("epochs", "batch_size", "lr", "seed", "dataset_size") if k in meta}
    if isinstance(meta.get("history"), list) and meta["history"]:
        training["last_epoch"] = meta["history"][-1]
    if training:
        payload["training"] = training
    (out / "eval.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return payload


def make_figures(
    model: nn.Module,
    meta: dict,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    test_mu: torch.Tensor,
    recon: torch.Tensor,
    train_mu: torch.Tensor | None,
    out: Path,
    config: EvalConfig,
) -> list[Path]:
    """Reconstruction grid, interpolation strips, N(0,I)/GMM samples and t-SNE, as PNGs under `out`."""
    from tqdm.auto import tqdm

    label = _model_label(meta)
    bs, device = config.batch_size, config.device
    steps = tqdm(total=5, desc="figures", leave=False)
    files = []
    k = min(8, len(test_x))
    pair = torch.cat([test_x[:k], recon[:k]])
    files.append(save_grid(pair, k, out / "reconstructions.png", f"{label}: test images (top), reconstructions"))
    steps.update()
    if len(test_x) >= 2:
        strips = []
        for a in range(0, min(8, len(test_x) - 1), 2):
            strips.append(decode_all(model, interpolate_latents(test_mu[a], test_mu[a + 1], 10), bs, device))
        files.append(save_grid(torch.cat(strips), 10, out / "interpolation.png", f"{label}: latent interpolation"))
    steps.update()
    z = sample_latents(64, test_mu.shape[1], "normal", seed=config.seed)
    files.append(save_grid(decode_all(model, z, bs, device), 8, out / "samples_normal.png", f"{label}: z ~ N(0, I)"))
    steps.update()
    if train_mu is not None:
        gmm = fit_gmm(train_mu, config.gmm_components, config.seed)
        z = sample_latents(64, test_mu.shape[1], "gmm", gmm, seed=config.seed)
        title = f"{label}: z ~ GMM({config.gmm_components}) on train latents"
        files.append(save_grid(decode_all(model, z, bs, device), 8, out / "samples_gmm.png", title))
    steps.update()
    if config.tsne > 0 and len(test_mu) >= 10:
        files.append(save_tsne(test_mu, test_y, out / "tsne.png", config.tsne, config.seed))
    steps.update()
    steps.close()
    return files


def write_samples(config: SampleConfig) -> list[Path]:
    """Decodes `config.n` samples from N(0, I) or a GMM on training latents into a grid PNG under `config.out`,
    plus interpolation strips between test images when asked; returns the files written."""
    if config.n < 1:
        raise EvalError(f"--n must be >= 1, got {config.n}")
    bs, device = config.batch_size, config.device
    model, meta = _open_checkpoint(config.checkpoint, config.dataset, device)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    gmm = None
    if config.sampler == "gmm":
        train_x, _ = load_split(meta["dataset"], "train", config.data_dir, config.train_limit)
        _check_gmm_components(config.gmm_components, len(train_x))
        gmm = fit_gmm(encode_all(model, train_x, bs, device, "encode train"), config.gmm_components, config.seed)
    z = sample_latents(config.n, model.latent_dim, config.sampler, gmm, config.seed)
    images = decode_all(model, z, bs, device)
    nrow = max(1, int(math.ceil(math.sqrt(config.n))))
    label = _model_label(meta)
    written = [save_grid(images, nrow, out / f"samples_{config.sampler}.png", f"{label}: {config.sampler} sampler")]
    if config.interpolate:
        test_x, _ = load_split(meta["dataset"], "test", config.data_dir, 16)
        mu = encode_all(model, test_x, bs, device, "encode test")
        strips = [
            decode_all(model, interpolate_latents(mu[a], mu[a + 1], 10), bs, device)
            for a in range(0, min(8, len(mu) - 1), 2)
        ]
        written.append(save_grid(torch.cat(strips), 10, out / "interpolation.png", f"{label}: interpolation"))
    return written


METRIC_ROWS = (
    ("parameters", "parameters", "{:,}"),
    ("NLL (nats)", "nll", "{:.2f}"),
    ("bits/dim", "bits_per_dim", "{:.4f}"),
    ("AU", "active_units", "{}"),
    ("FID", "fid", "{:.2f}"),
    ("PSNR (dB)", "psnr", "{:.2f}"),
    ("SSIM", "ssim", "{:.4f}"),
    ("rFID", "rfid", "{:.2f}"),
    ("accuracy", "accuracy", "{:.4f}"),
)


def _fmt(payload: dict, key: str, fmt: str) -> str:
    value = payload.get("parameters") if key == "parameters" else payload.get("metrics", {}).get(key)
    if value is None:
        return "n/a"
    if key == "active_units" and payload.get("metrics", {}).get("latent_dim"):
        return f"{value}/{payload['metrics']['latent_dim']}"
    return fmt.format(value)


def print_summary(payload: dict) -> None:
    print(f"{payload['label']} on {payload['model']['dataset']} (epoch {payload['model'].get('epoch')})")
    for name, key, fmt in METRIC_ROWS:
        print(f"  {name:<12} {_fmt(payload, key, fmt)}")
    for key, reason in payload.get("skipped", {}).items():
        print(f"  {key}: {reason}")


def compare_table(payloads: list[dict]) -> str:
    """One markdown table, a row per run: model, parameters, NLL, AU, FID, PSNR, SSIM, rFID, accuracy."""
    columns = [("model", None, None)] + [row for row in METRIC_ROWS if row[1] != "bits_per_dim"]
    lines = [
        "| " + " | ".join(c[0] for c in columns) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|",
    ]
    for p in payloads:
        cells = [p.get("label") or _model_label(p.get("model", {}))]
        cells += [_fmt(p, key, fmt) for _, key, fmt in columns[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------ CLI
_Job = TypeVar("_Job", bound=CheckpointJob)


def _config_from_args(config_type: type[_Job], args: argparse.Namespace) -> _Job:
    """The `config_type` of a parsed command line: each of its fields from the option of the same name."""
    return config_type(**{f.name: getattr(args, f.name) for f in fields(config_type)})


def cmd_eval(args: argparse.Namespace) -> int:
    """`bvae eval`: 0 when eval.json is written, 2 (with a message) on a user's mistake."""
    try:
        payload = evaluate(_config_from_args(EvalConfig, args))
    except EvalError as exc:
        print(f"bvae eval: error: {exc}", file=sys.stderr)
        return 2
    print_summary(payload)
    print(
        f"wrote {Path(args.out) / 'eval.json'}"
        + (f" and {len(payload['figures'])} figures" if payload["figures"] else "")
    )
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """`bvae sample`: 0 when the grids are written, 2 (with a message) on a user's mistake."""
    try:
        written = write_samples(_config_from_args(SampleConfig, args))
    except (EvalError, ValueError) as exc:
        print(f"bvae sample: error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    payloads = []
    for run in args.runs:
        path = Path(run)
        path = path / "eval.json" if path.is_dir() else path
        try:
            payloads.append(json.loads(path.read_text()))
        except FileNotFoundError:
            print(f"bvae compare: error: no eval.json at {path}", file=sys.stderr)
            return 2
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            print(f"bvae compare: error: {path} is not valid JSON: {exc}", file=sys.stderr)
            return 2
        if not isinstance(payloads[-1], dict):
            print(f"bvae compare: error: {path} is not an eval.json (a JSON object)", file=sys.stderr)
            return 2
    table = compare_table(payloads)
    print(table, end="")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table)
    return 0


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(text.split(","))


def _positive_or_none(text: str) -> int | None:
    return None if text.lower() in ("none", "all", "0") else int(text)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint written by `bvae train`")
    p.add_argument(
        "--dataset",
        "--data",
        dest="dataset",
        default=None,
        help="expected dataset; an error if the checkpoint was trained on another",
    )
    p.add_argument("--data-dir", default=None, help="dataset directory (nothing is downloaded)")
    p.add_argument("--device", default=CheckpointJob.device, help="torch device (default cpu)")
    p.add_argument("--batch-size", type=positive_int_arg, default=CheckpointJob.batch_size)
    p.add_argument("--seed", type=seed_arg, default=CheckpointJob.seed)
    p.add_argument(
        "--gmm-components",
        type=positive_int_arg,
        default=CheckpointJob.gmm_components,
        help="mixture components of the GMM sampler",
    )
    p.add_argument(
        "--train-limit",
        type=_positive_or_none,
        default=None,
        help="use only the first N training images (probe, GMM); default all",
    )


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the eval, sample and compare subcommands to the `bvae` CLI."""
    p = subparsers.add_parser("eval", help="evaluate a checkpoint: eval.json, figures and a table")
    _add_common(p)
    p.add_argument(
        "--metrics",
        type=_comma_list,
        default=EvalConfig.metrics,
        help=f"comma list of {','.join(ALL_METRICS)}",
    )
    p.add_argument(
        "--nll-samples",
        type=positive_int_arg,
        default=EvalConfig.nll_samples,
        help="importance samples K per image (paper: 1000)",
    )
    p.add_argument("--nll-limit", type=int, default=None, help="NLL on only the first N test images")
    p.add_argument(
        "--nll-batch-size",
        type=positive_int_arg,
        default=EvalConfig.nll_batch_size,
        help="images per NLL batch (x K samples decoded)",
    )
    p.add_argument("--limit", type=_positive_or_none, default=None, help="use only the first N test images")
    p.add_argument(
        "--au-threshold",
        type=non_negative_arg,
        default=EvalConfig.au_threshold,
        help="active if Cov_x(E_q[z_u]) exceeds this",
    )
    p.add_argument(
        "--probe-iters",
        type=positive_int_arg,
        default=EvalConfig.probe_iters,
        help="max iterations of the downstream probe",
    )
    p.add_argument("--fid-weights", default=None, help="local Inception-v3 weights (torch-fidelity pt_inception)")
    p.add_argument("--tsne", type=int, default=EvalConfig.tsne, help="points in the t-SNE plot (0: no plot)")
    p.add_argument("--no-figures", dest="figures", action="store_false", help="skip the PNG figures")
    p.add_argument("--out", default=EvalConfig.out, help="output directory (eval.json, PNGs)")
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser("sample", help="decode samples from N(0, I) or a GMM on training latents")
    _add_common(p)
    p.add_argument("--n", type=positive_int_arg, default=SampleConfig.n, help="number of samples")
    p.add_argument("--sampler", choices=("normal", "gmm"), default=SampleConfig.sampler)
    p.add_argument("--interpolate", action="store_true", help="also write interpolation strips of test images")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=cmd_sample)

    p = subparsers.add_parser("compare", help="one markdown table from several eval.json files")
    p.add_argument("runs", nargs="+", help="run directories holding eval.json (or eval.json paths)")
    p.add_argument("--out", default=None, help="also write the table to this file")
    p.set_defaults(func=cmd_compare)
