"""Build and packaging of lstmkern.

Packages: lstmkern and its subpackages, plus the top-level folder ``triton_kernels/`` installed as
``lstmkern.triton_kernels`` (package_dir mapping, so no symlink is needed in editable or regular installs).

The native extension ``lstmkern._C``:
  * CUDAExtension (persistent kernels: CUDA_SOURCES + CPU_SOURCES) when a CUDA toolkit is found (see
    ``find_cuda_home``) and torch was built with CUDA (torch.version.cuda);
  * otherwise, or when the CUDA part fails to compile, a CppExtension of CPU_SOURCES alone (op schemas, shared-memory
    queries and the CPU code, no GPU kernels), with a warning that says why;
  * the package itself imports without any extension (lstmkern.backends.cuda then reports itself unavailable).

Finding the CUDA toolkit: ``CUDA_HOME`` (or ``CUDA_PATH``) if set; otherwise the toolkit that the ``nvcc`` on PATH
belongs to, as nvcc itself reports it (``nvcc --dryrun`` prints its TOP folder). torch's own guess (the folder above
the nvcc on PATH) is wrong where that nvcc is a wrapper script outside the toolkit (e.g. /usr/local/bin/nvcc), and
fails with "cuda_runtime.h: No such file".

Knobs (environment variables):
  LSTMKERN_SKIP_CUDA=1      build the CPU-only extension even where CUDA is available.
  LSTMKERN_SKIP_EXTENSION=1 build no extension at all (pure-Python install).
  LSTMKERN_SKIP_EMU=1        skip lstmkern._emu, the CPU emulator of the CUDA kernels (built wherever a C++ compiler
                            is: it needs no CUDA toolkit; see csrc/emu/emu.h).
  LSTMKERN_REQUIRE_CUDA=1   fail the install if the CUDA part cannot be built (CI sets it: no silent CPU fallback).
  LSTMKERN_NO_WERROR=1      compile without -Werror (host and nvcc flags), for a host compiler that warns where CI's
                            does not (bench/gpu.sh sets it on the GPU image; CI keeps -Werror).
  CUDA_HOME                 the CUDA toolkit's folder (the one holding bin/nvcc and include/cuda_runtime.h).
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
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
DEFAULT_CUDA_ARCHS = "90a compute_80"
# -Wno-unused-parameter: torch's own headers trip it (they are included with -I, not -isystem).
# -fopenmp: ATen's at::parallel_for is an inline template whose `omp parallel` pragma is compiled into this extension;
# without the flag every parallel region of the cpu backend would run on one thread (lstmkern_cpu::parallel_width).
HOST_FLAGS = ["-O3", "-std=c++20", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror", "-fopenmp"]
HOST_LINK_FLAGS = ["-fopenmp"]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def werror_flags(flags: list[str]) -> list[str]:
    """``flags`` without -Werror (and nvcc's -Werror=all-warnings, -Xcompiler=...,-Werror) with LSTMKERN_NO_WERROR=1."""
    if not _env_flag("LSTMKERN_NO_WERROR"):
        return list(flags)
    kept = []
    for flag in flags:
        if flag.startswith("-Xcompiler="):
            parts = [p for p in flag.removeprefix("-Xcompiler=").split(",") if not p.startswith("-Werror")]
            flag = "-Xcompiler=" + ",".join(parts) if parts else ""
        if flag and not flag.startswith("-Werror"):
            kept.append(flag)
    return kept


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


def find_cuda_home() -> str | None:
    """The CUDA toolkit folder: $CUDA_HOME / $CUDA_PATH, else the toolkit of the nvcc on PATH as nvcc reports it."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return "/usr/local/cuda" if Path("/usr/local/cuda/bin/nvcc").exists() else None
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "empty.cu"
        source.write_text("")
        try:
            proc = subprocess.run([nvcc, "--dryrun", "-c", str(source), "-o", str(Path(tmp) / "empty.o")],
                                  capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
    match = re.search(r"^#\$ TOP=(.+)$", proc.stdout + proc.stderr, re.MULTILINE)
    if match and (Path(match.group(1).strip()) / "include" / "cuda_runtime.h").exists():
        return str(Path(match.group(1).strip()).resolve())
    return None


# Sources of lstmkern._C in both variants (op schemas, layout queries, CPU code) and the GPU kernels on top.
CPU_SOURCES = ["csrc/extension.cpp", "csrc/cpu_lstm.cpp", "csrc/cpu_cell_default.cpp", "csrc/cpu_cell_avx2.cpp",
               "csrc/cpu_small_gemm.cpp", "csrc/cpu_small_gemm_avx512.cpp", "csrc/cpu_small_gemm_avx2.cpp"]
CUDA_SOURCES = ["csrc/cuda_ops.cpp", "csrc/glstm_persistent.cu", "csrc/glstm_cluster.cu", "csrc/flstm_persistent.cu",
                "csrc/flstm_cluster.cu", "csrc/flstm_cluster_bwd.cu", "csrc/flstm_grid.cu",
                "csrc/flstm_grid_bwd.cu"]
CUDA_ONLY_LIBRARIES = ("cudart", "c10_cuda", "torch_cuda")


def _make_build_ext(base):
    """torch's BuildExtension, except that a CUDA ``lstmkern._C`` that fails to compile is rebuilt as the CPU-only
    variant with a warning (unless LSTMKERN_REQUIRE_CUDA=1): a broken or mismatched toolkit must not cost the user the
    package, whose reference, Triton and CPU paths do not need it."""

    class BuildExtension(base):
        def build_extension(self, ext):
            if ext.name != "lstmkern._emu":
                return super().build_extension(ext)
            try:  # the emulator is for tests: its failure must not cost the user lstmkern._C
                return super().build_extension(ext)
            except Exception as err:  # noqa: BLE001 - compiler or linker failure
                print(f"WARNING: lstmkern: the CPU emulator lstmkern._emu failed to build ({type(err).__name__}: "
                      f"{err}); tests/test_emu.py will fail. Set LSTMKERN_SKIP_EMU=1 to skip it.", file=sys.stderr)

        def build_extensions(self):
            try:
                return super().build_extensions()
            except Exception as err:  # noqa: BLE001 - any toolkit check, compiler or linker failure
                cuda_exts = [ext for ext in self.extensions if getattr(ext, "lstmkern_cuda", False)]
                if not cuda_exts or _env_flag("LSTMKERN_REQUIRE_CUDA"):
                    raise
                print(f"WARNING: lstmkern: the CUDA part of lstmkern._C failed to build ({type(err).__name__}: "
                      f"{err}); building the CPU-only extension instead (no 'cuda' backend). Set CUDA_HOME to the "
                      f"toolkit folder, or LSTMKERN_REQUIRE_CUDA=1 to make this an error.", file=sys.stderr)
                for ext in cuda_exts:
                    _to_cpu_only(ext)
                return super().build_extensions()

    return BuildExtension


def _to_cpu_only(ext) -> None:
    ext.sources = list(CPU_SOURCES)
    ext.define_macros = [(k, "0" if k == "LSTMKERN_WITH_CUDA" else v) for k, v in ext.define_macros]
    ext.libraries = [lib for lib in ext.libraries if lib not in CUDA_ONLY_LIBRARIES]
    ext.lstmkern_cuda = False


# lstmkern._emu: the CUDA kernel sources (csrc/*.cu, through csrc/emu/kernel_*.cpp) and their launchers
# (csrc/cuda_ops.cpp, through csrc/emu/launchers.cpp) compiled as host C++ against the emulator's CUDA headers in
# csrc/emu (first on the include path), registering torch.ops.lstmkern_emu. Needs a C++20 compiler and torch only.
EMU_SOURCES = ["csrc/emu/module.cpp", "csrc/emu/emu.cpp", "csrc/emu/launchers.cpp", "csrc/emu/self_test.cpp"] + [
    f"csrc/emu/kernel_{name}.cpp"
    for name in ("glstm_persistent", "glstm_cluster", "flstm_persistent", "flstm_cluster", "flstm_cluster_bwd",
                 "flstm_grid", "flstm_grid_bwd")]
# -O2, not -O3: the emulated kernels run on tiny shapes in CI, where build time dominates.
EMU_FLAGS = ["-O2", "-std=c++20", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-unknown-pragmas", "-Werror"]


def emu_extensions(cpp_extension) -> list:
    """[the lstmkern._emu CppExtension], or [] with LSTMKERN_SKIP_EMU=1."""
    if _env_flag("LSTMKERN_SKIP_EMU"):
        return []
    depends = sorted(str(p.relative_to(ROOT)) for p in [*CSRC.iterdir(), *(CSRC / "emu").iterdir()]
                     if p.suffix in (".h", ".cuh", ".cu"))
    return [cpp_extension.CppExtension(
        "lstmkern._emu", list(EMU_SOURCES), include_dirs=[str(CSRC / "emu"), str(CSRC)], depends=depends,
        define_macros=[("LSTMKERN_EMU", "1")], extra_compile_args={"cxx": werror_flags(EMU_FLAGS)})]


def native_extensions() -> tuple[list, dict]:
    if _env_flag("LSTMKERN_SKIP_EXTENSION"):
        return [], {}
    cuda_home = None if _env_flag("LSTMKERN_SKIP_CUDA") else find_cuda_home()
    if cuda_home is not None:
        os.environ["CUDA_HOME"] = cuda_home  # read by torch.utils.cpp_extension when it is imported (below)
    import torch
    from torch.utils import cpp_extension

    with_cuda = cuda_home is not None and cpp_extension.CUDA_HOME is not None and torch.version.cuda is not None
    if not with_cuda and not _env_flag("LSTMKERN_SKIP_CUDA"):
        why = "torch has no CUDA" if torch.version.cuda is None else "no CUDA toolkit found (set CUDA_HOME)"
        if _env_flag("LSTMKERN_REQUIRE_CUDA"):
            raise RuntimeError(f"LSTMKERN_REQUIRE_CUDA=1 but {why}")
        print(f"WARNING: lstmkern: building lstmkern._C without the CUDA kernels: {why}.", file=sys.stderr)
    include_dirs = [str(CSRC)]
    # Headers and the flag file: rebuild triggers, and shipped in sdists (setuptools adds `depends` to them).
    depends = sorted(str(p.relative_to(ROOT)) for p in CSRC.iterdir() if p.suffix in (".h", ".cuh", ".txt"))
    if with_cuda:
        nvcc = werror_flags(nvcc_flags_from_file()) + cuda_arch_flags(os.environ.get("LSTMKERN_CUDA_ARCHS",
                                                                                   DEFAULT_CUDA_ARCHS))
        extension = cpp_extension.CUDAExtension(
            "lstmkern._C", CPU_SOURCES + CUDA_SOURCES, include_dirs=include_dirs, depends=depends,
            define_macros=[("LSTMKERN_WITH_CUDA", "1")],
            extra_compile_args={"cxx": werror_flags(HOST_FLAGS), "nvcc": nvcc}, extra_link_args=HOST_LINK_FLAGS)
        extension.lstmkern_cuda = True
    else:
        extension = cpp_extension.CppExtension(
            "lstmkern._C", list(CPU_SOURCES), include_dirs=include_dirs, depends=depends,
            define_macros=[("LSTMKERN_WITH_CUDA", "0")], extra_compile_args={"cxx": werror_flags(HOST_FLAGS)},
            extra_link_args=HOST_LINK_FLAGS)
    build_ext = _make_build_ext(cpp_extension.BuildExtension).with_options(use_ninja=True)
    return [extension] + emu_extensions(cpp_extension), {"build_ext": build_ext}


if __name__ == "__main__":  # pip and setuptools run this file as __main__; tests import its helpers
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
