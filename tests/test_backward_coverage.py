"""Issue 12's rule: "auto" never falls back to a per-step backward for a shape whose forward is persistent.

The kernel-choice rules of lstmkern/backends/cuda.py are pure functions of the sizes, the dtype, the opt-in shared
memory per block, the compute capability and the SM count, so every layer shape can be walked here without a GPU, on
the limits of three devices (H100/H200: 227 KiB, 9.0, 132 SMs; A100: 163 KiB, 8.0, 108 SMs; L40: 99 KiB, 8.9, 142
SMs). For each shape the persistent forward takes, some persistent backward (single CTA, cluster or grid) must fit
too. Residency (cudaOccupancy*) is a property of the device, checked at run time by the same functions the forward
uses; the GPU tests (tests/test_gpu_cuda.py) cover it.
"""
import pytest
import torch

from lstmkern.backends import cuda

DEVICES = {"H100": (232448, (9, 0), 132), "A100": (166912, (8, 0), 108), "L40": (101376, (8, 9), 142)}
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _glstm_backward_is_persistent(Hg, dtype, smem, cc):
    if cuda.glstm_smem_bytes(Hg, dtype) <= smem:
        return True
    return cc[0] == 9 and any(cuda._glstm_cluster_shape_ok(Hg, C) and cuda.glstm_cluster_bwd_smem_bytes(Hg, C, dtype)
                              <= smem for C in cuda._CLUSTER_SIZES)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_persistent_glstm_forward_has_a_persistent_backward(device, dtype):
    smem, cc, _sm_count = DEVICES[device]
    persistent = [Hg for Hg in list(range(1, 160)) + list(range(160, 1100, 16))
                  if cuda.persistent_rule(Hg, 8, dtype, smem, cc) is None]
    assert persistent, "the walk must reach shapes the forward takes"
    assert [Hg for Hg in persistent if not _glstm_backward_is_persistent(Hg, dtype, smem, cc)] == []


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_persistent_flstm_forward_has_a_persistent_backward(device, dtype):
    smem, cc, sm_count = DEVICES[device]
    persistent = [(H, R) for H in range(16, 4097, 16) for R in (16, 48, 64, 128, 256, 512, 1024)
                  if cuda.flstm_persistent_rule(H, R, 8, dtype, smem, cc, sm_count=sm_count) is None]
    multi_cta = [(H, R) for H, R in persistent if cuda.flstm_smem_bytes(H, R, dtype) > smem]
    assert multi_cta, "the walk must reach the cluster and grid forwards"
    assert [(H, R) for H, R in multi_cta
            if cuda.flstm_bwd_cluster_size(H, R, dtype, smem, cc) == 0
            and cuda.flstm_bwd_grid_ctas(H, R, dtype, smem, sm_count) == 0] == []
