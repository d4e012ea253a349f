"""The roofline floor of a case: FLOPs (counted on the eager reference), the bytes a fused implementation must
move, and the device's measured peaks. floor = max(FLOPs / peak matmul rate, bytes / copy bandwidth).

FLOPs come from torch.utils.flop_counter (contractions only). The byte counts are lower bounds: every tensor a
fused layer must read or write, once. The peaks are measured, not taken from a data sheet: the best of many
short samples of an n x n matmul in the case's dtype and of a large device-to-device copy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from .timing import samples


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def layer_bytes(inp: int, w: int, b: int, out: int, inp_grad: bool, backward: bool) -> int:
    """Minimum DRAM traffic of one fused layer (sizes in bytes).

    Forward: input, weight and bias read once, y written once, and u written once when a backward follows.
    Backward: grad_y, u, the saved input and the weight read once; d_input (if wanted), dW and db written once.
    """
    if not backward:
        return inp + w + b + out
    return (inp + w + b + 2 * out) + (2 * out + inp + w + (inp if inp_grad else 0) + w + b)


def module_bytes(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """A loose floor for module cases: input and parameters read, output written, each gradient written."""
    params = sum(nbytes(p) for p in module.parameters())
    return nbytes(x) + 2 * params + 2 * nbytes(y) + (nbytes(x) if x.requires_grad else 0)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of `fn` (run it on the eager reference), counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


@functools.cache
def measure_peaks(device: str, dtype: torch.dtype, quick: bool = False) -> dict[str, float]:
    """The device's measured peak matmul rate (FLOP/s, in `dtype`) and copy bandwidth (bytes/s)."""
    n = 8192 if device == "cuda" else 1024
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    # the best of many short samples: on a shared CPU most samples are slowed by other processes
    budget = 0.5 if quick else 1.5
    reps = 20 if device == "cuda" else 8
    mm = samples(lambda: torch.mm(a, b), device, min_reps=reps, seconds=budget)
    elems = (1 << 28) if device == "cuda" else (1 << (23 if quick else 25))  # well past the last-level cache
    src = torch.empty(elems, device=device, dtype=torch.float32).normal_()
    dst = torch.empty_like(src)
    cp = samples(lambda: dst.copy_(src), device, min_reps=reps, seconds=budget)
    return {
        "peak_flops": 2 * n**3 / (min(mm) * 1e-3),
        "peak_bytes_per_s": 2 * elems * 4 / (min(cp) * 1e-3),
        "matmul_n": n,
        "copy_bytes": elems * 4,
    }


def floor_ms(flops: int, min_bytes: int | None, peaks: dict[str, float]) -> float:
    """The roofline floor in milliseconds: the slower of the compute and the memory bound."""
    return 1e3 * max(flops / peaks["peak_flops"], (min_bytes or 0) / peaks["peak_bytes_per_s"])
