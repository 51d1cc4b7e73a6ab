"""Checks shared by the tests of the persistent kernels on a GPU (tests/test_gpu_cuda.py) and under the CPU emulator
(tests/test_emu.py): random inputs, and the tolerance rule against the float64 reference.

Tolerance rule: for every output and gradient, the kernel's relative error against the float64 reference (run on the
same, already rounded inputs) may be at most K times the error of the reference itself run in the input dtype, plus a
floor (a few units in the last place for fp16/bf16; 1e-5 for fp32, whose reference can be nearly exact by luck).

Shape legend: T time steps, B batch, I input features, H hidden units, G groups, Hg = H / G, Ig = I / G, R rank,
P projection size (LSTMP).
"""
from __future__ import annotations

import torch

from helpers import rel_err
from lstmkern.reference import flstm_reference, flstm_reference_backward, glstm_reference, glstm_reference_backward

K = 3.0
FLOOR = {torch.float32: 1e-5, torch.float16: 4 * 2.0**-10, torch.bfloat16: 4 * 2.0**-7}
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
GRAD_NAMES = ("dx", "dh0", "dc0", "dweight_a", "dweight_b", "dbias")


def assert_close_like_reference(name, kernel, reference_low, reference_64, dtype):
    """``kernel`` against the float64 reference within K x the low-precision reference's own error + FLOOR."""
    assert kernel.dtype == reference_low.dtype, (name, kernel.dtype, reference_low.dtype)
    assert kernel.shape == reference_64.shape, (name, kernel.shape, reference_64.shape)
    err_kernel = rel_err(kernel, reference_64)
    err_reference = rel_err(reference_low, reference_64)
    assert err_kernel <= K * err_reference + FLOOR[dtype], (
        f"{name}: kernel error {err_kernel:.3e} > {K} x reference error {err_reference:.3e} + {FLOOR[dtype]:.1e}")


def randn(*shape, device, scale=1.0):
    return torch.randn(*shape, dtype=torch.float64, device=device) * scale


def glstm_inputs(T, B, G, Hg, Ig, dtype, device):
    """(x, h0, c0, weight_ih, weight_hh, bias) in ``dtype`` on ``device``."""
    H, I = G * Hg, G * Ig
    x = randn(T, B, I, device=device)
    h0, c0 = randn(B, H, device=device, scale=0.5), randn(B, H, device=device, scale=0.5)
    w_ih = randn(G, 4 * Hg, Ig, device=device, scale=Ig**-0.5)
    w_hh = randn(G, 4 * Hg, Hg, device=device, scale=Hg**-0.5)
    bias = randn(G, 4 * Hg, device=device, scale=0.1)
    return [t.to(dtype) for t in (x, h0, c0, w_ih, w_hh, bias)]


def projected_inputs(T, B, I, H, P, G, dtype, device, dense_input=False):
    """(x, h0, c0, weight_ih, weight_hh, bias, weight_hr) of a projected G-LSTM layer (LSTMP; G = 1 a plain one) in
    ``dtype`` on ``device``: h0 (B, P), c0 (B, H), weight_hh (G, 4Hg, P / G), weight_hr (P, H); weight_ih (G, 4Hg, I)
    with ``dense_input``, else (G, 4Hg, I / G)."""
    Hg, Pg = H // G, P // G
    Ig = I if dense_input else I // G
    x = randn(T, B, I, device=device)
    h0, c0 = randn(B, P, device=device, scale=0.5), randn(B, H, device=device, scale=0.5)
    w_ih = randn(G, 4 * Hg, Ig, device=device, scale=Ig**-0.5)
    w_hh = randn(G, 4 * Hg, Pg, device=device, scale=Pg**-0.5)
    bias = randn(G, 4 * Hg, device=device, scale=0.1)
    w_hr = randn(P, H, device=device, scale=H**-0.5)
    return [t.to(dtype) for t in (x, h0, c0, w_ih, w_hh, bias, w_hr)]


def flstm_inputs(T, B, I, H, R, dtype, device):
    """(x, h0, c0, weight_1, weight_2, bias) in ``dtype`` on ``device``."""
    x = randn(T, B, I, device=device)
    h0, c0 = randn(B, H, device=device, scale=0.5), randn(B, H, device=device, scale=0.5)
    w1 = randn(R, I + H, device=device, scale=(I + H) ** -0.5)
    w2 = randn(4 * H, R, device=device, scale=R**-0.5)
    bias = randn(4 * H, device=device, scale=0.1)
    return [t.to(dtype) for t in (x, h0, c0, w1, w2, bias)]


def check_forward_and_backward(kind, inputs, dtype, with_bias, with_grad_cell, fwd, bwd):
    """fwd(x, h0, c0, w_a, w_b, bias) -> (output, cell) and bwd (the backend contract's backward) against the
    reference in ``dtype`` and in float64, by the tolerance rule; ``kind`` is "glstm" or "flstm"."""
    ref_fwd, ref_bwd = (glstm_reference, glstm_reference_backward) if kind == "glstm" else (
        flstm_reference, flstm_reference_backward)
    x, h0, c0, w_a, w_b, bias = inputs
    bias = bias if with_bias else None
    inputs64 = [None if t is None else t.double() for t in (x, h0, c0, w_a, w_b, bias)]

    output, cell = fwd(x, h0, c0, w_a, w_b, bias)
    out_low, cell_low = ref_fwd(x, h0, c0, w_a, w_b, bias)
    out_64, cell_64 = ref_fwd(*inputs64)
    assert_close_like_reference("output", output, out_low, out_64, dtype)
    assert_close_like_reference("cell", cell, cell_low, cell_64, dtype)
    assert cell.dtype == torch.float32

    T, B, H = output.shape
    grad_output = torch.randn(T, B, H, device=x.device, dtype=torch.float64)
    grad_cell = torch.randn(T, B, H, device=x.device, dtype=torch.float64) if with_grad_cell else None
    # Each backward runs on its own forward's saved output/cell (that is what autograd hands it).
    grads = bwd(grad_output.to(dtype), None if grad_cell is None else grad_cell.float(), x, h0, c0, w_a, w_b, bias,
                output, cell)
    grads_low = ref_bwd(grad_output.to(dtype), None if grad_cell is None else grad_cell.float(), x, h0, c0, w_a, w_b,
                        bias, out_low, cell_low)
    grads_64 = ref_bwd(grad_output, grad_cell, *inputs64, out_64, cell_64)
    for name, g, g_low, g_64 in zip(GRAD_NAMES, grads, grads_low, grads_64):
        assert_close_like_reference(name, g, g_low, g_64, dtype)
        assert g.is_contiguous(), name


def check_projected_forward_and_backward(inputs, dtype, with_bias, with_grad_cell, fwd, bwd):
    """:func:`check_forward_and_backward` for a projected G-LSTM layer (LSTMP): ``inputs`` as :func:`projected_inputs`
    returns them; fwd(x, h0, c0, weight_ih, weight_hh, bias, weight_hr=...) -> (output (T, B, P), cell (T, B, H)) and
    bwd(grad_output, grad_cell, x, h0, c0, weight_ih, weight_hh, bias, output, cell, weight_hr=...) -> the seven
    gradients (dweight_hr last), each held to the tolerance rule against glstm_reference_backward."""
    x, h0, c0, w_ih, w_hh, bias, w_hr = inputs
    bias = bias if with_bias else None
    inputs64 = [None if t is None else t.double() for t in (x, h0, c0, w_ih, w_hh, bias, w_hr)]

    output, cell = fwd(x, h0, c0, w_ih, w_hh, bias, weight_hr=w_hr)
    out_low, cell_low = glstm_reference(x, h0, c0, w_ih, w_hh, bias, w_hr)
    out_64, cell_64 = glstm_reference(*inputs64)
    assert_close_like_reference("output", output, out_low, out_64, dtype)
    assert_close_like_reference("cell", cell, cell_low, cell_64, dtype)

    (T, B, P), H = output.shape, cell.shape[2]
    grad_output = torch.randn(T, B, P, device=x.device, dtype=torch.float64)
    grad_cell = torch.randn(T, B, H, device=x.device, dtype=torch.float64) if with_grad_cell else None
    grads = bwd(grad_output.to(dtype), None if grad_cell is None else grad_cell.float(), x, h0, c0, w_ih, w_hh, bias,
                output, cell, weight_hr=w_hr)
    grads_low = glstm_reference_backward(grad_output.to(dtype), None if grad_cell is None else grad_cell.float(), x,
                                         h0, c0, w_ih, w_hh, bias, out_low, cell_low, w_hr)
    grads_64 = glstm_reference_backward(grad_output, grad_cell, *inputs64[:6], out_64, cell_64, inputs64[6])
    assert len(grads) == len(GRAD_NAMES) + 1
    for name, g, g_low, g_64 in zip(GRAD_NAMES + ("dweight_hr",), grads, grads_low, grads_64):
        assert_close_like_reference(name, g, g_low, g_64, dtype)
        assert g.is_contiguous(), name


def check_both_variants(kind, inputs, dtype, fwd, bwd):
    """:func:`check_forward_and_backward` with bias and a cell-state gradient, then with neither."""
    for with_bias, with_grad_cell in ((True, True), (False, False)):
        check_forward_and_backward(kind, inputs, dtype, with_bias, with_grad_cell, fwd=fwd, bwd=bwd)


def assert_within_ulps(results, others, tolerance, other_name):
    """(output, cell) of one kernel against another's, within ``tolerance`` relative error."""
    for name, got, other in zip(("output", "cell"), results, others):
        assert rel_err(got, other) <= tolerance, f"{name}: {rel_err(got, other):.3e} from {other_name}"


def assert_forward_like_reference(reference, inputs, output, cell, dtype):
    """A forward-only kernel result against the reference in ``dtype`` and in float64 (the tolerance rule above);
    ``inputs`` may hold None (no bias)."""
    out_low, cell_low = reference(*inputs)
    out_64, cell_64 = reference(*(None if t is None else t.double() for t in inputs))
    assert_close_like_reference("output", output, out_low, out_64, dtype)
    assert_close_like_reference("cell", cell, cell_low, cell_64, dtype)
