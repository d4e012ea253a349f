"""Tile configurations for the Triton kernels.

Every config a launcher can choose is in the tables below, per dtype class ("16bit": bf16 / fp16; "32bit": fp32,
with or without tf32) and per architecture, and each compiles without a register spill for that class on its
archs (`python -m bvae_kernels.triton.aot --arch 80 90` compiles them all with the specialization a GPU launch
gets and fails on a spill; the committed table is benchmarks/results/aot/). All use 4 warps: the kernels run
one flattened (tap, channel block) loop, and a flattened tap loop is reported to miscompile at 8 warps in
Inductor's conv template; 8-warp tiles compile without spills too, and `make gpu-check` tests one numerically
before any table lists it.

Launch modes: on a GPU each GEMM-like kernel autotunes over its table, pruned per arch and dtype class at
launch; the key leaves the batch size out (a short last batch reuses the tuned config). With
BVAE_TRITON_FIXED_CONFIG=1 (tests, reproducible timing, CUDA-graph capture without a warm-up) and under the
interpreter, a launch calls the kernel itself with one fixed config: no autotuner, no benchmarking (Triton 3.6's
autotuner benchmarks even a single remaining config). BVAE_TRITON_MAX_CONFIGS=N caps autotuning at the first N
rows of each table.
"""

from __future__ import annotations

import functools
import os

import torch
import triton

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, archs), per dtype class. Left out for spills (ptxas, the
# JIT's specialization): 64x128x64 (16-bit; sm_80 with Triton 3.6, sm_90 fp16 with 3.9), 128x64x16 (fp32, sm_80)
# and 64x128x32 (fp32, sm_90) with Triton 3.6, all of them at 255 registers with 3.9; 32x64x32 (fp32), which
# since the kernels call their noinline exact path spills inside the main loop at 80 registers (sm_80 chained
# forward with 3.9, sm_90 tf32 dgrad with 3.6).
GEMM_TABLE = {
    "16bit": (
        (128, 64, 32, 4, 3, (80, 90)),
        (64, 128, 32, 4, 3, (80, 90)),
        (64, 64, 32, 4, 4, (80, 90)),
    ),
    "32bit": (
        (64, 64, 16, 4, 4, (80, 90)),
        (64, 32, 32, 4, 4, (80, 90)),
    ),
}
# wgrad: M = C_out, N = C_in, K = pixels (long, split across programs).
WGRAD_TABLE = {
    "16bit": (
        (64, 64, 32, 4, 4, (80, 90)),
        (64, 64, 64, 4, 3, (90,)),  # sm_80: a 16-byte spill in the forward-direction variant
        (64, 128, 32, 4, 3, (80, 90)),
        (128, 64, 64, 4, 3, (80, 90)),
        (32, 32, 64, 4, 4, (80, 90)),
    ),
    # fp32 without tf32 multiplies on FMA units; the reverse-direction variant (G-NoVa gradient on the N operand)
    # spills at 64 x 64 x 32, so its tiles stay at 2048 outputs.
    "32bit": (
        (64, 32, 32, 4, 3, (80, 90)),
        (32, 64, 32, 4, 3, (80, 90)),
        (32, 32, 32, 4, 4, (80, 90)),
    ),
}
# wgrad with a prologue on both operands (a chained layer: a() applied to the input as it loads, a'() to the other
# operand) holds more registers, and some rows above spill there (16-bit 128x64x64 and 64x128x32 s3, fp32
# 32x32x32 s4 and 64x32x32 s3 with tf32, depending on arch and ptxas): its own rows, spill-free on sm_80 and
# sm_90 with Triton 3.6 and 3.9 in every dtype.
WGRAD_CHAINED_TABLE = {
    "16bit": (
        (64, 64, 32, 4, 4, (80, 90)),
        (64, 64, 64, 4, 3, (80, 90)),
        (64, 128, 32, 4, 2, (80, 90)),
        (32, 32, 64, 4, 4, (80, 90)),
    ),
    "32bit": (
        (64, 32, 32, 4, 2, (80, 90)),
        (32, 32, 32, 4, 3, (80, 90)),
        (64, 32, 16, 4, 3, (80, 90)),
    ),
}
TABLES = {"gemm": GEMM_TABLE, "wgrad": WGRAD_TABLE, "wgrad-chained": WGRAD_CHAINED_TABLE}
# One config per family and dtype class: what a fixed launch uses on a GPU (the first of each table).
FIXED_GPU = {family: {cls: rows[0][:5] for cls, rows in table.items()} for family, table in TABLES.items()}
# Under the interpreter small tiles keep the tiny test shapes quick (it runs every program in numpy) and
# exercise the masking on every edge.
FIXED_INTERP = {"gemm": (32, 32, 16, 4, 1), "wgrad": (32, 32, 32, 4, 1)}
POINTWISE_BLOCK = 1024  # the elementwise kernels' block (256 under the interpreter)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def fixed_config() -> bool:
    """True when launches use one fixed config (interpreter, or BVAE_TRITON_FIXED_CONFIG=1); read at each launch."""
    return interpreting() or os.environ.get("BVAE_TRITON_FIXED_CONFIG", "0") == "1"


def dtype_class(dtype: torch.dtype) -> str:
    return "32bit" if dtype == torch.float32 else "16bit"


@functools.cache
def _arch() -> int:
    if not torch.cuda.is_available():
        return 90
    major, minor = torch.cuda.get_device_capability()
    return major * 10 + minor


def arch_bucket() -> int:
    """The table column a GPU uses: sm_90 and newer take the sm_90 rows, the rest the sm_80 ones."""
    return 90 if _arch() >= 90 else 80


def _config(m: int, n: int, k: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=warps, num_stages=stages)


def _key(cfg: triton.Config) -> tuple:
    kw = cfg.kwargs
    return (kw.get("BLOCK_M"), kw.get("BLOCK_N"), kw.get("BLOCK_K"), cfg.num_warps, cfg.num_stages)


def autotune_configs(family: str) -> list[triton.Config]:
    """Every config of the family's tables (both dtype classes; wgrad: chained or not); `prune` keeps the call's."""
    if interpreting():
        return [_config(*FIXED_INTERP[family])]
    seen, out = set(), []
    tables = [TABLES[name] for name in TABLES if name == family or name.startswith(family + "-")]
    for rows in (rows for table in tables for rows in table.values()):
        for row in rows:
            if row[:5] not in seen:
                seen.add(row[:5])
                out.append(_config(*row[:5]))
    return out


def table_rows(family: str, cls: str, arch: int, two_prologues: bool = False) -> list[tuple]:
    """The (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) rows a launch of `family` may choose for a dtype class and
    arch bucket; `two_prologues`: a wgrad launch with a prologue on both operands (a chained layer)."""
    table = TABLES["wgrad-chained" if family == "wgrad" and two_prologues else family]
    return [row[:5] for row in table[cls] if arch in row[5]]


def _make_prune(family: str, operand: str):  # noqa: ANN202
    def prune(configs: list[triton.Config], named_args: dict, **kwargs: object) -> list[triton.Config]:
        """The table rows of this launch's dtype class (from its `operand` tensor) and this GPU's arch."""
        cls = dtype_class(named_args[operand].dtype)
        two = bool(kwargs.get("PRO_X", named_args.get("PRO_X", 0))) and bool(
            kwargs.get("PRO_D", named_args.get("PRO_D", 0))
        )
        wanted = table_rows(family, cls, arch_bucket(), two)[: max_configs()]
        kept = [cfg for cfg in configs if _key(cfg) in wanted]
        return kept or list(configs[:1])

    return prune


def max_configs() -> int | None:
    """BVAE_TRITON_MAX_CONFIGS=N caps autotuning at each table's first N rows (a time-boxed GPU run compiles
    fewer kernels); unset, every row of the launch's dtype class and arch is tried."""
    value = os.environ.get("BVAE_TRITON_MAX_CONFIGS", "")
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"BVAE_TRITON_MAX_CONFIGS must be a positive integer, got {value!r}")
    return int(value)


def prune_by(family: str, operand: str) -> dict:
    return {"early_config_prune": _make_prune(family, operand)}


def fixed_launch(family: str, dtype: torch.dtype, two_prologues: bool = False) -> dict | None:
    """The meta-parameters of a fixed launch (None: autotune): tile sizes, num_warps, num_stages."""
    if not fixed_config():
        return None
    table = "wgrad-chained" if family == "wgrad" and two_prologues else family
    m, n, k, warps, stages = FIXED_INTERP[family] if interpreting() else FIXED_GPU[table][dtype_class(dtype)]
    return {"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "num_warps": warps, "num_stages": stages}


def pointwise_block() -> int:
    return 256 if interpreting() else POINTWISE_BLOCK


def num_sms() -> int:
    """Streaming multiprocessors of the current GPU (a small number under the interpreter); cached per device."""
    if interpreting() or not torch.cuda.is_available():
        return 4
    return _sm_count(torch.cuda.current_device())


@functools.cache
def _sm_count(device: int) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count
