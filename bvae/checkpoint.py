"""Checkpoints: the one writer and the one reader of what `bvae train` saves and `bvae eval` / `sample` load.

A checkpoint is a plain dict of tensors and JSON strings (model config, state_dicts, RNG states, the run's
settings and history), written with torch.save to a temporary file and moved into place with os.replace, so no
reader ever sees a half-written file, and read back with weights_only=True. Every field a reader uses is
type-checked on load, so a damaged or crafted file is a ValueError that names the problem, not a traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .models import build_model

CHECKPOINT_FORMAT = "bvae-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


class DatasetMismatchError(ValueError):
    """The checkpoint was trained on another dataset than the one the caller asked for."""


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ----------------------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------------------
def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Writes model config (JSON) + state_dicts + RNG states atomically (temp file, fsync, os.replace)."""
    core = unwrap(model)
    if not hasattr(core, "config"):
        raise ValueError("save_checkpoint: model has no .config (build it with bvae.build_model)")
    try:
        extra_json = json.dumps(extra or {})
    except TypeError as exc:
        raise ValueError(f"save_checkpoint: extra must be JSON-serializable ({exc})") from exc
    rng: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": json.dumps(core.config.to_dict()),
        "model": core.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng,
        "extra": extra_json,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write (a full disk) as a RuntimeError
        raise OSError(f"could not write checkpoint {path} (disk full or not writable?): {exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _remove_stale_temporaries(path: Path) -> None:
    """Deletes `.<name>.tmp-<pid>` files a killed writer left beside `path` (their process is gone)."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
        except (ProcessLookupError, OverflowError):  # gone (or never a pid)
            tmp.unlink(missing_ok=True)
        except PermissionError:  # alive, under another user: its file
            pass


# ----------------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------------
def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Reads and validates a checkpoint; config and extra come back as dicts. ValueError if corrupt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle means a corrupt or foreign file
        raise ValueError(f"{path} is not a readable bvae checkpoint (corrupt or truncated?): {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a bvae checkpoint (no format={CHECKPOINT_FORMAT!r} marker)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {payload.get('version')!r} is not {CHECKPOINT_VERSION}")
    try:
        payload["config"] = json.loads(payload["config"])
        payload["extra"] = json.loads(payload["extra"])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: checkpoint config/extra are missing or not JSON ({exc})") from exc
    _validate_payload(path, payload)
    return payload


def _validate_payload(path: Path, payload: dict[str, Any]) -> None:
    """Every field a reader uses has the type it expects (a crafted or damaged file gives a ValueError)."""
    model = payload.get("model")
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise ValueError(f"{path}: checkpoint has no model state_dict (a dict of tensors)")
    config, extra = payload["config"], payload["extra"]
    if not isinstance(config, dict) or not {"kind", "dataset", "variant", "latent_dim"} <= set(config):
        raise ValueError(f"{path}: the checkpoint's model config must name kind, dataset, variant and latent_dim")
    if not isinstance(extra, dict):
        raise ValueError(f"{path}: the checkpoint's extra field must be a JSON object")
    for key in ("optimizer", "scheduler"):
        if payload.get(key) is not None and not isinstance(payload[key], dict):
            raise ValueError(f"{path}: the checkpoint's {key} state must be a dict or absent")
    rng = payload.get("rng")
    if not isinstance(rng, dict) or not isinstance(rng.get("torch"), torch.Tensor):
        raise ValueError(f"{path}: the checkpoint's RNG state is missing or not a tensor")
    for key, kind in (("epoch", int), ("dataset_size", int), ("history", list)):
        if key in extra and not isinstance(extra[key], kind):
            raise ValueError(f"{path}: the checkpoint's {key} must be {kind.__name__}, got {extra[key]!r:.60}")


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Loads a checkpoint's state_dict into `model` (or the model inside its DDP wrapper), strictly.

    A mismatch (another architecture or latent size) is a ValueError naming `path`, not torch's RuntimeError.
    """
    try:
        unwrap(model).load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: the checkpoint's weights do not match the model: {exc}") from exc


def load_model(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    backend: str | None = "saved",
    dataset: str | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuilds the model from a checkpoint: (model in eval mode, meta with kind/dataset/variant/latent_dim/epoch).

    `backend` overrides the saved backend ("saved" keeps it; None = the device default). `dataset`, when given,
    must be the one the checkpoint was trained on (case and `_` / `-` aside): otherwise DatasetMismatchError,
    before anything is built, so that a model is never evaluated on data it was not trained for.
    """
    ckpt = load_checkpoint(path, map_location)
    config = dict(ckpt["config"])
    if dataset is not None and _dataset_key(config["dataset"]) != _dataset_key(dataset):
        raise DatasetMismatchError(
            f"checkpoint {path} was trained on {config['dataset']!r}, not on --dataset {dataset!r}"
        )
    if backend != "saved":
        config["backend"] = backend
    elif not _serves(config.get("backend"), torch.device(map_location).type):
        config["backend"] = None  # e.g. trained with "triton" on a GPU, evaluated on a CPU: the device default
    try:
        model = build_model(**config)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: the checkpoint's model config is invalid: {exc}") from exc
    load_weights(model, ckpt["model"], path)
    model.to(map_location).eval()
    extra = ckpt["extra"]
    meta = {key: config[key] for key in ("kind", "dataset", "variant", "latent_dim")}
    meta["epoch"] = int(extra.get("epoch", 0))
    meta["config"] = config
    meta.update({k: v for k, v in extra.items() if k not in meta})
    return model, meta


def _dataset_key(name: object) -> str:
    return str(name).lower().replace("_", "-")


def _serves(backend: object, device_type: str) -> bool:
    """Whether op backend `backend` can run on `device_type` here (None, the device default, always can)."""
    if backend is None:
        return True
    from bvae_kernels.backends import impl_for

    try:
        impl_for(backend, device_type)
    except (ValueError, TypeError):
        return False
    return True


__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "CHECKPOINT_VERSION",
    "DatasetMismatchError",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "save_checkpoint",
    "unwrap",
]
