"""The "triton" backend: implicit-GEMM bidirectional conv kernels reading one weight buffer.

Exports what bvae_kernels.ops dispatches to: AVAILABLE / UNAVAILABLE_REASON, OPS (name -> autograd-aware
custom op `bvae::triton_<name>` with the compiled op's signature) and unsupported_reason(name, args).
Importing this package never needs a GPU; running the kernels needs CUDA tensors, or CPU tensors with
TRITON_INTERPRET=1 set before this package is imported.
"""

from __future__ import annotations

AVAILABLE = False
UNAVAILABLE_REASON = ""
OPS: dict = {}

try:
    import triton  # noqa: F401
except Exception as exc:  # noqa: BLE001 - any import failure means the backend is absent
    UNAVAILABLE_REASON = f"triton is not importable ({type(exc).__name__}: {exc})"
else:
    try:
        from .ops import OPS, unsupported_reason  # noqa: F811

        AVAILABLE = True
    except Exception as exc:  # noqa: BLE001 - report, do not break `import bvae_kernels`
        UNAVAILABLE_REASON = f"the Triton kernels failed to load ({type(exc).__name__}: {exc})"

if not AVAILABLE:

    def unsupported_reason(name: str, args: tuple) -> str | None:  # noqa: F811
        """Every case is unsupported when the backend is absent."""
        return UNAVAILABLE_REASON


__all__ = ["AVAILABLE", "OPS", "UNAVAILABLE_REASON", "unsupported_reason"]
