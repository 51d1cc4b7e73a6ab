"""Every Triton kernel, every autotune config, every dtype the Triton backend advertises, compiled ahead of time for
sm_90 (H100 / H200) without a GPU, under two Triton releases: the one CI installs with torch, and 3.6.0 (the GPU
image's). A compile fails the test when Triton rejects it, when it needs more than the 227 KiB of shared memory an
sm_90 block may use, or when ptxas spills registers (except the exactly bounded, explained KNOWN_SPILLS). See
:mod:`triton_kernels.aot` for how launches and configs are found. The table of every kernel x dtype x config is
printed (shown by pytest when a test fails, or with -s).

Triton 3.6.0 is installed once, with pip, into .cache/ (ignored by git) and put first on the compile subprocess's
sys.path; torch stays the CI one (the check only uses torch for CPU tensor bookkeeping, no torch feature that
depends on Triton's version).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lstmkern.backends import triton as triton_backend
from lstmkern.triton_kernels import aot

REPO = Path(__file__).resolve().parents[1]
GPU_IMAGE_TRITON = "3.6.0"
TRITON_CACHE = REPO / ".cache" / f"triton-{GPU_IMAGE_TRITON}"
ARCH = 90
DTYPE_NAMES = {dtype: name for name, dtype in aot.LAYER_DTYPES.items()}
# Kernels whose recurrent product must run on tensor cores in fp16/bf16 layers and on IEEE float32 FMA in float32 ones
# (issue 12), with the constexpr flag that switches the product on: their binaries with it on must hold mma/wgmma
# instructions for 16-bit layer dtypes and none for float32.
TENSOR_CORE_PRODUCTS = {"_glstm_backward_step_kernel": "RECURRENT"}
# What a Triton release genuinely cannot fit, by (kernel, layer dtype): the most spill bytes tolerated, and why. The
# test fails if such a kernel spills more, breaks another rule, or starts to fit (then this entry must go).
KNOWN_SPILLS = {}


@pytest.fixture(scope="session")
def gpu_image_triton() -> Path:
    """A directory holding Triton 3.6.0 (installed on first use, reused afterwards)."""
    if not (TRITON_CACHE / "triton" / "__init__.py").exists():
        staging = TRITON_CACHE.with_name(f"{TRITON_CACHE.name}.partial-{os.getpid()}")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(staging),
                        f"triton=={GPU_IMAGE_TRITON}"], check=True)
        staging.rename(TRITON_CACHE)  # atomic: a half-finished install never looks like a finished one
    return TRITON_CACHE


def _run_check(tmp_path: Path, extra_path: Path | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the GPU configs, not the interpreter's
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path)] + [p for p in [env.get("PYTHONPATH")] if p])
    out = tmp_path / "aot.json"
    dtypes = ",".join(DTYPE_NAMES[d] for d in triton_backend._DTYPES)
    proc = subprocess.run([sys.executable, "-m", "triton_kernels.aot", "--arch", str(ARCH), "--dtypes", dtypes,
                           "--jobs", str(min(2, os.cpu_count() or 1)), "--json", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True)
    print(proc.stdout[-20000:], proc.stderr[-5000:])  # the per kernel x dtype x config table, shown on failure
    assert out.exists(), f"the compile check did not run to the end:\n{proc.stderr[-5000:]}"
    report = json.loads(out.read_text())
    known = KNOWN_SPILLS.get(report["triton"], {})
    failures, tolerated = [], set()
    for r in report["rows"]:
        if not r["problems"]:
            continue
        limit = [known[(r["kernel"], d)] for d in r["dtypes"] if (r["kernel"], d) in known]
        if limit and r["error"] is None and r["shared"] <= aot.SHARED_MEMORY_LIMIT[ARCH] \
                and r["spill_stores"] <= limit[0][0] and len(limit) == len(r["dtypes"]):
            tolerated.update((r["kernel"], d) for d in r["dtypes"])
            continue
        failures.append(f"{r['kernel']} {r['dtypes']} {r['config']} w{r['num_warps']} s{r['num_stages']} "
                        f"{r['constexprs']}: " + "; ".join(r["problems"]))
    assert not failures, f"{len(failures)} of {len(report['rows'])} binaries fail:\n" + "\n".join(failures)
    assert tolerated == set(known), f"known spills that no longer occur (remove them): {set(known) - tolerated}"
    products = [r for r in report["rows"] if r["error"] is None and r["kernel"] in TENSOR_CORE_PRODUCTS
                and r["constexprs"].get(TENSOR_CORE_PRODUCTS[r["kernel"]]) == "True"]
    assert {r["kernel"] for r in products} == set(TENSOR_CORE_PRODUCTS), "a tensor-core product was not compiled"
    for r in products:
        on_tensor_cores = r["tensor_core_ops"] > 0
        for dtype in r["dtypes"]:
            if dtype in ("float16", "bfloat16", "float32"):
                assert on_tensor_cores == (dtype != "float32"), (
                    f"{r['kernel']} {dtype} {r['config']}: {r['tensor_core_ops']} tensor-core instructions")
    assert proc.returncode == (1 if known else 0), proc.stderr[-5000:]
    return report


def test_backend_dtypes_are_all_checked():
    assert set(triton_backend._DTYPES) <= set(DTYPE_NAMES), "a dtype the backend advertises is not compiled"


def test_every_kernel_compiles_for_sm90_under_ci_triton(tmp_path):
    import triton
    report = _run_check(tmp_path, None)
    assert report["triton"] == triton.__version__


def test_every_kernel_compiles_for_sm90_under_gpu_image_triton(tmp_path, gpu_image_triton):
    report = _run_check(tmp_path, gpu_image_triton)
    assert report["triton"] == GPU_IMAGE_TRITON


def test_problems_flag_compile_errors_shared_memory_and_spills():
    fits = dict(error=None, shared=aot.SHARED_MEMORY_LIMIT[ARCH], registers=255, stack_frame=0, spill_stores=0,
                spill_loads=0)
    assert aot.problems(fits, ARCH) == []
    assert "compile error" in aot.problems({**fits, "error": "AssertionError"}, ARCH)[0]
    assert "shared memory" in aot.problems({**fits, "shared": aot.SHARED_MEMORY_LIMIT[ARCH] + 1}, ARCH)[0]
    assert "spills" in aot.problems({**fits, "stack_frame": 8, "spill_stores": 4, "spill_loads": 4}, ARCH)[0]


# Compiles, for sm_90, one autotune config of each F-LSTM kernel that multiplies in the recurrence (the rank products
# z_t = h W1_h^T / dz_t = dgates W2 on the shared grouped GEMM, keyed by the dtype it multiplies in; the forward step's
# z W2^T, the backward step's dz_{t+1} W1_h) as the launchers specialise it, and reports per "kernel dtype" whether
# its PTX holds tensor-core instructions (mma / wgmma).
_TENSOR_CORE_SCRIPT = """
import json, sys
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton_kernels import aot
KERNELS = ("_grouped_gemm_kernel", "_flstm_step_kernel", "_flstm_backward_step_kernel")
TL_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "fp64": "float64"}
target = GPUTarget("cuda", 90, 32)
launches, kernels = aot.record_launches([torch.float32, torch.float16, torch.bfloat16])
found = {}
for spec in aot.specialisations(launches, kernels, target):
    names = list(spec.signature)
    flags = {names[path[0]]: value for path, value in spec.constexprs.items()}
    if spec.kernel not in KERNELS or flags.get("PROJECTED", False):  # the projected step has no product
        continue
    if spec.kernel == "_grouped_gemm_kernel":  # every layer's GEMMs: keyed by the operand dtype of its product
        dtypes = [TL_NAMES[str(flags["DOT_DTYPE"])]]
    else:
        dtypes = [str(dtype).removeprefix("torch.") for dtype in spec.dtypes]
    for dtype in dtypes:
        found.setdefault(f"{spec.kernel} {dtype}", spec)
result = {}
for key, spec in found.items():
    fn = aot._jit_function(kernels[(spec.module, spec.kernel)])
    compiled = triton.compile(ASTSource(fn, spec.signature, spec.constexprs, spec.attrs), target=target,
                              options=spec.options)
    result[key] = "mma" in compiled.asm["ptx"]
json.dump(result, sys.stdout)
"""


def test_flstm_recurrent_products_use_tensor_cores_in_16_bit():
    """fp16/bf16 F-LSTM step kernels multiply on tensor cores (the backward step's dz_{t+1} W1_h and the rank product
    dz_t = dgates_t W2, a grouped GEMM with 16-bit operands, included), float32 ones keep IEEE products (FMA, no
    mma)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", _TENSOR_CORE_SCRIPT], cwd=REPO, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-5000:]
    uses_mma = json.loads(proc.stdout)
    kernels = ("_grouped_gemm_kernel", "_flstm_step_kernel", "_flstm_backward_step_kernel")
    assert set(uses_mma) == {f"{k} {d}" for k in kernels for d in ("float32", "float16", "bfloat16")}, uses_mma
    for key, mma in uses_mma.items():
        assert mma == (not key.endswith("float32")), f"{key}: tensor-core instructions {'' if mma else 'not '}found"
