"""Which backends exist on this machine, and which one a call uses.

Order of choice: the `backend=` argument, then $BVAE_BACKEND, then the default for the tensors' device
(CUDA: triton, else cuda, else torch; CPU: cpu, else torch). A requested or default backend that cannot
serve the call falls back with a one-time warning that says why; an impossible explicit request (say
backend="cuda" for CPU tensors) is a ValueError.
"""

from __future__ import annotations

import functools
import os
import warnings

import torch

BACKENDS = ("torch", "cpu", "cuda", "triton")

_C_IMPORT_ERROR: str | None = None
try:  # the compiled ops are optional: `import bvae_kernels` must work anywhere
    from . import _C  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the build
    _C_IMPORT_ERROR = (
        f"bvae_kernels._C could not be imported ({exc}); rebuild with `pip install --no-build-isolation .`"
    )


@functools.cache
def compiled_ops_available() -> bool:
    """True when bvae_kernels._C loaded and registered the bvae ops."""
    return _C_IMPORT_ERROR is None and hasattr(torch.ops.bvae, "bi_conv2d")


@functools.cache
def cuda_ops_available() -> bool:
    """True when the compiled ops have CUDA kernels registered (built with nvcc and a CUDA torch)."""
    if not compiled_ops_available():
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key("bvae::bi_conv2d", "CUDA")


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def triton_import_error() -> str | None:
    """None when the Triton backend imports, else why not."""
    try:
        from . import triton as _triton_backend  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available", with the reason
        return f"the Triton backend could not be imported ({type(exc).__name__}: {exc})"
    if not getattr(_triton_backend, "AVAILABLE", False):
        return getattr(_triton_backend, "UNAVAILABLE_REASON", "the Triton backend is not available")
    return None


def triton_available() -> bool:
    """Triton kernels can run: a CUDA device, or CPU tensors under TRITON_INTERPRET=1."""
    if triton_import_error() is not None:
        return False
    return torch.cuda.is_available() or triton_interpreting()


def available_backends() -> list[str]:
    """The backends usable on this machine, e.g. ["torch", "cpu"] or ["torch", "cpu", "cuda", "triton"]."""
    names = ["torch"]
    if compiled_ops_available():
        names.append("cpu")
    if torch.cuda.is_available() and cuda_ops_available():
        names.append("cuda")
    if triton_available():
        names.append("triton")
    return names


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def _unavailable_reason(name: str, device_type: str) -> str | None:
    """None when `name` can run on tensors of `device_type`, else the reason."""
    if name == "torch":
        return None
    if name == "cpu":
        if device_type != "cpu":
            return f"the cpu backend serves CPU tensors, not {device_type}"
        return None if compiled_ops_available() else (_C_IMPORT_ERROR or "bvae_kernels._C has no bvae ops")
    if name == "cuda":
        if device_type != "cuda":
            return f"the cuda backend serves CUDA tensors, not {device_type}"
        if not cuda_ops_available():
            return "bvae_kernels._C was built without CUDA kernels (torch without CUDA, or nvcc not found)"
        return None
    if name == "triton":
        reason = triton_import_error()
        if reason is not None:
            return reason
        if device_type == "cuda" or (device_type == "cpu" and triton_interpreting()):
            return None
        return f"the triton backend serves CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), not {device_type}"
    raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")


def _default_chain(device_type: str) -> tuple[str, ...]:
    return ("triton", "cuda", "torch") if device_type == "cuda" else ("cpu", "torch")


def resolve_backend(requested: str | None, device: torch.device, unsupported: str | None = None) -> str:
    """Picks the backend for one call on tensors of `device` (see _resolve_backend); raises ValueError.

    Under torch.compile the choice is made once, eagerly, at trace time (assume_constant_result): the
    availability probes (a dispatcher query, imports) and the fallback warning cannot be traced, and a
    graph break there would defeat fullgraph=True. Errors travel out as a constant and are raised here, so
    that they stay ValueErrors under compile too.
    """
    choice = _resolve_backend_constant(requested, device, unsupported)
    if choice.startswith("!"):
        raise ValueError(choice[1:])
    return choice


@torch.compiler.assume_constant_result
def _resolve_backend_constant(requested: str | None, device: torch.device, unsupported: str | None) -> str:
    """The backend name, or "!" + the ValueError's message."""
    try:
        return _resolve_backend(requested, device, unsupported)
    except ValueError as exc:
        return "!" + str(exc)


def _resolve_backend(requested: str | None, device: torch.device, unsupported: str | None = None) -> str:
    """Picks the backend for one call on tensors of `device`.

    `unsupported` is the reason the Triton kernels cannot serve this particular case (None if they can).
    An explicit `backend=` that cannot serve the device raises; $BVAE_BACKEND and the defaults fall back
    down the device's chain, warning once with the reason.
    """
    device_type = device.type
    if requested is not None:
        if requested not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or None, got {requested!r}")
        reason = _unavailable_reason(requested, device_type)
        if reason is None and requested == "triton":
            reason = unsupported
        if reason is not None:
            raise ValueError(f"backend={requested!r} cannot run this call: {reason}")
        return requested
    env = os.environ.get("BVAE_BACKEND") or None
    if env is not None and env not in BACKENDS:
        raise ValueError(f"$BVAE_BACKEND must be one of {BACKENDS}, got {env!r}")
    chain = _default_chain(device_type)
    if env is not None:
        chain = (env,) + tuple(name for name in chain if name != env)
    first_reason = None
    for name in chain:
        reason = _unavailable_reason(name, device_type)
        if reason is None and name == "triton" and unsupported:
            reason = unsupported
        if reason is None:
            if first_reason is not None:
                _warn_once(f"bvae_kernels: using backend {name!r} instead of {chain[0]!r}: {first_reason}")
            return name
        if first_reason is None:
            first_reason = reason
    return "torch"
