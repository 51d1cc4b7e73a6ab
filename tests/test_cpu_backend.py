"""The "cpu" backend (C++ kernels in csrc/cpu_*.cpp): forward and backward against the float64 reference, float32 held
to the reference's own float32 error, bfloat16 by the shared tolerance rule (tests/kernel_checks.py) and to the
reference's bfloat16 rounding points, gradcheck, the parallel split, and the "auto" choice for CPU tensors; each with
and without a projection (LSTMP, weight_hr).

Shape legend: T steps, B batch, I inputs, H hidden units, G groups, R rank, P projection size (0: none)."""
import pytest
import torch

import lstmkern
from lstmkern import reference
from lstmkern.backends import cpu, resolve_backend

from helpers import rel_err
from kernel_checks import assert_close_like_reference

F32, F64, BF16 = torch.float32, torch.float64, torch.bfloat16
EPS32 = torch.finfo(F32).eps
# (T, B, I, H, G, dense input): T = 1, B = 1, G = 3, odd and non-power-of-two sizes, a dense-input layer.
GLSTM_SHAPES = [(1, 1, 3, 3, 1, False), (5, 2, 6, 9, 3, False), (4, 3, 12, 15, 3, False), (7, 1, 5, 7, 1, False),
                (6, 4, 7, 10, 2, True)]
# (T, B, I, H, R)
FLSTM_SHAPES = [(1, 1, 3, 5, 1), (5, 2, 6, 9, 7), (4, 3, 7, 10, 17), (6, 1, 4, 11, 3)]
# Large enough that one step is split over several tasks (with 2 threads), incl. a partial last chunk of units.
# (cpu_lstm.cpp's split_units gives G = 1, H = 360 four chunks of 96 units, the last one 72; G = 3, Hg = 192 one task
# per group; F-LSTM H = 400, R = 160 two unit chunks, and two rank chunks in the backward.)
GLSTM_PARALLEL_SHAPES = [(4, 16, 96, 360, 1, False), (3, 16, 96, 576, 3, False)]
FLSTM_PARALLEL_SHAPES = [(4, 16, 40, 400, 160)]
# With a projection, (T, B, I, H, G, dense input, P) and (T, B, I, H, R, P): T = 1 with P = 1, G = 3 with Pg = 2 and
# Pg = 1, odd H, a dense-input layer.
GLSTMP_SHAPES = [(1, 1, 3, 3, 1, False, 1), (5, 2, 6, 9, 3, False, 6), (3, 2, 6, 9, 3, False, 3),
                 (4, 3, 7, 11, 1, False, 5), (6, 4, 7, 10, 2, True, 4)]
FLSTMP_SHAPES = [(1, 1, 3, 5, 1, 1), (5, 2, 6, 9, 7, 4), (4, 3, 7, 11, 17, 10)]
# Split over several tasks with 2 threads in every region of a step, the projection's included (H = 576, P = 480:
# h_t = m_t W_hr^T and dm_t = dh_t W_hr in two chunks each; G = 3: one cell task per group).
GLSTMP_PARALLEL_SHAPES = [(3, 16, 96, 576, 1, False, 480), (3, 16, 96, 576, 3, False, 480)]
FLSTMP_PARALLEL_SHAPES = [(3, 16, 40, 576, 160, 480)]


def test_backend_is_available_here():
    # The extension is part of every install (CI builds it): the backend must not be silently missing.
    assert cpu.unsupported("glstm", torch.device("cpu"), F32, (4, 2, 8, 8, 2, 0, 0, False)) is None
    assert cpu.cell_isa() in ("avx2", "default")


def test_parallel_regions_run_on_every_thread():
    # at::parallel_for is an inline template: its `omp parallel` pragma is compiled into the extension, so a build
    # without OpenMP runs every "parallel" region on one thread without a word (the thread-count tests below would
    # still agree). This holds the build to it.
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert cpu.parallel_width() == 2
        torch.set_num_threads(1)
        assert cpu.parallel_width() == 1
    finally:
        torch.set_num_threads(previous)


def _glstm_inputs(T, B, I, H, G, dense, dtype, bias=True, gen_seed=0, P=0):
    """[x, h0, c0, weight_ih, weight_hh, bias], plus weight_hr (P, H) when P > 0 (the backend functions' order)."""
    g = torch.Generator().manual_seed(gen_seed)
    hg = H // G
    ig = I if dense else I // G
    pg = (P or H) // G

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=F64) * scale).to(dtype)
    inputs = [rnd(T, B, I), rnd(B, P or H, scale=0.5), rnd(B, H), rnd(G, 4 * hg, ig, scale=0.5),
              rnd(G, 4 * hg, pg, scale=0.5), rnd(G, 4 * hg) if bias else None]
    return inputs + ([rnd(P, H, scale=H ** -0.5)] if P else [])


def _flstm_inputs(T, B, I, H, R, dtype, bias=True, gen_seed=0, P=0):
    """[x, h0, c0, weight_1, weight_2, bias], plus weight_hr (P, H) when P > 0."""
    g = torch.Generator().manual_seed(gen_seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=F64) * scale).to(dtype)
    inputs = [rnd(T, B, I), rnd(B, P or H, scale=0.5), rnd(B, H), rnd(R, I + (P or H), scale=0.5),
              rnd(4 * H, R, scale=0.5), rnd(4 * H) if bias else None]
    return inputs + ([rnd(P, H, scale=H ** -0.5)] if P else [])


def _glstmp_inputs(T, B, I, H, G, dense, P, dtype, **kw):
    return _glstm_inputs(T, B, I, H, G, dense, dtype, P=P, **kw)


def _flstmp_inputs(T, B, I, H, R, P, dtype, **kw):
    return _flstm_inputs(T, B, I, H, R, dtype, P=P, **kw)


def _f64(tensors):
    return [None if t is None else t.to(F64) for t in tensors]


def _run(op, inputs, grad_cell_given, gen_seed=1):
    """cpu forward + backward, and the float64 reference forward + backward on the same (rounded) inputs."""
    fwd = getattr(cpu, f"{op}_fwd")
    bwd = getattr(cpu, f"{op}_bwd")
    ref_fwd = getattr(reference, f"{op}_reference")
    ref_bwd = getattr(reference, f"{op}_reference_backward")
    out, cell, gates = fwd(*inputs)
    g = torch.Generator().manual_seed(gen_seed)
    grad_out = torch.randn(out.shape, generator=g, dtype=F64).to(out.dtype)
    grad_cell = torch.randn(cell.shape, generator=g, dtype=F64).to(cell.dtype) if grad_cell_given else None
    # weight_hr, where given, comes last in both directions: after bias in the forward, after cell in the backward.
    grads = bwd(grad_out, grad_cell, *inputs[:6], out, cell, *inputs[6:], workspace=gates)
    ref = _f64(inputs)
    ref_out, ref_cell = ref_fwd(*ref)
    # The backward is checked on the kernel's own saved output/cell (its contract), so the forward's rounding does not
    # count twice.
    ref_grads = ref_bwd(grad_out.to(F64), None if grad_cell is None else grad_cell.to(F64), *ref[:6], out.to(F64),
                        cell.to(F64), *ref[6:])
    assert len(grads) == len(ref_grads) == 6 + len(inputs[6:])
    return [out, cell, *grads], [ref_out, ref_cell, *ref_grads]


def _names(op, projected=False):
    weights = ("dweight_ih", "dweight_hh") if op == "glstm" else ("dweight_1", "dweight_2")
    return ("output", "cell", "dx", "dh0", "dc0", *weights, "dbias") + (("dweight_hr",) if projected else ())


def _check_float64(op, inputs, grad_cell_given):
    got, want = _run(op, _f64(inputs), grad_cell_given)
    assert len(got) == len(_names(op, len(inputs) > 6))
    for name, a, e in zip(_names(op, len(inputs) > 6), got, want):
        assert a.dtype == F64 and a.shape == e.shape, name
        assert rel_err(a, e) < 1e-13, f"{name}: relative error {rel_err(a, e):.2e}"


def _check_float32(op, inputs, grad_cell_given):
    """float32 cpu vs float64 reference, held to 4x the float32 reference's own error on the same inputs (at least
    4 ulp of 1: a reference that happens to round luckily on tiny shapes must not demand exactness)."""
    got, want = _run(op, [None if t is None else t.to(F32) for t in inputs], grad_cell_given)
    ref32, _ = _run_reference32(op, inputs, grad_cell_given)
    assert len(got) == len(ref32) == len(_names(op, len(inputs) > 6))
    for name, a, e, r in zip(_names(op, len(inputs) > 6), got, want, ref32):
        assert a.dtype == F32 and a.shape == e.shape, name
        bound = 4 * max(rel_err(r, e), EPS32)
        assert rel_err(a, e) <= bound, f"{name}: relative error {rel_err(a, e):.2e} > {bound:.2e}"


def _run_reference32(op, inputs, grad_cell_given):
    """The reference backend itself in float32 (same inputs and upstream gradients as _run)."""
    x32 = [None if t is None else t.to(F32) for t in inputs]
    ref_fwd = getattr(reference, f"{op}_reference")
    ref_bwd = getattr(reference, f"{op}_reference_backward")
    out, cell = ref_fwd(*x32)
    g = torch.Generator().manual_seed(1)
    grad_out = torch.randn(out.shape, generator=g, dtype=F64).to(F32)
    grad_cell = torch.randn(cell.shape, generator=g, dtype=F64).to(F32) if grad_cell_given else None
    # Gradients on the float32 cpu forward's saved states, like _run, so both are judged on the same out/cell.
    cpu_out, cpu_cell, _gates = getattr(cpu, f"{op}_fwd")(*x32)
    grads = ref_bwd(grad_out, grad_cell, *x32[:6], cpu_out, cpu_cell, *x32[6:])
    return [out, cell, *grads], None


@pytest.mark.parametrize("shape", GLSTM_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("grad_cell", [True, False])
def test_glstm_float64_matches_reference(shape, bias, grad_cell):
    _check_float64("glstm", _glstm_inputs(*shape, F64, bias=bias), grad_cell)


@pytest.mark.parametrize("shape", FLSTM_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("grad_cell", [True, False])
def test_flstm_float64_matches_reference(shape, bias, grad_cell):
    _check_float64("flstm", _flstm_inputs(*shape, F64, bias=bias), grad_cell)


@pytest.mark.parametrize("shape", GLSTM_SHAPES + GLSTM_PARALLEL_SHAPES)
@pytest.mark.parametrize("grad_cell", [True, False])
def test_glstm_float32_within_reference_error(shape, grad_cell):
    _check_float32("glstm", _glstm_inputs(*shape, F64), grad_cell)


@pytest.mark.parametrize("shape", FLSTM_SHAPES + FLSTM_PARALLEL_SHAPES)
@pytest.mark.parametrize("grad_cell", [True, False])
def test_flstm_float32_within_reference_error(shape, grad_cell):
    _check_float32("flstm", _flstm_inputs(*shape, F64), grad_cell)


@pytest.mark.parametrize("shape", GLSTMP_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("grad_cell", [True, False])
def test_projected_glstm_float64_matches_reference(shape, bias, grad_cell):
    _check_float64("glstm", _glstmp_inputs(*shape, F64, bias=bias), grad_cell)


@pytest.mark.parametrize("shape", FLSTMP_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("grad_cell", [True, False])
def test_projected_flstm_float64_matches_reference(shape, bias, grad_cell):
    _check_float64("flstm", _flstmp_inputs(*shape, F64, bias=bias), grad_cell)


@pytest.mark.parametrize("shape", GLSTMP_SHAPES + GLSTMP_PARALLEL_SHAPES)
@pytest.mark.parametrize("grad_cell", [True, False])
def test_projected_glstm_float32_within_reference_error(shape, grad_cell):
    _check_float32("glstm", _glstmp_inputs(*shape, F64), grad_cell)


@pytest.mark.parametrize("shape", FLSTMP_SHAPES + FLSTMP_PARALLEL_SHAPES)
@pytest.mark.parametrize("grad_cell", [True, False])
def test_projected_flstm_float32_within_reference_error(shape, grad_cell):
    _check_float32("flstm", _flstmp_inputs(*shape, F64), grad_cell)


_INPUTS = {"glstm": _glstm_inputs, "flstm": _flstm_inputs, "glstmp": _glstmp_inputs, "flstmp": _flstmp_inputs}


@pytest.mark.parametrize("kind,shape", [("glstm", s) for s in GLSTM_PARALLEL_SHAPES]
                         + [("flstm", s) for s in FLSTM_PARALLEL_SHAPES]
                         + [("glstmp", s) for s in GLSTMP_PARALLEL_SHAPES]
                         + [("flstmp", s) for s in FLSTMP_PARALLEL_SHAPES])
def test_parallel_split_matches_single_thread(kind, shape):
    """The same call on 1 and 2 threads (different task splits of every step) agrees to float64 rounding."""
    op = kind[:5]
    inputs = _INPUTS[kind](*shape, F64)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, _ = _run(op, inputs, True)
        torch.set_num_threads(2)
        two, _ = _run(op, inputs, True)
    finally:
        torch.set_num_threads(threads)
    assert len(one) == len(_names(op, kind.endswith("p")))
    for name, a, b in zip(_names(op, kind.endswith("p")), one, two):
        assert rel_err(a, b) < 1e-13, name


def _activated_gates(op, inputs, output):
    """Every step's activated gates sigmoid(i), sigmoid(f), tanh(g), sigmoid(o), (T*B, 4H), in float64 from the inputs
    and the saved output."""
    x, h0, _c0, w_a, w_b, bias = _f64(inputs[:6])
    T, B, _ = x.shape
    h_prev = torch.cat((h0[None], output.to(F64)[:-1]))  # (T, B, P)
    if op == "flstm":
        pre = ((torch.cat((x, h_prev), dim=2) @ w_a.t()) @ w_b.t()).reshape(T, B, 1, 4, -1)
    else:
        G = w_a.shape[0]
        x_g = x[:, :, None, :].expand(T, B, G, x.shape[2]) if w_a.shape[2] == x.shape[2] else x.view(T, B, G, -1)
        pre = torch.einsum("tbgi,gri->tbgr", x_g, w_a) + torch.einsum("tbgp,grp->tbgr", h_prev.view(T, B, G, -1), w_b)
        pre = pre.reshape(T, B, G, 4, -1)
    if bias is not None:
        pre = pre + bias.reshape(pre.shape[2:])
    acts = torch.cat((pre[:, :, :, :2].sigmoid(), pre[:, :, :, 2:3].tanh(), pre[:, :, :, 3:].sigmoid()), dim=3)
    return acts.reshape(T * B, -1)


@pytest.mark.parametrize("kind,shape", [("glstm", GLSTM_SHAPES[1]), ("glstm", GLSTM_PARALLEL_SHAPES[0]),
                                        ("flstm", FLSTM_SHAPES[0]), ("flstm", FLSTM_PARALLEL_SHAPES[0]),
                                        ("glstmp", GLSTMP_SHAPES[0]), ("flstmp", FLSTMP_SHAPES[0])])
def test_forward_keeps_the_gates_and_backward_reads_them(kind, shape):
    """The forward's workspace is every step's activated gates (T*B, 4H), and the backward runs on it instead of
    recomputing them: the same call with a perturbed workspace gives other gradients."""
    op = kind[:5]
    inputs = _INPUTS[kind](*shape, F64)
    out, cell, gates = getattr(cpu, f"{op}_fwd")(*inputs)
    assert gates.dtype == F64 and gates.shape == (out.shape[0] * out.shape[1], 4 * cell.shape[2])
    # 1e-12: a sigmoid carries the pre-activation's rounding (GEMM order) times |x| (up to ~30 here) into its value.
    assert rel_err(gates, _activated_gates(op, inputs, out)) < 1e-12
    grad_out = torch.randn_like(out)
    bwd = getattr(cpu, f"{op}_bwd")
    grads = bwd(grad_out, None, *inputs[:6], out, cell, *inputs[6:], workspace=gates)
    perturbed = bwd(grad_out, None, *inputs[:6], out, cell, *inputs[6:], workspace=gates * 0.75)
    for name, a, b in zip(_names(op, kind.endswith("p"))[2:], grads, perturbed):
        assert rel_err(b, a) > 1e-3, name


def _activation_probe(values, dtype):
    """The cell's activations of ``values`` (any count, as pre-activations): a G = 1 layer with identity input
    weights, zero recurrent weights and no bias, whose workspace is then sigmoid, sigmoid, tanh, sigmoid of x."""
    H, B = 129, 3  # odd H: masked tail lanes in every row
    per_step = B * 4 * H
    T = -(-values.numel() // per_step)
    x = torch.zeros(T * per_step, dtype=F64)
    x[:values.numel()] = values
    x = x.view(T, B, 4 * H).to(dtype)
    zeros = torch.zeros(B, H, dtype=dtype)
    w_ih = torch.eye(4 * H, dtype=dtype)[None]
    w_hh = torch.zeros(1, 4 * H, H, dtype=dtype)
    out, _cell, gates = cpu.glstm_fwd(x, zeros, zeros, w_ih, w_hh, None)
    return x.view(-1, 4, H).to(F64), gates.view(-1, 4, H).to(F64), out


@pytest.mark.parametrize("dtype", [F32, F64])
def test_cell_sigmoid_and_tanh_are_accurate(dtype):
    """Sigmoid and tanh of the cell (the AVX2 float32 kernels inline their own exp and tanh) within 3 units of
    relative rounding of float64's, on a dense grid over [-40, 40] plus tiny and boundary values, in every lane."""
    grid = torch.cat((torch.linspace(-40, 40, 200_001, dtype=F64), torch.tensor([1e-30, -1e-20, 1e-6, 0.6249, 0.625,
                                                                                  0.6251, -0.6251, 88.0, -87.0])))
    x, acts, _ = _activation_probe(grid[torch.randperm(grid.numel())], dtype)
    eps = torch.finfo(dtype).eps
    for k, exact in ((0, x[:, 0].sigmoid()), (1, x[:, 1].sigmoid()), (2, x[:, 2].tanh()), (3, x[:, 3].sigmoid())):
        err = (acts[:, k] - exact).abs() / exact.abs().clamp_min(torch.finfo(dtype).tiny)
        assert err.max() <= 3 * eps, f"gate {k}: {err.max() / eps:.2f} ulp at x = {x[:, k].flatten()[err.argmax()]}"


@pytest.mark.parametrize("dtype", [F32, F64])
def test_cell_propagates_nan_and_saturates(dtype):
    """Huge pre-activations saturate to the exact limits, zero gives 1/2 and 0, NaN stays NaN (one value per batch
    row; infinities cannot be fed through the identity GEMM, whose 0 * inf is NaN; NaN last, so no later step reads
    it through the recurrence)."""
    values = torch.tensor([1e30, -1e30, 0.0, float("nan")], dtype=F64)
    _x, acts, out = _activation_probe(values.repeat_interleave(4 * 129), dtype)  # row b: one value in all 4H gates
    big, small, zero, nan = acts[:4]
    sigmoid_rows, tanh_row = [0, 1, 3], 2
    assert (big == 1).all()
    assert (small[sigmoid_rows] == 0).all() and (small[tanh_row] == -1).all()
    assert (zero[sigmoid_rows] == 0.5).all() and (zero[tanh_row] == 0).all()
    assert nan.isnan().all() and out[1, 0].isnan().all() and not out[0].isnan().any()


def test_backward_refuses_a_workspace_of_the_wrong_size():
    inputs = _glstm_inputs(3, 2, 6, 9, 3, False, F32)
    out, cell, gates = cpu.glstm_fwd(*inputs)
    with pytest.raises(RuntimeError, match="gates must have shape"):
        cpu.glstm_bwd(torch.zeros_like(out), None, *inputs, out, cell, workspace=gates[:-1])


@pytest.mark.parametrize("P", [0, 6])
@pytest.mark.parametrize("op", ["glstm", "flstm"])
def test_empty_batch_is_safe(op, P):
    """B = 0 reaches the kernels only when called directly (the ops handle it before): empty outputs, zero gradients."""
    inputs = (_glstm_inputs(3, 0, 6, 9, 3, False, F32, P=P) if op == "glstm"
              else _flstm_inputs(3, 0, 6, 9, 4, F32, P=P))
    out, cell, gates = getattr(cpu, f"{op}_fwd")(*inputs)
    assert out.shape == (3, 0, P or 9) and cell.shape == (3, 0, 9) and gates.shape == (0, 36)
    grads = getattr(cpu, f"{op}_bwd")(torch.zeros_like(out), None, *inputs[:6], out, cell, *inputs[6:],
                                      workspace=gates)
    assert len(grads) == len(inputs)  # dx, dh0, dc0, two weight gradients, dbias (+ dweight_hr)
    for g, like in zip(grads, inputs):
        assert g.shape == like.shape and not g.any()


@pytest.mark.parametrize("op", ["glstm", "flstm"])
def test_projected_empty_batch_through_the_ops(op):
    """B = 0 with a projection through the public API on backend="cpu": (T, 0, P) output, zero weight gradients."""
    inputs = [t.requires_grad_() for t in (_glstm_inputs(3, 0, 6, 9, 3, False, F64, P=6) if op == "glstm"
                                           else _flstm_inputs(3, 0, 6, 9, 4, F64, P=6))]
    x, h0, c0, w_a, w_b, b, w_hr = inputs
    forward = lstmkern.glstm_forward if op == "glstm" else lstmkern.flstm_forward
    out, (h_n, c_n) = forward(x, (h0, c0), w_a, w_b, b, weight_hr=w_hr, backend="cpu")
    assert out.shape == (3, 0, 6) and h_n.shape == (0, 6) and c_n.shape == (0, 9)
    grads = torch.autograd.grad(out.sum() + c_n.sum(), [w_a, w_b, b, w_hr])
    for g, like in zip(grads, (w_a, w_b, b, w_hr)):
        assert g.shape == like.shape and not g.any()


def test_gradcheck_glstm_through_the_public_api():
    T, B, I, H, G = 3, 2, 6, 6, 3
    x, h0, c0, w_ih, w_hh, b = [t.requires_grad_() for t in _glstm_inputs(T, B, I, H, G, False, F64)]

    def f(x, h0, c0, w_ih, w_hh, b):
        out, (h_n, c_n) = lstmkern.glstm_forward(x, (h0, c0), w_ih, w_hh, b, backend="cpu")
        return out, c_n
    assert torch.autograd.gradcheck(f, (x, h0, c0, w_ih, w_hh, b))


# (I, H, G, dense input, P): small, since gradcheck runs the layer twice per input element.
@pytest.mark.parametrize("I,H,G,dense,P", [(3, 5, 1, False, 2), (6, 6, 3, False, 3), (4, 6, 3, True, 3)])
def test_gradcheck_projected_glstm_through_the_public_api(I, H, G, dense, P):
    T, B = 3, 2
    inputs = [t.requires_grad_() for t in _glstm_inputs(T, B, I, H, G, dense, F64, P=P)]

    def f(x, h0, c0, w_ih, w_hh, b, w_hr):
        out, (h_n, c_n) = lstmkern.glstm_forward(x, (h0, c0), w_ih, w_hh, b, weight_hr=w_hr, backend="cpu")
        return out, c_n
    assert torch.autograd.gradcheck(f, inputs)


def test_gradcheck_projected_flstm_through_the_public_api():
    T, B, I, H, R, P = 3, 2, 4, 5, 3, 2
    inputs = [t.requires_grad_() for t in _flstm_inputs(T, B, I, H, R, F64, P=P)]

    def f(x, h0, c0, w1, w2, b, w_hr):
        out, (h_n, c_n) = lstmkern.flstm_forward(x, (h0, c0), w1, w2, b, weight_hr=w_hr, backend="cpu")
        return out, c_n
    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize("module", ["GLSTM", "FLSTM"])
def test_gradcheck_projected_modules_on_the_cpu_backend(module):
    """Two stacked projected layers (the second reads the first's P-wide output), every parameter and the input."""
    torch.manual_seed(0)
    if module == "GLSTM":
        layer = lstmkern.GLSTM(6, 9, num_layers=2, proj_size=3, groups=3, backend="cpu", dtype=F64)
    else:
        layer = lstmkern.FLSTM(5, 7, num_layers=2, proj_size=3, rank=4, backend="cpu", dtype=F64)
    names = [name for name, _ in layer.named_parameters()]
    assert "weight_hr_l0" in names and "weight_hr_l1" in names
    params = [p.detach().clone().requires_grad_() for _, p in layer.named_parameters()]
    x = torch.randn(3, 2, layer.input_size, dtype=F64, requires_grad=True)

    def f(x, *params):
        out, (h_n, c_n) = torch.func.functional_call(layer, dict(zip(names, params)), (x,))
        return out, c_n
    assert torch.autograd.gradcheck(f, (x, *params))


def test_gradcheck_flstm_through_the_public_api():
    T, B, I, H, R = 3, 2, 4, 5, 3
    x, h0, c0, w1, w2, b = [t.requires_grad_() for t in _flstm_inputs(T, B, I, H, R, F64)]

    def f(x, h0, c0, w1, w2, b):
        out, (h_n, c_n) = lstmkern.flstm_forward(x, (h0, c0), w1, w2, b, backend="cpu")
        return out, c_n
    assert torch.autograd.gradcheck(f, (x, h0, c0, w1, w2, b))


@pytest.mark.parametrize("dtype", [F32, F64, BF16])
def test_auto_picks_cpu_for_cpu_tensors(dtype):
    # (T, B, I, H, G, R, P, dense input): plain, projected (P = 4), dense-input, and both.
    for op, sizes in (("glstm", (4, 2, 8, 8, 2, 0, 0, False)), ("flstm", (4, 2, 8, 8, 1, 3, 0, False)),
                      ("glstm", (4, 2, 8, 8, 2, 0, 4, False)), ("flstm", (4, 2, 8, 8, 1, 3, 4, False)),
                      ("glstm", (4, 2, 8, 8, 2, 0, 0, True)), ("glstm", (4, 2, 8, 8, 2, 0, 4, True))):
        assert resolve_backend("auto", op, torch.device("cpu"), dtype, sizes) == "cpu"
        assert resolve_backend("cpu", op, torch.device("cpu"), dtype, sizes) == "cpu"


def test_auto_falls_back_to_reference_for_float16_and_cpu_refuses_it_by_name():
    sizes = (4, 2, 8, 8, 2, 0, 0, False)
    assert resolve_backend("auto", "glstm", torch.device("cpu"), torch.float16, sizes) == "reference"
    with pytest.raises(ValueError, match="float16"):
        resolve_backend("cpu", "glstm", torch.device("cpu"), torch.float16, sizes)
    assert "CPU tensors" in cpu.unsupported("glstm", torch.device("cuda"), F32, sizes)


@pytest.mark.parametrize("proj_size", [0, 6])
@pytest.mark.parametrize("module", ["GLSTM", "FLSTM"])
def test_modules_on_cpu_run_the_cpu_kernels_under_auto(module, proj_size, monkeypatch):
    """GLSTM / FLSTM with the default backend="auto" on CPU tensors call this backend's forward and backward, with
    weight_hr as the last argument where the layer is projected."""
    calls = []
    op = "glstm" if module == "GLSTM" else "flstm"
    for kind in ("fwd", "bwd"):
        real = getattr(cpu, f"{op}_{kind}")

        def spy(*args, _real=real, _kind=kind, **kwargs):
            calls.append((_kind, len(args)))
            return _real(*args, **kwargs)
        monkeypatch.setattr(cpu, f"{op}_{kind}", spy)
    layer = (lstmkern.GLSTM(12, 18, proj_size=proj_size, groups=3) if module == "GLSTM"
             else lstmkern.FLSTM(12, 18, proj_size=proj_size, rank=5))
    x = torch.randn(4, 3, 12, requires_grad=True)
    out, (h_n, c_n) = layer(x)
    assert out.shape == (4, 3, proj_size or 18)
    out.sum().backward()
    extra = 1 if proj_size else 0
    assert calls == [("fwd", 6 + extra), ("bwd", 10 + extra)]
    assert x.grad is not None and torch.isfinite(x.grad).all()
    if proj_size:
        assert layer.weight_hr_l0.grad is not None and layer.weight_hr_l0.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------------------
# bfloat16: float32 state and accumulation, bfloat16 rounding where the reference rounds (csrc/cpu_lstm.cpp, "bfloat16").
# ---------------------------------------------------------------------------------------------------------------------

# (kind, shape): G = 1 and G = 3, T = 1, B = 1, odd H, dense input, F-LSTM, projections (Pg = 1 included), and sizes
# that split every region of a step over 2 threads.
BF16_CASES = ([("glstm", s) for s in GLSTM_SHAPES + GLSTM_PARALLEL_SHAPES[:1]]
              + [("flstm", s) for s in FLSTM_SHAPES + FLSTM_PARALLEL_SHAPES]
              + [("glstmp", s) for s in GLSTMP_SHAPES + GLSTMP_PARALLEL_SHAPES[1:]]
              + [("flstmp", s) for s in FLSTMP_SHAPES])


def _bf16_run(kind, shape, grad_cell_given, bias=True):
    """The cpu forward + backward in bfloat16, and the reference's forward + backward in bfloat16, float32 (on the
    same bfloat16 inputs) and float64. Every backward runs on the cpu forward's saved output/cell (its contract), the
    upstream gradients are bfloat16 (grad_output) and float32 (grad_cell, the state dtype). Returns the four lists
    [output, cell, dx, dh0, dc0, weight gradients, dbias (, dweight_hr)]."""
    op = kind[:5]
    inputs = _INPUTS[kind](*shape, BF16, bias=bias)
    out, cell, gates = getattr(cpu, f"{op}_fwd")(*inputs)
    assert out.dtype == BF16 and cell.dtype == F32 and gates.dtype == F32
    g = torch.Generator().manual_seed(1)
    grad_out = torch.randn(out.shape, generator=g, dtype=F64).to(BF16)
    grad_cell = torch.randn(cell.shape, generator=g, dtype=F64).to(F32) if grad_cell_given else None
    grads = getattr(cpu, f"{op}_bwd")(grad_out, grad_cell, *inputs[:6], out, cell, *inputs[6:], workspace=gates)
    ref_fwd = getattr(reference, f"{op}_reference")
    ref_bwd = getattr(reference, f"{op}_reference_backward")
    results = [[out, cell, *grads]]
    for dtype in (BF16, F32, F64):
        cast = [None if t is None else t.to(dtype) for t in inputs]
        state = [out.to(dtype), cell.to(F64 if dtype == F64 else F32)]
        upstream = [grad_out.to(dtype), None if grad_cell is None else grad_cell.to(state[1].dtype)]
        results.append([*ref_fwd(*cast), *ref_bwd(*upstream, *cast[:6], *state, *cast[6:])])
    return results


@pytest.mark.parametrize("kind,shape", BF16_CASES)
@pytest.mark.parametrize("grad_cell,bias", [(True, True), (False, False)])
def test_bfloat16_within_reference_error(kind, shape, grad_cell, bias):
    """bfloat16 vs the float64 reference within K x the bfloat16 reference's own error + a few bfloat16 ulp (the
    shared rule of tests/kernel_checks.py); cell is float32 (the state dtype), every gradient bfloat16."""
    got, ref_bf16, _, ref_64 = _bf16_run(kind, shape, grad_cell, bias)
    names = _names(kind[:5], kind.endswith("p"))
    assert len(got) == len(ref_bf16) == len(names)
    for name, a, low, e in zip(names, got, ref_bf16, ref_64):
        assert_close_like_reference(name, a, low, e, BF16)
        assert a.is_contiguous(), name


@pytest.mark.parametrize("kind,shape", [("glstm", (7, 3, 5, 9, 1, False)), ("glstm", (6, 4, 7, 10, 2, True)),
                                        ("glstmp", (5, 2, 6, 9, 3, False, 6)), ("flstm", (6, 1, 4, 11, 3)),
                                        ("flstmp", (5, 2, 6, 9, 7, 4))])
def test_bfloat16_rounds_where_the_reference_rounds(kind, shape):
    """The bfloat16 results follow the reference's bfloat16 rounding points, not just its error budget: the cpu
    results are much closer to the bfloat16 reference than the same reference run in float32 on the same inputs is
    (skipping one rounding point, e.g. h_t's before the next step multiplies by it, moves them to about that
    distance; the tolerance test alone cannot see it, since a skipped rounding is more accurate)."""
    got, ref_bf16, ref_32, _ = _bf16_run(kind, shape, True)
    for name, a, low, f32 in zip(_names(kind[:5], kind.endswith("p")), got, ref_bf16, ref_32):
        skipped = rel_err(f32.to(low.dtype), low)  # what rounding nowhere but at the end would give
        assert skipped > 0, name
        assert rel_err(a, low) <= 0.25 * skipped, f"{name}: {rel_err(a, low):.2e} from the bfloat16 reference"


@pytest.mark.parametrize("kind,shape", [("glstm", GLSTM_PARALLEL_SHAPES[0]), ("flstm", FLSTM_PARALLEL_SHAPES[0]),
                                        ("glstmp", GLSTMP_PARALLEL_SHAPES[1]), ("flstmp", FLSTMP_PARALLEL_SHAPES[0])])
def test_bfloat16_parallel_split_matches_single_thread(kind, shape):
    """bfloat16 on 1 and 2 threads: every step's products are split differently, the results are the same bits."""
    op = kind[:5]
    inputs = _INPUTS[kind](*shape, BF16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, _ = _run(op, inputs, True)
        torch.set_num_threads(2)
        two, _ = _run(op, inputs, True)
    finally:
        torch.set_num_threads(threads)
    for name, a, b in zip(_names(op, kind.endswith("p")), one, two):
        assert a.dtype == b.dtype and torch.equal(a, b), name


@pytest.mark.parametrize("P", [0, 6])
@pytest.mark.parametrize("op", ["glstm", "flstm"])
def test_bfloat16_empty_batch_through_the_ops(op, P):
    """B = 0 in bfloat16 through the public API on backend="cpu": empty outputs, zero weight gradients in bfloat16."""
    inputs = [t.requires_grad_() for t in (_glstm_inputs(3, 0, 6, 9, 3, False, BF16, P=P) if op == "glstm"
                                           else _flstm_inputs(3, 0, 6, 9, 4, BF16, P=P))]
    x, h0, c0, w_a, w_b, b = inputs[:6]
    forward = lstmkern.glstm_forward if op == "glstm" else lstmkern.flstm_forward
    out, (h_n, c_n) = forward(x, (h0, c0), w_a, w_b, b, weight_hr=inputs[6] if P else None, backend="cpu")
    assert out.shape == (3, 0, P or 9) and out.dtype == BF16
    weights = [w_a, w_b, b] + inputs[6:]
    grads = torch.autograd.grad(out.float().sum() + c_n.float().sum(), weights)
    for g, like in zip(grads, weights):
        assert g.shape == like.shape and g.dtype == BF16 and not g.any()


def test_bfloat16_direct_call_checks_dtypes():
    """A direct op call with a float32 h0 next to bfloat16 x, or a bfloat16 cell (the state is float32), is refused by
    name before any kernel runs."""
    x, h0, c0, w_ih, w_hh, b = _glstm_inputs(3, 2, 6, 9, 3, False, BF16)
    with pytest.raises(RuntimeError, match="h0 must be BFloat16"):
        cpu.glstm_fwd(x, h0.float(), c0, w_ih, w_hh, b)
    out, cell, gates = cpu.glstm_fwd(x, h0, c0, w_ih, w_hh, b)
    with pytest.raises(RuntimeError, match="cell must be Float"):
        cpu.glstm_bwd(torch.zeros_like(out), None, x, h0, c0, w_ih, w_hh, b, out, cell.to(BF16), workspace=gates)
    with pytest.raises(RuntimeError, match="gates must be Float"):
        cpu.glstm_bwd(torch.zeros_like(out), None, x, h0, c0, w_ih, w_hh, b, out, cell, workspace=gates.to(BF16))


@pytest.mark.parametrize("proj_size", [0, 6])
@pytest.mark.parametrize("module", ["GLSTM", "FLSTM"])
def test_bfloat16_modules_run_the_cpu_kernels_under_auto(module, proj_size, monkeypatch):
    """GLSTM / FLSTM in bfloat16 with backend="auto" on CPU tensors call this backend and agree with the reference
    backend to within one bfloat16 ulp of the largest entry (both round at the same points)."""
    calls = []
    op = "glstm" if module == "GLSTM" else "flstm"
    for kind in ("fwd", "bwd"):
        real = getattr(cpu, f"{op}_{kind}")

        def spy(*args, _real=real, _kind=kind, **kwargs):
            calls.append(_kind)
            return _real(*args, **kwargs)
        monkeypatch.setattr(cpu, f"{op}_{kind}", spy)
    torch.manual_seed(0)
    kwargs = dict(proj_size=proj_size, dtype=BF16)
    layer = lstmkern.GLSTM(12, 18, groups=3, **kwargs) if module == "GLSTM" else lstmkern.FLSTM(12, 18, rank=5, **kwargs)
    x = torch.randn(4, 3, 12, dtype=BF16)
    results = []
    for backend in ("auto", "reference"):
        layer.backend = backend
        layer.zero_grad()
        xb = x.clone().requires_grad_()
        out, (h_n, c_n) = layer(xb)
        (out.float().sum() + c_n.float().sum()).backward()
        results.append([out, c_n, xb.grad] + [p.grad.clone() for p in layer.parameters()])
    assert calls == ["fwd", "bwd"]
    for got, want in zip(*results):
        assert got.dtype == want.dtype and rel_err(got, want) <= 2.0**-8  # a bfloat16 ulp of the largest entry
