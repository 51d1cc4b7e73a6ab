"""The Triton backend against the float64 reference: every kernel, both forward paths, BPTT, awkward sizes.

Without a GPU the kernels run under Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1), so the shapes
are tiny; the interpreted block sizes are 16, so H = 17 / Hg = 17 / R = 17 exercise more than one tile and the masks.
Every buffer the launchers allocate is NaN-filled first (POISON_ALLOCATIONS), so an element no kernel writes fails.
Shape legend: T, B, I, H, G (groups), R (rank), Hg = H / G, Ig = I / G.
"""
import pytest
import torch

import lstmkern
from lstmkern import reference as ref
from lstmkern.backends import triton as triton_backend
from lstmkern.backends import LayerSizes
from lstmkern.triton_kernels import (_common, flstm_backward, flstm_forward, flstm_input_projection,
                                     flstm_sequence_fits, glstm_backward, glstm_forward, glstm_input_projection,
                                     glstm_sequence_fits, grouped_gemm)

import kernel_checks
from helpers import rel_err

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
F32, F64 = torch.float32, torch.float64
FWD_TOL, GRAD_TOL, F64_TOL = 1e-4, 1e-3, 1e-10
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# (T, B, I, H, G): T=1/B=1, G=3 with Hg=6 and Ig=5, Hg=17 (two tiles of 16), G=2 with odd Ig.
GLSTM_SHAPES = [(1, 1, 3, 3, 1), (3, 2, 15, 18, 3), (4, 3, 4, 17, 1), (2, 1, 6, 10, 2)]
# (T, B, I, H, R): R=1, odd R, R=17 and H=17 (two rank chunks and two unit tiles).
FLSTM_SHAPES = [(1, 1, 3, 5, 1), (3, 2, 6, 9, 7), (4, 3, 5, 17, 17), (2, 1, 4, 6, 3)]
BIAS_STATE = [(True, "random"), (False, "zero"), (True, "zero"), (False, "random")]


@pytest.fixture(autouse=True)
def poison_allocations(monkeypatch):
    monkeypatch.setattr(_common, "POISON_ALLOCATIONS", True)


def _f64(t):
    return None if t is None else t.detach().to("cpu", F64)


def _state(B, H, state, dtype):
    if state == "zero":
        return torch.zeros(B, H, dtype=dtype, device=DEVICE), torch.zeros(B, H, dtype=dtype, device=DEVICE)
    return torch.randn(B, H, dtype=dtype, device=DEVICE), torch.randn(B, H, dtype=dtype, device=DEVICE)


def _glstm_inputs(T, B, I, H, G, bias, state, dtype=F32):
    """x, h0, c0, weight_ih, weight_hh, bias in ``dtype`` with weights scaled so gates are not saturated."""
    x = torch.randn(T, B, I, dtype=dtype, device=DEVICE)
    h0, c0 = _state(B, H, state, dtype)
    w_ih = torch.randn(G, 4 * H // G, I // G, dtype=dtype, device=DEVICE) * 0.5
    w_hh = torch.randn(G, 4 * H // G, H // G, dtype=dtype, device=DEVICE) * 0.5
    b = torch.randn(G, 4 * H // G, dtype=dtype, device=DEVICE) if bias else None
    return x, h0, c0, w_ih, w_hh, b


def _flstm_inputs(T, B, I, H, R, bias, state, dtype=F32):
    x = torch.randn(T, B, I, dtype=dtype, device=DEVICE)
    h0, c0 = _state(B, H, state, dtype)
    w1 = torch.randn(R, I + H, dtype=dtype, device=DEVICE) * 0.5
    w2 = torch.randn(4 * H, R, dtype=dtype, device=DEVICE) * 0.5
    b = torch.randn(4 * H, dtype=dtype, device=DEVICE) if bias else None
    return x, h0, c0, w1, w2, b


def _assert_close(actual, expected, tol, what):
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = rel_err(actual, expected)
    assert err < tol, f"{what}: relative error {err:.3g} >= {tol:g}"  # NaN (an unwritten element) fails too


# ----------------------------------------------------------------------------------------------------------------------
# Time-parallel GEMM and input projections
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("accumulate", [False, True])
def test_grouped_gemm_strided_bias_rowsum_accumulate(accumulate):
    G, M, N, K = 3, 19, 21, 37  # nothing a multiple of 16; M, N > 16 and K > 32 span several tiles
    a = torch.randn(M, G, K, device=DEVICE)  # group g's A is a[:, g, :]
    b = torch.randn(G, N, K, device=DEVICE)  # group g's B is b[g]^T
    bias = torch.randn(G, N, device=DEVICE)
    c = torch.randn(M, G * N, dtype=F64, device=DEVICE)  # C in a wider dtype, group g in columns g*N..(g+1)*N
    c_before = c.clone()
    rowsum = torch.full((G, M), float("nan"), device=DEVICE)
    grouped_gemm(a, b, c, groups=G, M=M, N=N, K=K, a_strides=(K, G * K, 1), b_strides=(N * K, 1, K),
                 c_strides=(N, G * N, 1), bias=bias, bias_group_stride=N, rowsum=rowsum, rowsum_group_stride=M,
                 accumulate=accumulate)
    expected = torch.einsum("mgk,gnk->mgn", _f64(a), _f64(b)) + _f64(bias)
    if accumulate:
        expected = expected + _f64(c_before).view(M, G, N)
    _assert_close(c.view(M, G, N), expected, 1e-5, "C")
    _assert_close(rowsum, _f64(a).sum(-1).t(), 1e-5, "rowsum")


@pytest.mark.parametrize("shape", GLSTM_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_glstm_input_projection(shape, bias):
    T, B, I, H, G = shape
    x, _, _, w_ih, _, b = _glstm_inputs(T, B, I, H, G, bias, "zero")
    proj = glstm_input_projection(x, w_ih, b)
    assert proj.dtype == F32
    expected = ref._glstm_input_projection(_f64(x), _f64(w_ih), _f64(b)).reshape(T, B, -1)
    _assert_close(proj, expected, FWD_TOL, "P")


@pytest.mark.parametrize("shape", FLSTM_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("fused", [True, False])
def test_flstm_input_projection(shape, bias, fused):
    T, B, I, H, R = shape
    x, _, _, w1, w2, b = _flstm_inputs(T, B, I, H, R, bias, "zero")
    proj = flstm_input_projection(x, w1, w2, b, fused=fused)
    assert proj.dtype == F32
    _assert_close(proj, ref._flstm_input_projection(_f64(x), _f64(w1), _f64(w2), _f64(b)), FWD_TOL, "P")


# ----------------------------------------------------------------------------------------------------------------------
# Forward: per-step and sequence-fused paths
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", GLSTM_SHAPES)
@pytest.mark.parametrize("path", ["step", "sequence"])
@pytest.mark.parametrize("bias,state", BIAS_STATE)
def test_glstm_forward(shape, path, bias, state):
    inputs = _glstm_inputs(*shape, bias, state)
    output, cell = glstm_forward(*inputs, path=path)
    assert output.dtype == F32 and cell.dtype == F32
    ref_output, ref_cell = ref.glstm_reference(*map(_f64, inputs))
    _assert_close(output, ref_output, FWD_TOL, "output")
    _assert_close(cell, ref_cell, FWD_TOL, "cell")


@pytest.mark.parametrize("shape", FLSTM_SHAPES)
@pytest.mark.parametrize("path", ["step", "sequence"])
@pytest.mark.parametrize("bias,state", BIAS_STATE)
def test_flstm_forward(shape, path, bias, state):
    inputs = _flstm_inputs(*shape, bias, state)
    output, cell = flstm_forward(*inputs, path=path)
    assert output.dtype == F32 and cell.dtype == F32
    ref_output, ref_cell = ref.flstm_reference(*map(_f64, inputs))
    _assert_close(output, ref_output, FWD_TOL, "output")
    _assert_close(cell, ref_cell, FWD_TOL, "cell")


def test_sequence_path_selection():
    assert glstm_sequence_fits(64, F32) and glstm_sequence_fits(33, F32) and not glstm_sequence_fits(65, F32)
    assert glstm_sequence_fits(128, torch.bfloat16) and not glstm_sequence_fits(129, torch.float16)
    assert flstm_sequence_fits(64, 64) and flstm_sequence_fits(17, 3)
    assert not flstm_sequence_fits(65, 4) and not flstm_sequence_fits(32, 200)


def test_bad_path_is_rejected():
    inputs = _glstm_inputs(1, 1, 2, 2, 1, True, "zero")
    with pytest.raises(ValueError, match="path"):
        glstm_forward(*inputs, path="fused")
    inputs = _flstm_inputs(1, 1, 2, 2, 1, True, "zero")
    with pytest.raises(ValueError, match="path"):
        flstm_forward(*inputs, path="persistent")


# ----------------------------------------------------------------------------------------------------------------------
# Backward (BPTT)
# ----------------------------------------------------------------------------------------------------------------------
GRAD_NAMES = ("dx", "dh0", "dc0", "dweight_a", "dweight_b", "dbias")


def _check_backward(kernel_fwd, kernel_bwd, ref_fwd, ref_bwd, inputs, with_grad_cell, tol):
    x, h0, c0, w_a, w_b, b = inputs
    output, cell = kernel_fwd(*inputs)
    grad_output = torch.randn_like(output)
    grad_cell = torch.randn_like(cell) if with_grad_cell else None
    grads = kernel_bwd(grad_output, grad_cell, *inputs, output, cell)
    inputs64 = tuple(map(_f64, inputs))
    ref_output, ref_cell = ref_fwd(*inputs64)
    expected = ref_bwd(_f64(grad_output), _f64(grad_cell), *inputs64, ref_output, ref_cell)
    bias_shape = (w_a.shape[0], w_a.shape[1]) if w_a.dim() == 3 else (w_b.shape[0],)
    for name, grad, exp, like in zip(GRAD_NAMES, grads, expected, (x, h0, c0, w_a, w_b, None)):
        assert grad.dtype == x.dtype, f"{name} dtype {grad.dtype}"
        assert grad.shape == (like.shape if like is not None else bias_shape), f"{name} shape {tuple(grad.shape)}"
        _assert_close(grad, exp, tol, name)


@pytest.mark.parametrize("shape", GLSTM_SHAPES)
@pytest.mark.parametrize("bias,state", BIAS_STATE)
@pytest.mark.parametrize("with_grad_cell", [False, True])
def test_glstm_backward(shape, bias, state, with_grad_cell):
    _check_backward(glstm_forward, glstm_backward, ref.glstm_reference, ref.glstm_reference_backward,
                    _glstm_inputs(*shape, bias, state), with_grad_cell, GRAD_TOL)


@pytest.mark.parametrize("shape", FLSTM_SHAPES)
@pytest.mark.parametrize("bias,state", BIAS_STATE)
@pytest.mark.parametrize("with_grad_cell", [False, True])
def test_flstm_backward(shape, bias, state, with_grad_cell):
    _check_backward(flstm_forward, flstm_backward, ref.flstm_reference, ref.flstm_reference_backward,
                    _flstm_inputs(*shape, bias, state), with_grad_cell, GRAD_TOL)


# ----------------------------------------------------------------------------------------------------------------------
# float64: same kernels at a tight tolerance
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["step", "sequence"])
def test_glstm_float64(path):
    inputs = _glstm_inputs(3, 2, 6, 51, 3, True, "random", dtype=F64)  # Hg = 17
    output, cell = glstm_forward(*inputs, path=path)
    assert output.dtype == F64 and cell.dtype == F64
    ref_output, ref_cell = ref.glstm_reference(*map(_f64, inputs))
    _assert_close(output, ref_output, F64_TOL, "output")
    _assert_close(cell, ref_cell, F64_TOL, "cell")
    _check_backward(lambda *a: glstm_forward(*a, path=path), glstm_backward, ref.glstm_reference,
                    ref.glstm_reference_backward, inputs, True, F64_TOL)


@pytest.mark.parametrize("path", ["step", "sequence"])
def test_flstm_float64(path):
    inputs = _flstm_inputs(3, 2, 5, 17, 17, True, "random", dtype=F64)
    assert flstm_input_projection(inputs[0], *inputs[3:], fused=False).dtype == F64
    output, cell = flstm_forward(*inputs, path=path)
    assert output.dtype == F64 and cell.dtype == F64
    ref_output, ref_cell = ref.flstm_reference(*map(_f64, inputs))
    _assert_close(output, ref_output, F64_TOL, "output")
    _assert_close(cell, ref_cell, F64_TOL, "cell")
    _check_backward(lambda *a: flstm_forward(*a, path=path), flstm_backward, ref.flstm_reference,
                    ref.flstm_reference_backward, inputs, True, F64_TOL)


# ----------------------------------------------------------------------------------------------------------------------
# Half precision: the kernels may be at most a few times less accurate than the reference run in the same dtype
# ----------------------------------------------------------------------------------------------------------------------
def _half_errors(op, inputs, path):
    """(kernel error, reference-in-dtype error) of output, cell and all gradients, each against float64."""
    kernel_fwd, kernel_bwd, ref_fwd, ref_bwd = (
        (glstm_forward, glstm_backward, ref.glstm_reference, ref.glstm_reference_backward) if op == "glstm" else
        (flstm_forward, flstm_backward, ref.flstm_reference, ref.flstm_reference_backward))
    output, cell = kernel_fwd(*inputs, path=path)
    grad_output = torch.randn_like(output)
    grads = kernel_bwd(grad_output, None, *inputs, output, cell)
    low_output, low_cell = ref_fwd(*inputs)
    low_grads = ref_bwd(grad_output, None, *inputs, low_output, low_cell)
    inputs64 = tuple(map(_f64, inputs))
    exact_output, exact_cell = ref_fwd(*inputs64)
    exact_grads = ref_bwd(_f64(grad_output), None, *inputs64, exact_output, exact_cell)
    names = ("output", "cell") + GRAD_NAMES
    kernel = (output, cell) + tuple(grads)
    low = (low_output, low_cell) + tuple(low_grads)
    exact = (exact_output, exact_cell) + tuple(exact_grads)
    return {n: (rel_err(k, e), rel_err(lo, e)) for n, k, lo, e in zip(names, kernel, low, exact)}


def _assert_half_accuracy(errors, dtype, factor=4.0):
    # Floor at the dtype's epsilon so that a reference error that happens to be tiny does not make the test flaky.
    eps = torch.finfo(dtype).eps
    for name, (kernel_err, ref_err) in errors.items():
        assert kernel_err <= factor * max(ref_err, eps), \
            f"{name}: kernel error {kernel_err:.3g} vs reference-in-{dtype} error {ref_err:.3g}"


@pytest.mark.parametrize("op", ["glstm", "flstm"])
@pytest.mark.parametrize("path", ["step", "sequence"])
def test_float16_interpreted_or_gpu(op, path):
    inputs = (_glstm_inputs(3, 2, 6, 18, 3, True, "random", dtype=torch.float16) if op == "glstm" else
              _flstm_inputs(3, 2, 5, 17, 7, True, "random", dtype=torch.float16))
    _assert_half_accuracy(_half_errors(op, inputs, path), torch.float16)


# (T, B, I, H, R): T = 1 and B = 1 with R = 1; H = R = 17 (two unit tiles, two rank chunks); R = 20 (a partial chunk).
@pytest.mark.parametrize("shape", [(1, 1, 3, 5, 1), (3, 2, 5, 17, 17), (4, 3, 6, 9, 20)], ids=str)
def test_flstm_float16_step_path_by_the_tolerance_rule(shape):
    # The backward's recurrent products take dgates_t and dz_t rounded to fp16 (tensor-core operands): forward and
    # BPTT, with bias and a cell gradient and with neither, by the GPU tests' rule (tests/kernel_checks.py).
    inputs = kernel_checks.flstm_inputs(*shape, torch.float16, DEVICE)
    kernel_checks.check_both_variants("flstm", inputs, torch.float16, fwd=lambda *a: flstm_forward(*a, path="step"),
                                      bwd=flstm_backward)


# (T, B, G, Hg, Ig): T = 1 and B = 1; G = 3; Hg = 17 (two unit tiles, a partial reduction chunk over 4Hg = 68); T = 6
# with G = 2 (five steps' 16-bit dgates compound through the recurrence).
@pytest.mark.parametrize("shape", [(1, 1, 1, 3, 2), (3, 2, 3, 6, 5), (4, 3, 1, 17, 4), (6, 2, 2, 17, 3)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float16, pytest.param(torch.bfloat16, marks=needs_cuda)], ids=str)
def test_glstm_half_backward_by_the_tolerance_rule(shape, dtype):
    # The backward step's recurrent product takes dgates rounded to the layer's dtype (tensor-core operands, float32
    # accumulation), the same dgates the weight-gradient GEMMs take: forward and BPTT, with bias and a cell gradient
    # and with neither, by the GPU tests' rule (tests/kernel_checks.py). bfloat16 needs a GPU: the interpreter does
    # not compute bfloat16 products correctly.
    inputs = kernel_checks.glstm_inputs(*shape, dtype, DEVICE)
    kernel_checks.check_both_variants("glstm", inputs, dtype, fwd=glstm_forward, bwd=glstm_backward)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("op,path,sizes", [
    ("glstm", "step", (32, 48, 512, 768, 4)),        # Hg = 192: several unit and reduction tiles
    ("glstm", "sequence", (32, 48, 256, 384, 8)),    # Hg = 48
    ("flstm", "step", (32, 48, 256, 300, 130)),      # several rank chunks; unfused projection (R_pad = 256)
    ("flstm", "sequence", (32, 48, 64, 50, 40)),
])
def test_half_gpu_sizes(dtype, op, path, sizes):
    make = _glstm_inputs if op == "glstm" else _flstm_inputs
    inputs = make(*sizes, True, "random", dtype=dtype)
    # Keep gates in range at these widths: scale weights by 1/sqrt(fan-in).
    x, h0, c0, w_a, w_b, b = inputs
    inputs = (x, h0, c0, w_a / w_a.shape[-1] ** 0.5, w_b / w_b.shape[-1] ** 0.5, b)
    _assert_half_accuracy(_half_errors(op, inputs, path), dtype)


@needs_cuda
def test_step_path_is_cuda_graph_capturable():
    inputs = _glstm_inputs(6, 8, 64, 512, 2, True, "random")  # Hg = 256: per-step kernel
    expected, _ = glstm_forward(*inputs, path="step")  # also runs the autotuner before capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured, _ = glstm_forward(*inputs, path="step")
    graph.replay()
    torch.cuda.synchronize()
    _assert_close(captured, expected, 1e-6, "graph replay output")


@needs_cuda
def test_flstm_step_loops_are_cuda_graph_capturable():
    inputs = _flstm_inputs(6, 8, 64, 256, 96, True, "random")  # H, R past the sequence-fused kernel: step path
    expected, cell = flstm_forward(*inputs, path="step")  # also runs the autotuners before capture
    grad_output = torch.randn_like(expected)
    expected_grads = flstm_backward(grad_output, None, *inputs, expected, cell)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured, captured_cell = flstm_forward(*inputs, path="step")
        captured_grads = flstm_backward(grad_output, None, *inputs, captured, captured_cell)
    graph.replay()
    torch.cuda.synchronize()
    _assert_close(captured, expected, 1e-6, "graph replay output")
    for name, grad, expected_grad in zip(GRAD_NAMES, captured_grads, expected_grads):
        _assert_close(grad, expected_grad, 1e-6, f"graph replay {name}")


@needs_cuda
@pytest.mark.parametrize("dtype", [F32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("projected", [False, True])
def test_glstm_backward_is_cuda_graph_capturable(dtype, projected):
    # Hg = 256: the step forward; with a projection P = 256 (Pg = 128): pointwise and product launches per step.
    inputs = (kernel_checks.projected_inputs(6, 8, 64, 512, 256, 2, dtype, DEVICE) if projected else
              kernel_checks.glstm_inputs(6, 8, 2, 256, 32, dtype, DEVICE) + [None])
    x, h0, c0, w_ih, w_hh, bias, w_hr = inputs
    output, cell = glstm_forward(*inputs)
    grad_output = torch.randn_like(output)
    args = (grad_output, None, x, h0, c0, w_ih, w_hh, bias, output, cell, w_hr)
    expected = glstm_backward(*args)  # also runs the autotuners before capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = glstm_backward(*args)
    graph.replay()
    torch.cuda.synchronize()
    assert len(captured) == len(expected) == (7 if projected else 6)
    for name, grad, expected_grad in zip(GRAD_NAMES + ("dweight_hr",), captured, expected):
        _assert_close(grad, expected_grad, 1e-6, f"graph replay {name}")


# ----------------------------------------------------------------------------------------------------------------------
# Backend module and the public API on top of it
# ----------------------------------------------------------------------------------------------------------------------
def test_unsupported():
    sizes = LayerSizes(2, 2, 4, 4, 1, 0)
    assert triton_backend.unsupported("glstm", DEVICE, F32, sizes) is None
    assert triton_backend.unsupported("flstm", DEVICE, torch.float16, sizes) is None
    assert "int32" in triton_backend.unsupported("glstm", DEVICE, torch.int32, sizes)
    assert "op" in triton_backend.unsupported("gru", DEVICE, F32, sizes)
    if DEVICE.type == "cpu":  # conftest runs CPU tests interpreted
        assert "bfloat16" in triton_backend.unsupported("glstm", DEVICE, torch.bfloat16, sizes)
        assert triton_backend.unsupported("glstm", torch.device("meta"), F32, sizes) is not None


@pytest.mark.parametrize("op", ["glstm", "flstm"])
def test_public_api_autograd_through_triton_backend(op):
    if op == "glstm":
        x, h0, c0, w_a, w_b, b = _glstm_inputs(3, 2, 6, 9, 3, True, "random")
        forward = lstmkern.glstm_forward
    else:
        x, h0, c0, w_a, w_b, b = _flstm_inputs(3, 2, 5, 7, 3, True, "random")
        forward = lstmkern.flstm_forward
    x = x.transpose(0, 1).contiguous()  # batch-first (B, T, I)
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, h0, c0, w_a, w_b, b)]
    leaves64 = [t.detach().to(F64).requires_grad_(True) for t in (x, h0, c0, w_a, w_b, b)]
    results = []
    for (lx, lh, lc, la, lb, lbias), backend in ((leaves, "triton"), (leaves64, "reference")):
        out, (h_n, c_n) = forward(lx, (lh, lc), la, lb, lbias, batch_first=True, backend=backend)
        weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view_as(out)
        ((out * weight).sum() + h_n.sum() + 2 * c_n.sum()).backward()
        results.append((out, h_n, c_n))
    for actual, expected in zip(results[0], results[1]):
        _assert_close(actual, expected, FWD_TOL, "forward")
    for name, leaf, leaf64 in zip(("x", "h0", "c0", "weight_a", "weight_b", "bias"), leaves, leaves64):
        _assert_close(leaf.grad, leaf64.grad, GRAD_TOL, f"grad {name}")
