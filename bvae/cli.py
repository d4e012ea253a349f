"""The `bvae` command (also `python -m bvae`): train, demo, bench, eval, sample, compare.

Each command lives in its own module, which exposes `register_cli(subparsers)` adding its subcommands
(each subparser sets `func=callable(args) -> int`). A module that is missing or fails to import leaves its
commands out with a note in `bvae --help`, so one broken extra never takes the whole CLI down.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path

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


# The user errors a command can meet once it runs (a missing file, a value only the data can refute): a message and
# exit code 2, never a traceback. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)


def preflight(args: argparse.Namespace) -> str | None:
    """Why the command cannot start (None: it can): device, backend and output folder, checked before any work."""
    device = getattr(args, "device", None)
    if device is not None:
        import torch

        try:
            parsed = torch.device(device)
        except (RuntimeError, ValueError, TypeError):
            return f"--device {device!r} is not a device (cpu, cuda or cuda:N)"
        if parsed.type not in ("cpu", "cuda"):
            return f"--device {device!r}: only cpu and cuda are supported"
        if parsed.type == "cuda" and not torch.cuda.is_available():
            return f"--device {device!r}: torch sees no CUDA device here"
        if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
            return f"--device {device!r}: there are {torch.cuda.device_count()} CUDA devices"
    backend = getattr(args, "backend", None)
    if backend is not None:
        from bvae_kernels.backends import BACKENDS

        if backend not in BACKENDS:
            return f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}"
    out = getattr(args, "out", None)
    if out is not None and args.command != "compare":  # compare's --out is a file, checked there
        return _writable_folder(Path(out))
    return None


def _writable_folder(path: Path) -> str | None:
    if path.exists() and not path.is_dir():
        return f"--out {str(path)!r} exists and is not a folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        return f"--out {str(path)!r} is not a writable folder ({exc.strerror or exc})"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    if problem := preflight(args):
        print(f"bvae {args.command}: error: {problem}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        print(f"bvae {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
