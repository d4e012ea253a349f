"""Host overhead: the CPU time a fused call costs against the eager chain it replaces (`bvae bench --host`).

On a GPU a BVAE layer's kernels take tens of microseconds, so the Python and dispatch between a user's call and
the kernel decide the step time. This measures that cost where it can be measured without a GPU: thread CPU
time (`time.thread_time_ns`) of many calls on tiny CPU tensors, so that the arithmetic is negligible and what
remains is the host's work. Variants of one case are interleaved (rotating order) and each sample times
`number` back-to-back calls; a variant's ratio is the median of its per-sample ratios to the baseline sample
taken next to it (which cancels the machine's drift), reported with their p20-p80 band. One torch thread: a
worker thread's time would not be counted.

Cases: every public op and module in both modes (forward without grad; forward + backward), against the eager
chain that computes the same function (F.conv2d / F.conv_transpose2d / F.linear, then `alpha*u + beta*sigmoid
(gamma*u)`), and a BVAE training step at batch 1 (Fashion-MNIST model, AdamW) on the default backend against
the same model on backend="torch".
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import bvae_kernels as bk

from .blocks import BiResBlock
from .layers import BiConv2d, BiLinear
from .models import build_model

ALPHA, BETA, GAMMA = 0.1, 1.0, 1.0  # G-NoVa's defaults; the eager chain spells them out


def eager_gnova(u: torch.Tensor) -> torch.Tensor:
    """The hand-written eager chain a user would write for G-NoVa (gamma = 1)."""
    return ALPHA * u + BETA * torch.sigmoid(u)


@dataclass
class HostCase:
    """One comparison: `variants` maps a name to a zero-argument callable; the first is the baseline."""

    name: str
    mode: str  # "fwd" (no grad) or "fwd+bwd"
    variants: dict[str, Callable[[], object]]
    note: str = ""


def _fwd_bwd(make: Callable[[], torch.Tensor], grad: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        torch.autograd.backward(make(), grad)

    return run


def _no_grad(make: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad():
            return make()

    return run


def _pair(name: str, eager: Callable[[], torch.Tensor], fused: Callable[[], torch.Tensor], note: str = "") -> list:
    """The no-grad and the forward+backward cases of one (eager, fused) pair of callables."""
    with torch.no_grad():
        grad = torch.ones_like(eager())
    return [
        HostCase(name, "fwd", {"eager": _no_grad(eager), "fused": _no_grad(fused)}, note),
        HostCase(name, "fwd+bwd", {"eager": _fwd_bwd(eager, grad), "fused": _fwd_bwd(fused, grad)}, note),
    ]


def op_cases() -> list[HostCase]:
    """The public ops on tiny tensors (2x4x6x6 activations, 3x3 kernels; 2x8 -> 6 dense)."""
    g = torch.Generator().manual_seed(0)

    def leaf(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(shape, generator=g) * scale).requires_grad_()

    x, w, b, br = leaf(2, 4, 6, 6), leaf(4, 4, 3, 3, scale=0.3), leaf(4), leaf(4)
    s = torch.zeros((), requires_grad=True)
    lx, lw, lb, lz, lbr = leaf(2, 8), leaf(6, 8, scale=0.3), leaf(6), leaf(2, 6), leaf(8)
    cases = _pair("gnova", lambda: eager_gnova(x), lambda: bk.gnova(x))
    cases += _pair(
        "bi_conv2d", lambda: eager_gnova(F.conv2d(x, w, b, 1, 1)), lambda: bk.bi_conv2d(x, w, b, stride=1, padding=1)
    )
    cases += _pair(
        "bi_conv2d_reverse",
        lambda: eager_gnova(F.conv_transpose2d(x, w, br, 1, 1)),
        lambda: bk.bi_conv2d_reverse(x, w, br, stride=1, padding=1),
    )
    cases += _pair(
        "bi_conv2d_reverse+scale",
        lambda: eager_gnova(F.conv_transpose2d(x, w, None, 1, 1) * s.exp() + br[:, None, None]),
        lambda: bk.bi_conv2d_reverse(x, w, br, stride=1, padding=1, log_scale=s),
        "the reverse scale e^s in the eager chain too",
    )
    cases += _pair("bi_linear", lambda: eager_gnova(F.linear(lx, lw, lb)), lambda: bk.bi_linear(lx, lw, lb))
    cases += _pair(
        "bi_linear_reverse",
        lambda: eager_gnova(F.linear(lz, lw.t(), lbr)),
        lambda: bk.bi_linear_reverse(lz, lw, lbr),
    )
    return cases


class _EagerResBlock(nn.Module):
    """BiResBlock as an eager BVAE would write it: two nn.Conv2d forward (the same weights), and in reverse
    F.conv_transpose2d through those weights (no nn module reads a conv's weight transposed)."""

    def __init__(self, block: BiResBlock) -> None:
        super().__init__()
        self.conv1, self.conv2 = (nn.Conv2d(block.channels, block.channels, 3, padding=1) for _ in range(2))
        for eager, fused in ((self.conv1, block.conv1), (self.conv2, block.conv2)):
            eager.weight, eager.bias = fused.weight, fused.bias
        self.reverse_biases = (block.conv1.reverse_bias, block.conv2.reverse_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return eager_gnova(x + self.conv2(eager_gnova(self.conv1(x))))

    def reverse(self, z: torch.Tensor) -> torch.Tensor:
        br1, br2 = self.reverse_biases
        h = eager_gnova(F.conv_transpose2d(z, self.conv2.weight, br2, 1, 1))
        return eager_gnova(z + F.conv_transpose2d(h, self.conv1.weight, br1, 1, 1))


def module_cases() -> list[HostCase]:
    """The drop-in modules against the nn modules (or F calls on the same weights) plus the eager activation."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    conv, biconv = nn.Conv2d(4, 4, 3, padding=1), BiConv2d(4, 4, 3, padding=1)
    convt = nn.ConvTranspose2d(4, 4, 3, padding=1)
    scaled = BiConv2d(4, 4, 3, padding=1, reverse_scale=True)
    lin, bilin = nn.Linear(8, 6), BiLinear(8, 6, reverse_scale=True)
    lx, lz = torch.randn(2, 8, requires_grad=True), torch.randn(2, 6, requires_grad=True)
    block = BiResBlock(4, reverse_scale=False)
    eager_block = _EagerResBlock(block)
    s, ls, sbr = scaled.reverse_log_scale, bilin.reverse_log_scale, scaled.reverse_bias[:, None, None]
    cases = _pair("BiConv2d.forward", lambda: eager_gnova(conv(x)), lambda: biconv(x), "vs nn.Conv2d + activation")
    cases += _pair(
        "BiConv2d.reverse",
        lambda: eager_gnova(F.conv_transpose2d(x, scaled.weight, None, 1, 1) * s.exp() + sbr),
        lambda: scaled.reverse(x),
        "with the reverse scale (the models' default), vs the same function in eager ops",
    )
    cases += _pair(
        "nn.ConvTranspose2d swap",
        lambda: eager_gnova(convt(x)),
        lambda: biconv.reverse(x),
        "BiConv2d.reverse without a scale vs nn.ConvTranspose2d + activation",
    )
    cases += _pair("BiLinear.forward", lambda: eager_gnova(lin(lx)), lambda: bilin(lx), "vs nn.Linear + activation")
    cases += _pair(
        "BiLinear.reverse",
        lambda: eager_gnova(F.linear(lz, bilin.weight.t()) * ls.exp() + bilin.reverse_bias),
        lambda: bilin.reverse(lz),
        "with the reverse scale, vs the same function in eager ops",
    )
    cases += _pair("BiResBlock.forward", lambda: eager_block(x), lambda: block(x), "vs the block in eager ops")
    cases += _pair("BiResBlock.reverse", lambda: eager_block.reverse(x), lambda: block.reverse(x))
    return cases


def train_step(
    backend: str | None, batch: int = 1, width: int | None = None, hidden: int | None = None, device: str = "cpu"
) -> Callable:
    """One AdamW step of the Fashion-MNIST BVAE (VAE objective) on a fixed batch."""
    torch.manual_seed(0)
    size = {"width": width, "hidden": hidden}
    model = build_model(kind="bvae", dataset="fashion-mnist", latent_dim=16, backend=backend, **size).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(device)
    eps = torch.randn(batch, 16, generator=torch.Generator().manual_seed(1)).to(device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(x, eps=eps).loss.backward()
        opt.step()

    return step


def model_cases() -> list[HostCase]:
    return [
        HostCase(
            "bvae_train_step batch 1",
            "train",
            {"torch": train_step("torch"), "fused": train_step(None)},
            "Fashion-MNIST BVAE (width 16, hidden 128), AdamW; backend='torch' vs the default (cpu)",
        ),
        HostCase(
            "bvae_train_step batch 1 width 4",
            "train",
            {"torch": train_step("torch", width=4, hidden=16), "fused": train_step(None, width=4, hidden=16)},
            "the same step at width 4, hidden 16: arithmetic near zero, what remains is host work",
        ),
    ]


def all_cases() -> list[HostCase]:
    return op_cases() + module_cases() + model_cases()


def device_cases(device: str, backends: list[str]) -> list[HostCase]:
    """Host time on `device` (CUDA): the ops and a batch-1 training step, the eager chain against each backend
    (every variant launches its kernels; thread CPU time counts the launching, not the kernels)."""
    g = torch.Generator().manual_seed(0)

    def leaf(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(shape, generator=g) * scale).to(device).requires_grad_()

    x, w, b = leaf(2, 4, 6, 6), leaf(4, 4, 3, 3, scale=0.3), leaf(4)
    s = torch.zeros((), device=device, requires_grad=True)
    lx, lw, lb = leaf(2, 8), leaf(6, 8, scale=0.3), leaf(6)
    ops = {
        "bi_conv2d": (
            lambda: eager_gnova(F.conv2d(x, w, b, 1, 1)),
            lambda be: lambda: bk.bi_conv2d(x, w, b, stride=1, padding=1, backend=be),
        ),
        "bi_conv2d_reverse+scale": (
            lambda: eager_gnova(F.conv_transpose2d(x, w, None, 1, 1) * s.exp() + b[:, None, None]),
            lambda be: lambda: bk.bi_conv2d_reverse(x, w, b, stride=1, padding=1, log_scale=s, backend=be),
        ),
        "bi_linear": (
            lambda: eager_gnova(F.linear(lx, lw, lb)),
            lambda be: lambda: bk.bi_linear(lx, lw, lb, backend=be),
        ),
    }
    cases = []
    for name, (eager, fused) in ops.items():
        with torch.no_grad():
            grad = torch.ones_like(eager())
        variants = {"eager": eager, **{be: fused(be) for be in backends}}
        cases.append(HostCase(name, "fwd", {k: _no_grad(v) for k, v in variants.items()}))
        cases.append(HostCase(name, "fwd+bwd", {k: _fwd_bwd(v, grad) for k, v in variants.items()}))
    steps = {"torch": train_step("torch", device=device), **{be: train_step(be, device=device) for be in backends}}
    cases.append(HostCase("bvae_train_step batch 1", "train", steps, f"Fashion-MNIST BVAE, AdamW, on {device}"))
    return cases


def per_call_us(fn: Callable[[], object], number: int) -> float:
    """Thread CPU microseconds per call over `number` back-to-back calls."""
    t0 = time.thread_time_ns()
    for _ in range(number):
        fn()
    return (time.thread_time_ns() - t0) / number / 1e3


def _quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def measure(case: HostCase, rounds: int = 21, sample_ms: float = 30.0) -> list[dict]:
    """Interleaved samples of every variant of `case`; one row per variant (the first is the baseline)."""
    names = list(case.variants)
    for fn in case.variants.values():  # warm-up: first calls import, allocate, pick algorithms
        for _ in range(5):
            fn()
    first = per_call_us(case.variants[names[0]], 3)
    number = max(1, min(2000, int(sample_ms * 1e3 / max(first, 1.0))))
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            samples[n].append(per_call_us(case.variants[n], number))
    base = samples[names[0]]
    rows = []
    for n in names:
        ratios = [a / b for a, b in zip(samples[n], base, strict=True)]
        rows.append(
            {
                "case": case.name,
                "mode": case.mode,
                "variant": n,
                "median_us": statistics.median(samples[n]),
                "ratio": statistics.median(ratios),  # paired with the baseline sample taken next to it
                "ratio_p20": _quantile(ratios, 0.2),
                "ratio_p80": _quantile(ratios, 0.8),
                "samples": len(samples[n]),
                "calls_per_sample": number,
                "note": case.note,
            }
        )
    return rows


def select(cases: list[HostCase], patterns: str | None) -> list[HostCase]:
    """Cases whose name contains one of the comma-separated patterns (all without patterns)."""
    if not patterns:
        return cases
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    return [c for c in cases if any(p in c.name for p in pats)]


def markdown(rows: list[dict]) -> str:
    """One line per case: baseline and fused per-call thread time, the ratio and its p20-p80 band."""
    lines = [
        "| case | mode | baseline us | fused us | fused / baseline (median of paired ratios) | p20-p80 |",
        "|---|---|---|---|---|---|",
    ]
    by_case: dict[tuple, list[dict]] = {}
    for r in rows:
        by_case.setdefault((r["case"], r["mode"]), []).append(r)
    for (name, mode), group in by_case.items():
        base = group[0]
        for fused in group[1:]:
            label = "" if len(group) == 2 else f" ({fused['variant']})"
            lines.append(
                f"| {name} | {mode} | {base['median_us']:.1f} ({base['variant']}) | {fused['median_us']:.1f}{label} | "
                f"**{fused['ratio']:.2f}x** | {fused['ratio_p20']:.2f}-{fused['ratio_p80']:.2f} |"
            )
    return "\n".join(lines)
