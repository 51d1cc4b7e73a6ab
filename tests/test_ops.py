"""The custom ops: torch.library.opcheck, and torch.compile(fullgraph=True) against eager, forward and backward."""
import pytest
import torch

import lstmkern
from lstmkern import ops

F64 = torch.float64


def _glstm_inputs(bias=True, requires_grad=False):
    T, B, I, H, G = 3, 2, 6, 9, 3
    t = [torch.randn(T, B, I, dtype=F64), torch.randn(B, H, dtype=F64), torch.randn(B, H, dtype=F64),
         torch.randn(G, 4 * H // G, I // G, dtype=F64), torch.randn(G, 4 * H // G, H // G, dtype=F64),
         torch.randn(G, 4 * H // G, dtype=F64) if bias else None]
    return [None if a is None else a.requires_grad_(requires_grad) for a in t]


def _flstm_inputs(bias=True, requires_grad=False):
    T, B, I, H, R = 3, 2, 5, 7, 3
    t = [torch.randn(T, B, I, dtype=F64), torch.randn(B, H, dtype=F64), torch.randn(B, H, dtype=F64),
         torch.randn(R, I + H, dtype=F64), torch.randn(4 * H, R, dtype=F64),
         torch.randn(4 * H, dtype=F64) if bias else None]
    return [None if a is None else a.requires_grad_(requires_grad) for a in t]


def _projection(make, bias, requires_grad=False):
    """The same layer with an LSTMP projection P = 3 < H: h0 (B, P), W_hh / W_1 reading P columns, weight_hr (P, H)."""
    x, h0, c0, w_a, w_b, b = make(bias, requires_grad=False)
    P, H = 3, c0.shape[1]
    h0 = torch.randn(h0.shape[0], P, dtype=F64)
    if w_a.dim() == 3:  # G-LSTM: weight_hh (G, 4Hg, P/G)
        w_b = torch.randn(w_b.shape[0], w_b.shape[1], P // w_b.shape[0], dtype=F64)
    else:  # F-LSTM: weight_1 (R, I + P)
        w_a = torch.randn(w_a.shape[0], x.shape[2] + P, dtype=F64)
    w_hr = torch.randn(P, H, dtype=F64)
    return [None if a is None else a.requires_grad_(requires_grad) for a in (x, h0, c0, w_a, w_b, b, w_hr)]


@pytest.mark.parametrize("fwd,bwd,make", [(ops.glstm_fwd, ops.glstm_bwd, _glstm_inputs),
                                          (ops.flstm_fwd, ops.flstm_bwd, _flstm_inputs)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("projected", [False, True])
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_opcheck(fwd, bwd, make, bias, projected, backend):
    """Schema, fake kernels (the cpu backend's workspace has a size only the backend knows), autograd registration."""
    def inputs(requires_grad):
        if projected:
            return _projection(make, bias, requires_grad)
        return [*make(bias, requires_grad=requires_grad), None]

    torch.library.opcheck(fwd, (*inputs(True), backend))
    with torch.no_grad():
        plain = inputs(False)
        out, cell, workspace = fwd(*plain, backend)
        assert workspace.numel() == (out.shape[0] * out.shape[1] * 4 * cell.shape[2] if backend == "cpu" else 0)
        torch.library.opcheck(bwd, (torch.randn_like(out), torch.randn_like(cell), *plain, out, cell, workspace,
                                    backend))
        torch.library.opcheck(bwd, (torch.randn_like(out), None, *plain, out, cell, workspace, backend))


@pytest.mark.parametrize("cls,kwargs", [(lstmkern.GLSTM, dict(groups=3)), (lstmkern.FLSTM, dict(rank=5))])
def test_compile_fullgraph_matches_eager(cls, kwargs):
    torch._dynamo.reset()
    model = cls(6, 9, num_layers=2, bidirectional=True, dtype=F64, **kwargs)
    x = torch.randn(4, 3, 6, dtype=F64, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out_c, (h_c, c_c) = compiled(x)
    loss_c = out_c.square().sum() + h_c.sum() + c_c.sum()
    grads_c = torch.autograd.grad(loss_c, [x, *model.parameters()])
    out_e, (h_e, c_e) = model(x)
    loss_e = out_e.square().sum() + h_e.sum() + c_e.sum()
    grads_e = torch.autograd.grad(loss_e, [x, *model.parameters()])
    torch.testing.assert_close(out_c, out_e, rtol=0, atol=1e-12)
    for a, b in zip(grads_c, grads_e):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_compile_fullgraph_with_inductor_functional():
    torch._dynamo.reset()
    x, h0, c0, w_ih, w_hh, b = _glstm_inputs(requires_grad=True)

    def step(x, h0, c0, w_ih, w_hh, b):
        out, (h, c) = lstmkern.glstm_forward(x, (h0, c0), w_ih, w_hh, b)
        return out.sum() + c.sum()

    compiled = torch.compile(step, fullgraph=True)
    got = compiled(x, h0, c0, w_ih, w_hh, b)
    want = step(x, h0, c0, w_ih, w_hh, b)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    g_got = torch.autograd.grad(got, [x, w_hh])
    g_want = torch.autograd.grad(want, [x, w_hh])
    for a, c in zip(g_got, g_want):
        torch.testing.assert_close(a, c, rtol=0, atol=1e-12)
