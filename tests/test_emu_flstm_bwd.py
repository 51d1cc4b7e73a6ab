"""The cluster F-LSTM backward kernel (csrc/flstm_cluster_bwd.cu) run on the CPU by the emulator (lstmkern._emu; see
tests/test_emu.py for what emulation proves): against the float64 reference backward with the GPU tests' tolerance
rule (tests/kernel_checks.py), under several thread schedules that must agree bitwise (the race detector), and the
launcher's choice of it.

Shape legend: T time steps, B batch, I input features, H hidden units, R rank, C thread-block-cluster size,
Hs = H / C hidden units per CTA, Rs = R / C columns of dz one CTA reduces.
"""
from __future__ import annotations

import pytest
import torch

from kernel_checks import DTYPES, check_forward_and_backward, flstm_inputs
# The emulator fixtures and the schedule check are test_emu's (one race detector for every kernel test).
from test_emu import CSRC, OPS, SCHEDULES, _emu, _fresh_emulator, under_all_schedules  # noqa: F401  (autouse fixture)


def _launched():
    """(kernel file, cluster dims) of the emulated launches since the last call, in order."""
    return [(launch["kernel_file"], launch["cluster"]) for launch in _emu.take_launches()]


def _cluster_forward(C):
    """The cluster forward with C CTAs (one schedule: test_emu checks it), whose output and cell the backward gets."""
    return lambda *args: OPS.flstm_persistent_fwd(*args, cluster_size=C)


def _cluster_backward(C):
    return lambda *args: under_all_schedules(OPS.flstm_persistent_bwd, *args, cluster_size=C)


# (C, T, B, I, H, R): B = 19 crosses the 16-row WMMA and 8-row FMA batch tiles with Rs = 8 (four dz columns per
# exchange item); T = 1 with Rs = 4; C = 8 with Rs = 2 (one column per item) and Hs = 16; R = 96 > 4Hs = 64, so the
# dz rows are wider than the dgates rows sharing their buffer and the dgates tile's padding rows hold dz values.
FLSTM_CLUSTER_BWD = [(2, 3, 19, 5, 32, 16), (4, 1, 2, 3, 64, 16), (8, 2, 5, 2, 128, 16), (4, 2, 5, 3, 64, 96)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("forced", FLSTM_CLUSTER_BWD, ids=str)
def test_flstm_cluster_backward_matches_reference(forced, dtype):
    """Every gradient against the float64 reference, with bias and a cell-state gradient and with neither."""
    C, *shape = forced
    torch.manual_seed(C * 1000 + shape[3])
    inputs = flstm_inputs(*shape, dtype, device="cpu")
    for with_bias, with_grad_cell in ((True, True), (False, False)):
        check_forward_and_backward("flstm", inputs, dtype, with_bias, with_grad_cell, fwd=_cluster_forward(C),
                                   bwd=_cluster_backward(C))
        backward_launches = [launch for launch in _launched() if launch[0] != "flstm_cluster.cu"]
        # under_all_schedules runs the backward once per schedule
        assert backward_launches == [("flstm_cluster_bwd.cu", (C, 1, 1))] * len(SCHEDULES), backward_launches


def test_flstm_cluster_backward_of_sixteen_ctas():
    """C = 16 (the non-portable cluster size, Rs = 1) in bf16, the dtype of the headline shape."""
    torch.manual_seed(16)
    inputs = flstm_inputs(2, 3, 2, 256, 16, torch.bfloat16, device="cpu")
    check_forward_and_backward("flstm", inputs, torch.bfloat16, with_bias=True, with_grad_cell=True,
                               fwd=_cluster_forward(16), bwd=_cluster_backward(16))
    assert ("flstm_cluster_bwd.cu", (16, 1, 1)) in _launched()


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=str)
def test_automatic_choice_runs_both_directions_on_clusters_for_flstm_infer(dtype):
    """flstm-infer's layer (H = 1024, R = 256) fits no single CTA of an H100: the ops' automatic choice runs the
    cluster forward and the cluster backward, both with C = 16 (C = 8 would need 270336 bytes for the backward's W2
    rows alone), never the per-step fallback."""
    torch.manual_seed(7)
    inputs = flstm_inputs(1, 2, 4, 1024, 256, dtype, device="cpu")
    check_forward_and_backward("flstm", inputs, dtype, with_bias=True, with_grad_cell=False,
                               fwd=OPS.flstm_persistent_fwd, bwd=OPS.flstm_persistent_bwd)
    assert _launched() == [("flstm_cluster.cu", (16, 1, 1)), ("flstm_cluster_bwd.cu", (16, 1, 1))]


def test_bad_cluster_sizes_are_named_before_any_kernel_runs():
    x, h0, c0, w1, w2, bias = flstm_inputs(2, 3, 4, 64, 16, torch.float32, device="cpu")
    output, cell = OPS.flstm_persistent_fwd(x, h0, c0, w1, w2, bias)
    _emu.take_launches()
    args = (torch.randn_like(output), None, x, h0, c0, w1, w2, bias, output, cell)
    for cluster_size in (3, 32, 8, -1):  # 8: H = 64 is not a multiple of 16 * 8
        with pytest.raises(ValueError, match="cluster_size"):
            OPS.flstm_persistent_bwd(*args, cluster_size=cluster_size)
    w1_72, w2_72 = torch.randn(72, 4 + 64), torch.randn(4 * 64, 72)  # R = 72 is not whole WMMA tiles
    with pytest.raises(ValueError, match="R a multiple of 16"):
        OPS.flstm_persistent_bwd(*args[:5], w1_72, w2_72, None, output, cell, cluster_size=2)
    assert _emu.take_launches() == []


def _cluster_barrier_line(marker):
    """The line number in csrc/flstm_cluster_bwd.cu of the `cluster.sync()` commented with `marker`."""
    lines = (CSRC / "flstm_cluster_bwd.cu").read_text().splitlines()
    return next(i for i, line in enumerate(lines) if "cluster.sync();" in line and marker in line) + 1


def test_dropping_the_second_cluster_barrier_is_reported():
    """Barrier 2 orders the dz pushes of the exchange before the dh product reads them (the hazard argument's RAW on
    dz): without it the result depends on the schedule, which the race detector reports."""
    site = f"flstm_cluster_bwd.cu:{_cluster_barrier_line('barrier 2')}"
    torch.manual_seed(2)
    inputs = flstm_inputs(3, 5, 3, 64, 32, torch.bfloat16, device="cpu")
    output, cell = OPS.flstm_persistent_fwd(*inputs, cluster_size=2)
    args = (torch.randn_like(output), None, *inputs, output, cell)
    under_all_schedules(OPS.flstm_persistent_bwd, *args, cluster_size=2)  # intact: no report
    _emu.drop_barrier(site)
    try:
        with pytest.raises(AssertionError, match="race: output"):
            under_all_schedules(OPS.flstm_persistent_bwd, *args, cluster_size=2)
    finally:
        _emu.drop_barrier("")
