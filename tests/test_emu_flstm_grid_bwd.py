"""The grid-cooperative F-LSTM backward kernel (csrc/flstm_grid_bwd.cu) run on the CPU by the emulator (lstmkern._emu;
see tests/test_emu.py for what emulation proves): against the float64 reference backward with the GPU tests'
tolerance rule (tests/kernel_checks.py), under several thread schedules that must agree bitwise (the race detector),
bitwise against the cluster backward it reorganises, and the launcher's choice of it.

Shape legend: T time steps, B batch, I input features, H hidden units, R rank, N CTA count of the grid kernels,
C thread-block-cluster size, Hs = H / N hidden units per CTA, Rs = ceil(R / N) columns of dz one CTA reduces.
"""
from __future__ import annotations

import pytest
import torch

from kernel_checks import DTYPES, check_forward_and_backward, flstm_inputs
from lstmkern.backends import cuda as cuda_backend
# The emulator fixtures and the schedule check are test_emu's (one race detector for every kernel test).
from test_emu import CSRC, H100_SMEM_OPTIN, OPS, SCHEDULES, _emu, _fresh_emulator, under_all_schedules  # noqa: F401

H100_SMS = 132  # the emulator's described device


def _launched():
    """(kernel file, grid, cooperative) of the emulated launches since the last call, in order."""
    return [(launch["kernel_file"], launch["grid"], launch["cooperative"]) for launch in _emu.take_launches()]


def _grid_forward(N):
    """The grid forward on N CTAs (one schedule: test_emu checks it), whose output and cell the backward gets."""
    return lambda *args: OPS.flstm_persistent_fwd(*args, grid_ctas=N)


def _grid_backward(N):
    return lambda *args: under_all_schedules(OPS.flstm_persistent_bwd, *args, grid_ctas=N)


# (N, T, B, I, H, R): one CTA with T = 1; N = 3 (not a power of two) with B = 19 across the 16-row WMMA and 8-row FMA
# batch tiles and Rs = 11 (one dz column per reduction item, the last CTA 10 columns); N = 2 with odd T = 5 and
# R = 96 (Rs = 48: four columns per item); N = 5 with Rs = 4, so the last CTA reduces no column at all.
FLSTM_GRID_BWD = [(1, 1, 3, 2, 16, 16), (3, 3, 19, 5, 48, 32), (2, 5, 5, 3, 64, 96), (5, 2, 9, 4, 80, 16)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("forced", FLSTM_GRID_BWD, ids=str)
def test_flstm_grid_backward_matches_reference(forced, dtype):
    """Every gradient against the float64 reference, with bias and a cell-state gradient and with neither."""
    N, *shape = forced
    torch.manual_seed(N * 1000 + shape[3])
    inputs = flstm_inputs(*shape, dtype, device="cpu")
    for with_bias, with_grad_cell in ((True, True), (False, False)):
        check_forward_and_backward("flstm", inputs, dtype, with_bias, with_grad_cell, fwd=_grid_forward(N),
                                   bwd=_grid_backward(N))
        backward_launches = [launch for launch in _launched() if launch[0] != "flstm_grid.cu"]
        # under_all_schedules runs the backward once per schedule
        assert backward_launches == [("flstm_grid_bwd.cu", (N, 1, 1), True)] * len(SCHEDULES), backward_launches


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("N", (2, 4), ids=str)
def test_flstm_grid_backward_is_bitwise_the_cluster_backward(N, dtype):
    """N = C: the same partial products in the same k order, the same rank order of the dz sum, the same dh product and
    cell backward code, so every gradient is bitwise the cluster backward's (B = 19: two batch tiles, one partial)."""
    torch.manual_seed(40 + N)
    inputs = flstm_inputs(3, 19, 5, 64, 32, dtype, device="cpu")
    output, cell = OPS.flstm_persistent_fwd(*inputs, cluster_size=N)
    grad_output = torch.randn_like(output, dtype=torch.float32).to(dtype)
    grad_cell = torch.randn_like(cell)
    args = (grad_output, grad_cell, *inputs, output, cell)
    grid = OPS.flstm_persistent_bwd(*args, grid_ctas=N)
    cluster = OPS.flstm_persistent_bwd(*args, cluster_size=N)
    for name, grid_result, cluster_result in zip(("dx", "dh0", "dc0", "dweight_1", "dweight_2", "dbias"), grid,
                                                 cluster):
        assert torch.equal(grid_result, cluster_result), name
    assert [launch[0] for launch in _launched()] == ["flstm_cluster.cu", "flstm_grid_bwd.cu", "flstm_cluster_bwd.cu"]


def test_automatic_choice_runs_the_grid_backward_where_the_grid_forward_runs():
    """H = 1024, R = 256 in fp32 fits no single CTA and no cluster of an H100 (C = 16 would need 262144 bytes for the
    backward's W2 rows alone): the ops' automatic choice runs the grid forward and the grid backward, both on N = 32
    CTAs, never the per-step fallback; the Python rule (flstm_bwd_grid_ctas) names the same N."""
    H, R, dtype = 1024, 256, torch.float32
    assert cuda_backend.flstm_bwd_cluster_size(H, R, dtype, H100_SMEM_OPTIN, (9, 0)) == 0
    N = cuda_backend.flstm_bwd_grid_ctas(H, R, dtype, H100_SMEM_OPTIN, H100_SMS)
    assert N == cuda_backend.flstm_grid_ctas(H, R, dtype, H100_SMEM_OPTIN, H100_SMS) == 32
    torch.manual_seed(9)
    inputs = flstm_inputs(1, 2, 3, H, R, dtype, device="cpu")
    check_forward_and_backward("flstm", inputs, dtype, with_bias=True, with_grad_cell=True,
                               fwd=OPS.flstm_persistent_fwd, bwd=OPS.flstm_persistent_bwd)
    assert _launched() == [("flstm_grid.cu", (N, 1, 1), True), ("flstm_grid_bwd.cu", (N, 1, 1), True)]


def test_bad_grid_sizes_are_named_before_any_kernel_runs():
    x, h0, c0, w1, w2, bias = flstm_inputs(2, 3, 4, 64, 16, torch.float32, device="cpu")
    output, cell = OPS.flstm_persistent_fwd(x, h0, c0, w1, w2, bias)
    _emu.take_launches()
    args = (torch.randn_like(output), None, x, h0, c0, w1, w2, bias, output, cell)
    for grid_ctas in (3, 8, -1, H100_SMS + 1):  # 3, 8: H = 64 is not a multiple of 16 N
        with pytest.raises(ValueError, match="grid_ctas"):
            OPS.flstm_persistent_bwd(*args, grid_ctas=grid_ctas)
    with pytest.raises(ValueError, match="cannot both be forced"):
        OPS.flstm_persistent_bwd(*args, cluster_size=2, grid_ctas=2)
    w1_72, w2_72 = torch.randn(72, 4 + 64), torch.randn(4 * 64, 72)  # R = 72 is not whole WMMA tiles
    with pytest.raises(ValueError, match="R a multiple of 16"):
        OPS.flstm_persistent_bwd(*args[:5], w1_72, w2_72, None, output, cell, grid_ctas=2)
    assert _emu.take_launches() == []


def test_dropping_the_barrier_before_the_cell_is_reported():
    """The __syncthreads between the dh product and the cell backward orders the dh tile the product's warps write
    before the cell's threads read it: without it the result depends on the schedule, which the race detector
    reports."""
    lines = (CSRC / "flstm_grid_bwd.cu").read_text().splitlines()
    cell_call = next(i for i, line in enumerate(lines) if "cell_and_partial(t - 1, batch_start);" in line)
    site = f"flstm_grid_bwd.cu:{max(i for i in range(cell_call) if lines[i].strip() == '__syncthreads();') + 1}"
    torch.manual_seed(2)
    inputs = flstm_inputs(3, 5, 3, 64, 32, torch.bfloat16, device="cpu")
    output, cell = OPS.flstm_persistent_fwd(*inputs, grid_ctas=2)
    args = (torch.randn_like(output), None, *inputs, output, cell)
    under_all_schedules(OPS.flstm_persistent_bwd, *args, grid_ctas=2)  # intact: no report
    _emu.drop_barrier(site)
    try:
        with pytest.raises(AssertionError, match="race: output"):
            under_all_schedules(OPS.flstm_persistent_bwd, *args, grid_ctas=2)
    finally:
        _emu.drop_barrier("")
