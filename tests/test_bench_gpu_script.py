"""The GPU machine's tooling, checked on the CPU (it runs only in short device calls, so what can break there must break
here first): bench/gpu.sh driven end to end with fake `python3`, `nvidia-smi` and `compute-sanitizer` programs, its
stage limits against the per-call budget, bench/gpu_facts.py's verdicts on simulated limits, and setup.py's
LSTMKERN_NO_WERROR knob.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GPU_SH = ROOT / "bench" / "gpu.sh"
CALL_BUDGET_S = 330  # stage limits of one device call (a call must end well under 6 minutes, machine start included)

# Fake interpreter: logs each invocation (argv and the variables gpu.sh sets) and answers like the real scripts do.
FAKE_PYTHON = r"""#!/usr/bin/env bash
env_seen="NO_WERROR=${LSTMKERN_NO_WERROR:-} REQUIRE_CUDA=${LSTMKERN_REQUIRE_CUDA:-} SKIP_EMU=${LSTMKERN_SKIP_EMU:-}"
echo "ARGS $* | $env_seen ARCHS=${LSTMKERN_CUDA_ARCHS:-}" >> "$FAKE_LOG"
case "$*" in
  "-m pip install"*) echo "csrc/x.cpp:1: warning: unused variable"; exit 0 ;;
  "-m bench.gpu_facts"*) echo "GPU fake: 132 SMs"; echo "  glstm-train: 32 clusters needed, 33 resident -> one wave" ;;
  "-m pytest"*) echo "3 passed, 1 skipped in 2.00s" ;;
  "-c import einops") exit 0 ;;
  "-m bench.flashrnn_warm"*) echo "flashrnn_warm: ${FAKE_WARM:-OK backend=cuda_fused rel_err=1e-03 seconds=60}";
                             [ -z "${FAKE_WARM:-}" ] ;;
  "-c from bench.bench_kernels import IMPL_NAMES"*) echo "lstmkern-cuda,cudnn" ;;
  "-m bench.bench_kernels"*) echo "| table |" ;;
  "bench/sanitize_small.py") echo "sanitize_small: OK" ;;
  *) echo "fake python: unexpected $*" >&2; exit 3 ;;
esac
"""
FAKE_NVIDIA_SMI = r"""#!/usr/bin/env bash
case "$*" in
  *compute_cap*) echo "9.0" ;;
  *name*) echo "NVIDIA H200" ;;
  *) echo "fake nvidia-smi" ;;
esac
"""
# FAKE_SANITIZER: "unsupported" (a gVisor host), "errors" (a real finding) or "" (clean).
FAKE_SANITIZER = r"""#!/usr/bin/env bash
echo "SANITIZER $* | CACHING_OFF=${PYTORCH_NO_CUDA_MEMORY_CACHING:-}" >> "$FAKE_LOG"
echo "========= COMPUTE-SANITIZER"
case "${FAKE_SANITIZER:-}" in
  unsupported) echo "========= Error: Device not supported"; exit 1 ;;
  errors) echo "========= Invalid __global__ read of size 16 bytes"; echo "========= ERROR SUMMARY: 2 errors"; exit 1 ;;
  *) echo "========= ERROR SUMMARY: 0 errors" ;;
esac
"""


def _write_tool(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def fake_gpu(tmp_path):
    """run(*args, **env) -> (returncode, summary text, invocation log): bench/gpu.sh against the fakes."""
    tools = tmp_path / "bin"
    tools.mkdir()
    _write_tool(tools / "python3", FAKE_PYTHON)
    _write_tool(tools / "nvidia-smi", FAKE_NVIDIA_SMI)
    _write_tool(tools / "compute-sanitizer", FAKE_SANITIZER)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    log = tmp_path / "calls.log"

    def run(*args, wheel=True, **env):
        if wheel:
            (wheels / "flashrnn-1.0.8-py3-none-any.whl").write_text("not a real wheel: the fake pip accepts it")
        out = tmp_path / "out"
        shutil.rmtree(out, ignore_errors=True)
        log.write_text("")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("LSTMKERN_", "T_", "MAX_JOBS"))}
        full_env.update(PATH=f"{tools}:{os.environ['PATH']}", PYTHON=str(tools / "python3"), OUT=str(out),
                        FAKE_LOG=str(log), FLASHRNN_WHEELS=str(wheels), FLASHRNN_SITE=str(tmp_path / "site"), **env)
        proc = subprocess.run(["bash", str(GPU_SH), *args], capture_output=True, text=True, env=full_env, timeout=120)
        summary = (out / "summary.txt").read_text() if (out / "summary.txt").exists() else ""
        return proc.returncode, summary, log.read_text(), proc.stdout + proc.stderr

    return run


def _stage_limits() -> dict[str, int]:
    text = GPU_SH.read_text()
    return {name: int(value) for name, value in re.findall(r"^T_([A-Z_]+)=\$\{T_\1:-(\d+)\}$", text, re.MULTILINE)}


def test_each_call_fits_the_device_budget():
    limits = _stage_limits()
    call1 = limits["BUILD"] + limits["FACTS"] + limits["CUDA_TESTS"] + limits["GPU_TESTS"]
    call2 = limits["BUILD"] + limits["MEMCHECK"] + limits["FLASHRNN"] + limits["BENCH"]
    assert call1 <= CALL_BUDGET_S and call2 <= CALL_BUDGET_S, (call1, call2)
    header = GPU_SH.read_text()
    # The usage lines in the header state the same sums.
    for names, total in (("BUILD FACTS CUDA_TESTS GPU_TESTS", call1), ("BUILD MEMCHECK FLASHRNN BENCH", call2)):
        assert f"(limits {' + '.join(str(limits[n]) for n in names.split())} = {total} s)" in header


def test_script_is_valid_bash_and_shellcheck_clean():
    """bash -n always; shellcheck too where it is installed (it is no project dependency, so CI may lack it)."""
    assert subprocess.run(["bash", "-n", str(GPU_SH)]).returncode == 0
    if shutil.which("shellcheck") is not None:
        proc = subprocess.run(["shellcheck", str(GPU_SH)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


def test_no_stage_prints_the_usage_and_fails(fake_gpu):
    code, _summary, calls, output = fake_gpu()
    assert code == 2 and "call1" in output and "call2" in output and calls == ""


def test_call1_builds_for_the_gpu_and_runs_the_gpu_tests_without_the_build_test(fake_gpu):
    code, summary, calls, output = fake_gpu("call1")
    assert code == 0, output
    build = next(line for line in calls.splitlines() if "-m pip install" in line)
    assert "NO_WERROR=1 REQUIRE_CUDA=1 SKIP_EMU=1 ARCHS=90a" in build
    pytest_calls = [line for line in calls.splitlines() if "-m pytest" in line]
    assert len(pytest_calls) == 2 and "tests/test_gpu_cuda.py" in pytest_calls[0]
    assert "tests/test_gpu_cuda.py" not in pytest_calls[1] and "tests/test_triton.py" in pytest_calls[1]
    assert "test_cuda_build" not in calls
    for expected in ("build: ok", "build: 1 compiler warning lines", "facts: GPU fake: 132 SMs",
                     "facts:   glstm-train: 32 clusters needed", "cuda-tests: 3 passed, 1 skipped",
                     "gpu-tests: 3 passed", "all stages ok"):
        assert expected in summary, (expected, summary)


def test_call2_memcheck_filters_the_kernels_and_warms_flashrnn_before_the_bench(fake_gpu):
    code, summary, calls, output = fake_gpu("call2")
    assert code == 0, output
    sanitizer = next(line for line in calls.splitlines() if line.startswith("SANITIZER"))
    assert "--tool memcheck" in sanitizer and "--kernel-name kns=lstmkern" in sanitizer
    assert "--error-exitcode 1" in sanitizer and "CACHING_OFF=1" in sanitizer
    order = [next(i for i, line in enumerate(calls.splitlines()) if key in line)
             for key in ("-m pip install --no-build-isolation", "SANITIZER", "-m bench.flashrnn_warm",
                         "-m bench.bench_kernels")]
    assert order == sorted(order)
    bench = next(line for line in calls.splitlines() if "-m bench.bench_kernels" in line)
    assert "--impls" not in bench  # FlashRNN is ready: the default set, FlashRNN included
    assert "memcheck: ERROR SUMMARY: 0 errors" in summary.replace("========= ", "")
    assert "flashrnn_warm: OK backend=cuda_fused" in summary and "bench: ok" in summary


def test_an_unsupported_sanitizer_host_is_skipped_not_failed(fake_gpu):
    code, summary, _calls, output = fake_gpu("memcheck", FAKE_SANITIZER="unsupported")
    assert code == 0, output
    assert "memcheck: SKIPPED" in summary and "Device not supported" in summary and "FAILED" not in summary


def test_a_sanitizer_finding_fails_the_call(fake_gpu):
    code, summary, _calls, _output = fake_gpu("memcheck", FAKE_SANITIZER="errors")
    assert code == 1 and "memcheck: FAILED" in summary and "2 errors" in summary


def test_without_the_wheel_the_summary_says_flashrnn_could_not_run(fake_gpu):
    code, summary, calls, output = fake_gpu("flashrnn", "bench", wheel=False)
    assert code == 0, output
    assert "flashrnn: COULD NOT RUN (no flashrnn wheel" in summary
    bench = next(line for line in calls.splitlines() if "-m bench.bench_kernels" in line)
    assert "--impls lstmkern-cuda,cudnn" in bench  # FlashRNN left out of the benchmark


def test_a_failed_warm_up_is_reported_and_flashrnn_left_out(fake_gpu):
    code, summary, calls, _output = fake_gpu("flashrnn", "bench", FAKE_WARM="FAILED cuda_fused: RuntimeError: nvcc")
    assert code == 1 and "flashrnn: COULD NOT RUN (flashrnn_warm: FAILED cuda_fused" in summary
    bench = next(line for line in calls.splitlines() if "-m bench.bench_kernels" in line)
    assert "--impls lstmkern-cuda,cudnn" in bench


def test_old_stage_names_still_work(fake_gpu):
    code, summary, calls, output = fake_gpu("tests", "sanitize")
    assert code == 0, output
    assert len([line for line in calls.splitlines() if "-m pytest" in line]) == 2
    assert "--tool memcheck" in calls and "--tool racecheck" in calls
    assert "cuda-tests: 3 passed" in summary


def _load_setup():
    spec = importlib.util.spec_from_file_location("lstmkern_setup_for_werror", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_werror_knob_drops_every_werror(monkeypatch):
    setup = _load_setup()
    nvcc = setup.nvcc_flags_from_file()
    monkeypatch.delenv("LSTMKERN_NO_WERROR", raising=False)
    assert setup.werror_flags(nvcc) == nvcc and "-Werror" in setup.werror_flags(setup.HOST_FLAGS)
    monkeypatch.setenv("LSTMKERN_NO_WERROR", "1")
    for flags in (nvcc, setup.HOST_FLAGS, setup.EMU_FLAGS):
        kept = setup.werror_flags(flags)
        assert not any("Werror" in flag for flag in kept), kept
        assert [f for f in kept if not f.startswith("-Xcompiler")] == [
            f for f in flags if "Werror" not in f and not f.startswith("-Xcompiler")]
    assert "-Xcompiler=-Wall,-Wextra" in setup.werror_flags(nvcc)


def test_gpu_facts_verdicts_on_simulated_limits():
    from bench.gpu_facts import DeviceLimits, ResidencyQueries, device_facts

    h200 = DeviceLimits(name="simulated H200", cc=(9, 0), sm_count=132, smem_optin=232448)
    asked = []

    def glstm_clusters(hg, C, dtype):
        asked.append(("glstm", hg, C))
        return 16

    lines = device_facts(torch.bfloat16, h200, ResidencyQueries(
        glstm_clusters=glstm_clusters, flstm_clusters=lambda H, R, C, dtype: 0, grid_ctas=lambda H, R, N, dtype: 132))
    text = "\n".join(lines)
    # glstm-train: G = 8 groups x 4 batch tiles = 32 clusters of 4; 16 resident -> two waves.
    assert "glstm-train (glstm H=2048 G=8 B=64): cluster forward C=4, needs 32 clusters of 4, 16 resident" in text
    assert "2 WAVES" in text and ("glstm", 256, 4) in asked
    assert "flstm-infer (flstm H=1024 R=256 B=16): cluster forward C=16" in text and "NOT RESIDENT" in text
    assert "flstm-train (flstm H=2048 R=512 B=64): grid forward N=64 CTAs, 132 resident at once -> all co-resident" \
        in text
    assert "glstm-flashrnn (glstm H=768 G=12 B=16): single-CTA forward, 12 CTAs" in text


def test_outputs_stay_within_the_files_the_device_tool_returns(fake_gpu, tmp_path):
    import tarfile

    code, summary, _calls, output = fake_gpu("call1", "call2")  # more logs than the tool brings back
    assert code == 0, output
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(files) <= 8 and "summary.txt" in files and "logs.tar.gz" in files, files
    with tarfile.open(tmp_path / "out" / "logs.tar.gz") as archive:
        packed = set(archive.getnames())
    assert {"build.log", "cuda-tests.log", "memcheck.log", "flashrnn.log", "nvidia-smi.txt"} <= packed, packed
    assert "logs packed into" in summary
    code, _summary, _calls, output = fake_gpu("call2")
    assert code == 0, output
    assert len(list((tmp_path / "out").iterdir())) <= 8
