"""Tile configurations for the Triton kernels.

On a GPU each GEMM-like kernel autotunes over a small pruned set keyed on its problem shape; the set is
pruned per architecture at first launch (sm_90 gets the larger 128-row tiles that feed wgmma, sm_80 the
4-stage cp.async pipelines). Under the interpreter (TRITON_INTERPRET=1) every kernel has one small fixed
config; with BVAE_TRITON_FIXED_CONFIG=1 (read at each launch: tests, reproducible timing) a GPU launch
uses one fixed config per family and skips benchmarking.
"""

from __future__ import annotations

import functools
import os

import torch
import triton


def fixed_config() -> bool:
    """True when kernels must use one fixed config (interpreter, or BVAE_TRITON_FIXED_CONFIG=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1" or os.environ.get("BVAE_TRITON_FIXED_CONFIG", "0") == "1"


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# Fixed configs: under the interpreter small tiles keep it quick on the tiny test shapes (it runs every
# program in numpy) and exercise the masking on every edge; on a GPU one mid-size tile per family.
FIXED_INTERP = {"gemm": (32, 32, 16), "wgrad": (32, 32, 32)}
FIXED_GPU = {"gemm": (128, 64, 32, 4, 3), "wgrad": (64, 64, 32, 4, 3)}

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, archs)
_GEMM_TABLE = (
    (128, 128, 32, 8, 3, (90,)),
    (128, 64, 32, 4, 3, (80, 90)),
    (128, 64, 64, 8, 3, (90,)),
    (64, 128, 32, 4, 4, (80, 90)),
    (64, 64, 32, 4, 4, (80, 90)),
    (64, 32, 32, 4, 4, (80,)),
    (32, 64, 32, 4, 4, (80, 90)),
    (128, 32, 32, 4, 4, (80,)),
)

# wgrad: M = C_out, N = C_in (small), K = pixels (long): square-ish tiles, deep K blocks.
_WGRAD_TABLE = (
    (64, 64, 64, 4, 3, (80, 90)),
    (128, 64, 64, 8, 3, (90,)),
    (64, 64, 32, 4, 4, (80,)),
    (32, 32, 64, 4, 4, (80, 90)),
    (64, 32, 64, 4, 3, (80, 90)),
)


@functools.cache
def _arch() -> int:
    if not torch.cuda.is_available():
        return 90
    major, minor = torch.cuda.get_device_capability()
    return major * 10 + minor


def _config(m: int, n: int, k: int, warps: int = 4, stages: int = 2) -> triton.Config:
    return triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=warps, num_stages=stages)


def _configs(table: tuple, family: str) -> list[triton.Config]:
    """The autotune list: one fixed config under the interpreter, else the table (pruned at launch)."""
    if interpreting():
        return [_config(*FIXED_INTERP[family])]
    return [_config(m, n, k, w, s) for m, n, k, w, s, _ in table]


def _key(cfg: triton.Config) -> tuple:
    kw = cfg.kwargs
    return (kw.get("BLOCK_M"), kw.get("BLOCK_N"), kw.get("BLOCK_K"), cfg.num_warps, cfg.num_stages)


def _make_prune(family: str):  # noqa: ANN202
    def prune(configs: list[triton.Config], named_args: dict, **kwargs: object) -> list[triton.Config]:
        """BVAE_TRITON_FIXED_CONFIG=1: the family's one fixed config (no benchmarking); else the configs
        listed for this GPU's arch (>= sm_90 uses the sm_90 list). Read at launch, not at import."""
        if fixed_config():
            return [_config(*FIXED_GPU[family])]
        arch = 90 if _arch() >= 90 else 80
        table = _GEMM_TABLE if family == "gemm" else _WGRAD_TABLE
        archs_of = {(m, n, k, w, s): archs for m, n, k, w, s, archs in table}
        kept = [cfg for cfg in configs if arch in archs_of.get(_key(cfg), (arch,))]
        return kept or list(configs[:1])

    return prune


def gemm_configs() -> list[triton.Config]:
    """Configs of the conv / conv-transpose implicit GEMMs (M = pixels, N = output channels)."""
    return _configs(_GEMM_TABLE, "gemm")


def wgrad_configs() -> list[triton.Config]:
    """Configs of the weight-gradient GEMM (M = C_out, N = C_in, K = split of the pixels)."""
    return _configs(_WGRAD_TABLE, "wgrad")


PRUNE = {"early_config_prune": _make_prune("gemm")}
PRUNE_WGRAD = {"early_config_prune": _make_prune("wgrad")}


def pointwise_block() -> int:
    return 256 if interpreting() else 1024


def num_sms() -> int:
    """Streaming multiprocessors of the current GPU (a small number under the interpreter); cached per device."""
    if interpreting() or not torch.cuda.is_available():
        return 4
    return _sm_count(torch.cuda.current_device())


@functools.cache
def _sm_count(device: int) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count
