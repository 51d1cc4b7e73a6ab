"""The CUDA kernels of csrc/*.cu run on the CPU by the emulator (lstmkern._emu, csrc/emu): every kernel variant
through its real launcher (torch.ops.lstmkern_emu.*, the lstmkern_cuda ops' schemas and launcher code for CPU
tensors and a described H100: compute capability 9.0, 132 SMs, 232,448 bytes of opt-in shared memory per block),
against the float64 reference with the GPU tests' tolerance rule (tests/kernel_checks.py).

Every kernel call here runs under several thread schedules (the order of the emulated threads within each barrier
interval) and must give bitwise the same result: a result that depends on the schedule reads shared or distributed
shared memory that another thread writes in the same barrier interval (a race). test_a_dropped_barrier_is_reported
plants one and checks that it is caught.

What this proves and what it does not: see the README section "CUDA kernels on the CPU".

Shape legend: T time steps, B batch, I input features, H hidden units, G groups, Hg = H / G, Ig = I / G, R rank,
C thread-block-cluster size, N CTA count of the grid F-LSTM forward.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from kernel_checks import (DTYPES, assert_forward_like_reference, check_both_variants, check_forward_and_backward,
                           flstm_inputs, glstm_inputs)
from lstmkern.backends import cuda as cuda_backend
from lstmkern.reference import flstm_reference

if os.environ.get("LSTMKERN_SKIP_EMU", "").strip().lower() in ("1", "true", "yes", "on"):
    pytest.skip("LSTMKERN_SKIP_EMU is set: lstmkern._emu was not built", allow_module_level=True)

from lstmkern import _emu  # noqa: E402  (built by `pip install -e .` wherever a C++ compiler is)

CSRC = Path(__file__).resolve().parent.parent / "csrc"
OPS = torch.ops.lstmkern_emu
SCHEDULES = (0, 1, 7)  # thread order, reverse order, a seeded shuffle per barrier interval
H100_SMEM_OPTIN = 232448  # the described device's opt-in shared memory per block
KERNEL_OPS = ("glstm_persistent_fwd", "glstm_persistent_bwd", "flstm_persistent_fwd", "flstm_persistent_bwd")


@pytest.fixture(autouse=True)
def _fresh_emulator():
    """Every test starts with an empty launch log, the default schedule and no dropped barrier."""
    _emu.take_launches()
    yield
    _emu.set_schedule(0)
    _emu.drop_barrier("")


def _bits(tensor):
    """The raw bits of a floating tensor (NaN-safe bitwise comparison)."""
    return tensor.contiguous().view({4: torch.int32, 2: torch.int16, 8: torch.int64}[tensor.element_size()])


def under_all_schedules(op, *args, **kwargs):
    """op(*args, **kwargs) under every schedule of SCHEDULES; AssertionError naming the output that differs (a race)
    unless all results are bitwise equal. Returns the first schedule's result."""
    results = []
    try:
        for seed in SCHEDULES:
            _emu.set_schedule(seed)
            results.append(op(*args, **kwargs))
    finally:
        _emu.set_schedule(0)
    for seed, result in zip(SCHEDULES[1:], results[1:]):
        for index, (first, other) in enumerate(zip(results[0], result)):
            assert torch.equal(_bits(first), _bits(other)), (
                f"race: output {index} of {op} differs between schedules {SCHEDULES[0]} and {seed}")
    return results[0]


def _kernels_run(expected_file, cluster=None, cooperative=False):
    """The emulated launches since the last call ran `expected_file` (with `cluster` dims (C, 1, 1) if given)."""
    launches = _emu.take_launches()
    assert launches, "no kernel was launched"
    for launch in launches:
        assert launch["kernel_file"] == expected_file, launches
        if cluster is not None:
            assert launch["cluster"] == (cluster, 1, 1), launches
        assert launch["cooperative"] == cooperative, launches


def _forced(op, **forced):
    return lambda *args: under_all_schedules(op, *args, **forced)


# ---------------------------------------------------------------------------------------------------------------
# The ops


def test_kernel_op_schemas_are_those_of_lstmkern_cuda():
    """lstmkern_emu has every kernel op of lstmkern_cuda (the ops with a CUDA kernel, where the CUDA extension is
    built; the known list otherwise) with the identical schema."""
    import lstmkern._C  # noqa: F401  (registers lstmkern_cuda)

    schemas = {}
    for schema in torch._C._jit_get_all_schemas():
        namespace, _, name = schema.name.partition("::")
        if namespace in ("lstmkern_cuda", "lstmkern_emu"):
            schemas[(namespace, name)] = str(schema).split("::", 1)[1]
    cuda_kernel_ops = {name for (namespace, name) in schemas if namespace == "lstmkern_cuda" and
                       torch._C._dispatch_has_kernel_for_dispatch_key(f"lstmkern_cuda::{name}", "CUDA")}
    assert set(KERNEL_OPS) <= cuda_kernel_ops or not cuda_kernel_ops, cuda_kernel_ops
    for name in cuda_kernel_ops | set(KERNEL_OPS):
        assert ("lstmkern_emu", name) in schemas, f"lstmkern_emu lacks the kernel op {name}"
        assert schemas[("lstmkern_emu", name)] == schemas[("lstmkern_cuda", name)], name
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"lstmkern_emu::{name}", "CPU"), name


def test_bad_arguments_are_named_before_any_kernel_runs():
    x, h0, c0, w_ih, w_hh, bias = glstm_inputs(2, 3, 2, 48, 4, torch.float32, device="cpu")
    with pytest.raises(ValueError, match="cluster_size"):  # Hg = 48 is not a multiple of 32
        OPS.glstm_persistent_fwd(x, h0, c0, w_ih, w_hh, bias, cluster_size=2)
    with pytest.raises(ValueError, match="h0 must have shape"):
        OPS.glstm_persistent_fwd(x, h0[:, 1:].contiguous(), c0, w_ih, w_hh, bias)
    x, h0, c0, w1, w2, bias = flstm_inputs(2, 3, 4, 64, 16, torch.float32, device="cpu")
    with pytest.raises(ValueError, match="grid_ctas"):  # 64 is not a multiple of 16 * 3
        OPS.flstm_persistent_fwd(x, h0, c0, w1, w2, bias, grid_ctas=3)
    assert _emu.take_launches() == []


# ---------------------------------------------------------------------------------------------------------------
# G-LSTM


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (3, 17, 3, 5, 3), (2, 9, 2, 16, 4)], ids=str)  # (T, B, G, Hg, Ig)
def test_glstm_single_cta_kernels_match_reference(shape, dtype):
    """glstm_persistent.cu, forward and backward. B = 17 crosses the 16-row WMMA and the 8-row FMA batch tiles."""
    torch.manual_seed(hash(shape) % 2**31)
    inputs = glstm_inputs(*shape, dtype, device="cpu")
    check_both_variants("glstm", inputs, dtype, fwd=_forced(OPS.glstm_persistent_fwd, cluster_size=1),
                        bwd=_forced(OPS.glstm_persistent_bwd, cluster_size=1))
    _kernels_run("glstm_persistent.cu")


GLSTM_CLUSTERS = [(2, 3, 19, 2, 32, 5), (4, 1, 3, 1, 64, 3), (8, 2, 5, 1, 128, 2)]  # (C, T, B, G, Hg, Ig)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("forced", GLSTM_CLUSTERS, ids=str)
def test_glstm_cluster_kernels_match_reference(forced, dtype):
    """glstm_cluster.cu, forward and backward with C CTAs per group; the forward is bitwise the single-CTA forward's
    (same fragments, same k order, same cell code)."""
    C, *shape = forced
    torch.manual_seed(C * 1000 + shape[3])
    inputs = glstm_inputs(*shape, dtype, device="cpu")
    check_forward_and_backward("glstm", inputs, dtype, with_bias=True, with_grad_cell=True,
                               fwd=_forced(OPS.glstm_persistent_fwd, cluster_size=C),
                               bwd=_forced(OPS.glstm_persistent_bwd, cluster_size=C))
    _kernels_run("glstm_cluster.cu", cluster=C)
    if cuda_backend._glstm_fwd_smem_bytes(shape[3], dtype) > H100_SMEM_OPTIN:
        return  # fp32 Hg = 128 needs the cluster
    cluster_results = OPS.glstm_persistent_fwd(*inputs, cluster_size=C)
    single_results = OPS.glstm_persistent_fwd(*inputs, cluster_size=1)
    for cluster_result, single_result in zip(cluster_results, single_results):
        assert torch.equal(cluster_result, single_result)


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_glstm_automatic_choice_runs_the_cluster_kernels_where_one_cta_does_not_fit(dtype):
    """Hg = 256 does not fit one CTA of an H100: the ops pick C = 4 (bf16) or 8 (fp32) for both directions."""
    torch.manual_seed(5)
    inputs = glstm_inputs(1, 2, 1, 256, 3, dtype, device="cpu")
    expected_c = 4 if dtype == torch.bfloat16 else 8
    check_forward_and_backward("glstm", inputs, dtype, with_bias=True, with_grad_cell=False,
                               fwd=OPS.glstm_persistent_fwd, bwd=OPS.glstm_persistent_bwd)
    _kernels_run("glstm_cluster.cu", cluster=expected_c)


# ---------------------------------------------------------------------------------------------------------------
# F-LSTM


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (3, 9, 5, 13, 3), (2, 17, 4, 32, 16)], ids=str)  # (T, B, I, H, R)
def test_flstm_single_cta_kernels_match_reference(shape, dtype):
    """flstm_persistent.cu, forward and backward (the only F-LSTM backward kernel)."""
    torch.manual_seed(hash(shape) % 2**31)
    inputs = flstm_inputs(*shape, dtype, device="cpu")
    check_both_variants("flstm", inputs, dtype, fwd=_forced(OPS.flstm_persistent_fwd, cluster_size=1),
                        bwd=_forced(OPS.flstm_persistent_bwd))
    _kernels_run("flstm_persistent.cu")


# (C, T, B, I, H, R): Rs = 8 (vectorised z exchange), Rs = 4, C = 16 (non-portable size, Rs = 1: one column per item)
FLSTM_CLUSTERS = [(2, 3, 19, 5, 32, 16), (4, 1, 2, 3, 64, 16), (16, 2, 3, 2, 256, 16)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("forced", FLSTM_CLUSTERS, ids=str)
def test_flstm_cluster_forward_matches_reference(forced, dtype):
    C, *shape = forced
    torch.manual_seed(C * 1000 + shape[3])
    inputs = flstm_inputs(*shape, dtype, device="cpu")
    output, cell = under_all_schedules(OPS.flstm_persistent_fwd, *inputs, cluster_size=C)
    _kernels_run("flstm_cluster.cu", cluster=C)
    assert_forward_like_reference(flstm_reference, inputs, output, cell, dtype)


# (N, T, B, I, H, R): one CTA; N = 3 with R = 16 (Rs = 6: one column per item, the last CTA 4 columns); N = 5.
FLSTM_GRIDS = [(1, 2, 5, 2, 16, 16), (3, 3, 19, 3, 48, 16), (5, 1, 2, 3, 80, 32)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("forced", FLSTM_GRIDS, ids=str)
def test_flstm_grid_forward_matches_reference(forced, dtype):
    N, *shape = forced
    torch.manual_seed(N * 1000 + shape[3])
    inputs = flstm_inputs(*shape, dtype, device="cpu")
    output, cell = under_all_schedules(OPS.flstm_persistent_fwd, *inputs, grid_ctas=N)
    _kernels_run("flstm_grid.cu", cooperative=True)
    assert_forward_like_reference(flstm_reference, inputs, output, cell, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_flstm_grid_forward_is_bitwise_the_cluster_forward(dtype):
    """Same partial products, same rank order of the z sum, same gate product and cell code: N = C gives bitwise the
    same result."""
    torch.manual_seed(3)
    inputs = flstm_inputs(3, 19, 5, 64, 32, dtype, device="cpu")
    grid = OPS.flstm_persistent_fwd(*inputs, grid_ctas=4)
    cluster = OPS.flstm_persistent_fwd(*inputs, cluster_size=4)
    for grid_result, cluster_result in zip(grid, cluster):
        assert torch.equal(grid_result, cluster_result)


# ---------------------------------------------------------------------------------------------------------------
# The race detector


def _barrier_line(source, marker):
    """The line number of the last `__syncthreads();` before the line containing `marker` in csrc/<source>."""
    lines = (CSRC / source).read_text().splitlines()
    marker_index = next(i for i, line in enumerate(lines) if marker in line)
    return max(i for i in range(marker_index) if lines[i].strip() == "__syncthreads();") + 1


def test_a_dropped_barrier_is_reported():
    """The single-CTA G-LSTM forward without its barrier between the recurrent product and the cell: the cell reads
    gate tiles other warps write in the same interval, which the schedules expose."""
    site = f"glstm_persistent.cu:{_barrier_line('glstm_persistent.cu', '// Cell: one thread per (batch row')}"
    torch.manual_seed(0)
    inputs = glstm_inputs(3, 5, 1, 32, 3, torch.bfloat16, device="cpu")
    under_all_schedules(OPS.glstm_persistent_fwd, *inputs, cluster_size=1)  # intact: no report
    _emu.drop_barrier(site)
    try:
        with pytest.raises(AssertionError, match="race: output"):
            under_all_schedules(OPS.glstm_persistent_fwd, *inputs, cluster_size=1)
    finally:
        _emu.drop_barrier("")


def test_emulator_failures_name_the_problem():
    """A cluster barrier dropped in one place only lets peers exit early: the DSMEM access into an exited CTA (or the
    deadlock) is reported with its site, as an error of the op."""
    source = (CSRC / "glstm_cluster.cu").read_text().splitlines()
    line = next(i for i, text in enumerate(source) if "cluster.sync();  // peers may still be reading" in text) + 1
    torch.manual_seed(1)
    inputs = glstm_inputs(3, 4, 1, 32, 2, torch.float32, device="cpu")
    output, cell = OPS.glstm_persistent_fwd(*inputs, cluster_size=2)
    grad_output = torch.randn_like(output)
    args = (grad_output, None, *inputs, output, cell)
    _emu.drop_barrier(f"glstm_cluster.cu:{line}")
    try:
        with pytest.raises(RuntimeError, match=re.escape("map_shared_rank into cluster rank")):
            under_all_schedules(OPS.glstm_persistent_bwd, *args, cluster_size=2)
    finally:
        _emu.drop_barrier("")


# ---------------------------------------------------------------------------------------------------------------
# Same numbers whichever kernel runs


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 3, 2, 32, 16), (4, 19, 5, 48, 32)], ids=str)  # (T, B, I, H, R)
def test_flstm_forwards_round_alike(shape, dtype):
    """The single-CTA forward and the grid forward on one CTA share the order of every product (z over all H units,
    the gates over all R) in the emulator, and round where the reference rounds (z and the recurrent gate product to
    the element type): bitwise equal. (On a GPU the fp16/bf16 gate products run on tensor cores in the grid forward,
    so there only the fp32 results share the order.)"""
    torch.manual_seed(sum(shape))
    inputs = flstm_inputs(*shape, dtype, device="cpu")
    single = OPS.flstm_persistent_fwd(*inputs, cluster_size=1)
    grid = OPS.flstm_persistent_fwd(*inputs, grid_ctas=1)
    for single_result, grid_result in zip(single, grid):
        assert torch.equal(single_result, grid_result)


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_grid_forward_takes_a_misaligned_h0(dtype):
    """A contiguous h0 whose storage offset is not a multiple of 16 bytes (one row of a larger batch, say): the grid
    forward stages h0 with 16-byte loads, which the emulator checks (a misaligned __ldcg fails the launch), so the
    launcher must hand it an aligned copy; the result is that of the aligned h0."""
    torch.manual_seed(11)
    x, h0, c0, w1, w2, bias = flstm_inputs(2, 3, 4, 32, 16, dtype, device="cpu")
    misaligned = torch.empty(h0.numel() + 1, dtype=dtype)[1:].view_as(h0).copy_(h0)
    assert misaligned.is_contiguous() and misaligned.data_ptr() % 16 != 0
    aligned_results = OPS.flstm_persistent_fwd(x, h0, c0, w1, w2, bias, grid_ctas=2)
    misaligned_results = under_all_schedules(OPS.flstm_persistent_fwd, x, misaligned, c0, w1, w2, bias, grid_ctas=2)
    for aligned_result, misaligned_result in zip(aligned_results, misaligned_results):
        assert torch.equal(aligned_result, misaligned_result)


# ---------------------------------------------------------------------------------------------------------------
# The emulator's own checks


@pytest.mark.parametrize("name, message", [
    ("mixed_barriers", r"deadlock: .*__syncthreads at self_test\.cpp:\d+.*cluster\.sync at self_test\.cpp:\d+"),
    ("divergent_barrier", r"divergent barrier: .* wait at self_test\.cpp:\d+ and at self_test\.cpp:\d+"),
    ("misaligned_wmma", "WMMA pointer not 32-byte aligned"),
    ("partial_warp_wmma", "made different WMMA calls"),
    ("misaligned_ldcg", "__ldcg of a misaligned address"),
    ("exited_peer", "map_shared_rank into cluster rank 0, which has exited"),
    ("smem_without_attribute", r"65536 bytes exceeds the kernel's limit of 49152"),
    ("cluster_of_16_without_attribute", "cluster of 16 CTAs without the non-portable cluster size attribute"),
    ("smem_above_the_device", "cudaFuncSetAttribute refused 232464 bytes"),
])
def test_emulator_refuses_rule_breaking_kernels(name, message):
    """Small kernels that each break one rule (csrc/emu/self_test.cpp): the launch fails with a message naming it."""
    assert re.search(message, _emu.self_test(name)), _emu.self_test(name)
