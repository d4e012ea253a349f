"""Builds bvae_kernels._C: the CPU ops always, the CUDA ops when torch has CUDA and nvcc is found.

The CUDA decision never looks at GPU visibility (a Docker or CI build with nvcc but no visible GPU must
still build the kernels): it reads BVAE_KERNELS_CUDA, torch.version.cuda and the CUDA toolkit only.
The toolkit is $CUDA_HOME when that holds one, else the one the `nvcc` on PATH belongs to (followed through
symlinks and through a wrapper script that execs the real nvcc, as on the project's machines), else
/usr/local/cuda*. torch's own guess (the folder above the `nvcc` on PATH) is wrong for a wrapper script.
The C++ standard is the one torch's BuildExtension uses (C++17 up to torch 2.12, C++20 from 2.13; torch 2.14's
headers refuse anything older), so no -std flag is set here.
"""

import glob
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


sys.path.insert(0, ROOT)  # build_support.py sits beside this file (also in an isolated build's copy)
from build_support import check_build_torch, find_cuda_home  # noqa: E402

check_build_torch()

# torch.utils.cpp_extension reads CUDA_HOME once, when first imported: settle it before that.
_CUDA_HOME = find_cuda_home()
if _CUDA_HOME:
    os.environ["CUDA_HOME"] = _CUDA_HOME


def _want_cuda() -> bool:
    import torch

    forced = os.environ.get("BVAE_KERNELS_CUDA")
    has_toolkit = torch.version.cuda is not None and _CUDA_HOME is not None
    if forced == "0":
        return False
    if forced == "1":
        if not has_toolkit:
            sys.exit(
                "BVAE_KERNELS_CUDA=1 but torch has no CUDA (torch.version.cuda is None) or no CUDA toolkit was "
                "found; install a CUDA build of torch and the CUDA toolkit, or set CUDA_HOME to the toolkit."
            )
        return True
    return has_toolkit


def _extensions() -> list:
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    cxx_flags = ["-O3", "-fopenmp", "-DAT_PARALLEL_OPENMP_CHECK=0"]
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cuda_binder = os.path.join("csrc", "cuda_ops.cpp")
    sources = [s for s in sources if s != cuda_binder]
    if _want_cuda():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        print(f"bvae-kernels: building the CUDA kernels with {_CUDA_HOME} for {os.environ['TORCH_CUDA_ARCH_LIST']}")
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
