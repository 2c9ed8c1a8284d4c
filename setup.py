"""Build script for the compiled parts of sodlib.

Everything declarative lives in ``pyproject.toml``; this file only adds the C++/CUDA extension
``sodlib._C`` when its sources exist under ``extensions/prroi/csrc``.  The CPU kernels are always
built; the CUDA kernels are added when ``nvcc`` is found (``CUDA_HOME`` or ``PATH``) unless
``SODLIB_NO_CUDA=1``.  Install with ``pip install --no-build-isolation -e .`` so that the build
uses the torch already installed instead of fetching another one.
"""
from __future__ import annotations

import glob
import os
import shutil

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("extensions", "prroi", "csrc")


def _cuda_available_for_build() -> bool:
    if os.environ.get("SODLIB_NO_CUDA") == "1":
        return False
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home and os.path.exists(os.path.join(cuda_home, "bin", "nvcc")):
        return True
    return shutil.which("nvcc") is not None


def _extensions():
    cpp_sources = sorted(
        glob.glob(os.path.join(CSRC, "*.cpp")) + glob.glob(os.path.join(CSRC, "cpu", "*.cpp"))
    )
    if not cpp_sources:
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    # -fopenmp: at::parallel_for is a header template that runs serially unless the kernels are built with OpenMP
    cxx_flags = ["-O3", "-std=c++20", "-fopenmp", "-ffp-contract=fast"]
    link_args = ["-fopenmp"]
    define_macros = []
    cuda_sources = sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu")))
    if cuda_sources and _cuda_available_for_build():
        os.environ.setdefault("CUDA_HOME", os.path.dirname(os.path.dirname(shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc")))
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        ext = CUDAExtension(
            "sodlib._C",
            cpp_sources + cuda_sources,
            include_dirs=[os.path.join(HERE, CSRC)],
            define_macros=define_macros + [("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++20"]},
            extra_link_args=link_args,
        )
    else:
        ext = CppExtension(
            "sodlib._C",
            cpp_sources,
            include_dirs=[os.path.join(HERE, CSRC)],
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=link_args,
        )
    return [ext], {"build_ext": BuildExtension.with_options(no_python_abi_suffix=True)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
