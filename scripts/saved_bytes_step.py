"""Activation bytes autograd saves in one Fashion-MNIST BVAE training step: the eager reference, and a fused
backend with and without chained pre-activations.

    TRITON_INTERPRET=1 python scripts/saved_bytes_step.py 64 triton   # the triton backend in the interpreter
    python scripts/saved_bytes_step.py 64 cpu

The figure is exact (storages counted once, parameters excluded), so an interpreted run on a CPU gives the
bytes a GPU run keeps; the interpreter needs about 15 minutes at batch 64.
"""

import json
import platform
import sys
import time

import torch

import bvae.blocks as blocks
from bvae.models import build_model
from bvae_kernels.bench.timing import saved_activation_bytes

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 64
fused = sys.argv[2] if len(sys.argv) > 2 else "triton"
x = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))
eps = torch.randn(batch, 16, generator=torch.Generator().manual_seed(1))
out = {}
runs = (("eager reference", "torch", True), (f"{fused} chained", fused, True), (f"{fused} unchained", fused, False))
for name, backend, chain in runs:
    blocks.CHAINING = chain
    torch.manual_seed(0)
    model = build_model(kind="bvae", dataset="fashion-mnist", latent_dim=16, backend=backend)
    t0 = time.time()
    step = lambda m=model: m(x, eps=eps).loss.backward()  # noqa: E731
    out[name] = saved_activation_bytes(step, list(model.parameters())) / 2**20
    print(f"{name}: {out[name]:.3f} MiB ({time.time() - t0:.0f} s)", flush=True)
meta = {
    "batch": batch,
    "torch": torch.__version__,
    "machine": platform.processor() or platform.machine(),
    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "argv": sys.argv,
    "unit": "MiB",
}
print(json.dumps({"meta": meta, "saved_mib": out}))
