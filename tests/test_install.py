"""setup.py: finding the CUDA toolkit behind a wrapper nvcc, and the CPU-only fallback when the CUDA part fails.

A new user's `pip install -e .` failed where the nvcc on PATH is a wrapper script outside the toolkit (torch guessed
the wrapper's parent folder as CUDA_HOME: "cuda_runtime.h: No such file"), and failed outright when the CUDA part
could not compile instead of still building the CPU part.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load_setup_module():
    spec = importlib.util.spec_from_file_location("lstmkern_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # setup() only runs under __main__
    return module


def _real_nvcc() -> str | None:
    return shutil.which("nvcc")


@pytest.mark.skipif(_real_nvcc() is None, reason="needs an nvcc on PATH to wrap")
def test_find_cuda_home_sees_through_a_wrapper_nvcc(tmp_path, monkeypatch):
    wrapper_dir = tmp_path / "wrappers" / "bin"
    wrapper_dir.mkdir(parents=True)
    wrapper = wrapper_dir / "nvcc"
    wrapper.write_text(f"#!/bin/sh\nexec {_real_nvcc()} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", f"{wrapper_dir}{os.pathsep}{os.environ['PATH']}")
    setup_module = _load_setup_module()
    home = setup_module.find_cuda_home()
    assert home is not None
    assert (Path(home) / "include" / "cuda_runtime.h").exists(), home
    assert Path(home) != wrapper_dir.parent  # torch's own guess (nvcc's parent folder) would be this one


def test_find_cuda_home_prefers_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    assert _load_setup_module().find_cuda_home() == str(tmp_path)


@pytest.mark.skipif(torch.version.cuda is None, reason="the fallback is from a CUDA build; this torch has no CUDA")
def test_failed_cuda_build_falls_back_to_the_cpu_extension(tmp_path):
    """A toolkit whose nvcc fails: the install still produces lstmkern._C (CPU-only) and warns; with
    LSTMKERN_REQUIRE_CUDA=1 it fails instead."""
    toolkit = tmp_path / "broken-cuda"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "include").mkdir()
    (toolkit / "include" / "cuda_runtime.h").write_text("#error this toolkit is broken on purpose\n")
    nvcc = toolkit / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'nvcc: broken on purpose' >&2\nexit 1\n")
    nvcc.chmod(0o755)
    work = tmp_path / "src"
    shutil.copytree(ROOT / "csrc", work / "csrc")
    shutil.copy(ROOT / "setup.py", work / "setup.py")
    (work / "lstmkern").mkdir()
    (work / "lstmkern" / "__init__.py").write_text("")
    (work / "triton_kernels").mkdir()
    (work / "triton_kernels" / "__init__.py").write_text("")
    env = dict(os.environ, CUDA_HOME=str(toolkit), MAX_JOBS="2", LSTMKERN_SKIP_EMU="1")
    env.pop("LSTMKERN_REQUIRE_CUDA", None)
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "building the CPU-only extension instead" in proc.stderr
    built = list((work / "lstmkern").glob("_C*.so"))
    assert len(built) == 1
    check = subprocess.run([sys.executable, "-c", "import torch, lstmkern._C, sys; "
                            "print(torch.ops.lstmkern_cuda.glstm_persistent_smem_bytes(16, torch.float32))"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-2000:]
    assert int(check.stdout.strip()) > 0

    env["LSTMKERN_REQUIRE_CUDA"] = "1"
    shutil.rmtree(work / "build")
    strict = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=work, env=env,
                            capture_output=True, text=True, timeout=900)
    assert strict.returncode != 0
