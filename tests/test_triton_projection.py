"""The Triton backend's projections (LSTMP, ``weight_hr`` (P, H)) and dense-input G-LSTM (``weight_ih`` (G, 4Hg, I))
against the float64 reference: forward and BPTT in float32, float64 and float16, the launchers, the backend module,
the public functions and the modules with autograd.

Without a GPU the kernels run under Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1), so the shapes
are tiny; the interpreted block sizes are 16, so H = 17 spans two unit tiles. Every buffer the launchers allocate is
NaN-filled first (POISON_ALLOCATIONS), so an element no kernel writes fails.
Shape legend: T, B, I, H, G (groups), R (rank), P (projection size; 0: none), Hg = H / G, Pg = P / G.
"""
import pytest
import torch

import lstmkern
from lstmkern import reference as ref
from lstmkern.backends import LayerSizes, resolve_backend
from lstmkern.backends import triton as triton_backend
from lstmkern.triton_kernels import _common, flstm_forward, glstm_forward

from helpers import rel_err
from kernel_checks import assert_close_like_reference

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
F16, F32, F64 = torch.float16, torch.float32, torch.float64
F64_TOL = 1e-10  # float64 kernels against the float64 reference: summation order only

# (T, B, I, H, G, P, dense input): G = 3 with Pg = 2 and odd H; T = 1 with P = 1 and H = 17 (two unit tiles); dense
# input with a projection; dense input without one (the sequence-fused forward); G = 1, B = 1, odd P.
GLSTM_CASES = [(3, 2, 6, 9, 3, 6, False), (1, 2, 5, 17, 1, 1, False), (3, 3, 5, 12, 3, 9, True),
               (4, 2, 5, 12, 3, 0, True), (2, 1, 4, 7, 1, 5, False)]
# (T, B, I, H, R, P): odd sizes; T = 1 with P = 1 and R > H; H = R = 17 (two unit tiles and two rank chunks).
FLSTM_CASES = [(4, 3, 5, 9, 4, 6), (1, 2, 3, 7, 10, 1), (3, 2, 4, 17, 17, 5)]
GRAD_NAMES = ("dx", "dh0", "dc0", "dweight_a", "dweight_b", "dbias", "dweight_hr")


@pytest.fixture(autouse=True)
def poison_allocations(monkeypatch):
    monkeypatch.setattr(_common, "POISON_ALLOCATIONS", True)


def _randn(*shape, scale=1.0):
    return torch.randn(*shape, dtype=F64, device=DEVICE) * scale


def _glstm_inputs(T, B, I, H, G, P, dense, dtype):
    """(x, h0, c0, weight_ih, weight_hh, bias, weight_hr) in ``dtype``, weights scaled by 1/sqrt(fan-in)."""
    Hg, Pg, Ig = H // G, (P or H) // G, I if dense else I // G
    tensors = (_randn(T, B, I), _randn(B, P or H, scale=0.5), _randn(B, H, scale=0.5),
               _randn(G, 4 * Hg, Ig, scale=Ig ** -0.5), _randn(G, 4 * Hg, Pg, scale=Pg ** -0.5),
               _randn(G, 4 * Hg, scale=0.1), _randn(P, H, scale=H ** -0.5) if P else None)
    return [None if t is None else t.to(dtype) for t in tensors]


def _flstm_inputs(T, B, I, H, R, P, dtype):
    """(x, h0, c0, weight_1, weight_2, bias, weight_hr) in ``dtype``."""
    tensors = (_randn(T, B, I), _randn(B, P, scale=0.5), _randn(B, H, scale=0.5),
               _randn(R, I + P, scale=(I + P) ** -0.5), _randn(4 * H, R, scale=R ** -0.5), _randn(4 * H, scale=0.1),
               _randn(P, H, scale=H ** -0.5))
    return [t.to(dtype) for t in tensors]


def _f64(t):
    return None if t is None else t.detach().to(F64)


def _assert_matches(name, kernel, reference_low, reference_64, dtype):
    """float64: within F64_TOL of the reference; other dtypes: the shared rule of tests/kernel_checks.py (K x the
    reference-in-dtype's own error + a floor)."""
    if dtype == F64:
        assert kernel.dtype == F64 and kernel.shape == reference_64.shape, (name, kernel.dtype, kernel.shape)
        err = rel_err(kernel, reference_64)
        assert err < F64_TOL, f"{name}: relative error {err:.3g}"  # NaN (an unwritten element) fails too
    else:
        assert_close_like_reference(name, kernel, reference_low, reference_64, dtype)


def _check_layer(op, inputs, dtype, with_bias, with_grad_cell):
    """Triton forward and backward (the backend contract) against the reference in ``dtype`` and in float64."""
    fwd, bwd, ref_fwd, ref_bwd = (
        (triton_backend.glstm_fwd, triton_backend.glstm_bwd, ref.glstm_reference, ref.glstm_reference_backward)
        if op == "glstm" else
        (triton_backend.flstm_fwd, triton_backend.flstm_bwd, ref.flstm_reference, ref.flstm_reference_backward))
    x, h0, c0, w_a, w_b, bias, w_hr = inputs
    bias = bias if with_bias else None
    layer = (x, h0, c0, w_a, w_b, bias)
    layer64 = tuple(map(_f64, layer))
    projection = () if w_hr is None else (w_hr,)
    projection64 = () if w_hr is None else (_f64(w_hr),)

    output, cell = fwd(*layer, *projection)
    out_low, cell_low = ref_fwd(*layer, *projection)
    out_64, cell_64 = ref_fwd(*layer64, *projection64)
    assert output.shape == (x.shape[0], x.shape[1], h0.shape[1]) and output.dtype == dtype
    assert cell.dtype == ref.state_dtype(dtype)
    _assert_matches("output", output, out_low, out_64, dtype)
    _assert_matches("cell", cell, cell_low, cell_64, dtype)

    grad_output = _randn(*output.shape)
    grad_cell = _randn(*cell.shape) if with_grad_cell else None
    grad_cell_low = None if grad_cell is None else grad_cell.to(cell.dtype)
    grads = bwd(grad_output.to(dtype), grad_cell_low, *layer, output, cell, *projection)
    grads_low = ref_bwd(grad_output.to(dtype), grad_cell_low, *layer, out_low, cell_low, *projection)
    grads_64 = ref_bwd(grad_output, grad_cell, *layer64, out_64, cell_64, *projection64)
    assert len(grads) == len(grads_64) == (7 if w_hr is not None else 6)
    bias_shape = w_a.shape[:2] if op == "glstm" else w_b.shape[:1]
    for name, grad, grad_low, grad_64, like in zip(GRAD_NAMES, grads, grads_low, grads_64,
                                                   (x, h0, c0, w_a, w_b, None, w_hr)):
        assert grad.shape == (like.shape if like is not None else bias_shape), (name, tuple(grad.shape))
        assert grad.is_contiguous(), name
        _assert_matches(name, grad, grad_low, grad_64, dtype)


# ----------------------------------------------------------------------------------------------------------------------
# The backend contract against the reference
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [F32, F64, F16], ids=str)
@pytest.mark.parametrize("case", GLSTM_CASES, ids=str)
def test_glstm_projection_and_dense_input(case, dtype):
    inputs = _glstm_inputs(*case, dtype)
    _check_layer("glstm", inputs, dtype, with_bias=True, with_grad_cell=True)
    if dtype == F32:  # the variants without bias and without a cell-state gradient
        _check_layer("glstm", inputs, dtype, with_bias=False, with_grad_cell=False)


@pytest.mark.parametrize("dtype", [F32, F64, F16], ids=str)
@pytest.mark.parametrize("case", FLSTM_CASES, ids=str)
def test_flstm_projection(case, dtype):
    inputs = _flstm_inputs(*case, dtype)
    _check_layer("flstm", inputs, dtype, with_bias=True, with_grad_cell=True)
    if dtype == F32:
        _check_layer("flstm", inputs, dtype, with_bias=False, with_grad_cell=False)


def test_dense_input_step_and_sequence_paths_agree():
    # Dense input changes only the input projection: both recurrent paths must consume it the same way.
    x, h0, c0, w_ih, w_hh, bias, _ = _glstm_inputs(3, 2, 5, 12, 3, 0, True, F32)
    step, step_cell = glstm_forward(x, h0, c0, w_ih, w_hh, bias, path="step")
    sequence, sequence_cell = glstm_forward(x, h0, c0, w_ih, w_hh, bias, path="sequence")
    assert rel_err(step, sequence) < 1e-6 and rel_err(step_cell, sequence_cell) < 1e-6


def test_sequence_path_refuses_a_projection():
    x, h0, c0, w_ih, w_hh, bias, w_hr = _glstm_inputs(2, 1, 6, 9, 3, 6, False, F32)
    with pytest.raises(ValueError, match="path='sequence' has no projection"):
        glstm_forward(x, h0, c0, w_ih, w_hh, bias, w_hr, path="sequence")
    x, h0, c0, w1, w2, bias, w_hr = _flstm_inputs(2, 1, 3, 7, 4, 3, F32)
    with pytest.raises(ValueError, match="path='sequence' has no projection"):
        flstm_forward(x, h0, c0, w1, w2, bias, w_hr, path="sequence")


def test_backend_declares_projection_and_dense_input():
    assert triton_backend.SUPPORTS_PROJECTION and triton_backend.SUPPORTS_DENSE_INPUT
    for op, sizes in (("glstm", LayerSizes(3, 2, 6, 9, 3, 0, 6, False)),
                      ("glstm", LayerSizes(3, 2, 6, 9, 3, 0, 6, True)),
                      ("flstm", LayerSizes(3, 2, 6, 9, 1, 4, 5, False))):
        assert resolve_backend("triton", op, DEVICE, F32, sizes) == "triton"


# ----------------------------------------------------------------------------------------------------------------------
# Public API: functional and modules, with autograd
# ----------------------------------------------------------------------------------------------------------------------
def _leaves(tensors, dtype):
    return [None if t is None else t.detach().to(dtype).requires_grad_(True) for t in tensors]


@pytest.mark.parametrize("op,case", [("glstm", (3, 2, 6, 9, 3, 6, False)), ("glstm", (3, 2, 5, 12, 3, 9, True)),
                                     ("glstm", (3, 2, 5, 12, 3, 0, True)), ("flstm", (3, 2, 5, 7, 3, 4))], ids=str)
def test_functional_autograd_through_triton(op, case):
    inputs = _glstm_inputs(*case, F32) if op == "glstm" else _flstm_inputs(*case, F32)
    forward = lstmkern.glstm_forward if op == "glstm" else lstmkern.flstm_forward
    results, leaf_sets = [], []
    for dtype, backend in ((F32, "triton"), (F64, "reference")):
        x, h0, c0, w_a, w_b, bias, w_hr = leaves = _leaves(inputs, dtype)
        out, (h_n, c_n) = forward(x.transpose(0, 1), (h0, c0), w_a, w_b, bias, weight_hr=w_hr, batch_first=True,
                                  backend=backend)
        weight = torch.linspace(-1, 1, out.numel(), dtype=dtype, device=DEVICE).view_as(out)
        ((out * weight).sum() + h_n.sum() + 2 * c_n.sum()).backward()
        results.append((out, h_n, c_n))
        leaf_sets.append(leaves)
    for name, actual, expected in zip(("output", "h_n", "c_n"), *results):
        assert actual.dtype == F32 and rel_err(actual, expected) < 1e-5, name
    for name, leaf, leaf64 in zip(("x", "h0", "c0", "weight_a", "weight_b", "bias", "weight_hr"), *leaf_sets):
        if leaf is not None:
            assert leaf.grad is not None and rel_err(leaf.grad, leaf64.grad) < 1e-4, f"grad {name}"


@pytest.mark.parametrize("module", ["glstm", "flstm"])
def test_projected_module_autograd_through_triton(module):
    torch.manual_seed(0)
    make = ((lambda backend, dtype: lstmkern.GLSTM(6, 12, 2, proj_size=6, groups=3, group_input=False,
                                                   backend=backend, device=DEVICE, dtype=dtype))
            if module == "glstm" else
            (lambda backend, dtype: lstmkern.FLSTM(5, 9, 2, proj_size=4, rank=5, backend=backend, device=DEVICE,
                                                   dtype=dtype)))
    model, model64 = make("triton", F32), make("reference", F64)
    model64.load_state_dict({k: v.to(F64) for k, v in model.state_dict().items()})
    x = _randn(3, 2, model.input_size)
    outs = []
    for m, dtype in ((model, F32), (model64, F64)):
        out, (h_n, c_n) = m(x.to(dtype))
        assert out.shape == (3, 2, model.proj_size) and h_n.shape == (2, 2, model.proj_size)
        assert c_n.shape == (2, 2, model.hidden_size)
        (out.square().sum() + c_n.sum()).backward()
        outs.append(out)
    assert rel_err(outs[0], outs[1]) < 1e-5
    for (name, p), p64 in zip(model.named_parameters(), model64.parameters()):
        assert p.grad is not None and rel_err(p.grad, p64.grad) < 1e-4, f"grad {name}"


def test_empty_batch_with_projection_through_the_ops():
    x, h0, c0, w_ih, w_hh, bias, w_hr = _leaves(_glstm_inputs(3, 2, 6, 9, 3, 6, False, F32), F32)
    x0 = x.detach()[:, :0].requires_grad_(True)
    out, (h_n, c_n) = lstmkern.glstm_forward(x0, None, w_ih, w_hh, bias, weight_hr=w_hr, backend="triton")
    assert out.shape == (3, 0, 6) and h_n.shape == (0, 6) and c_n.shape == (0, 9)
    out.sum().backward()
    assert w_hr.grad is not None and not w_hr.grad.any() and x0.grad.shape == x0.shape
