"""The `bvae` command (also `python -m bvae`): train, demo, bench, eval, sample, compare.

Each command lives in its own module, which exposes `register_cli(subparsers)` adding its subcommands
(each subparser sets `func=callable(args) -> int`). A module that is missing or fails to import leaves its
commands out with a note in `bvae --help`, so one broken extra never takes the whole CLI down.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = ("bvae.train", "bvae.bench", "bvae.evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bvae", description="Bidirectional VAEs on fused bvae_kernels ops.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    missing = []
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            missing.append(f"{name} ({exc})")
            continue
        module.register_cli(subparsers)
    if missing:
        parser.epilog = "unavailable commands from: " + ", ".join(missing)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
