"""`bvae.convert(model)`: swap a model's nn.Conv2d / nn.Linear layers for the bidirectional ones, in place.

In the spirit of Liger-Kernel's `apply_liger_kernel_to_*`: the converted model computes what it computed (the
layers get the identity activation and no reverse bias, and keep the very Parameter objects, so an optimizer,
hooks and `requires_grad` flags carry over and its state_dict loads back into the original model), while each
swapped layer runs the package's fused ops and gains a `reverse(...)` direction through the same weight.
Without a reverse bias nothing in a forward-only model goes unused, so DDP trains it with default settings.
"""

from __future__ import annotations

from torch import nn

from .layers import BiConv2d, BiLinear


def _swap(layer: nn.Module, backend: str | None) -> nn.Module | None:
    """The bidirectional twin of `layer` (sharing its parameters), or None when it has none."""
    if type(layer) not in (nn.Linear, nn.Conv2d):
        return None
    meta = {"device": "meta", "dtype": layer.weight.dtype}  # no storage: the layer's own parameters move in
    if type(layer) is nn.Linear:
        new = BiLinear(layer.in_features, layer.out_features, bias=layer.bias is not None, reverse_bias=False,
                       activation=None, backend=backend, **meta)  # fmt: skip
    else:
        new = BiConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                       padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                       padding_mode=layer.padding_mode, bias=layer.bias is not None, reverse_bias=False,
                       activation=None, backend=backend, **meta)  # fmt: skip
    new.weight = layer.weight
    new.bias = layer.bias
    new.train(layer.training)
    return new


def convert(model: nn.Module, backend: str | None = None) -> nn.Module:
    """Replaces every nn.Conv2d and nn.Linear in `model` (exact types, not subclasses) by a BiConv2d / BiLinear
    with the identity activation, no reverse bias and the same Parameter objects; returns `model`.

    Every nn.Conv2d geometry converts (stride, padding including 'same', dilation, groups, padding_mode). A model
    that is itself an nn.Conv2d / nn.Linear is returned swapped.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert: model must be an nn.Module, got {type(model).__name__}")
    if (root := _swap(model, backend)) is not None:
        return root
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if child is not None and (new := _swap(child, backend)) is not None:
                parent._modules[name] = new
    return model


__all__ = ["convert"]
