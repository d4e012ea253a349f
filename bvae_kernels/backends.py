"""Which backends exist on this machine, and which op family a call uses.

Backends: "torch" (the eager reference), "cpu" and "cuda" (the compiled ops `torch.ops.bvae.<op>`: one op,
a CPU and a CUDA kernel) and "triton" (`torch.ops.bvae.triton_<op>`: the same schema, fake and autograd, with
Triton kernels registered from bvae_kernels/triton). Order of choice: the `backend=` argument, then
$BVAE_BACKEND, then the default for the tensors' device (CUDA: triton, else cuda, else torch; CPU: cpu, else
torch). A requested or default backend that cannot serve the device falls back down the chain with a one-time
warning that says why; an impossible explicit request (backend="cuda" for CPU tensors) is a ValueError.

The choice is made once per (request, device type) and cached, and $BVAE_BACKEND is read once: call
`refresh()` after changing it in a running process. Cases the Triton kernels cannot serve (float64, very large
kernels or tensors) are handed to the compiled op by the Triton op itself, with a one-time warning.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from ._library import C_IMPORT_ERROR, compiled_library_loaded, warn_once

BACKENDS = ("torch", "cpu", "cuda", "triton")
# What each backend runs: the reference, the compiled op family, or the Triton op family.
IMPL_OF = {"torch": "torch", "cpu": "compiled", "cuda": "compiled", "triton": "triton"}


def compiled_ops_available() -> bool:
    """True when bvae_kernels._C loaded and registered the bvae ops."""
    return compiled_library_loaded()


@functools.cache
def cuda_ops_available() -> bool:
    """True when the compiled ops have CUDA kernels (built with nvcc against a CUDA build of torch)."""
    return compiled_ops_available() and torch._C._dispatch_has_kernel_for_dispatch_key("bvae::bi_conv2d", "CUDA")


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def triton_unavailable_reason() -> str | None:
    """None when the Triton kernels can be registered (importing bvae_kernels.triton does it), else why not."""
    if not compiled_ops_available():
        return f"the Triton ops share the compiled library's schemas and autograd: {C_IMPORT_ERROR or 'not built'}"
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton)"
    try:
        import triton  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a third-party package that fails to import is simply unavailable
        return f"triton is installed but does not import ({type(exc).__name__}: {exc})"
    from . import triton as _kernels  # registers the Triton kernels; our own import errors propagate

    return _kernels.UNAVAILABLE_REASON


def triton_available() -> bool:
    """Triton kernels can run: a CUDA device, or CPU tensors under TRITON_INTERPRET=1."""
    return (torch.cuda.is_available() or triton_interpreting()) and triton_unavailable_reason() is None


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


def _unavailable_reason(name: str, device_type: str) -> str | None:
    """None when `name` can run on tensors of `device_type`, else the reason."""
    if name == "torch":
        return None
    if name == "cpu":
        if device_type != "cpu":
            return f"the cpu backend serves CPU tensors, not {device_type}"
        return None if compiled_ops_available() else (C_IMPORT_ERROR or "bvae_kernels._C has no bvae ops")
    if name == "cuda":
        if device_type != "cuda":
            return f"the cuda backend serves CUDA tensors, not {device_type}"
        if not cuda_ops_available():
            return "bvae_kernels._C was built without CUDA kernels (torch without CUDA, or nvcc not found)"
        return None
    if name == "triton":
        reason = triton_unavailable_reason()
        if reason is not None:
            return reason
        if device_type == "cuda" or (device_type == "cpu" and triton_interpreting()):
            return None
        return f"the triton backend serves CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), not {device_type}"
    raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")


@functools.cache
def env_backend() -> str | None:
    """$BVAE_BACKEND, read once (refresh() reads it again)."""
    return os.environ.get("BVAE_BACKEND") or None


def refresh() -> None:
    """Forgets cached choices and $BVAE_BACKEND (after changing the environment in a running process)."""
    env_backend.cache_clear()
    _CHOICES.clear()
    warn_once.cache_clear()


_CHOICES: dict[tuple, str] = {}


def _choose(requested: str | None, device_type: str) -> str:
    """The backend name for one call; raises ValueError for a bad or impossible request."""
    if requested is not None:
        if requested not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or None, got {requested!r}")
        reason = _unavailable_reason(requested, device_type)
        if reason is not None:
            raise ValueError(f"backend={requested!r} cannot run this call: {reason}")
        return requested
    env = env_backend()
    if env is not None and env not in BACKENDS:
        raise ValueError(f"$BVAE_BACKEND must be one of {BACKENDS}, got {env!r}")
    chain = ("triton", "cuda", "torch") if device_type == "cuda" else ("cpu", "torch")
    if env is not None:
        chain = (env,) + tuple(name for name in chain if name != env)
    first_reason = None
    for name in chain:
        reason = _unavailable_reason(name, device_type)
        if reason is None:
            if first_reason is not None:
                warn_once(f"bvae_kernels: using backend {name!r} instead of {chain[0]!r}: {first_reason}")
            return name
        first_reason = first_reason or reason
    return "torch"


@torch.compiler.assume_constant_result
def _choice_or_error(requested: object, device_type: str) -> str:
    """The backend name, or "!" + a ValueError's message. Under torch.compile this runs once, eagerly, at trace
    time (the probes, imports and warnings cannot be traced, and a graph break would defeat fullgraph=True);
    errors travel out as a constant and are raised by the caller, so they stay ValueErrors under compile."""
    key = (requested, device_type)
    try:
        return _CHOICES[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable request: not a backend name
        return f"!backend must be one of {BACKENDS} or None, got {requested!r}"
    try:
        choice = _choose(requested, device_type)  # type: ignore[arg-type]
    except ValueError as exc:
        return "!" + str(exc)
    _CHOICES[key] = choice
    return choice


def resolve_backend(requested: str | None, device: torch.device | str) -> str:
    """The backend a call on tensors of `device` uses ("torch", "cpu", "cuda" or "triton"); raises ValueError."""
    device_type = device if isinstance(device, str) else device.type
    choice = _choice_or_error(requested, device_type)
    if choice[0] == "!":
        raise ValueError(choice[1:])
    return choice


def impl_for(requested: str | None, device_type: str) -> str:
    """The op family a call uses: "torch" (reference), "compiled" or "triton" (see IMPL_OF)."""
    choice = _choice_or_error(requested, device_type)
    if choice[0] == "!":
        raise ValueError(choice[1:])
    return IMPL_OF[choice]


def impl_table(name: str, reference_fn: object) -> dict[str, object]:
    """{"torch": reference_fn, "compiled": OpOverload, "triton": OpOverload} for public op `name` (the op
    families present in this build): what a wrapper indexes with impl_for()."""
    table = {"torch": reference_fn}
    if compiled_ops_available():
        table["compiled"] = getattr(torch.ops.bvae, name).default
        table["triton"] = getattr(torch.ops.bvae, f"triton_{name}").default
    return table


FAST_INT_ARGS = (int, list, tuple)  # passed to the ops as they are (the schema parser takes them)
