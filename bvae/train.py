"""Training: AdamW + OneCycleLR, bf16 autocast on GPU, atomic checkpoints, exact resume, DDP; `bvae train` / `demo`.

Determinism: epoch e visits the training set in the order torch.randperm(n, seed * 100003 + e), and the
checkpoint written at the end of each epoch holds the model, optimizer, scheduler and RNG states, so a run
resumed from it continues bit for bit (on CPU) as if it had never stopped.

Checkpoints are written and read by bvae.checkpoint (atomic writes, validated reads), the same code that
`bvae eval` and `bvae sample` load them with; the demo's figures are drawn by bvae.figures.

Under torchrun (WORLD_SIZE > 1) `bvae train` initializes the process group (NCCL on GPU, gloo on CPU),
wraps the model in DistributedDataParallel and gives each rank a disjoint slice of every epoch's order.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from ._checks import (
    check_number,
    lr_arg,
    non_negative,
    non_negative_arg,
    number_arg,
    positive,
    positive_arg,
    positive_int,
    positive_int_arg,
    seed_arg,
)
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, load_weights, save_checkpoint, unwrap
from .figures import save_image_rows
from .metrics import psnr_per_image, ssim_per_image
from .models import DATASETS, VARIANTS, ModelConfig, build_model

# the CLI's KL warm-up: the first quarter of training (measured on the demo, see README "Training recipe")
DEFAULT_KL_WARMUP = 0.25
# the reverse log-scales' lr relative to the weights' (see param_groups)
DEFAULT_SCALE_LR_FACTOR = 10.0


# ----------------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------------
def set_seed(seed: int) -> None:
    """Seeds torch (CPU and CUDA) and Python's random."""
    import random

    random.seed(seed)
    torch.manual_seed(seed)


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _get_batch(dataset: Dataset, indices: torch.Tensor) -> torch.Tensor:
    if hasattr(dataset, "batch"):
        return dataset.batch(indices)[0]
    return torch.stack([dataset[int(i)][0] for i in indices])


@torch.no_grad()
def evaluate_reconstruction(
    model: nn.Module, dataset: Dataset, batch_size: int = 500, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """Mean test PSNR and SSIM of decode(mu(x)) against x over `dataset`."""
    model = unwrap(model)
    was_training = model.training
    model.eval()
    psnrs, ssims = [], []
    for start in range(0, len(dataset), batch_size):
        x = _get_batch(dataset, torch.arange(start, min(start + batch_size, len(dataset)))).to(device)
        recon = model.reconstruct(x).float().clamp(0, 1)
        psnrs.append(psnr_per_image(recon, x))
        ssims.append(ssim_per_image(recon, x))
    model.train(was_training)
    return {"psnr": torch.cat(psnrs).mean().item(), "ssim": torch.cat(ssims).mean().item()}


@torch.no_grad()
def evaluate_loss(
    model: nn.Module, dataset: Dataset, batch_size: int = 500, device: torch.device | str = "cpu", seed: int = 0
) -> dict[str, float]:
    """The training objective's mean loss and metrics (e.g. the ELBO) over `dataset`, in eval mode.

    The posterior noise is drawn from a forked generator seeded with `seed`, so the figure is the same on every
    call with the same weights and the caller's random state (what a resumed run replays) is left as it was.
    """
    core = unwrap(model)
    was_training = core.training
    core.eval()
    device = torch.device(device)
    sums: dict[str, float] = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(dataset), batch_size):
            x = _get_batch(dataset, torch.arange(start, min(start + batch_size, len(dataset)))).to(device)
            out = core(x)
            sums["loss"] = sums.get("loss", 0.0) + float(out.loss) * x.shape[0]
            for key, value in out.metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value) * x.shape[0]
    core.train(was_training)
    return {k: v / len(dataset) for k, v in sums.items()}


# ----------------------------------------------------------------------------------------------------------
# the trainer
# ----------------------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What a training run did: epochs completed (in total), per-epoch history, why it stopped early."""

    epochs_done: int
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: str | None = None
    message: str = ""
    checkpoint: str | None = None

    @property
    def sec_per_epoch(self) -> float:
        times = [h["seconds"] for h in self.history]
        return sum(times) / len(times) if times else float("nan")


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))


def param_groups(model: nn.Module, lr: float, scale_lr_factor: float) -> list[dict[str, Any]]:
    """Optimizer groups: the layers' reverse log-scales at `scale_lr_factor` x lr, everything else at lr.

    Why: Adam moves every parameter by about lr per step whatever its size. The weights are O(0.1), so a
    step is a large relative change, while a log-scale must travel O(1) (the demo's decoder wants ~7x the
    gain of the tied encoder weight: log 7 = 1.9), so at the same lr it adapts about 10x slower in
    relative terms and the tied weights compensate in the meantime.
    """
    scales, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (scales if name.rsplit(".", 1)[-1] == "reverse_log_scale" else rest).append(p)
    groups = [{"params": rest, "lr": lr}]
    if scales:
        groups.append({"params": scales, "lr": lr * scale_lr_factor})
    return groups


def fit(
    model: nn.Module,
    train_set: Dataset,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    kl_warmup: float = 0.0,
    scale_lr_factor: float = DEFAULT_SCALE_LR_FACTOR,
    out_dir: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    amp: bool = True,
    progress: bool = True,
    stop_after_epoch: int | None = None,
    eval_sets: Mapping[str, Dataset] | None = None,
    log: Callable[[str], None] = print,
    log_epochs: bool | None = None,
) -> TrainResult:
    """Trains `model` (a bvae model, optionally DDP-wrapped) on `train_set` with AdamW + OneCycleLR.

    Writes out_dir/checkpoint.pt after every epoch. `resume` continues from a checkpoint of the same
    run settings. A non-finite loss stops training cleanly, keeping the last good checkpoint.
    `stop_after_epoch` ends the run early (as if interrupted) without changing the schedule.
    `kl_warmup` (a fraction of all steps, 0 = none) raises the regularizer's weight linearly from 0 to 1
    over that part of training (KL warm-up, Bowman et al. 2016; Sonderby et al. 2016): the loss logged
    during warm-up is the weighted one, the metrics' "elbo" the true bound.
    `scale_lr_factor` multiplies the peak lr of the layers' reverse log-scales (see `param_groups`).
    `eval_sets` ({name: dataset}, e.g. a validation split or the test set): after every epoch their mean loss and
    metrics go into the history as `<name>_loss`, `<name>_<metric>` (the learning curves), with fixed noise.
    `log_epochs`: log a line per epoch (default: when `progress` is on).
    """
    positive_int("epochs", epochs)
    positive_int("batch_size", batch_size)
    positive("lr", lr)
    non_negative("weight_decay", weight_decay)
    check_number("kl_warmup", kl_warmup, lambda v: 0 <= v <= 1, "a fraction of training in [0, 1]")
    positive("scale_lr_factor", scale_lr_factor)
    n = len(train_set)
    if n < 1:
        raise ValueError("train_set is empty")
    device = torch.device(device)
    core = unwrap(model)
    if core.config.variant == "beta-tcvae" and core.config.dataset_size is None:
        core.config.dataset_size = n  # the training set's size, never the batch size
    rank, world = _dist_info()
    per_rank = n // world
    if per_rank < 1:
        raise ValueError(f"train_set has {n} samples, fewer than the {world} ranks")
    steps = math.ceil(per_rank / batch_size)
    groups = param_groups(model, lr, scale_lr_factor)
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    max_lr = [group["lr"] for group in groups]
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=epochs * steps)
    warmup_steps = kl_warmup * epochs * steps
    settings = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "kl_warmup": kl_warmup,
        "scale_lr_factor": scale_lr_factor,
        "seed": seed,
    }
    start_epoch, history = 0, []
    if resume is not None:
        ckpt = load_checkpoint(resume, map_location=device)
        saved, mine = dict(ckpt["config"]), core.config.to_dict()
        saved.pop("backend", None), mine.pop("backend", None)
        if saved != mine:
            diff = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
            raise ValueError(f"resume: checkpoint {resume} is for a different model (differs in {diff})")
        for key, value in settings.items():
            if key in ckpt["extra"] and ckpt["extra"][key] != value:
                raise ValueError(f"resume: checkpoint was trained with {key}={ckpt['extra'][key]!r}, not {value!r}")
        if "dataset_size" in ckpt["extra"] and ckpt["extra"]["dataset_size"] != n:
            raise ValueError(
                f"resume: checkpoint was trained on {ckpt['extra']['dataset_size']} images, this run has {n} "
                "(the one-cycle schedule is laid out for the first run's steps): use the same data and --limit"
            )
        load_weights(model, ckpt["model"], resume)
        if ckpt["optimizer"] is None or ckpt["scheduler"] is None:
            raise ValueError(f"resume: checkpoint {resume} has no optimizer/scheduler state")
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except ValueError as exc:  # e.g. one group: written before the reverse log-scales had their own
            raise ValueError(
                f"resume: the optimizer state in {resume} does not fit this run's parameter groups ({exc}); "
                "it was written by an older version: start a new run"
            ) from exc
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        if "cuda" in ckpt["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["rng"]["cuda"]])
        start_epoch = int(ckpt["extra"].get("epoch", 0))
        history = list(ckpt["extra"].get("history", []))
        log(f"resumed from {resume} at epoch {start_epoch}/{epochs}")
    ckpt_path = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    last_good = str(resume) if resume is not None else None
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and amp else contextlib.nullcontext()
    )
    end_epoch = epochs if stop_after_epoch is None else min(epochs, stop_after_epoch)
    model.train()
    from tqdm.auto import tqdm

    for epoch in range(start_epoch, end_epoch):
        order = _epoch_order(n, seed, epoch)
        if world > 1:
            order = order[: per_rank * world][rank::world]
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress or rank != 0, leave=False)
        t0, seen, loss_sum, metric_sums = time.perf_counter(), 0, 0.0, {}
        for step in range(steps):
            idx = order[step * batch_size : (step + 1) * batch_size]
            x = _get_batch(train_set, idx).to(device, non_blocking=True)
            global_step = epoch * steps + step
            reg_weight = min(1.0, global_step / warmup_steps) if warmup_steps > 0 else 1.0
            with autocast:
                out = model(x, reg_weight=reg_weight)
            loss = out.loss
            bad = torch.tensor(0.0 if torch.isfinite(loss.detach()).item() else 1.0, device=device)
            if world > 1:
                dist.all_reduce(bad, op=dist.ReduceOp.MAX)
            if bad.item() > 0:
                bar.close()
                kept = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written"
                message = (
                    f"non-finite loss ({loss.item()}) at epoch {epoch + 1}, step {step + 1}: training stopped; {kept}. "
                    "Try a lower --lr."
                )
                log(message)
                return TrainResult(epoch, history, "nan", message, last_good)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += x.shape[0]
            loss_sum += loss.item() * x.shape[0]
            for key, value in out.metrics.items():
                metric_sums[key] = metric_sums.get(key, 0.0) + float(value) * x.shape[0]
            rate = seen * world / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{loss.item():.2f}", img_s=f"{rate:.0f}", refresh=False)
            bar.update(1)
        bar.close()
        seconds = time.perf_counter() - t0
        entry = {
            "epoch": epoch + 1,
            "loss": loss_sum / seen,
            "seconds": seconds,
            "images_per_sec": seen * world / seconds,
            "reg_weight": reg_weight,
        }
        entry.update({k: v / seen for k, v in metric_sums.items()})
        curves = ""
        for name, dataset in (eval_sets or {}).items():
            scores = evaluate_loss(model, dataset, device=device, seed=seed)
            entry.update({f"{name}_{k}": v for k, v in scores.items()})
            curves += f", {name} loss {scores['loss']:.3f}"
        history.append(entry)
        if (progress if log_epochs is None else log_epochs) and rank == 0:
            log(
                f"epoch {epoch + 1}/{epochs}: loss {entry['loss']:.3f}{curves}, {seconds:.1f} s, "
                f"{entry['images_per_sec']:.0f} img/s"
            )
        if not all(torch.isfinite(p).all() for p in core.parameters()):
            kept = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written"
            message = (
                f"non-finite weights after epoch {epoch + 1}: training stopped, this epoch's weights not saved; "
                f"{kept}. Try a lower --lr."
            )
            log(message)
            return TrainResult(epoch, history[:-1], "nan", message, last_good)
        if ckpt_path is not None:
            if rank == 0:
                extra = {**settings, "epoch": epoch + 1, "history": history, "dataset_size": n}
                save_checkpoint(ckpt_path, model, optimizer, scheduler, extra)
            last_good = str(ckpt_path)
            if world > 1:
                dist.barrier()
    return TrainResult(end_epoch, history, None, "", last_good)


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------
def _threads(requested: int | None) -> int:
    """Intra-op threads: `requested`, else min(2, cores), or 1 when the machine is already busy.

    OpenMP threads spin at barriers, so on an oversubscribed machine 2 threads run several times
    slower than 1 (measured here: 3.0 s vs 0.4 s per step at load average 7 on 2 cores).
    """
    if requested is not None:
        return max(1, requested)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = min(2, cores)
    with contextlib.suppress(OSError):
        if os.getloadavg()[0] > cores:
            threads = 1
    return threads


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--latent-dim", type=positive_int_arg, default=16, help="latent dimensions (default 16)")
    parser.add_argument("--backend", default=None, help="op backend: torch, cpu, cuda, triton (default: auto)")
    parser.add_argument(
        "--width", type=positive_int_arg, default=None, help="base channel width (default: per dataset)"
    )
    parser.add_argument("--hidden", type=positive_int_arg, default=None, help="hidden FC size (default: per dataset)")
    parser.add_argument("--gnova-alpha", type=non_negative_arg, default=0.1, help="G-NoVa slope alpha (default 0.1)")
    parser.add_argument(
        "--gnova-beta", type=non_negative_arg, default=1.0, help="G-NoVa sigmoid weight beta (default 1)"
    )
    parser.add_argument("--gnova-gamma", type=positive_arg, default=1.0, help="G-NoVa sigmoid gain gamma (default 1)")
    parser.add_argument("--res-blocks", type=int, default=1, help="MNIST-type nets: residual blocks (0-2)")
    parser.add_argument(
        "--no-reverse-scale",
        action="store_true",
        help="no learned log-scale per layer in the reverse direction (the paper's plain tied layer)",
    )
    parser.add_argument("--seed", type=seed_arg, default=0)
    parser.add_argument("--threads", type=positive_int_arg, default=None, help="CPU threads (default: min(2, cores))")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _recipe_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kl-warmup",
        type=number_arg(lambda v: 0 <= v <= 1, "a number in [0, 1]"),
        default=DEFAULT_KL_WARMUP,
        help=f"fraction of training over which the KL weight rises from 0 to 1 (default {DEFAULT_KL_WARMUP}; 0: none)",
    )
    parser.add_argument(
        "--scale-lr-factor",
        type=positive_arg,
        default=DEFAULT_SCALE_LR_FACTOR,
        help=f"peak lr of the reverse log-scales relative to the weights' (default {DEFAULT_SCALE_LR_FACTOR:g})",
    )


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Adds `bvae train` and `bvae demo`."""
    p = subparsers.add_parser("train", help="train a BVAE or its VAE twin", description="Train a BVAE or VAE.")
    p.add_argument("--dataset", choices=tuple(DATASETS), default="fashion-mnist")
    p.add_argument("--kind", choices=("bvae", "vae"), default="bvae")
    p.add_argument("--variant", choices=VARIANTS, default="vae")
    p.add_argument("--epochs", type=positive_int_arg, default=10)
    p.add_argument("--batch-size", type=positive_int_arg, default=128)
    p.add_argument("--lr", type=lr_arg, default=2e-3, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--weight-decay", type=non_negative_arg, default=1e-4)
    _recipe_options(p)
    p.add_argument(
        "--beta", type=non_negative_arg, default=1.0, help="beta-VAE / beta-TCVAE weight on the KL / TC term"
    )
    p.add_argument("--alpha", type=non_negative_arg, default=1.0, help="beta-TCVAE weight on the mutual information")
    p.add_argument("--gamma", type=non_negative_arg, default=1.0, help="beta-TCVAE weight on the dimension-wise KL")
    p.add_argument("--k", type=positive_int_arg, default=5, help="IWAE samples")
    p.add_argument("--out", default="runs/train", help="output folder (checkpoint.pt, metrics.json)")
    p.add_argument("--resume", default=None, help="checkpoint to resume from")
    p.add_argument(
        "--val-size",
        type=positive_int_arg,
        default=None,
        help="hold out the last N training images as a validation set (its loss per epoch: `val_loss` in metrics.json)",
    )
    p.add_argument("--curves", action="store_true", help="also record the test set's loss after every epoch")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--download", action="store_true", help="download with torchvision if the data is missing")
    p.add_argument(
        "--limit", type=positive_int_arg, default=None, help="train on the first N images (and test on <= N)"
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on GPU")
    _model_options(p)
    p.set_defaults(func=cmd_train)

    d = subparsers.add_parser(
        "demo",
        help="train a small BVAE and its VAE twin on Fashion-MNIST and compare them (offline, CPU)",
        description="Train a BVAE and its VAE twin on real Fashion-MNIST on the CPU and compare them.",
    )
    d.add_argument("--out", default="demo-out", help="output folder (metrics.json, PNGs)")
    d.add_argument("--epochs", type=positive_int_arg, default=20)
    d.add_argument("--batch-size", type=positive_int_arg, default=64)
    d.add_argument("--lr", type=lr_arg, default=1e-2)
    _recipe_options(d)
    d.add_argument(
        "--train-size", type=positive_int_arg, default=5000, help="training images (capped by the data found)"
    )
    d.add_argument("--test-size", type=positive_int_arg, default=1000, help="test images (capped by the data found)")
    d.add_argument("--data-dir", default=None)
    d.add_argument("--bundled", action="store_true", help="use the bundled sample even if full data exists")
    _model_options(d)
    d.set_defaults(func=cmd_demo, backend="cpu")


def _subset(dataset: Dataset, limit: int | None) -> Dataset:
    if limit is None or limit >= len(dataset):
        return dataset
    if limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    if hasattr(dataset, "take"):
        return dataset.take(limit)
    return torch.utils.data.Subset(dataset, range(limit))


def split_validation(dataset: Dataset, size: int) -> tuple[Dataset, Dataset]:
    """(train, validation): the last `size` samples held out for choices (learning rates, epochs, ablations) so
    that nothing is tuned on the test set."""
    n = len(dataset)
    if not 0 < size < n:
        raise ValueError(f"--val-size must be between 1 and {n - 1} (the training set has {n} images), got {size}")
    if hasattr(dataset, "images"):
        cls = type(dataset)
        head, tail = slice(0, n - size), slice(n - size, n)
        return tuple(cls(dataset.images[p], dataset.labels[p], dataset.name, dataset.source) for p in (head, tail))
    return torch.utils.data.Subset(dataset, range(n - size)), torch.utils.data.Subset(dataset, range(n - size, n))


def _arch_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "gnova_alpha": args.gnova_alpha,
        "gnova_beta": args.gnova_beta,
        "gnova_gamma": args.gnova_gamma,
        "res_blocks": args.res_blocks,
        "reverse_scale": not args.no_reverse_scale,
    }


def _user_error(rank: int, message: str) -> None:
    """A user's mistake, on stderr (rank 0 only under DDP): the command then exits with code 2."""
    if rank == 0:
        print(message, file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    """`bvae train`: returns 0 on success, 1 when training stopped on a non-finite loss, 2 on bad input."""
    from .data import load_dataset

    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    rank = dist.get_rank() if world > 1 else 0
    torch.set_num_threads(_threads(args.threads))
    log = print if rank == 0 else (lambda _msg: None)
    try:
        try:
            train_set = _subset(load_dataset(args.dataset, "train", args.data_dir, args.download), args.limit)
            test_set = _subset(load_dataset(args.dataset, "test", args.data_dir, args.download), args.limit)
            eval_sets = {}
            if args.val_size:
                train_set, eval_sets["val"] = split_validation(train_set, args.val_size)
            if args.curves:
                eval_sets["test"] = test_set
        except (FileNotFoundError, ValueError) as exc:
            _user_error(rank, f"bvae train: error: {exc}")
            return 2
        set_seed(args.seed)
        try:
            model = build_model(
                args.kind,
                args.dataset,
                latent_dim=args.latent_dim,
                variant=args.variant,
                backend=args.backend,
                width=args.width,
                hidden=args.hidden,
                beta=args.beta,
                alpha=args.alpha,
                gamma=args.gamma,
                k=args.k,
                dataset_size=len(train_set) if args.variant == "beta-tcvae" else None,
                **_arch_kwargs(args),
            ).to(device)
        except ValueError as exc:  # settings no model can have (G-NoVa alpha = beta = 0, ...)
            _user_error(rank, f"bvae train: error: {exc}")
            return 2
        log(model.summary())
        log(f"data: {getattr(train_set, 'source', args.dataset)}, {len(train_set)} train / {len(test_set)} test")
        wrapped = model
        if world > 1:
            wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        try:
            result = fit(
                wrapped,
                train_set,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                weight_decay=args.weight_decay,
                kl_warmup=args.kl_warmup,
                scale_lr_factor=args.scale_lr_factor,
                out_dir=args.out,
                resume=args.resume,
                seed=args.seed,
                device=device,
                amp=not args.no_amp,
                progress=not args.no_progress,
                eval_sets=eval_sets,
                log=log,
                log_epochs=True,  # a line per epoch even without progress bars (logs of long runs)
            )
        except (FileNotFoundError, ValueError) as exc:
            _user_error(rank, f"bvae train: error: {exc}")
            return 2
        if result.stopped:
            return 1
        if rank == 0:
            with torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext():
                scores = evaluate_reconstruction(model, test_set, device=device)
            metrics = {
                "kind": args.kind,
                "dataset": args.dataset,
                "variant": args.variant,
                "params": model.num_parameters(),
                "epochs": result.epochs_done,
                "sec_per_epoch": result.sec_per_epoch,
                "test_psnr": scores["psnr"],
                "test_ssim": scores["ssim"],
                "history": result.history,
            }
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "metrics.json").write_text(json.dumps(metrics, indent=2))
            log(f"test PSNR {scores['psnr']:.2f} dB, SSIM {scores['ssim']:.4f}; checkpoint {result.checkpoint}")
            if not math.isfinite(scores["psnr"]):
                log("bvae train: the trained model reconstructs non-finite images (diverged?); try a lower --lr")
                return 1
        return 0
    finally:
        if world > 1:
            dist.destroy_process_group()


def _demo_data(data_dir: str | None, bundled: bool, train_size: int, test_size: int) -> tuple[Dataset, Dataset, str]:
    """(train, test, source) for the demo: Fashion-MNIST found on this machine, else the bundled sample.

    A `data_dir` that holds no Fashion-MNIST is an error rather than a silent switch to the sample.
    """
    from .data import demo_dataset, load_dataset

    if not bundled:
        try:
            train, test = (
                load_dataset("fashion-mnist", "train", data_dir),
                load_dataset("fashion-mnist", "test", data_dir),
            )
            return _subset(train, train_size), _subset(test, test_size), train.source
        except (FileNotFoundError, ValueError) as exc:
            if data_dir is not None:
                raise FileNotFoundError(f"--data-dir {data_dir!r}: {exc}") from exc
    train, test = demo_dataset("train"), demo_dataset("test")
    return _subset(train, train_size), _subset(test, test_size), train.source


def cmd_demo(args: argparse.Namespace) -> int:
    """`bvae demo`: a BVAE and its VAE twin, same budget, on real Fashion-MNIST; table + metrics.json + PNGs."""
    t_start = time.perf_counter()
    threads = _threads(args.threads)
    torch.set_num_threads(threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_set, test_set, source = _demo_data(args.data_dir, args.bundled, args.train_size, args.test_size)
    if args.backend == "cpu":
        import bvae_kernels as bk

        if "cpu" not in bk.available_backends():
            print("bvae demo: the compiled 'cpu' backend is not built here; using the reference 'torch' backend")
            args.backend = "torch"
    print(
        f"bvae demo: Fashion-MNIST from {source}: {len(train_set)} train / {len(test_set)} test images; "
        f"backend {args.backend}, {threads} thread(s), {args.epochs} epochs, batch {args.batch_size}, lr {args.lr}, "
        f"KL warm-up {args.kl_warmup}, scale lr x{args.scale_lr_factor:g}"
    )
    results: dict[str, dict[str, Any]] = {}
    models: dict[str, nn.Module] = {}
    for kind in ("bvae", "vae"):
        set_seed(args.seed)
        try:
            model = build_model(
                kind,
                "fashion-mnist",
                latent_dim=args.latent_dim,
                backend=args.backend,
                width=args.width,
                hidden=args.hidden,
                **_arch_kwargs(args),
            )
        except ValueError as exc:  # settings no model can have (G-NoVa alpha = beta = 0, ...)
            print(f"bvae demo: error: {exc}", file=sys.stderr)
            return 2
        print(model.summary())
        result = fit(
            model,
            train_set,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            kl_warmup=args.kl_warmup,
            scale_lr_factor=args.scale_lr_factor,
            seed=args.seed,
            out_dir=out / kind,
            progress=not args.no_progress,
        )
        if result.stopped:
            print(f"bvae demo: {kind} stopped: {result.message}")
            return 1
        scores = evaluate_reconstruction(model, test_set)
        results[kind] = {
            "params": model.num_parameters(),
            "psnr": scores["psnr"],
            "ssim": scores["ssim"],
            "sec_per_epoch": result.sec_per_epoch,
            "final_train_loss": result.history[-1]["loss"],
        }
        models[kind] = model.eval()
    b, v = results["bvae"], results["vae"]
    print()
    print(f"{'':24s}{'BVAE':>12s}{'VAE':>12s}{'BVAE/VAE':>12s}")
    print(f"{'parameters':24s}{b['params']:>12,d}{v['params']:>12,d}{b['params'] / v['params']:>12.3f}")
    print(f"{'test PSNR (dB)':24s}{b['psnr']:>12.2f}{v['psnr']:>12.2f}{b['psnr'] - v['psnr']:>+12.2f}")
    print(f"{'test SSIM':24s}{b['ssim']:>12.4f}{v['ssim']:>12.4f}{b['ssim'] - v['ssim']:>+12.4f}")
    spe = b["sec_per_epoch"] / v["sec_per_epoch"]
    print(f"{'seconds per epoch':24s}{b['sec_per_epoch']:>12.1f}{v['sec_per_epoch']:>12.1f}{spe:>12.2f}")
    with torch.no_grad():
        x = _get_batch(test_set, torch.arange(min(12, len(test_set))))
        rows = [("test images", x)] + [(f"{k.upper()} reconstruction", models[k].reconstruct(x)) for k in models]
        save_image_rows(rows, out / "reconstructions.png", "Fashion-MNIST test reconstructions, decode(mu(x))")
        sample_rows = []
        for k, m in models.items():
            samples = m.sample(24, generator=torch.Generator().manual_seed(args.seed))
            sample_rows += [(f"{k.upper()} samples", samples[:12]), ("", samples[12:])]
        save_image_rows(sample_rows, out / "samples.png", "decode(z), z ~ N(0, I) (same z for both models)")
    wall = time.perf_counter() - t_start
    metrics = {
        **results,
        "setup": {
            "data": source,
            "train_images": len(train_set),
            "test_images": len(test_set),
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "kl_warmup": args.kl_warmup,
            "scale_lr_factor": args.scale_lr_factor,
            "latent_dim": args.latent_dim,
            "backend": args.backend,
            "model": {k: v for k, v in models["bvae"].config.to_dict().items() if k != "kind"},
            "threads": threads,
            "seed": args.seed,
            "wall_seconds": wall,
        },
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"\nwrote {out / 'metrics.json'}, {out / 'reconstructions.png'}, {out / 'samples.png'} ({wall:.0f} s)")
    return 0


__all__ = [
    "ModelConfig",
    "TrainResult",
    "cmd_demo",
    "cmd_train",
    "evaluate_reconstruction",
    "fit",
    "register_cli",
    "set_seed",
]
