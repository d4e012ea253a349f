"""bvae: bidirectional layers, BVAE/VAE models, objectives, training and evaluation on bvae_kernels."""

from .blocks import BiFlatten, BiResBlock, BiSequential
from .convert import convert
from .layers import BiConv2d, BiLinear
from .models import BVAE, VAE, ModelConfig, build_model
from .objectives import ModelOutput

__all__ = [
    "BVAE",
    "VAE",
    "BiConv2d",
    "BiFlatten",
    "BiLinear",
    "BiResBlock",
    "BiSequential",
    "ModelConfig",
    "ModelOutput",
    "build_model",
    "convert",
]
