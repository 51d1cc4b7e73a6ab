"""The reference backend and the public API against independent float64 equations and torch.nn.LSTM."""
import pytest
import torch

import lstmkern
from lstmkern.reference import (flstm_reference, flstm_reference_backward, glstm_reference,
                                glstm_reference_backward)

from helpers import flstm_equations, glstm_equations

F64 = torch.float64
# (T, B, I, H, G): T=1, B=1, G=3, H not a power of two.
GLSTM_SHAPES = [(1, 1, 3, 3, 1), (5, 2, 6, 9, 3), (4, 3, 12, 15, 3), (3, 1, 4, 10, 2), (6, 4, 7, 5, 1)]
FLSTM_SHAPES = [(1, 1, 3, 5, 1), (5, 2, 6, 9, 7), (4, 3, 7, 10, 17), (3, 1, 4, 6, 3)]


def _glstm_params(I, H, G, bias):
    w_ih = torch.randn(G, 4 * H // G, I // G, dtype=F64) * 0.5
    w_hh = torch.randn(G, 4 * H // G, H // G, dtype=F64) * 0.5
    b = torch.randn(G, 4 * H // G, dtype=F64) if bias else None
    return w_ih, w_hh, b


def _flstm_params(I, H, R, bias):
    return (torch.randn(R, I + H, dtype=F64) * 0.5, torch.randn(4 * H, R, dtype=F64) * 0.5,
            torch.randn(4 * H, dtype=F64) if bias else None)


def _state(B, H, given):
    if not given:
        return None, torch.zeros(B, H, dtype=F64), torch.zeros(B, H, dtype=F64)
    h0, c0 = torch.randn(B, H, dtype=F64), torch.randn(B, H, dtype=F64)
    return (h0, c0), h0, c0


def _leaves(*tensors):
    return [t.clone().requires_grad_(True) if t is not None else None for t in tensors]


@pytest.mark.parametrize("shape", GLSTM_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("hx_given", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_glstm_forward_and_grads_match_equations(shape, bias, hx_given, batch_first, backend):
    T, B, I, H, G = shape
    params = _glstm_params(I, H, G, bias)
    hx, h0, c0 = _state(B, H, hx_given)
    x = torch.randn(T, B, I, dtype=F64)
    x_in = x.transpose(0, 1).contiguous() if batch_first else x

    leaves = _leaves(x_in, h0, c0, *params)
    hx_arg = (leaves[1], leaves[2]) if hx_given else None
    out, (h_n, c_n) = lstmkern.glstm_forward(leaves[0], hx_arg, *leaves[3:], batch_first=batch_first,
                                             backend=backend)
    ref_leaves = _leaves(x, h0, c0, *params)
    ref_out, ref_h, ref_c = glstm_equations(*ref_leaves)
    if batch_first:
        ref_out = ref_out.transpose(0, 1)
    assert out.shape == ref_out.shape
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-10)
    torch.testing.assert_close(h_n, ref_h, rtol=0, atol=1e-10)
    torch.testing.assert_close(c_n, ref_c, rtol=0, atol=1e-10)

    grads = [torch.randn_like(t) for t in (out, h_n, c_n)]
    loss = sum((a * g).sum() for a, g in zip((out, h_n, c_n), grads))
    ref_loss = sum((a * g).sum() for a, g in zip((ref_out, ref_h, ref_c), grads))
    # Without hx the API never sees h0/c0, so they have no gradient to compare.
    used = [k for k, t in enumerate(leaves) if t is not None and (hx_given or k not in (1, 2))]
    got = torch.autograd.grad(loss, [leaves[k] for k in used])
    want = torch.autograd.grad(ref_loss, [ref_leaves[k] for k in used])
    for k, g_got, g_want in zip(used, got, want):
        if batch_first and k == 0:  # dx: the API saw (B, T, I), the equations (T, B, I)
            g_want = g_want.transpose(0, 1)
        torch.testing.assert_close(g_got, g_want, rtol=0, atol=1e-8)


@pytest.mark.parametrize("shape", FLSTM_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("hx_given", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
def test_flstm_forward_and_grads_match_equations(shape, bias, hx_given, batch_first):
    T, B, I, H, R = shape
    params = _flstm_params(I, H, R, bias)
    hx, h0, c0 = _state(B, H, hx_given)
    x = torch.randn(T, B, I, dtype=F64)
    x_in = x.transpose(0, 1).contiguous() if batch_first else x
    leaves = _leaves(x_in, h0, c0, *params)
    out, (h_n, c_n) = lstmkern.flstm_forward(leaves[0], (leaves[1], leaves[2]), *leaves[3:],
                                             batch_first=batch_first, backend="reference")
    ref_leaves = _leaves(x, h0, c0, *params)
    ref_out, ref_h, ref_c = flstm_equations(*ref_leaves)
    if batch_first:
        ref_out = ref_out.transpose(0, 1)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-10)
    torch.testing.assert_close(c_n, ref_c, rtol=0, atol=1e-10)
    grads = [torch.randn_like(t) for t in (out, h_n, c_n)]
    loss = sum((a * g).sum() for a, g in zip((out, h_n, c_n), grads))
    ref_loss = sum((a * g).sum() for a, g in zip((ref_out, ref_h, ref_c), grads))
    used = [k for k, t in enumerate(leaves) if t is not None]
    got = torch.autograd.grad(loss, [leaves[k] for k in used])
    want = torch.autograd.grad(ref_loss, [ref_leaves[k] for k in used])
    for k, g_got, g_want in zip(used, got, want):
        if batch_first and k == 0:  # dx: the API saw (B, T, I), the equations (T, B, I)
            g_want = g_want.transpose(0, 1)
        torch.testing.assert_close(g_got, g_want, rtol=0, atol=1e-8)


@pytest.mark.parametrize("op", ["glstm", "flstm"])
def test_explicit_bptt_matches_autograd_of_reference(op):
    """The explicit backward (which the kernels mirror) equals autograd through the reference forward, including a
    gradient arriving on every step's cell state."""
    T, B, I, H = 4, 3, 6, 9
    if op == "glstm":
        params, fwd, bwd = _glstm_params(I, H, 3, True), glstm_reference, glstm_reference_backward
    else:
        params, fwd, bwd = _flstm_params(I, H, 5, True), flstm_reference, flstm_reference_backward
    x, h0, c0 = torch.randn(T, B, I, dtype=F64), torch.randn(B, H, dtype=F64), torch.randn(B, H, dtype=F64)
    leaves = _leaves(x, h0, c0, *params)
    out, cell = fwd(*leaves)
    g_out, g_cell = torch.randn_like(out), torch.randn_like(cell)
    want = torch.autograd.grad((out * g_out).sum() + (cell * g_cell).sum(), leaves)
    got = bwd(g_out, g_cell, x, h0, c0, *params, out.detach(), cell.detach())
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_g1_is_nn_lstm_exactly():
    lstm = torch.nn.LSTM(7, 11, dtype=F64)
    x, h0, c0 = torch.randn(6, 2, 7, dtype=F64), torch.randn(1, 2, 11, dtype=F64), torch.randn(1, 2, 11, dtype=F64)
    want, (h_w, c_w) = lstm(x, (h0, c0))
    b = (lstm.bias_ih_l0 + lstm.bias_hh_l0)[None]
    got, (h, c) = lstmkern.glstm_forward(x, (h0[0], c0[0]), lstm.weight_ih_l0[None], lstm.weight_hh_l0[None], b)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    torch.testing.assert_close(c, c_w[0], rtol=0, atol=1e-10)
    w1 = torch.eye(18, dtype=F64)
    w2 = torch.cat((lstm.weight_ih_l0, lstm.weight_hh_l0), dim=1)
    got, _ = lstmkern.flstm_forward(x, (h0[0], c0[0]), w1, w2, b[0])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_reference_keeps_state_in_float32(dtype):
    T, B, I, H, G = 5, 2, 6, 9, 3
    params = [p.to(dtype) for p in _glstm_params(I, H, G, True)]
    x = torch.randn(T, B, I, dtype=F64)
    out, (h_n, c_n) = lstmkern.glstm_forward(x.to(dtype), None, *params, backend="reference")
    assert out.dtype == h_n.dtype == c_n.dtype == dtype
    want, _, _ = glstm_equations(x, torch.zeros(B, H, dtype=F64), torch.zeros(B, H, dtype=F64),
                                 *[p.double() for p in params])
    tol = {torch.float32: 1e-5, torch.bfloat16: 5e-2, torch.float16: 5e-3}[dtype]
    assert (out.double() - want).abs().max().item() < tol


def test_empty_sequence_returns_initial_state():
    h0, c0 = torch.randn(2, 6, dtype=F64), torch.randn(2, 6, dtype=F64)
    w_ih, w_hh, b = _glstm_params(4, 6, 2, True)
    out, (h_n, c_n) = lstmkern.glstm_forward(torch.empty(0, 2, 4, dtype=F64), (h0, c0), w_ih, w_hh, b)
    assert out.shape == (0, 2, 6)
    assert torch.equal(h_n, h0) and torch.equal(c_n, c0)
    out, (h_n, _) = lstmkern.flstm_forward(torch.empty(2, 0, 4, dtype=F64), None, *_flstm_params(4, 6, 3, True),
                                           batch_first=True)
    assert out.shape == (2, 0, 6) and torch.equal(h_n, torch.zeros(2, 6, dtype=F64))


def test_non_contiguous_inputs_are_accepted():
    T, B, I, H, G = 4, 3, 6, 9, 3
    w_ih, w_hh, b = _glstm_params(I, H, G, True)
    x = torch.randn(B, I, T, dtype=F64).permute(2, 0, 1)  # (T, B, I), not contiguous
    w_hh_nc = w_hh.transpose(1, 2).contiguous().transpose(1, 2)
    assert not x.is_contiguous() and not w_hh_nc.is_contiguous()
    got, _ = lstmkern.glstm_forward(x, None, w_ih, w_hh_nc, b)
    want, _, _ = glstm_equations(x, torch.zeros(B, H, dtype=F64), torch.zeros(B, H, dtype=F64), w_ih, w_hh, b)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
