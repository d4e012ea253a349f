"""bvae: bidirectional layers, BVAE/VAE models, objectives, training and evaluation on bvae_kernels."""

from .layers import BiConv2d, BiLinear

__all__ = ["BiConv2d", "BiLinear"]
