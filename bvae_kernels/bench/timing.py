"""How a callable is timed and its memory measured.

On CUDA a sample is timed with CUDA events around `number` back-to-back calls; on CPU with perf_counter. Warm-up
runs a callable until compilation, cudnn.benchmark and the allocator have settled. Memory: the bytes autograd
saves for backward (counted once per storage, parameters excluded) on any device, and the CUDA peak allocation
above what was allocated before the call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_once(fn: Callable[[], object], device: str, number: int) -> float:
    """Milliseconds per call, over `number` back-to-back calls (CUDA events on CUDA, perf_counter on CPU)."""
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(number):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / number
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) * 1e3 / number


def warm_up(fn: Callable[[], object], device: str, min_calls: int = 3, min_seconds: float = 0.1) -> float:
    """Runs `fn` until it is warm (compile, cudnn.benchmark, allocator); returns the last call's ms."""
    t_end = time.perf_counter() + min_seconds
    calls, last = 0, float("inf")
    while calls < min_calls or time.perf_counter() < t_end:
        last = time_once(fn, device, 1)
        calls += 1
        if calls > 200:
            break
    return last


def samples(fn: Callable[[], object], device: str, min_reps: int, seconds: float) -> list[float]:
    """Milliseconds of single calls: at least `min_reps`, and more until `seconds` have passed (at most 200)."""
    time_once(fn, device, 1)  # warm-up
    out: list[float] = []
    t_end = time.perf_counter() + seconds
    while len(out) < min_reps or (time.perf_counter() < t_end and len(out) < 200):
        out.append(time_once(fn, device, 1))
    return out


def calls_per_sample(ms: float, device: str) -> int:
    """Calls per sample so that one sample lasts about 1 ms (CPU timer resolution and call jitter)."""
    target = 1.0 if device == "cpu" else 0.5
    return max(1, min(1000, math.ceil(target / max(ms, 1e-4))))


def quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def saved_activation_bytes(fn: Callable[[], object], exclude: list[torch.Tensor]) -> int:
    """Bytes autograd saves for backward during `fn`, counted once per storage; `exclude` (parameters) not counted."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in skip and ptr != 0:
                seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
        except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. functional wrappers)
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def peak_cuda_bytes(fn: Callable[[], object]) -> int:
    """Peak CUDA allocation during one call of `fn`, above what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def do_bench_ms(fn: Callable[[], object]) -> float | None:
    """Triton's device-side median (L2 flushed between calls), or None without Triton."""
    try:
        from triton.testing import do_bench
    except ImportError:
        return None
    return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
