"""Projections (LSTMP, ``proj_size`` / ``weight_hr``) and the dense-input G-LSTM (``group_input=False``): the reference
against independent float64 equations and against nn.LSTM(proj_size=P), explicit BPTT against autograd, the modules,
the ops (opcheck lives in test_ops.py), torch.compile, and the backends that do not implement them yet."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstmkern
from lstmkern import reference
from tests.helpers import flstm_equations, glstm_equations

F64 = torch.float64


def _glstm_weights(I, H, G, P, dense_input, bias=True):
    Hg, Pg = H // G, (P or H) // G
    w_ih = torch.randn(G, 4 * Hg, I if dense_input else I // G, dtype=F64)
    w_hh = torch.randn(G, 4 * Hg, Pg, dtype=F64)
    b = torch.randn(G, 4 * Hg, dtype=F64) if bias else None
    w_hr = torch.randn(P, H, dtype=F64) / H ** 0.5 if P else None
    return w_ih, w_hh, b, w_hr


# (T, B, I, H, G, P, dense_input): T = 1, odd sizes, G = 3, one column per group, dense input with and without P.
GLSTM_SHAPES = [(4, 3, 6, 9, 3, 6, False), (1, 2, 6, 9, 3, 3, False), (5, 2, 5, 12, 3, 0, True),
                (3, 3, 5, 12, 3, 9, True), (3, 1, 4, 7, 1, 5, False)]
FLSTM_SHAPES = [(4, 3, 5, 9, 4, 6), (1, 2, 3, 7, 10, 1), (3, 2, 4, 6, 2, 5)]  # (T, B, I, H, R, P)


@pytest.mark.parametrize("shape", GLSTM_SHAPES, ids=str)
def test_glstm_reference_matches_equations(shape):
    T, B, I, H, G, P, dense = shape
    x, c0 = torch.randn(T, B, I, dtype=F64), torch.randn(B, H, dtype=F64)
    h0 = torch.randn(B, P or H, dtype=F64)
    w_ih, w_hh, b, w_hr = _glstm_weights(I, H, G, P, dense)
    out, cell = reference.glstm_reference(x, h0, c0, w_ih, w_hh, b, w_hr)
    want_out, want_h, want_c = glstm_equations(x, h0, c0, w_ih, w_hh, b, w_hr)
    torch.testing.assert_close(out, want_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cell[-1], want_c, rtol=1e-12, atol=1e-12)
    assert out.shape == (T, B, P or H) and cell.shape == (T, B, H)


@pytest.mark.parametrize("shape", FLSTM_SHAPES, ids=str)
def test_flstm_reference_matches_equations(shape):
    T, B, I, H, R, P = shape
    x, h0, c0 = torch.randn(T, B, I, dtype=F64), torch.randn(B, P, dtype=F64), torch.randn(B, H, dtype=F64)
    w1, w2, b = torch.randn(R, I + P, dtype=F64), torch.randn(4 * H, R, dtype=F64), torch.randn(4 * H, dtype=F64)
    w_hr = torch.randn(P, H, dtype=F64)
    out, cell = reference.flstm_reference(x, h0, c0, w1, w2, b, w_hr)
    want_out, _, want_c = flstm_equations(x, h0, c0, w1, w2, b, w_hr)
    torch.testing.assert_close(out, want_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cell[-1], want_c, rtol=1e-12, atol=1e-12)


def _bptt_vs_autograd(fwd, bwd, inputs, with_grad_cell):
    inputs = [None if t is None else t.detach().requires_grad_() for t in inputs]
    out, cell = fwd(*inputs)
    grad_out, grad_cell = torch.randn_like(out), torch.randn_like(cell) if with_grad_cell else None
    loss = (out * grad_out).sum() + ((cell * grad_cell).sum() if with_grad_cell else 0)
    wanted = [t for t in inputs if t is not None]
    auto = torch.autograd.grad(loss, wanted)
    x, h0, c0, w_a, w_b, b, w_hr = [None if t is None else t.detach() for t in inputs]
    explicit = bwd(grad_out, grad_cell, x, h0, c0, w_a, w_b, b, out.detach(), cell.detach(), w_hr)
    explicit = [g for g, t in zip(explicit[:6] + explicit[6:], [x, h0, c0, w_a, w_b, b, w_hr]) if t is not None]
    assert len(explicit) == len(auto)
    for got, want in zip(explicit, auto):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("with_grad_cell", [False, True])
@pytest.mark.parametrize("shape", GLSTM_SHAPES, ids=str)
def test_glstm_reference_bptt_matches_autograd(shape, with_grad_cell):
    T, B, I, H, G, P, dense = shape
    w_ih, w_hh, b, w_hr = _glstm_weights(I, H, G, P, dense)
    inputs = [torch.randn(T, B, I, dtype=F64), torch.randn(B, P or H, dtype=F64), torch.randn(B, H, dtype=F64),
              w_ih, w_hh, b, w_hr]
    _bptt_vs_autograd(reference.glstm_reference, reference.glstm_reference_backward, inputs, with_grad_cell)


@pytest.mark.parametrize("with_grad_cell", [False, True])
@pytest.mark.parametrize("shape", FLSTM_SHAPES, ids=str)
def test_flstm_reference_bptt_matches_autograd(shape, with_grad_cell):
    T, B, I, H, R, P = shape
    inputs = [torch.randn(T, B, I, dtype=F64), torch.randn(B, P, dtype=F64), torch.randn(B, H, dtype=F64),
              torch.randn(R, I + P, dtype=F64), torch.randn(4 * H, R, dtype=F64), None, torch.randn(P, H, dtype=F64)]
    _bptt_vs_autograd(reference.flstm_reference, reference.flstm_reference_backward, inputs, with_grad_cell)


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
@pytest.mark.parametrize("cls", [lstmkern.GLSTM, lstmkern.FLSTM])
@pytest.mark.parametrize("bidirectional,batch_first,bias", [(False, False, True), (True, True, False)])
def test_from_projected_nn_lstm_is_exact(cls, bidirectional, batch_first, bias, backend):
    """Every backend that runs on CPU tensors here (Triton interpreted) reproduces nn.LSTM(proj_size) in float64,
    forward and gradients (the CUDA kernels' projected mode is held to the reference in tests/test_emu_projection.py)."""
    dense = nn.LSTM(5, 8, 2, bias=bias, batch_first=batch_first, bidirectional=bidirectional, proj_size=3,
                    dtype=F64)
    model = cls.from_lstm(dense, backend=backend)
    assert model.proj_size == 3
    x = torch.randn((2, 4, 5) if batch_first else (4, 2, 5), dtype=F64)
    D = 2 if bidirectional else 1
    hx = (torch.randn(2 * D, 2, 3, dtype=F64), torch.randn(2 * D, 2, 8, dtype=F64))
    out, (h_n, c_n) = model(x, hx)
    want, (want_h, want_c) = dense(x, hx)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_n, want_h, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c_n, want_c, rtol=1e-12, atol=1e-12)
    got = torch.autograd.grad(out.square().sum() + c_n.sum(), [model.weight_hr_l1, model.layer_parameters(0, 0)[1]])
    ref = torch.autograd.grad(want.square().sum() + want_c.sum(), [dense.weight_hr_l1, dense.weight_hh_l0])
    torch.testing.assert_close(got[0], ref[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got[1].reshape(ref[1].shape) if cls is lstmkern.GLSTM else got[1][:, 5:], ref[1],
                               rtol=1e-10, atol=1e-10)


def test_projected_modules_with_packed_sequences():
    model = lstmkern.GLSTM(6, 6, 2, proj_size=3, groups=3, bidirectional=True, dtype=F64)
    x = torch.randn(5, 3, 6, dtype=F64)
    lengths = torch.tensor([5, 2, 4])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out, (h_n, c_n) = model(packed)
    padded, _ = pad_packed_sequence(out)
    assert padded.shape == (5, 3, 6) and h_n.shape == (4, 3, 3) and c_n.shape == (4, 3, 6)
    for b in range(3):  # each sequence alone gives the same result
        alone, (h_alone, _) = model(x[: lengths[b], b : b + 1])
        torch.testing.assert_close(padded[: lengths[b], b], alone[:, 0])
        torch.testing.assert_close(h_n[:, b], h_alone[:, 0])


def test_dense_input_glstm_module_mixes_groups():
    """group_input=False: every group reads the whole input (here: a change in the first feature reaches every group),
    and the layer equals the independent equations."""
    model = lstmkern.GLSTM(6, 8, 1, groups=4, group_input=False, dtype=F64)
    assert model.weight_ih_l0.shape == (4, 8, 6) and model.weight_hh_l0.shape == (4, 8, 2)
    x = torch.randn(3, 2, 6, dtype=F64)
    out, _ = model(x)
    want, _, _ = glstm_equations(x, x.new_zeros(2, 8), x.new_zeros(2, 8), model.weight_ih_l0, model.weight_hh_l0,
                                 model.bias_l0)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    bumped = x.clone()
    bumped[:, :, 0] += 1
    changed = (model(bumped)[0] - out).abs().amax(dim=(0, 1)).view(4, 2)
    assert (changed > 0).all()


def test_module_parameter_shapes_and_counts():
    g = lstmkern.GLSTM(9, 12, 2, proj_size=6, groups=3, bidirectional=True)
    assert g.weight_ih_l0.shape == (3, 16, 3) and g.weight_ih_l1.shape == (3, 16, 4) and g.weight_hh_l1.shape == (3, 16, 2) and g.weight_hr_l1.shape == (6, 12)
    f = lstmkern.FLSTM(8, 12, 2, proj_size=5, rank=4)
    assert f.weight_1_l0.shape == (4, 13) and f.weight_1_l1.shape == (4, 10) and f.weight_hr_l1.shape == (5, 12)
    assert sum(p.numel() for p in f.parameters()) == 2 * (4 * 48 + 48 + 5 * 12) + 4 * 13 + 4 * 10
    assert lstmkern.FLSTM(8, 12, 2, proj_size=5).ranks == [13, 10]


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(proj_size=4, groups=3), ValueError, "groups=3 must divide proj_size=4"),
    (dict(groups=4, group_input=True), ValueError, "or use group_input=False"),
    (dict(groups=3, group_input=1), TypeError, "group_input must be a bool"),
])
def test_glstm_projection_and_input_form_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        lstmkern.GLSTM(6, 12, **kwargs)


def test_functional_projection_validation():
    x = torch.randn(3, 2, 6, dtype=F64)
    w_ih, w_hh, _, _ = _glstm_weights(6, 9, 3, 6, False)
    with pytest.raises(ValueError, match=r"weight_hr must have shape \(P, H\) with H = 9"):
        lstmkern.glstm_forward(x, None, w_ih, w_hh, weight_hr=torch.randn(9, 9, dtype=F64))
    with pytest.raises(ValueError, match="must be divisible by G = 3"):
        lstmkern.glstm_forward(x, None, w_ih, w_hh, weight_hr=torch.randn(4, 9, dtype=F64))
    with pytest.raises(ValueError, match=r"weight_hh must have shape \(3, 12, 2\)"):
        lstmkern.glstm_forward(x, None, w_ih, torch.randn(3, 12, 3, dtype=F64), weight_hr=torch.randn(6, 9, dtype=F64))
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 6\) \(B, P\)"):
        lstmkern.glstm_forward(x, (torch.zeros(2, 9, dtype=F64), torch.zeros(2, 9, dtype=F64)), w_ih, w_hh,
                               weight_hr=torch.randn(6, 9, dtype=F64))
    with pytest.raises(ValueError, match=r"weight_1 must have shape \(4, 8\) \(R, I \+ P\)"):
        lstmkern.flstm_forward(x, None, torch.randn(4, 15, dtype=F64), torch.randn(36, 4, dtype=F64),
                               weight_hr=torch.randn(2, 9, dtype=F64))


@pytest.mark.parametrize("backend", ["cuda"])  # Triton projections: tests/test_triton_projection.py
def test_backends_without_projection_say_so(backend):
    x = torch.randn(3, 2, 6)
    w_ih, w_hh, b, w_hr = (t.float() for t in _glstm_weights(6, 9, 3, 6, False))
    with pytest.raises(ValueError, match=f"backend={backend!r} cannot run glstm here"):
        lstmkern.glstm_forward(x, None, w_ih, w_hh, b, weight_hr=w_hr, backend=backend)
    out, _ = lstmkern.glstm_forward(x, None, w_ih, w_hh, b, weight_hr=w_hr)  # "auto" finds a backend that can
    assert out.shape == (3, 2, 6)


def test_projection_gradcheck_through_the_ops():
    x = torch.randn(2, 2, 3, dtype=F64, requires_grad=True)
    w1 = torch.randn(3, 3 + 2, dtype=F64, requires_grad=True)
    w2 = torch.randn(16, 3, dtype=F64, requires_grad=True)
    w_hr = torch.randn(2, 4, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: lstmkern.flstm_forward(a[0], None, *a[1:3], weight_hr=a[3])[0],
                                    (x, w1, w2, w_hr))


def test_projected_module_under_compile_matches_eager():
    torch._dynamo.reset()
    model = lstmkern.FLSTM(4, 6, 2, proj_size=3, rank=4, dtype=F64)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    for T, B in ((3, 2), (4, 3)):
        x = torch.randn(T, B, 4, dtype=F64)
        got, (h, c) = compiled(x)
        want, (wh, wc) = model(x)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(c, wc)
        g = torch.autograd.grad(got.sum(), [model.weight_hr_l0])
        w = torch.autograd.grad(want.sum(), [model.weight_hr_l0])
        torch.testing.assert_close(g[0], w[0])


@pytest.mark.parametrize("model", [lambda: nn.LSTM(4, 6, proj_size=2, dtype=F64),
                                   lambda: lstmkern.FLSTM(4, 6, proj_size=2, backend="reference", dtype=F64),
                                   lambda: lstmkern.GLSTM(4, 6, groups=2, group_input=False, backend="reference",
                                                          dtype=F64)],
                         ids=["lstm-proj", "flstm-proj", "glstm-dense-input"])
def test_compression_tools_take_projected_and_dense_input_models(model):
    """The compression tools accept both forms (their exactness is tested in tests/test_compress_*.py); low_rank still
    refuses a G-LSTM with more than one group."""
    from lstmkern.compress import iss, low_rank
    module = model()
    x = torch.randn(3, 2, 4, dtype=F64)
    if isinstance(module, lstmkern.GLSTM):
        with pytest.raises(ValueError, match="groups=1"):
            low_rank(module, 2)
    else:
        torch.testing.assert_close(low_rank(module, "full", backend="reference")(x)[0], module(x)[0], rtol=0,
                                   atol=1e-12)
    assert torch.isfinite(iss.penalty(module, []))
    small, _, _ = iss.shrink(module, [])  # nothing is all-zero: the same model, one StackedLSTM layer
    torch.testing.assert_close(small(x)[0], module(x)[0], rtol=0, atol=1e-12)
