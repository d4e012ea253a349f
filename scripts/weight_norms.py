"""Every weight's Frobenius norm and every reverse scale e^s of a `bvae demo` run's two trained models.

Usage: python scripts/weight_norms.py DEMO_OUT [JSON_OUT]   (reads DEMO_OUT/{bvae,vae}/checkpoint.pt;
writes JSON_OUT, default DEMO_OUT/weight_norms.json). Why: the README's reverse-scale argument rests on
how far apart the two directions' gains end up (the VAE's decoder weights against its encoder's).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bvae.checkpoint import load_model


def weight_norms(checkpoint: Path) -> dict[str, dict[str, float]]:
    """{parameter name: {"norm": ||W||_F}} for weights, {"exp": e^s} for reverse log-scales."""
    model, _ = load_model(checkpoint)
    out: dict[str, dict[str, float]] = {}
    for name, p in model.named_parameters():
        if name.endswith("reverse_log_scale"):
            out[name] = {"exp": round(p.detach().exp().item(), 3)}
        elif name.endswith("weight"):
            out[name] = {"norm": round(p.detach().norm().item(), 3)}
    return out


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    demo_out = Path(argv[0])
    target = Path(argv[1]) if len(argv) == 2 else demo_out / "weight_norms.json"
    norms = {kind: weight_norms(demo_out / kind / "checkpoint.pt") for kind in ("bvae", "vae")}
    target.write_text(json.dumps(norms, indent=1) + "\n")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
