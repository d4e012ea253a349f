"""`bvae.convert(model)`: swap a model's nn.Conv2d / nn.Linear layers for the bidirectional ones, in place.

In the spirit of Liger-Kernel's `apply_liger_kernel_to_*`: the converted model computes what it computed (the
layers get the identity activation and no reverse bias, and keep the very Parameter objects, so an optimizer,
hooks and `requires_grad` flags carry over and its state_dict loads back into the original model), while each
swapped layer runs the package's fused ops and gains a `reverse(...)` direction through the same weight.
Without a reverse bias nothing in a forward-only model goes unused, so DDP trains it with default settings.
"""

from __future__ import annotations

import warnings

from torch import nn

from .layers import BiConv2d, BiLinear


def _unsupported(conv: nn.Conv2d) -> str | None:
    """Why BiConv2d cannot stand in for `conv` (None: it can)."""
    if conv.groups != 1:
        return f"groups={conv.groups}"
    if tuple(conv.dilation) != (1, 1):
        return f"dilation={tuple(conv.dilation)}"
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r}"
    if conv.padding == "same" and (any(k % 2 == 0 for k in conv.kernel_size) or tuple(conv.stride) != (1, 1)):
        return "padding='same' with an even kernel"
    return None


def _swap(layer: nn.Module, backend: str | None) -> nn.Module | None:
    """The bidirectional twin of `layer` (sharing its parameters), or None when it has none."""
    if type(layer) not in (nn.Linear, nn.Conv2d):
        return None
    meta = {"device": "meta", "dtype": layer.weight.dtype}  # no storage: the layer's own parameters move in
    if type(layer) is nn.Linear:
        new = BiLinear(layer.in_features, layer.out_features, bias=layer.bias is not None, reverse_bias=False,
                       activation=None, backend=backend, **meta)  # fmt: skip
    elif type(layer) is nn.Conv2d and _unsupported(layer) is None:
        new = BiConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                       padding=layer.padding, bias=layer.bias is not None, reverse_bias=False, activation=None,
                       backend=backend, **meta)  # fmt: skip
    else:
        return None
    new.weight = layer.weight
    new.bias = layer.bias
    new.train(layer.training)
    return new


def convert(model: nn.Module, backend: str | None = None) -> nn.Module:
    """Replaces every nn.Conv2d and nn.Linear in `model` (exact types, not subclasses) by a BiConv2d / BiLinear
    with the identity activation, no reverse bias and the same Parameter objects; returns `model`.

    Convolutions the bidirectional layer cannot represent (groups, dilation, other padding modes) stay as they
    are, with one warning that lists them. A model that is itself an nn.Conv2d / nn.Linear is returned swapped.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert: model must be an nn.Module, got {type(model).__name__}")
    if (root := _swap(model, backend)) is not None:
        return root
    kept = []
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent._modules.items()):
            if child is None or type(child) not in (nn.Conv2d, nn.Linear):
                continue
            new = _swap(child, backend)
            if new is None:
                kept.append(f"{parent_name + '.' if parent_name else ''}{name} ({_unsupported(child)})")
            else:
                parent._modules[name] = new
    if kept:
        warnings.warn(f"bvae.convert: left as nn.Conv2d (not supported yet): {', '.join(kept)}", stacklevel=2)
    return model


__all__ = ["convert"]
