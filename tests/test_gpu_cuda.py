"""The "cuda" backend (persistent kernels) against the float64 reference, on a GPU (skipped without one).

Tolerance rule: for every output and gradient, the kernel's relative error against the float64 reference (run on the
same, already rounded inputs) may be at most K times the error of the reference itself run in the input dtype, plus a
floor (a few units in the last place for fp16/bf16; 1e-5 for fp32, whose reference can be nearly exact by luck).
The kernels accumulate in float32 like the reference but in a different order (and keep the recurrent product in float32 where the reference rounds it to the input dtype), so
their error is of the same size as the reference's own low-precision error.

Shape legend: T time steps, B batch, I input features, H hidden units, G groups, Hg = H / G, Ig = I / G, R rank.
"""
from __future__ import annotations

import pytest
import torch

import lstmkern
from lstmkern.backends import cuda as cuda_backend
from lstmkern.backends import resolve_backend
from lstmkern.reference import (flstm_reference, flstm_reference_backward, glstm_reference, glstm_reference_backward)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

K = 3.0
FLOOR = {torch.float32: 1e-5, torch.float16: 4 * 2.0**-10, torch.bfloat16: 4 * 2.0**-7}
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Large sizes are chosen for 227 KiB of opt-in shared memory (H100); a GPU with less skips them.
GLSTM_SHAPES = [  # (T, B, G, Hg, Ig)
    (1, 1, 1, 1, 1),
    (1, 1, 3, 5, 3),
    (7, 17, 2, 33, 5),   # B crosses the 16-row WMMA tile and the 8-row FMA tile
    (5, 9, 3, 16, 16),   # exact WMMA tiles
    (40, 33, 4, 64, 48),
    (24, 64, 2, 112, 64),  # close to the fp32 shared-memory limit
    (16, 20, 2, 144, 32),  # the largest fp16/bf16 group on a 227 KiB GPU
]
FLSTM_SHAPES = [  # (T, B, I, H, R)
    (1, 1, 1, 1, 1),
    (3, 1, 3, 5, 3),
    (9, 19, 20, 37, 11),
    (32, 24, 64, 128, 32),
    (16, 9, 256, 256, 35),
]


def _rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def _assert_close_like_reference(name, kernel, reference_low, reference_64, dtype):
    assert kernel.dtype == reference_low.dtype, (name, kernel.dtype, reference_low.dtype)
    assert kernel.shape == reference_64.shape, (name, kernel.shape, reference_64.shape)
    err_kernel = _rel_err(kernel, reference_64)
    err_reference = _rel_err(reference_low, reference_64)
    assert err_kernel <= K * err_reference + FLOOR[dtype], (
        f"{name}: kernel error {err_kernel:.3e} > {K} x reference error {err_reference:.3e} + {FLOOR[dtype]:.1e}")


def _skip_if_unsupported(op, dtype, sizes):
    reason = cuda_backend.unsupported(op, torch.device("cuda"), dtype, sizes)
    if reason is not None and "shared memory" in reason:
        pytest.skip(f"this GPU cannot run the size: {reason}")
    assert reason is None, reason


def _randn(*shape, scale=1.0):
    return (torch.randn(*shape, dtype=torch.float64, device="cuda") * scale)


def _glstm_inputs(T, B, G, Hg, Ig, dtype):
    H, I = G * Hg, G * Ig
    x = _randn(T, B, I)
    h0, c0 = _randn(B, H, scale=0.5), _randn(B, H, scale=0.5)
    w_ih, w_hh = _randn(G, 4 * Hg, Ig, scale=Ig**-0.5), _randn(G, 4 * Hg, Hg, scale=Hg**-0.5)
    bias = _randn(G, 4 * Hg, scale=0.1)
    return [t.to(dtype) for t in (x, h0, c0, w_ih, w_hh, bias)]


def _flstm_inputs(T, B, I, H, R, dtype):
    x = _randn(T, B, I)
    h0, c0 = _randn(B, H, scale=0.5), _randn(B, H, scale=0.5)
    w1, w2 = _randn(R, I + H, scale=(I + H) ** -0.5), _randn(4 * H, R, scale=R**-0.5)
    bias = _randn(4 * H, scale=0.1)
    return [t.to(dtype) for t in (x, h0, c0, w1, w2, bias)]


def _check_forward_and_backward(kind, inputs, dtype, with_bias, with_grad_cell):
    fwd, bwd = (cuda_backend.glstm_fwd, cuda_backend.glstm_bwd) if kind == "glstm" else (
        cuda_backend.flstm_fwd, cuda_backend.flstm_bwd)
    ref_fwd, ref_bwd = (glstm_reference, glstm_reference_backward) if kind == "glstm" else (
        flstm_reference, flstm_reference_backward)
    x, h0, c0, w_a, w_b, bias = inputs
    bias = bias if with_bias else None
    inputs64 = [None if t is None else t.double() for t in (x, h0, c0, w_a, w_b, bias)]

    output, cell = fwd(x, h0, c0, w_a, w_b, bias)
    out_low, cell_low = ref_fwd(x, h0, c0, w_a, w_b, bias)
    out_64, cell_64 = ref_fwd(*inputs64)
    _assert_close_like_reference("output", output, out_low, out_64, dtype)
    _assert_close_like_reference("cell", cell, cell_low, cell_64, dtype)
    assert cell.dtype == torch.float32

    T, B, H = output.shape
    grad_output = torch.randn(T, B, H, device="cuda", dtype=torch.float64)
    grad_cell = torch.randn(T, B, H, device="cuda", dtype=torch.float64) if with_grad_cell else None
    # Each backward runs on its own forward's saved output/cell (that is what autograd hands it).
    grads = bwd(grad_output.to(dtype), None if grad_cell is None else grad_cell.float(), x, h0, c0, w_a, w_b, bias,
                output, cell)
    grads_low = ref_bwd(grad_output.to(dtype), None if grad_cell is None else grad_cell.float(), x, h0, c0, w_a, w_b,
                        bias, out_low, cell_low)
    grads_64 = ref_bwd(grad_output, grad_cell, *inputs64, out_64, cell_64)
    names = ("dx", "dh0", "dc0", "dweight_a", "dweight_b", "dbias")
    for name, g, g_low, g_64 in zip(names, grads, grads_low, grads_64):
        _assert_close_like_reference(name, g, g_low, g_64, dtype)
        assert g.is_contiguous(), name


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", GLSTM_SHAPES, ids=str)
def test_glstm_matches_reference(shape, dtype):
    T, B, G, Hg, Ig = shape
    _skip_if_unsupported("glstm", dtype, (T, B, G * Ig, G * Hg, G, 0))
    torch.manual_seed(hash(shape) % 2**31)
    inputs = _glstm_inputs(T, B, G, Hg, Ig, dtype)
    _check_forward_and_backward("glstm", inputs, dtype, with_bias=True, with_grad_cell=True)
    _check_forward_and_backward("glstm", inputs, dtype, with_bias=False, with_grad_cell=False)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", FLSTM_SHAPES, ids=str)
def test_flstm_matches_reference(shape, dtype):
    T, B, I, H, R = shape
    _skip_if_unsupported("flstm", dtype, (T, B, I, H, 1, R))
    torch.manual_seed(hash(shape) % 2**31)
    inputs = _flstm_inputs(T, B, I, H, R, dtype)
    _check_forward_and_backward("flstm", inputs, dtype, with_bias=True, with_grad_cell=True)
    _check_forward_and_backward("flstm", inputs, dtype, with_bias=False, with_grad_cell=False)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_public_api_autograd_on_cuda_backend(dtype):
    """End to end: lstmkern.glstm_forward / flstm_forward with backend="cuda" and autograd, against float64."""
    torch.manual_seed(0)
    T, B, G, Hg, Ig = 6, 5, 3, 24, 8
    x, h0, c0, w_ih, w_hh, bias = _glstm_inputs(T, B, G, Hg, Ig, dtype)
    leaves = [t.clone().requires_grad_() for t in (x, w_ih, w_hh, bias)]
    out, (h_n, c_n) = lstmkern.glstm_forward(leaves[0], (h0, c0), *leaves[1:], backend="cuda")
    (out.float().square().sum() + c_n.float().sum()).backward()
    leaves64 = [t.detach().double().requires_grad_() for t in (x, w_ih, w_hh, bias)]
    out64, (_, c_n64) = lstmkern.glstm_forward(leaves64[0], (h0.double(), c0.double()), *leaves64[1:],
                                               backend="reference")
    (out64.square().sum() + c_n64.sum()).backward()
    leaves_low = [t.detach().clone().requires_grad_() for t in (x, w_ih, w_hh, bias)]
    out_low, (_, c_n_low) = lstmkern.glstm_forward(leaves_low[0], (h0, c0), *leaves_low[1:], backend="reference")
    (out_low.float().square().sum() + c_n_low.float().sum()).backward()
    _assert_close_like_reference("output", out, out_low, out64, dtype)
    for name, a, lo, r in zip(("dx", "dweight_ih", "dweight_hh", "dbias"), leaves, leaves_low, leaves64):
        _assert_close_like_reference(name, a.grad, lo.grad, r.grad, dtype)


def test_auto_picks_cuda_where_supported_and_falls_back_otherwise():
    for dtype in DTYPES:
        assert resolve_backend("auto", "glstm", torch.device("cuda"), dtype, (4, 2, 8, 8, 2, 0)) == "cuda"
    assert resolve_backend("auto", "glstm", torch.device("cuda"), torch.float64, (4, 2, 8, 8, 2, 0)) != "cuda"
    huge = (4, 2, 1024, 1024, 1, 0)  # Hg = 1024 never fits one CTA's shared memory
    assert "shared memory" in cuda_backend.unsupported("glstm", torch.device("cuda"), torch.float32, huge)
    assert resolve_backend("auto", "glstm", torch.device("cuda"), torch.float32, huge) != "cuda"


def test_kernels_reject_bad_arguments_with_named_errors():
    x, h0, c0, w_ih, w_hh, bias = _glstm_inputs(3, 2, 2, 8, 4, torch.float32)
    with pytest.raises(ValueError, match="weight_ih"):
        cuda_backend.glstm_fwd(x, h0, c0, w_ih[:, :, :3].contiguous(), w_hh, bias)
    with pytest.raises(TypeError, match="h0"):
        cuda_backend.glstm_fwd(x, h0.half(), c0, w_ih, w_hh, bias)
    with pytest.raises(ValueError, match="shared memory"):
        big = torch.zeros(1, 4 * 1024, 1024, device="cuda")
        cuda_backend.glstm_fwd(torch.zeros(2, 1, 4, device="cuda"), torch.zeros(1, 1024, device="cuda"),
                               torch.zeros(1, 1024, device="cuda"), torch.zeros(1, 4096, 4, device="cuda"), big, None)


def test_runs_on_the_current_stream():
    """Launches go to the current stream: results are correct when produced on a side stream."""
    x, h0, c0, w_ih, w_hh, bias = _glstm_inputs(5, 3, 2, 16, 4, torch.float32)
    expected, _ = cuda_backend.glstm_fwd(x, h0, c0, w_ih, w_hh, bias)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        output, _ = cuda_backend.glstm_fwd(x, h0, c0, w_ih, w_hh, bias)
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(output, expected, rtol=0, atol=0)
