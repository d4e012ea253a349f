"""bvae-kernels: fused kernels for bidirectional layers (one weight, two directions).

import bvae_kernels as bk
y = bk.bi_conv2d(x, W, b_f, stride=2, padding=1)            # encode: a(conv2d(x, W) + b_f)
x2 = bk.bi_conv2d_reverse(y, W, b_r, stride=2, padding=1)   # decode through the same W
"""

from . import reference
from .activation import GNoVa, gnova_reference, resolve_activation
from .backends import BACKENDS, available_backends, compiled_ops_available, cuda_ops_available
from .bi_conv2d import bi_conv2d
from .bi_conv2d_reverse import bi_conv2d_reverse
from .bi_linear import bi_linear
from .bi_linear_reverse import bi_linear_reverse
from .gnova import gnova

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "GNoVa",
    "available_backends",
    "bi_conv2d",
    "bi_conv2d_reverse",
    "bi_linear",
    "bi_linear_reverse",
    "compiled_ops_available",
    "cuda_ops_available",
    "gnova",
    "gnova_reference",
    "reference",
    "resolve_activation",
]
