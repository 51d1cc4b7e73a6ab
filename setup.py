"""Build and packaging of lstmkern.

Packages: lstmkern and its subpackages, plus the top-level folder ``triton_kernels/`` installed as
``lstmkern.triton_kernels`` (package_dir mapping, so no symlink is needed in editable or regular installs).

The native extension ``lstmkern._C``:
  * CUDAExtension (persistent kernels, csrc/*.cu + csrc/cuda_ops.cpp + csrc/extension.cpp) when nvcc is found
    (torch.utils.cpp_extension.CUDA_HOME) and torch was built with CUDA (torch.version.cuda);
  * otherwise a CppExtension of csrc/extension.cpp alone (op schemas and shared-memory queries, no kernels);
  * the package itself imports without any extension (lstmkern.backends.cuda then reports itself unavailable).

Knobs (environment variables):
  LSTMKERN_SKIP_CUDA=1      build the CPU-only extension even where CUDA is available.
  LSTMKERN_SKIP_EXTENSION=1 build no extension at all (pure-Python install).
  LSTMKERN_CUDA_ARCHS       space/semicolon/comma separated; "90a" compiles SASS for sm_90a, "compute_80" embeds PTX
                            for compute_80 (JIT-compiled by the driver on any newer GPU). Default "90a compute_80":
                            one real architecture (keeps the build lean) plus a PTX fallback for every GPU >= sm_80.
  MAX_JOBS                  parallel compile jobs (torch's ninja build reads it).
nvcc flags shared with CMakeLists.txt and tests/test_cuda_build.py live in csrc/nvcc_flags.txt.

Example::
    CUDA_HOME=/usr/local/cuda MAX_JOBS=2 pip install --no-build-isolation -e .
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
DEFAULT_CUDA_ARCHS = "90a compute_80"
# -Wno-unused-parameter: torch's own headers trip it (they are included with -I, not -isystem).
HOST_FLAGS = ["-O3", "-std=c++20", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror"]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def nvcc_flags_from_file() -> list[str]:
    """Flags of csrc/nvcc_flags.txt (one per line, '#' comments)."""
    lines = (line.strip() for line in (CSRC / "nvcc_flags.txt").read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def cuda_arch_flags(spec: str) -> list[str]:
    """-gencode flags for LSTMKERN_CUDA_ARCHS entries: '90a' -> SASS sm_90a, 'compute_80' -> PTX compute_80."""
    flags = []
    for entry in filter(None, re.split(r"[\s;,]+", spec)):
        ptx = re.fullmatch(r"compute_(\d+[af]?)", entry)
        sass = re.fullmatch(r"(?:sm_)?(\d+[af]?)", entry.replace(".", ""))
        if ptx:
            flags.append(f"-gencode=arch=compute_{ptx.group(1)},code=compute_{ptx.group(1)}")
        elif sass:
            flags.append(f"-gencode=arch=compute_{sass.group(1)},code=sm_{sass.group(1)}")
        else:
            raise ValueError(f"LSTMKERN_CUDA_ARCHS entry {entry!r} is neither an arch like '90a' nor 'compute_80'")
    if not flags:
        raise ValueError(f"LSTMKERN_CUDA_ARCHS={spec!r} names no architecture")
    return flags


def native_extensions() -> tuple[list, dict]:
    if _env_flag("LSTMKERN_SKIP_EXTENSION"):
        return [], {}
    import torch
    from torch.utils import cpp_extension

    with_cuda = (not _env_flag("LSTMKERN_SKIP_CUDA") and cpp_extension.CUDA_HOME is not None
                 and torch.version.cuda is not None)
    include_dirs = [str(CSRC)]
    # Headers and the flag file: rebuild triggers, and shipped in sdists (setuptools adds `depends` to them).
    depends = sorted(str(p.relative_to(ROOT)) for p in CSRC.iterdir() if p.suffix in (".h", ".cuh", ".txt"))
    if with_cuda:
        sources = ["csrc/extension.cpp", "csrc/cuda_ops.cpp", "csrc/glstm_persistent.cu", "csrc/glstm_cluster.cu",
                   "csrc/flstm_persistent.cu", "csrc/flstm_cluster.cu", "csrc/flstm_grid.cu"]
        nvcc = nvcc_flags_from_file() + cuda_arch_flags(os.environ.get("LSTMKERN_CUDA_ARCHS", DEFAULT_CUDA_ARCHS))
        extension = cpp_extension.CUDAExtension(
            "lstmkern._C", sources, include_dirs=include_dirs, depends=depends,
            define_macros=[("LSTMKERN_WITH_CUDA", "1")],
            extra_compile_args={"cxx": HOST_FLAGS, "nvcc": nvcc})
    else:
        extension = cpp_extension.CppExtension(
            "lstmkern._C", ["csrc/extension.cpp"], include_dirs=include_dirs, depends=depends,
            define_macros=[("LSTMKERN_WITH_CUDA", "0")], extra_compile_args={"cxx": HOST_FLAGS})
    build_ext = cpp_extension.BuildExtension.with_options(use_ninja=True)
    return [extension], {"build_ext": build_ext}


ext_modules, cmdclass = native_extensions()

setup(
    name="lstmkern",
    version="0.1.0",
    description="Compact LSTMs (grouped G-LSTM, factorized F-LSTM) with reference, Triton and CUDA kernels",
    python_requires=">=3.9",
    packages=find_packages(include=["lstmkern", "lstmkern.*"], exclude=["lstmkern.triton_kernels*"])
    + ["lstmkern.triton_kernels"],
    package_dir={"lstmkern.triton_kernels": "triton_kernels"},
    install_requires=["torch>=2.4", "numpy", "triton>=3.0; platform_system=='Linux'"],
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
