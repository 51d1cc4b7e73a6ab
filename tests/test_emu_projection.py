"""Projected layers (LSTMP, weight_hr (P, H)) on the CUDA kernels, run on the CPU by the emulator (lstmkern._emu).

A projected G-LSTM step, gates_t = P_t + W_hh (W_hr m_{t-1}), is the F-LSTM step with W1_h := W_hr, R := P and
W2 := W_hh, so the F-LSTM forwards (csrc/flstm_persistent.cu, csrc/flstm_cluster.cu) run it in their projected mode
through torch.ops.lstmkern_emu.glstm_persistent_fwd(..., weight_hr=...): the z they exchange is the layer's output.
Checked here: the forward against the float64 reference with the shared tolerance rule (tests/kernel_checks.py), every
call under the three thread schedules of tests/test_emu.py (bitwise equal, else a race), the projected mode being
bitwise the F-LSTM recurrence it reuses, the automatic kernel choice, the Python mirror of the shape and
shared-memory rules, the dense-input G-LSTM on the G-LSTM kernels, and argument errors before any kernel runs.

Shape legend: T time steps, B batch, I input features, H hidden units (cell), P projection size, G groups,
Hg = H / G, Pg = P / G, C thread-block-cluster size.
"""
from __future__ import annotations

import os

import pytest
import torch

from kernel_checks import (DTYPES, assert_forward_like_reference, check_forward_and_backward, glstm_inputs,
                           projected_inputs)
from lstmkern.backends import cuda as cuda_backend
from lstmkern.reference import glstm_reference

if os.environ.get("LSTMKERN_SKIP_EMU", "").strip().lower() in ("1", "true", "yes", "on"):
    pytest.skip("LSTMKERN_SKIP_EMU is set: lstmkern._emu was not built", allow_module_level=True)

from lstmkern import _emu  # noqa: E402
# The emulator fixtures and the schedule check are test_emu's (one race detector for every kernel test).
from test_emu import (CSRC, H100_SMEM_OPTIN, OPS, _forced, _fresh_emulator, _kernels_run,  # noqa: E402, F401
                      under_all_schedules)


def _projected_forward(inputs, with_bias=True, **forced):
    """(output, cell) of the projected forward under every schedule; inputs as projected_inputs returns them."""
    x, h0, c0, w_ih, w_hh, bias, w_hr = inputs
    return under_all_schedules(OPS.glstm_persistent_fwd, x, h0, c0, w_ih, w_hh, bias if with_bias else None,
                               weight_hr=w_hr, **forced)


def _check_against_reference(inputs, dtype, with_bias=True, **forced):
    output, cell = _projected_forward(inputs, with_bias, **forced)
    x, h0, c0, w_ih, w_hh, bias, w_hr = inputs
    T, B = x.shape[:2]
    assert output.shape == (T, B, w_hr.shape[0]) and cell.shape == (T, B, w_hr.shape[1])
    assert_forward_like_reference(glstm_reference, [x, h0, c0, w_ih, w_hh, bias if with_bias else None, w_hr],
                                  output, cell, dtype)


# ---------------------------------------------------------------------------------------------------------------
# Single CTA (flstm_persistent.cu, projected mode)

# (T, B, I, H, P, G, dense_input): the smallest layer; G = 3 (odd, Hg = 4, Pg = 2) with B = 9 (past the 8-row tile);
# G = 2 with B = 17; G = 2 with the dense input.
SINGLE = [(1, 1, 1, 2, 1, 1, False), (3, 9, 6, 12, 6, 3, False), (2, 17, 4, 32, 16, 2, False),
          (2, 5, 3, 16, 8, 2, True)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SINGLE, ids=str)
def test_single_cta_projected_forward_matches_reference(shape, dtype):
    T, B, I, H, P, G, dense = shape
    torch.manual_seed(hash(shape) % 2**31)
    inputs = projected_inputs(T, B, I, H, P, G, dtype, device="cpu", dense_input=dense)
    for with_bias in (True, False):
        _check_against_reference(inputs, dtype, with_bias, cluster_size=1)
    _kernels_run("flstm_persistent.cu")


# ---------------------------------------------------------------------------------------------------------------
# Cluster (flstm_cluster.cu, projected mode)

# (C, T, B, I, H, P, G, dense_input): G = 1 with B = 19 (two batch tiles, the second partial; Rs = 16: vectorised
# exchange); G = C = 2; G = C = 4 with T = 1 and B = 17 (Pg = 16, one WMMA k-tile per group); G = 2 in C = 4 (two CTAs
# per group, Rs = 8) with the dense input; C = 16 (non-portable size, Rs = 1: one column per exchange item).
CLUSTERS = [(2, 3, 19, 5, 64, 32, 1, False), (2, 2, 3, 4, 64, 32, 2, False), (4, 1, 17, 8, 128, 64, 4, False),
            (4, 2, 5, 6, 128, 32, 2, True), (16, 2, 3, 2, 256, 16, 1, False)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("forced", CLUSTERS, ids=str)
def test_cluster_projected_forward_matches_reference(forced, dtype):
    C, T, B, I, H, P, G, dense = forced
    torch.manual_seed(C * 1000 + H + G)
    inputs = projected_inputs(T, B, I, H, P, G, dtype, device="cpu", dense_input=dense)
    _check_against_reference(inputs, dtype, cluster_size=C)
    _kernels_run("flstm_cluster.cu", cluster=C)


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_automatic_choice_runs_the_cluster_where_one_cta_does_not_fit(dtype):
    """H = 256, P = 128, G = 2 needs more than an H100's 227 KiB on one CTA: the op's automatic mode runs the cluster
    that projected_cluster_size (the Python mirror the backend decides with) names."""
    H, P, G = 256, 128, 2
    assert cuda_backend.projected_smem_bytes(H, P, G, dtype) > H100_SMEM_OPTIN
    expected_c = cuda_backend.projected_cluster_size(H, P, G, dtype, H100_SMEM_OPTIN, (9, 0))
    assert expected_c > 1
    torch.manual_seed(7)
    inputs = projected_inputs(2, 3, 4, H, P, G, dtype, device="cpu")
    _check_against_reference(inputs, dtype)
    _kernels_run("flstm_cluster.cu", cluster=expected_c)


# ---------------------------------------------------------------------------------------------------------------
# Grid (flstm_grid.cu, projected mode: z exchanged through global memory, m_t in a workspace, z of a step = the
# previous output row)

# (N, T, B, I, H, P, G): one CTA; G = N = 2 with B = 19 (two 16-row tiles); G = N = 4 with T = 1 and B = 17; G = N = 3
# (odd); N = 6 with G = 2 (three CTAs per group) and Rs = 6 (one column per item, the last CTA only 2 columns).
GRIDS = [(1, 2, 5, 2, 16, 16, 1), (2, 3, 19, 6, 64, 32, 2), (4, 1, 17, 4, 128, 64, 4), (3, 2, 3, 3, 96, 48, 3),
         (6, 2, 9, 4, 192, 32, 2)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("forced", GRIDS, ids=str)
def test_grid_projected_forward_matches_reference(forced, dtype):
    N, T, B, I, H, P, G = forced
    torch.manual_seed(N * 1000 + H + G)
    inputs = projected_inputs(T, B, I, H, P, G, dtype, device="cpu")
    _check_against_reference(inputs, dtype, grid_ctas=N)
    _kernels_run("flstm_grid.cu", cooperative=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_grid_projected_forward_is_bitwise_the_cluster_one(dtype):
    """Same partial products, same rank order of the z sum, same rounding, same gate product and cell code: the grid
    forward on N CTAs and the cluster forward with C = N give bitwise the same projected layer."""
    torch.manual_seed(13)
    x, h0, c0, w_ih, w_hh, bias, w_hr = projected_inputs(3, 19, 6, 128, 64, 2, dtype, device="cpu")
    grid = OPS.glstm_persistent_fwd(x, h0, c0, w_ih, w_hh, bias, weight_hr=w_hr, grid_ctas=4)
    cluster = OPS.glstm_persistent_fwd(x, h0, c0, w_ih, w_hh, bias, weight_hr=w_hr, cluster_size=4)
    for grid_result, cluster_result in zip(grid, cluster):
        assert torch.equal(grid_result, cluster_result)


# ---------------------------------------------------------------------------------------------------------------
# The projected mode is the F-LSTM recurrence it reuses


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cluster_size", (1, 4), ids=lambda c: f"C={c}")
def test_projected_mode_is_bitwise_the_flstm_recurrence(cluster_size, dtype):
    """An LSTMP layer with x = 0 and h0 = 0 has P_t = bias, and its recurrence is that of the F-LSTM with weight_1 =
    [0 | W_hr] (R = P) and weight_2 = W_hh started from h0 = 0: the same products in the same order, z rounded in the
    same place. The cell sequences agree bitwise, and the projected output at step t is that F-LSTM's z of step t+1,
    i.e. W_hr times its output at step t (the F-LSTM emits m_t)."""
    torch.manual_seed(cluster_size + 31)
    T, B, I, H, P = 3, 19, 4, 64, 32
    x, h0, c0, w_ih, w_hh, bias, w_hr = projected_inputs(T, B, I, H, P, 1, dtype, device="cpu")
    x, h0, w_ih = torch.zeros_like(x), torch.zeros_like(h0), torch.zeros_like(w_ih)
    output, cell = _projected_forward([x, h0, c0, w_ih, w_hh, bias, w_hr], cluster_size=cluster_size)
    weight_1 = torch.cat((torch.zeros(P, I, dtype=dtype), w_hr), dim=1)
    flstm_output, flstm_cell = OPS.flstm_persistent_fwd(x, torch.zeros(B, H, dtype=dtype), c0, weight_1,
                                                        w_hh.reshape(4 * H, P), bias.reshape(4 * H),
                                                        cluster_size=cluster_size)
    assert torch.equal(cell, flstm_cell)
    # Each output row is a rounded product of the F-LSTM's m_t (the order of its sum is the kernel's, so compare
    # within one rounding of the element type).
    expected = (flstm_output.double() @ w_hr.double().t())
    tolerance = {torch.float32: 1e-6, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}[dtype]
    assert torch.allclose(output.double(), expected, rtol=tolerance, atol=tolerance)


# ---------------------------------------------------------------------------------------------------------------
# The race detector sees the projected exchange


def _dropping(site, inputs):
    """The projected cluster forward with the barrier at flstm_cluster.cu:site skipped."""
    _emu.drop_barrier(f"flstm_cluster.cu:{site}")
    try:
        return _projected_forward(inputs, cluster_size=2)
    finally:
        _emu.drop_barrier("")


def test_dropped_barriers_are_reported_in_the_projected_mode():
    """Without the __syncthreads between the gate product and the cell, the cell reads gate columns other warps are
    still writing: the schedules disagree (a race). Without cluster barrier 2, the last exchange's pushes reach a peer
    that has already exited, which the emulator names."""
    lines = (CSRC / "flstm_cluster.cu").read_text().splitlines()
    cell_line = next(i for i, text in enumerate(lines) if "const auto cell_step = [&]" in text)
    gate_barrier = max(i for i in range(cell_line) if lines[i].strip() == "__syncthreads();") + 1
    barrier_2 = next(i for i, text in enumerate(lines) if "cluster.sync();  // barrier 2" in text) + 1
    torch.manual_seed(3)
    inputs = projected_inputs(3, 5, 4, 64, 32, 2, torch.bfloat16, device="cpu")
    _projected_forward(inputs, cluster_size=2)  # intact: no report
    with pytest.raises(AssertionError, match="race: output"):
        _dropping(gate_barrier, inputs)
    with pytest.raises(RuntimeError, match=r"map_shared_rank into cluster rank \d+, which has exited"):
        _dropping(barrier_2, inputs)


# ---------------------------------------------------------------------------------------------------------------
# The dense-input G-LSTM on the G-LSTM kernels (the launchers' input GEMMs)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cluster_size", (1, 2), ids=lambda c: f"C={c}")
def test_dense_input_glstm_kernels_match_reference(cluster_size, dtype):
    """weight_ih (G, 4Hg, I): every group reads all of x; forward and backward."""
    torch.manual_seed(cluster_size + 17)
    T, B, G, Hg, I = 3, 9, 2, 32, 5
    x, h0, c0, _, w_hh, bias = glstm_inputs(T, B, G, Hg, 1, dtype, device="cpu")
    x = torch.randn(T, B, I, dtype=torch.float64).to(dtype)
    w_ih = (torch.randn(G, 4 * Hg, I, dtype=torch.float64) * I**-0.5).to(dtype)
    check_forward_and_backward("glstm", [x, h0, c0, w_ih, w_hh, bias], dtype, with_bias=True, with_grad_cell=True,
                               fwd=_forced(OPS.glstm_persistent_fwd, cluster_size=cluster_size),
                               bwd=_forced(OPS.glstm_persistent_bwd, cluster_size=cluster_size))
    _kernels_run("glstm_persistent.cu" if cluster_size == 1 else "glstm_cluster.cu")


# ---------------------------------------------------------------------------------------------------------------
# Arguments and rules


def test_bad_projected_arguments_are_named_before_any_kernel_runs():
    x, h0, c0, w_ih, w_hh, bias, w_hr = projected_inputs(2, 3, 4, 64, 32, 4, torch.float32, device="cpu")
    with pytest.raises(ValueError, match="weight_hr must have shape"):
        OPS.glstm_persistent_fwd(x, h0, c0, w_ih, w_hh, bias, weight_hr=w_hr[:, 1:].contiguous())
    with pytest.raises(ValueError, match="h0 must have shape"):
        OPS.glstm_persistent_fwd(x, torch.zeros(3, 64), c0, w_ih, w_hh, bias, weight_hr=w_hr)
    with pytest.raises(ValueError, match="cluster_size"):  # C = 2 is not a multiple of G = 4
        OPS.glstm_persistent_fwd(x, h0, c0, w_ih, w_hh, bias, cluster_size=2, weight_hr=w_hr)
    with pytest.raises(ValueError, match="cluster_size"):  # Pg = 8 is not whole WMMA tiles
        OPS.glstm_persistent_fwd(x, h0, c0, w_ih, w_hh, bias, cluster_size=4, weight_hr=w_hr)
    with pytest.raises(ValueError, match="weight_hh must be"):
        OPS.glstm_persistent_fwd(x, h0, c0, w_ih, w_hh[:, 1:].contiguous(), bias, weight_hr=w_hr)
    with pytest.raises(TypeError, match="weight_hr must have dtype"):
        OPS.glstm_persistent_fwd(x, h0, c0, w_ih, w_hh, bias, weight_hr=w_hr.double())
    with pytest.raises(ValueError, match="grid_ctas"):  # N = 2 is not a multiple of G = 4
        OPS.glstm_persistent_fwd(x, h0, c0, w_ih, w_hh, bias, weight_hr=w_hr, grid_ctas=2)
    with pytest.raises(ValueError, match="cannot both be forced"):
        OPS.glstm_persistent_fwd(x, h0, c0, w_ih, w_hh, bias, weight_hr=w_hr, grid_ctas=4, cluster_size=4)
    x, h0, c0, w_ih, w_hh, bias = glstm_inputs(2, 3, 2, 16, 2, torch.float32, device="cpu")
    with pytest.raises(ValueError, match="grid_ctas applies to projected layers"):
        OPS.glstm_persistent_fwd(x, h0, c0, w_ih, w_hh, bias, grid_ctas=2)
    assert _emu.take_launches() == []


def test_projected_rules_match_the_extension():
    """The Python mirror (lstmkern.backends.cuda) of the projected shape and shared-memory rules and of the automatic
    choice, forward and backward, against the C++ ones the launchers use (csrc/persistent_layout.h, through
    lstmkern._C's query ops)."""
    import lstmkern._C  # noqa: F401  (registers the query ops, in every build)

    ops = torch.ops.lstmkern_cuda
    for dtype in DTYPES:
        for H, P, G in ((1, 1, 1), (12, 6, 3), (64, 32, 2), (256, 128, 2), (1024, 256, 4), (1024, 512, 1),
                        (2048, 512, 8), (4096, 1024, 4)):
            assert cuda_backend.projected_smem_bytes(H, P, G, dtype) == ops.projected_smem_bytes(H, P, G, dtype)
            for C in (1, 2, 3, 4, 8, 16, 32):
                shape_ok = cuda_backend._projected_cluster_shape_ok(H, P, G, C)
                for python_formula, query in ((cuda_backend.projected_cluster_smem_bytes,
                                               ops.projected_cluster_smem_bytes),
                                              (cuda_backend.projected_cluster_bwd_smem_bytes,
                                               ops.projected_cluster_bwd_smem_bytes)):
                    if shape_ok:
                        assert python_formula(H, P, G, C, dtype) == query(H, P, G, C, dtype), (H, P, G, C)
                    else:
                        with pytest.raises(ValueError, match="cluster"):
                            query(H, P, G, C, dtype)
                        with pytest.raises(ValueError, match="cluster"):
                            python_formula(H, P, G, C, dtype)
            for N in (1, 2, 3, 4, 8, 48, 64, 128, 132):
                for python_formula, query in ((cuda_backend.projected_grid_smem_bytes, ops.projected_grid_smem_bytes),
                                              (cuda_backend.projected_grid_bwd_smem_bytes,
                                               ops.projected_grid_bwd_smem_bytes)):
                    if cuda_backend._projected_grid_shape_ok(H, P, G, N):
                        assert python_formula(H, P, G, N, dtype) == query(H, P, G, N, dtype), (H, P, G, N)
                    else:
                        with pytest.raises(ValueError, match="grid"):
                            query(H, P, G, N, dtype)
                        with pytest.raises(ValueError, match="grid"):
                            python_formula(H, P, G, N, dtype)
            for smem in (48 * 1024, 166912, H100_SMEM_OPTIN):
                for cc in ((8, 0), (9, 0), (10, 0)):
                    assert cuda_backend.projected_cluster_size(H, P, G, dtype, smem, cc) == \
                        ops.projected_forward_cluster_size(H, P, G, dtype, smem, cc[0]), (H, P, G, smem, cc)
                for sm_count in (0, 16, 108, 132):
                    assert cuda_backend.projected_grid_ctas(H, P, G, dtype, smem, sm_count) == \
                        ops.projected_forward_grid_ctas(H, P, G, dtype, smem, sm_count), (H, P, G, smem, sm_count)
                    assert cuda_backend.projected_bwd_grid_ctas(H, P, G, dtype, smem, sm_count) == \
                        ops.projected_backward_grid_ctas(H, P, G, dtype, smem, sm_count), (H, P, G, smem, sm_count)
                for cc in ((8, 0), (9, 0), (10, 0)):
                    assert cuda_backend.projected_bwd_cluster_size(H, P, G, dtype, smem, cc) == \
                        ops.projected_backward_cluster_size(H, P, G, dtype, smem, cc[0]), (H, P, G, smem, cc)
    for H, P, G in ((12, 5, 3), (0, 4, 1), (8, 4, 0)):
        with pytest.raises(ValueError, match="divisible|>= 1"):
            ops.projected_smem_bytes(H, P, G, torch.float32)
        with pytest.raises(ValueError, match="divisible|>= 1"):
            cuda_backend.projected_smem_bytes(H, P, G, torch.float32)


def test_projected_rule_explains_what_it_does_not_cover():
    rule = cuda_backend.projected_rule
    assert rule(1024, 256, 4, 16, torch.bfloat16, H100_SMEM_OPTIN, (9, 0)) is None
    assert rule(64, 32, 2, 16, torch.float32, H100_SMEM_OPTIN, (8, 0)) is None  # one CTA, no cluster needed
    too_big = rule(4096, 1024, 4, 16, torch.bfloat16, H100_SMEM_OPTIN, (9, 0))  # SM count unknown: no grid
    assert "shared memory" in too_big and "C=16: 1246208" in too_big and "not considered" in too_big
    assert rule(4096, 1024, 4, 16, torch.bfloat16, H100_SMEM_OPTIN, (9, 0), sm_count=132) is None  # grid of 128
    assert "N=128: 300032" in rule(4096, 1024, 4, 16, torch.float32, H100_SMEM_OPTIN, (9, 0), sm_count=132)
    assert "compute capability 9.x" in rule(1024, 256, 4, 16, torch.bfloat16, H100_SMEM_OPTIN, (8, 0))
    assert "float64" in rule(64, 32, 2, 1, torch.float64, H100_SMEM_OPTIN, (9, 0))
    assert "divisible" in rule(64, 30, 4, 1, torch.float32, H100_SMEM_OPTIN, (9, 0))
    # Pg = 8 is not whole WMMA tiles, so no cluster applies where one CTA does not fit.
    assert "P / G a multiple of 16" in rule(1024, 32, 4, 1, torch.float32, H100_SMEM_OPTIN, (9, 0))


def test_unsupported_takes_the_projected_rule_on_a_simulated_h100(monkeypatch):
    """The cuda backend's unsupported() for projected layers, on a GPU it is made to believe in (an H100's limits):
    the forward rule, the cluster's residency, the backward (persistent where its kernel is resident, else Triton's),
    and the projected F-LSTM it leaves to Triton; "auto" then picks cuda exactly where unsupported() says None."""
    from lstmkern.backends import LayerSizes, resolve_backend
    from lstmkern.backends import triton as triton_backend

    active_clusters = [1]
    monkeypatch.setattr(cuda_backend, "_extension_problem", lambda: None)
    monkeypatch.setattr(cuda_backend, "_device_limits", lambda index: (H100_SMEM_OPTIN, (9, 0), 132))
    monkeypatch.setattr(cuda_backend, "_projected_cluster_max_active", lambda *args: active_clusters[0])
    resident_ctas = [132]
    monkeypatch.setattr(cuda_backend, "_projected_grid_max_resident", lambda *args: resident_ctas[0])
    backward_resident = [True]  # the persistent backward's cluster / grid residency queries
    monkeypatch.setattr(cuda_backend, "_projected_cluster_bwd_max_active",
                        lambda *args: 1 if backward_resident[0] else 0)
    monkeypatch.setattr(cuda_backend, "_projected_grid_bwd_max_resident",
                        lambda index, H, P, G, N, dtype: N if backward_resident[0] else N - 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(triton_backend, "unsupported", lambda *args: None)
    cuda = torch.device("cuda", 0)
    cluster_layer = LayerSizes(T=64, B=16, I=1024, H=1024, G=4, R=0, P=256)  # C = 8 in bf16
    one_cta_layer = LayerSizes(T=8, B=3, I=8, H=64, G=2, R=0, P=32, dense_input=True)
    biglstm = LayerSizes(T=64, B=16, I=1024, H=4096, G=4, R=0, P=1024)  # the grid forward, N = 128
    assert cuda_backend.unsupported("glstm", cuda, torch.bfloat16, cluster_layer) is None
    assert cuda_backend.unsupported("glstm", cuda, torch.float32, one_cta_layer) is None
    assert cuda_backend.unsupported("glstm", cuda, torch.bfloat16, biglstm) is None
    assert "N=128: 300032" in cuda_backend.unsupported("glstm", cuda, torch.float32, biglstm)
    resident_ctas[0] = 100  # another context holds SMs: the cooperative launch would fail
    assert "holds only 100" in cuda_backend.unsupported("glstm", cuda, torch.bfloat16, biglstm)
    resident_ctas[0] = 132
    assert "projected F-LSTM" in cuda_backend.unsupported("flstm", cuda, torch.bfloat16,
                                                          LayerSizes(8, 2, 8, 64, 1, 16, 32))
    assert resolve_backend("auto", "glstm", cuda, torch.bfloat16, cluster_layer) == "cuda"
    assert resolve_backend("auto", "glstm", cuda, torch.float32, biglstm) != "cuda"
    active_clusters[0] = 0
    assert "cannot make resident" in cuda_backend.unsupported("glstm", cuda, torch.bfloat16, cluster_layer)
    assert cuda_backend.unsupported("glstm", cuda, torch.float32, one_cta_layer) is None  # no cluster needed
    active_clusters[0] = 1
    # The backward runs on the persistent projected backward (C = 8 / one CTA / the grid of 128): no Triton needed.
    monkeypatch.setattr(triton_backend, "unsupported", lambda *args: "no Triton today")
    for layer, dtype in ((cluster_layer, torch.bfloat16), (one_cta_layer, torch.float32), (biglstm, torch.bfloat16)):
        assert cuda_backend.unsupported("glstm", cuda, dtype, layer) is None
    # Where the backward's cluster or grid cannot be resident, Triton's backward would have to take over.
    backward_resident[0] = False
    for layer in (cluster_layer, biglstm):
        reason = cuda_backend.unsupported("glstm", cuda, torch.bfloat16, layer)
        assert "no persistent projected backward" in reason and "no Triton today" in reason
    assert cuda_backend.unsupported("glstm", cuda, torch.float32, one_cta_layer) is None  # one CTA: no residency query
