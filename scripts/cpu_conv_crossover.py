"""Where ATen's direct im2col + GEMM convolution beats at::convolution on the CPU (the CPU kernels' threshold).

    python scripts/cpu_conv_crossover.py --threads 1 [--max-macs 2500000] > out.txt

For every shape (batch 1-16, 4-64 channels, 7-28 pixels, kernel 3-4, stride 1-2, padding 1; stride 2 doubles the
channels) it times what one layer's forward, reverse and their gradients cost both ways (wall-clock median of
5 batches of calls, float32): through at::convolution / at::convolution_backward (ATen picks oneDNN or its own
im2col path per call), and through the ops the CPU kernels call directly below their threshold
(_slow_conv2d_forward, slow_conv_transpose2d, _slow_conv2d_backward; the reverse's gradients take two calls).
Prints one line per shape: multiply-adds of one contraction, the shape, both times in us and direct / aten.
Both sides are called from Python through torch.ops, which adds a few us per call to each (five direct calls
against four); inside the C++ kernels that overhead is absent. Where ATen itself picks its im2col path (batch 1,
3x3 kernels, small inputs) the direct ratio above 1 is that Python overhead.
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch
import torch.nn.functional as F

A = torch.ops.aten


def median_us(fn, budget_s: float = 0.02) -> float:  # noqa: ANN001
    for _ in range(3):
        fn()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < budget_s:
        fn()
        n += 1
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n * 1e6)
    return sorted(samples)[2]


def time_shape(n: int, c: int, h: int, k: int, s: int, p: int = 1) -> tuple[int, float, float] | None:
    """(multiply-adds, at::convolution us, direct us) of one layer's forward, reverse and their gradients."""
    o = 2 * c if s == 2 else c
    x, w = torch.randn(n, c, h, h), torch.randn(o, c, k, k)
    z = torch.randn_like(F.conv2d(x, w, None, s, p))
    side = z.shape[-1]
    opad = h - ((side - 1) * s - 2 * p + k)
    if not 0 <= opad < s:
        return None
    st, pd, ks, both = [s, s], [p, p], [k, k], [True, True, False]
    aten = (
        median_us(lambda: F.conv2d(x, w, None, s, p))
        + median_us(lambda: F.conv_transpose2d(z, w, None, s, p, opad))
        + median_us(lambda: A.convolution_backward(z, x, w, None, st, pd, [1, 1], False, [0, 0], 1, both))
        + median_us(lambda: A.convolution_backward(x, z, w, None, st, pd, [1, 1], True, [opad] * 2, 1, both))
    )
    direct = (
        median_us(lambda: A._slow_conv2d_forward(x, w, ks, None, st, pd))
        + median_us(lambda: A.slow_conv_transpose2d(z, w, ks, None, st, pd, [opad] * 2, [1, 1]))
        + median_us(lambda: A._slow_conv2d_backward(z, x, w, ks, st, pd, both))
        + median_us(lambda: A._slow_conv2d_forward(x, w, ks, None, st, pd))  # the reverse's d input
        + median_us(lambda: A._slow_conv2d_backward(z, x, w, ks, st, pd, [False, True, False]))  # its d weight
    )
    return n * o * c * k * k * side * side, aten, direct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-macs", type=int, default=None, help="skip shapes above this many multiply-adds")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for n, c, h, k, s in itertools.product([1, 4, 16], [4, 16, 32, 64], [7, 14, 28], [3, 4], [1, 2]):
        o = 2 * c if s == 2 else c
        if args.max_macs and n * o * c * k * k * (h // s) ** 2 > args.max_macs:
            continue
        timed = time_shape(n, c, h, k, s)
        if timed:
            rows.append((timed[0], f"N{n} C{c} O{o} H{h} k{k} s{s}", *timed[1:]))
    for macs, shape, aten, direct in sorted(rows):
        print(f"{macs:>10} {shape}  aten {aten:8.1f}  direct {direct:8.1f}  ratio {direct / aten:.2f}")


if __name__ == "__main__":
    main()
