"""Builds bvae_kernels._C: the CPU ops always, the CUDA ops when torch has CUDA and nvcc is found.

The CUDA decision never looks at GPU visibility (a Docker or CI build with nvcc but no visible GPU must
still build the kernels): it reads BVAE_KERNELS_CUDA, torch.version.cuda and CUDA_HOME only.
"""

import glob
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _want_cuda() -> bool:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    forced = os.environ.get("BVAE_KERNELS_CUDA")
    has_toolkit = torch.version.cuda is not None and CUDA_HOME is not None
    if forced == "0":
        return False
    if forced == "1":
        if not has_toolkit:
            sys.exit(
                "BVAE_KERNELS_CUDA=1 but torch has no CUDA (torch.version.cuda is None) or nvcc/CUDA_HOME "
                "was not found; install a CUDA build of torch and the CUDA toolkit."
            )
        return True
    return has_toolkit


def _extensions() -> list:
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    # No -std: torch's BuildExtension adds the standard its own headers need (C++17, or C++20 from torch 2.14).
    cxx_flags = ["-O3", "-fopenmp", "-DAT_PARALLEL_OPENMP_CHECK=0"]
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cuda_binder = os.path.join("csrc", "cuda_ops.cpp")
    sources = [s for s in sources if s != cuda_binder]
    if _want_cuda():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        sources += [cuda_binder] + sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        return [
            CUDAExtension(
                "bvae_kernels._C",
                sources,
                define_macros=[("BVAE_WITH_CUDA", "1")],
                extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3"]},
                extra_link_args=["-fopenmp"],
            )
        ]
    return [
        CppExtension(
            "bvae_kernels._C",
            sources,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"],
        )
    ]


def _cmdclass() -> dict:
    from torch.utils.cpp_extension import BuildExtension

    return {"build_ext": BuildExtension.with_options(use_ninja=True)}


setup(ext_modules=_extensions(), cmdclass=_cmdclass())
