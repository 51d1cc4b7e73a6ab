"""The sequence-fused G-LSTM forward (triton_kernels/glstm_sequence.py) against the float64 reference, against the
per-step path, its size rule and argument checks, and its ahead-of-time compile for sm_90 at Hg = 128 in 16-bit.

Without a GPU the kernel runs under Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1), with its single
interpreted config (BLOCK_B = 16), so B = 19 spans two batch tiles; Hg = 1, 17 and 96 pad to 16, 32 and 128 (masked
units), Hg = 64 and 128 fill their tiles. Output buffers are NaN-filled, so an element the kernel does not write fails.
bfloat16: Triton's interpreter multiplies bfloat16 dot operands as their raw uint16 bits (create_dot in
triton/runtime/interpreter.py); the ``exact_bfloat16_dot`` fixture widens them to float32 first, which is exactly what
a tensor core does with float32 accumulation (a product of two bfloat16 values is exact in float32).
Shape legend: T, B, I, H, G (groups), Hg = H / G, Ig = I / G.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lstmkern.reference import glstm_reference
from lstmkern.triton_kernels import _common, aot
from lstmkern.triton_kernels.glstm import glstm_forward, glstm_input_projection
from lstmkern.triton_kernels.glstm_sequence import glstm_sequence_fits, glstm_sequence_forward

from helpers import rel_err
from kernel_checks import assert_close_like_reference, glstm_inputs
from test_triton_aot import gpu_image_triton  # noqa: F401 - the fixture installing Triton 3.6.0 into .cache/

REPO = Path(__file__).resolve().parents[1]
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
G, IG = 3, 5
F64_TOL = 1e-10  # float64 against the float64 reference: summation order only


@pytest.fixture(autouse=True)
def exact_bfloat16_dot(monkeypatch):
    """Under the interpreter, tl.dot on bfloat16 operands computed on their values (see the module docstring)."""
    if not _common.INTERPRET:
        return
    import triton.language as tl
    from triton.runtime import interpreter

    original = interpreter.InterpreterBuilder.create_dot

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if a.dtype != tl.bfloat16 and b.dtype != tl.bfloat16:
            return original(self, a, b, d, input_precision, max_num_imprecise_acc)

        def values(operand):  # bfloat16 is float32's upper 16 bits; the interpreter stores them as uint16
            if operand.dtype == tl.bfloat16:
                return (operand.data.astype(np.uint32) << 16).view(np.float32)
            return operand.data

        product = np.matmul(values(a), values(b), dtype=d.data.dtype)
        return interpreter.TensorHandle(product + d.data, d.dtype.scalar)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_dot", create_dot)


@pytest.fixture(autouse=True)
def poison_allocations(monkeypatch):
    monkeypatch.setattr(_common, "POISON_ALLOCATIONS", True)


def _sequence_forward(x, h0, c0, weight_ih, weight_hh, bias):
    """The layer as glstm_forward runs it with the new kernel: input projection, then one sequence-fused launch."""
    T, B, _ = x.shape
    H = weight_hh.shape[0] * weight_hh.shape[2]
    proj = glstm_input_projection(x, weight_ih, bias)
    output = torch.full((T, B, H), float("nan"), dtype=x.dtype, device=x.device)
    cell = torch.full((T, B, H), float("nan"), dtype=_common.state_dtype(x.dtype), device=x.device)
    glstm_sequence_forward(proj, h0, c0, weight_hh, output, cell)
    return output, cell


# (T, B): one step of one sample; three steps (the time loop, P read one step ahead) of two batch tiles.
STEPS_BATCH = [(1, 1), (3, 19)]
# Every Hg for 16-bit; float32 up to its rule's padded 64.
DTYPE_HG = [(dtype, hg) for dtype in (F32, F16, BF16) for hg in (1, 17, 64, 96, 128) if dtype != F32 or hg <= 64]


@pytest.mark.parametrize("dtype,hg", DTYPE_HG)
@pytest.mark.parametrize("T,B", STEPS_BATCH)
@pytest.mark.parametrize("with_bias", [True, False])
def test_forward_against_float64_reference(dtype, hg, T, B, with_bias):
    torch.manual_seed(hg * 100 + T * 10 + B)
    x, h0, c0, w_ih, w_hh, bias = glstm_inputs(T, B, G, hg, IG, dtype, DEVICE)
    bias = bias if with_bias else None
    output, cell = _sequence_forward(x, h0, c0, w_ih, w_hh, bias)
    assert cell.dtype == F32
    out_low, cell_low = glstm_reference(x, h0, c0, w_ih, w_hh, bias)
    out_64, cell_64 = glstm_reference(*(None if t is None else t.double() for t in (x, h0, c0, w_ih, w_hh, bias)))
    assert_close_like_reference("output", output, out_low, out_64, dtype)
    assert_close_like_reference("cell", cell, cell_low, cell_64, dtype)


@pytest.mark.parametrize("hg", [17, 64])
def test_float64_against_float64_reference(hg):
    """float64 multiplies in the other tile orientation (batch rows); the old kernel's float64 range is kept."""
    torch.manual_seed(hg)
    inputs = glstm_inputs(3, 19, G, hg, IG, F64, DEVICE)
    output, cell = _sequence_forward(*inputs)
    assert output.dtype == F64 and cell.dtype == F64
    out_ref, cell_ref = glstm_reference(*inputs)
    assert rel_err(output, out_ref) <= F64_TOL and rel_err(cell, cell_ref) <= F64_TOL


# (dtype, Hg, T, B): the per-step path's tiles split Hg and the reduction differently, so its sums are rounded in
# another order: equal within float32 rounding, and for 16-bit outputs within a couple of units in the last place
# (an h rounded the other way feeds the following steps).
STEP_CASES = [(F32, 17, 3, 19), (F16, 17, 3, 19), (BF16, 17, 3, 19), (F16, 128, 2, 1), (BF16, 128, 2, 1)]


@pytest.mark.parametrize("dtype,hg,T,B", STEP_CASES)
def test_matches_step_path(dtype, hg, T, B):
    torch.manual_seed(hg + T)
    inputs = glstm_inputs(T, B, G, hg, IG, dtype, DEVICE)
    output, cell = _sequence_forward(*inputs)
    step_output, step_cell = glstm_forward(*inputs, path="step")
    output_tol = 1e-6 if dtype == F32 else 2 * torch.finfo(dtype).eps
    assert rel_err(output, step_output) <= output_tol, rel_err(output, step_output)
    assert rel_err(cell, step_cell) <= (1e-6 if dtype == F32 else 2 * torch.finfo(dtype).eps)


def test_fits_rule():
    for dtype in (F16, BF16):
        assert glstm_sequence_fits(1, dtype) and glstm_sequence_fits(96, dtype) and glstm_sequence_fits(128, dtype)
        assert not glstm_sequence_fits(129, dtype) and not glstm_sequence_fits(256, dtype)
    for dtype in (F32, F64):  # the old kernel's range: padded Hg <= 64
        assert glstm_sequence_fits(33, dtype) and glstm_sequence_fits(64, dtype)
        assert not glstm_sequence_fits(65, dtype) and not glstm_sequence_fits(128, dtype)
    assert not glstm_sequence_fits(0, F16) and not glstm_sequence_fits(8, torch.int32)


def _buffers(T, B, hg, dtype):
    H = G * hg
    sdt = _common.state_dtype(dtype)
    return dict(proj=torch.zeros(T, B, 4 * H, dtype=sdt), h0=torch.zeros(B, H, dtype=dtype),
                c0=torch.zeros(B, H, dtype=dtype), weight_hh=torch.zeros(G, 4 * hg, hg, dtype=dtype),
                output=torch.zeros(T, B, H, dtype=dtype), cell=torch.zeros(T, B, H, dtype=sdt))


@pytest.mark.parametrize("change,match", [
    (dict(weight_hh=torch.zeros(G, 4 * 8, 4, dtype=F16)), "weight_hh"),  # projected shape (Pg != Hg)
    (dict(proj=torch.zeros(2, 3, 4 * G * 8, dtype=F16)), "proj"),  # P in x's dtype, not the state dtype
    (dict(h0=torch.zeros(3, G * 8 + 1, dtype=F16)), "h0"),
    (dict(c0=torch.zeros(G * 8, 3, dtype=F16).t()), "c0"),  # not contiguous
    (dict(cell=torch.zeros(2, 3, G * 8, dtype=F16)), "cell"),
    (dict(output=torch.zeros(2, 3, G * 8 + 3, dtype=F16)), "output"),
])
def test_bad_arguments_are_rejected_before_launch(change, match):
    args = {**_buffers(2, 3, 8, F16), **change}
    with pytest.raises(ValueError, match=match):
        glstm_sequence_forward(**args)


@pytest.mark.parametrize("hg,dtype", [(96, F32), (129, F16)])
def test_hg_beyond_the_rule_is_rejected(hg, dtype):
    with pytest.raises(ValueError, match=f"Hg = {hg}"):
        glstm_sequence_forward(**_buffers(1, 1, hg, dtype))


@pytest.mark.parametrize("T,B", [(0, 3), (2, 0)])
def test_empty_sequence_or_batch(T, B):
    args = _buffers(T, B, 8, F16)
    glstm_sequence_forward(**args)  # nothing to compute: no launch (a zero grid), no error
    assert args["output"].numel() == 0


# ----------------------------------------------------------------------------------------------------------------------
# Ahead-of-time compile for sm_90 (no GPU needed): Hg = 128 in fp16 and bf16, every config the autotuner may pick,
# and Hg = 100 (the same 128-wide tiles, but Hg not a multiple of 16: Triton then cannot vectorise the tiles' loads and
# stores; tests/test_triton_aot.py compiles one alignment variant per config, here both are compiled)
# ----------------------------------------------------------------------------------------------------------------------
_COMPILE_SCRIPT = r"""
import contextlib, io, json, os, sys, tempfile
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton_kernels import aot, glstm_sequence

kernel = glstm_sequence._glstm_sequence_fused_kernel
key = (glstm_sequence.__name__, "_glstm_sequence_fused_kernel")
launches, current = [], [None]
kernel.run = lambda *args, grid=None, warmup=False, **kwargs: launches.append((*key, current[0], args, kwargs))
for dtype in (torch.float16, torch.bfloat16):
    current[0] = dtype
    for hg in (128, 100):
        G, T, B, sdt = 2, 2, 32, torch.float32
        glstm_sequence.glstm_sequence_forward(
            torch.zeros(T, B, 4 * G * hg, dtype=sdt), torch.zeros(B, G * hg, dtype=dtype),
            torch.zeros(B, G * hg, dtype=dtype), torch.zeros(G, 4 * hg, hg, dtype=dtype),
            torch.zeros(T, B, G * hg, dtype=dtype), torch.zeros(T, B, G * hg, dtype=sdt))
del kernel.run
target = GPUTarget("cuda", 90, 32)
specs = aot.specialisations(launches, {key: kernel}, target)  # every binary, alignment variants included
os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp()  # empty: ptxas runs and reports for every binary
aot._init_worker()
rows = []
for spec in specs:
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        compiled = triton.compile(ASTSource(aot._jit_function(kernel), spec.signature, spec.constexprs, spec.attrs),
                                  target=target, options=spec.options)
    ttgir = compiled.asm["ttgir"]
    frame, = aot._PTXAS_FRAME.findall(log.getvalue())
    registers, = aot._PTXAS_REGISTERS.findall(log.getvalue())
    rows.append(dict(dtypes=[str(d) for d in spec.dtypes], config=spec.config, num_warps=spec.options["num_warps"],
                     shared=compiled.metadata.shared, registers=int(registers), local=list(map(int, frame)),
                     tensor_cores="wgmma.mma_async" in compiled.asm["ptx"],
                     # W_hh[g]'s (128 x 128) tiles are loaded before the time loop and never inside it.
                     weights_loaded_in_loop="tensor<128x128x!tt.ptr" in ttgir[ttgir.index("scf.for"):],
                     weights_loaded=ttgir.count("tensor<128x128x!tt.ptr")))
print(json.dumps(dict(triton=triton.__version__, rows=rows)))
"""


def _compile_at_hg_128_and_100(extra_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the GPU configs, not the interpreter's
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path)] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-5000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(report, indent=1))
    # Per dtype: the 5 configs serving 16-bit at Hg_pad = 128 (glstm_sequence's autotune list) at Hg = 128, the one
    # serving it at Hg = 100.
    assert len(report["rows"]) == 12, report["rows"]
    for row in report["rows"]:
        assert row["local"] == [0, 0, 0], f"stack frame / spill stores / spill loads: {row}"
        assert row["shared"] <= aot.SHARED_MEMORY_LIMIT[90], row
        assert row["tensor_cores"], f"the recurrent product is not on sm_90 tensor cores (wgmma): {row}"
        assert row["weights_loaded"] and not row["weights_loaded_in_loop"], f"W_hh is not resident: {row}"
    return report


def test_compiles_for_sm90_without_spills_under_ci_triton():
    import triton
    assert _compile_at_hg_128_and_100(None)["triton"] == triton.__version__


def test_compiles_for_sm90_without_spills_under_gpu_image_triton(gpu_image_triton):  # noqa: F811
    assert _compile_at_hg_128_and_100(gpu_image_triton)["triton"] == "3.6.0"
