"""The projected G-LSTM backward (LSTMP, weight_hr (P, H)) on the CUDA kernels, run on the CPU by the emulator
(lstmkern._emu): the F-LSTM backwards in their projected mode (csrc/flstm_persistent.cu, csrc/flstm_cluster_bwd.cu,
csrc/flstm_grid_bwd.cu) through torch.ops.lstmkern_emu.glstm_persistent_bwd(..., weight_hr=...).

Checked here: every gradient (dweight_hr included) against the float64 reference backward with the shared tolerance
rule (tests/kernel_checks.py), every backward call under the three thread schedules of tests/test_emu.py (bitwise
equal, else a race), the grid backward bitwise equal to the cluster backward it reorganises, the automatic kernel
choice against the Python mirror the backend decides with, a dropped barrier reported, and argument errors raised
before any kernel runs.

Shape legend: T time steps, B batch, I input features, H hidden units (cell), P projection size, G groups,
Hg = H / G, Pg = P / G, C thread-block-cluster size, N CTA count of the grid kernels, Rs the columns of dz one CTA
reduces (P / C, or ceil(P / N) on the grid).
"""
from __future__ import annotations

import os

import pytest
import torch

from kernel_checks import DTYPES, check_projected_forward_and_backward, glstm_inputs, projected_inputs
from lstmkern.backends import cuda as cuda_backend

if os.environ.get("LSTMKERN_SKIP_EMU", "").strip().lower() in ("1", "true", "yes", "on"):
    pytest.skip("LSTMKERN_SKIP_EMU is set: lstmkern._emu was not built", allow_module_level=True)

from lstmkern import _emu  # noqa: E402
# The emulator fixtures and the schedule check are test_emu's (one race detector for every kernel test).
from test_emu import CSRC, H100_SMEM_OPTIN, OPS, SCHEDULES, _fresh_emulator, under_all_schedules  # noqa: E402, F401

H100_SMS = 132  # the emulator's described device


def _launched():
    """(kernel file, grid, cluster, cooperative) of the emulated launches since the last call, in order."""
    return [(launch["kernel_file"], launch["grid"], launch["cluster"], launch["cooperative"])
            for launch in _emu.take_launches()]


def _forward(**forced):
    """The projected forward with the same forced kernel (one schedule: test_emu_projection checks it)."""
    return lambda *args, **kwargs: OPS.glstm_persistent_fwd(*args, **kwargs, **forced)


def _backward(**forced):
    return lambda *args, **kwargs: under_all_schedules(OPS.glstm_persistent_bwd, *args, **kwargs, **forced)


def _check(shape, dtype, seed, variants=((True, True), (False, False)), **forced):
    """Forward and backward of a projected layer of ``shape`` = (T, B, I, H, P, G, dense_input) against the reference,
    with bias and a cell-state gradient and with neither (each backward under every schedule)."""
    T, B, I, H, P, G, dense = shape
    torch.manual_seed(seed)
    inputs = projected_inputs(T, B, I, H, P, G, dtype, device="cpu", dense_input=dense)
    for with_bias, with_grad_cell in variants:
        check_projected_forward_and_backward(inputs, dtype, with_bias, with_grad_cell, fwd=_forward(**forced),
                                             bwd=_backward(**forced))


def _backward_launches(kernel_file):
    return [launch for launch in _launched() if launch[0] == kernel_file]


# ---------------------------------------------------------------------------------------------------------------
# Single CTA (flstm_persistent.cu's backward, projected mode)

# (T, B, I, H, P, G, dense_input): the smallest layer (T = B = 1, P = 1); G = 3 (Hg = 4, Pg = 2) with B = 19 (three
# 8-row batch tiles, the last partial); G = 2 with the dense input and odd B.
SINGLE = [(1, 1, 1, 2, 1, 1, False), (3, 19, 6, 12, 6, 3, False), (2, 5, 3, 16, 8, 2, True)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SINGLE, ids=str)
def test_single_cta_projected_backward_matches_reference(shape, dtype):
    _emu.take_launches()
    _check(shape, dtype, seed=sum(shape[:6]), cluster_size=1)
    launches = [launch[0] for launch in _launched()]
    # forward and the backward under every schedule, per variant: the backward is the single-CTA F-LSTM file's
    assert launches == ["flstm_persistent.cu"] * (2 * (1 + len(SCHEDULES))), launches


# ---------------------------------------------------------------------------------------------------------------
# Cluster (flstm_cluster_bwd.cu, projected mode)

# (C, T, B, I, H, P, G, dense_input): G = 1 with B = 19 (two 16-row tiles, the second partial; Rs = 16: four columns
# per exchange item); G = C = 2 (one CTA per group); G = 2 in C = 4 (two CTAs per group, Rs = 8) with the dense input;
# G = 1 in C = 4 with T = 1, B = 1; C = 8 with P = 48 (Rs = 6: one column per item).
CLUSTERS = [(2, 2, 19, 5, 64, 32, 1, False), (2, 2, 3, 4, 64, 32, 2, False), (4, 2, 5, 6, 128, 32, 2, True),
            (4, 1, 1, 3, 64, 64, 1, False), (8, 1, 3, 2, 128, 48, 1, False)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("forced", CLUSTERS, ids=str)
def test_cluster_projected_backward_matches_reference(forced, dtype):
    C, *shape = forced
    _emu.take_launches()
    _check(tuple(shape), dtype, seed=C * 1000 + shape[3] + shape[5], cluster_size=C)
    backward = _backward_launches("flstm_cluster_bwd.cu")
    assert len(backward) == 2 * len(SCHEDULES) and all(launch[2] == (C, 1, 1) for launch in backward), backward


# ---------------------------------------------------------------------------------------------------------------
# Grid (flstm_grid_bwd.cu, projected mode: dz exchanged through global memory)

# (N, T, B, I, H, P, G): one CTA with T = 1; N = 2, G = 1 with B = 19 across the 16-row and 8-row batch tiles;
# G = N = 3 (odd, one CTA per group, Rs = 16); N = 3, G = 1 with Rs = 11 (one column per item, the last CTA 10);
# N = 6, G = 2: one CTA's dz columns (12-17 of P = 32) cross the group boundary at 16.
GRIDS = [(1, 1, 5, 2, 16, 16, 1), (2, 2, 19, 6, 64, 32, 1), (3, 2, 3, 3, 96, 48, 3), (3, 2, 9, 4, 48, 32, 1),
         (6, 2, 11, 4, 96, 32, 2)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("forced", GRIDS, ids=str)
def test_grid_projected_backward_matches_reference(forced, dtype):
    N, *shape = forced
    _emu.take_launches()
    _check((*shape, False), dtype, seed=N * 1000 + shape[3] + shape[5], grid_ctas=N)
    backward = _backward_launches("flstm_grid_bwd.cu")
    assert backward == [("flstm_grid_bwd.cu", (N, 1, 1), (1, 1, 1), True)] * (2 * len(SCHEDULES)), backward


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_grid_projected_backward_is_bitwise_the_cluster_backward(dtype):
    """N = C = 4, G = 2: the same partial products in the same k order, the same group-rank order of the dz sums and
    the same additions of grad_output, so every gradient is bitwise the cluster backward's (B = 19: two batch tiles,
    one partial)."""
    torch.manual_seed(41)
    x, h0, c0, w_ih, w_hh, bias, w_hr = projected_inputs(3, 19, 4, 128, 64, 2, dtype, device="cpu")
    output, cell = OPS.glstm_persistent_fwd(x, h0, c0, w_ih, w_hh, bias, cluster_size=4, weight_hr=w_hr)
    args = (torch.randn_like(output, dtype=torch.float32).to(dtype), torch.randn_like(cell), x, h0, c0, w_ih, w_hh,
            bias, output, cell)
    grid = OPS.glstm_persistent_bwd(*args, weight_hr=w_hr, grid_ctas=4)
    cluster = OPS.glstm_persistent_bwd(*args, weight_hr=w_hr, cluster_size=4)
    for name, grid_result, cluster_result in zip(("dx", "dh0", "dc0", "dweight_ih", "dweight_hh", "dbias",
                                                  "dweight_hr"), grid, cluster):
        assert torch.equal(grid_result, cluster_result), name
    assert [launch[0] for launch in _launched()] == ["flstm_cluster.cu", "flstm_grid_bwd.cu", "flstm_cluster_bwd.cu"]


# ---------------------------------------------------------------------------------------------------------------
# The automatic choice: a persistent backward wherever the forward is persistent

def test_automatic_choice_runs_the_cluster_backward_the_python_rule_names():
    """H = 256, P = 128, G = 2 in fp32 fits no single CTA of an H100: the forward runs on a cluster of 4, the
    backward (smaller per-CTA share) on the cluster of 2 that projected_bwd_cluster_size names."""
    H, P, G, dtype = 256, 128, 2, torch.float32
    assert cuda_backend.projected_smem_bytes(H, P, G, dtype) > H100_SMEM_OPTIN
    forward_c = cuda_backend.projected_cluster_size(H, P, G, dtype, H100_SMEM_OPTIN, (9, 0))
    backward_c = cuda_backend.projected_bwd_cluster_size(H, P, G, dtype, H100_SMEM_OPTIN, (9, 0))
    assert (forward_c, backward_c) == (4, 2)
    _emu.take_launches()
    _check((2, 3, 4, H, P, G, False), dtype, seed=5, variants=((True, True),))
    launches = [(launch[0], launch[2]) for launch in _launched()]
    assert launches == [("flstm_cluster.cu", (4, 1, 1))] + [("flstm_cluster_bwd.cu", (2, 1, 1))] * len(SCHEDULES)


def test_automatic_choice_runs_the_grid_backward_where_no_cluster_fits():
    """H = 768, P = 256, G = 1 in fp32 fits no single CTA and no cluster of an H100: forward and backward both run
    on the grid, N = 24 CTAs as projected_grid_ctas / projected_bwd_grid_ctas name, never the per-step fallback."""
    H, P, G, dtype = 768, 256, 1, torch.float32
    assert cuda_backend.projected_bwd_cluster_size(H, P, G, dtype, H100_SMEM_OPTIN, (9, 0)) == 0
    N = cuda_backend.projected_bwd_grid_ctas(H, P, G, dtype, H100_SMEM_OPTIN, H100_SMS)
    assert N == cuda_backend.projected_grid_ctas(H, P, G, dtype, H100_SMEM_OPTIN, H100_SMS) == 24
    _emu.take_launches()
    torch.manual_seed(9)
    inputs = projected_inputs(1, 2, 3, H, P, G, dtype, device="cpu")
    check_projected_forward_and_backward(inputs, dtype, True, True, fwd=OPS.glstm_persistent_fwd,
                                         bwd=OPS.glstm_persistent_bwd)
    assert [(launch[0], launch[1]) for launch in _launched()] == [("flstm_grid.cu", (N, 1, 1)),
                                                                  ("flstm_grid_bwd.cu", (N, 1, 1))]


# ---------------------------------------------------------------------------------------------------------------
# Arguments, and the race detector on the projected mode's own barrier

def test_bad_arguments_are_named_before_any_kernel_runs():
    x, h0, c0, w_ih, w_hh, bias, w_hr = projected_inputs(2, 3, 4, 64, 32, 2, torch.float32, device="cpu")
    output, cell = OPS.glstm_persistent_fwd(x, h0, c0, w_ih, w_hh, bias, weight_hr=w_hr)
    _emu.take_launches()
    grad_output = torch.randn_like(output)
    args = (grad_output, None, x, h0, c0, w_ih, w_hh, bias, output, cell)
    for cluster_size in (3, 32):  # 3: not a cluster size; 32: beyond 16 (H = 64 is no multiple of 16 C either)
        with pytest.raises(ValueError, match="cluster_size"):
            OPS.glstm_persistent_bwd(*args, weight_hr=w_hr, cluster_size=cluster_size)
    for grid_ctas in (3, 8, -1):  # 3: not a multiple of G; 8: H = 64 is no multiple of 16 N
        with pytest.raises(ValueError, match="grid_ctas"):
            OPS.glstm_persistent_bwd(*args, weight_hr=w_hr, grid_ctas=grid_ctas)
    with pytest.raises(ValueError, match="grid_ctas"):
        OPS.glstm_persistent_bwd(*args, weight_hr=w_hr, grid_ctas=H100_SMS + 2)
    with pytest.raises(ValueError, match="cannot both be forced"):
        OPS.glstm_persistent_bwd(*args, weight_hr=w_hr, cluster_size=2, grid_ctas=2)
    x_plain, h0_plain, c0_plain, w_ih_plain, w_hh_plain, _ = glstm_inputs(2, 3, 2, 32, 2, torch.float32, device="cpu")
    with pytest.raises(ValueError, match="projected layers"):  # grid_ctas without a projection
        OPS.glstm_persistent_bwd(torch.randn(2, 3, 64), None, x_plain, h0_plain, c0_plain, w_ih_plain, w_hh_plain,
                                 None, torch.randn(2, 3, 64), torch.randn(2, 3, 64), grid_ctas=2)
    with pytest.raises(ValueError, match="grad_output"):  # (T, B, H) where the layer's output is (T, B, P)
        OPS.glstm_persistent_bwd(torch.randn(2, 3, 64), *args[1:], weight_hr=w_hr)
    with pytest.raises(ValueError, match="weight_hr"):
        OPS.glstm_persistent_bwd(*args, weight_hr=w_hr.t().contiguous())
    with pytest.raises(TypeError, match="weight_hr"):
        OPS.glstm_persistent_bwd(*args, weight_hr=w_hr.double())
    with pytest.raises(ValueError, match="grad_cell"):
        OPS.glstm_persistent_bwd(grad_output, torch.randn(2, 3, 32), *args[2:], weight_hr=w_hr)
    assert _emu.take_launches() == []


def test_dropping_the_barrier_after_the_first_dm_product_is_reported():
    """The cluster backward's projected prologue forms dm_{T-1} = grad_output[T-1] W_hr[:, own] on the tensor cores and
    a __syncthreads orders it before step T-1's cell reads it: without that barrier the result depends on the
    schedule, which the race detector reports."""
    lines = (CSRC / "flstm_cluster_bwd.cu").read_text().splitlines()
    site = next(i for i, line in enumerate(lines) if "__syncthreads();  // step T-1's cell reads dm_last" in line)
    torch.manual_seed(3)
    x, h0, c0, w_ih, w_hh, bias, w_hr = projected_inputs(1, 3, 2, 64, 32, 1, torch.bfloat16, device="cpu")
    output, cell = OPS.glstm_persistent_fwd(x, h0, c0, w_ih, w_hh, bias, cluster_size=2, weight_hr=w_hr)
    args = (torch.randn_like(output), None, x, h0, c0, w_ih, w_hh, bias, output, cell)
    under_all_schedules(OPS.glstm_persistent_bwd, *args, weight_hr=w_hr, cluster_size=2)  # intact: no report
    _emu.drop_barrier(f"flstm_cluster_bwd.cu:{site + 1}")
    try:
        with pytest.raises(AssertionError, match="race: output"):
            under_all_schedules(OPS.glstm_persistent_bwd, *args, weight_hr=w_hr, cluster_size=2)
    finally:
        _emu.drop_barrier("")
