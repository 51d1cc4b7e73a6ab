"""The "cuda" backend (persistent kernels) against the float64 reference, on a GPU (skipped without one).

Tolerance rule (tests/kernel_checks.py, shared with the emulator's tests/test_emu.py): for every output and gradient,
the kernel's relative error against the float64 reference (run on the same, already rounded inputs) may be at most
K times the error of the reference itself run in the input dtype, plus a floor (a few units in the last place for
fp16/bf16; 1e-5 for fp32, whose reference can be nearly exact by luck).
The kernels accumulate in float32 like the reference but in a different order, and round the recurrent products to the
input dtype where the reference does, so their error is of the same size as the reference's own low-precision error.

The thread-block-cluster G-LSTM kernels (Hopper, compute capability 9.x) are held to the same rule at the headline
group size Hg = 256 and an awkward one, and the cluster forward must match the single-CTA forward to a few units in
the last place where both run (same fragments, same k order, same cell code).

The thread-block-cluster F-LSTM forward (Hopper) is held to the same rule at the flstm-infer shape (I = H = 1024,
R = 256; C = 16 in fp16/bf16 on an H100, fp32 does not fit and is skipped) and an awkward one, with the backward
the cuda backend picks (the cluster backward, csrc/flstm_cluster_bwd.cu, where one fits; else Triton's); forced
cluster sizes at small shapes hold both kernels to the same rule, and the forward to the single-CTA forward's result
to a few units in the last place of the element type (it differs only in the order z is summed; all F-LSTM forwards
round z and the gate product to the element type as the reference does).

The grid-cooperative F-LSTM forward (compute capability >= 8.0) is held to the same rule at flstm-train's layer
(I = H = 2048, R = 512, at small T and B: N = 64 CTAs in fp16/bf16 and 128 in fp32 on an H100) and an awkward shape (R
not a multiple of 16 N: the last CTAs reduce no column of z), with the backward the cuda backend picks there (the
grid-cooperative backward, csrc/flstm_grid_bwd.cu, on as many CTAs), also through autograd; forced CTA counts at small
shapes must match the single-CTA forward like the cluster forward does, and match the cluster forward with as many
CTAs to an ulp or two (same fragments, same k order, same rank order of the z sum, same cell code); the forced grid
backward is held to the reference rule and, on 9.x, to the cluster backward with as many CTAs.

Projected G-LSTM layers (LSTMP) run forward and backward on the F-LSTM kernels' projected mode: the backend's choice
at small and headline shapes (the backward persistent wherever the forward is, on an H100 / H200), and each forced
backward kernel (single CTA, cluster, grid) at small shapes, all held to the same rule, dweight_hr included.

Shape legend: T time steps, B batch, I input features, H hidden units, G groups, Hg = H / G, Ig = I / G, R rank,
C thread-block-cluster size, N CTA count of the grid F-LSTM forward, P projection size.
"""
from __future__ import annotations

import pytest
import torch

import lstmkern
from lstmkern.backends import cuda as cuda_backend
from lstmkern.backends import resolve_backend
from kernel_checks import (DTYPES, FLOOR, K, assert_close_like_reference, assert_forward_like_reference,  # noqa: F401
                           assert_within_ulps, check_both_variants, check_forward_and_backward,
                           check_projected_forward_and_backward, flstm_inputs, glstm_inputs, projected_inputs)
from helpers import rel_err
from lstmkern.reference import flstm_reference, glstm_reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# Large sizes are chosen for 227 KiB of opt-in shared memory (H100); a GPU with less skips them.
GLSTM_SHAPES = [  # (T, B, G, Hg, Ig)
    (1, 1, 1, 1, 1),
    (1, 1, 3, 5, 3),
    (7, 17, 2, 33, 5),   # B crosses the 16-row WMMA tile and the 8-row FMA tile
    (5, 9, 3, 16, 16),   # exact WMMA tiles
    (40, 33, 4, 64, 48),
    (24, 64, 2, 112, 64),  # close to the fp32 shared-memory limit
    (16, 20, 2, 144, 32),  # the largest fp16/bf16 group on a 227 KiB GPU
]
# Shapes only the cluster forward runs on an H100 (227 KiB per CTA); the backward is then Triton's.
GLSTM_CLUSTER_SHAPES = [  # (T, B, G, Hg, Ig)
    (8, 16, 4, 256, 256),  # H = 1024, G = 4: C = 4 for fp16/bf16, C = 8 for fp32
    (5, 19, 3, 160, 7),    # B crosses the batch tiles, Hs = 80 (C = 2) is 5 WMMA tiles, odd T and Ig
]
# Forced cluster sizes at small Hg, compared with the single-CTA forward: (C, T, B, G, Hg, Ig).
GLSTM_FORCED_CLUSTERS = [(2, 6, 19, 2, 64, 5), (4, 3, 9, 1, 64, 3), (8, 4, 17, 2, 128, 4)]
# Shapes only the cluster F-LSTM forward runs on an H100: (T, B, I, H, R).
FLSTM_CLUSTER_SHAPES = [
    (8, 16, 1024, 1024, 256),  # flstm-infer: C = 16 in fp16/bf16 (217088 B per CTA); fp32 would need C = 32
    (5, 19, 7, 640, 48),       # B crosses the batch tiles, C = 4: Hs = 160 (10 WMMA tiles), Rs = 12, odd T and I
]
# Forced cluster sizes at small shapes, compared with the single-CTA forward: (C, T, B, I, H, R). T = 1 included.
FLSTM_FORCED_CLUSTERS = [(2, 6, 19, 5, 64, 16), (4, 3, 9, 3, 128, 32), (8, 4, 17, 4, 128, 16),
                         (16, 3, 5, 8, 256, 32), (16, 1, 2, 3, 256, 16)]
# Shapes only the grid-cooperative F-LSTM forward runs (no single CTA, no cluster fits): (T, B, I, H, R).
FLSTM_GRID_SHAPES = [
    (4, 16, 2048, 2048, 512),  # flstm-train's layer (B = 64, T = 256 in the benchmark): N = 64 (fp16/bf16), 128 (fp32)
    (3, 19, 7, 2048, 496),     # B crosses the batch tiles, odd T and I, R = 496: Rs = 8 at N = 64, the last 2 CTAs
]                              # reduce no column (Rs = 4 at N = 128: the last 4)
# Forced CTA counts at small shapes: (N, T, B, I, H, R). N = 6: Rs = 6 (one column per item, the last CTA 2 columns);
# N = 1: a grid of one CTA; T = 1 included.
FLSTM_FORCED_GRIDS = [(2, 6, 19, 5, 64, 16), (4, 3, 9, 3, 128, 32), (6, 4, 17, 4, 384, 32), (3, 1, 2, 3, 96, 48),
                      (1, 2, 5, 2, 32, 16)]
FLSTM_SHAPES = [  # (T, B, I, H, R)
    (1, 1, 1, 1, 1),
    (3, 1, 3, 5, 3),
    (9, 19, 20, 37, 11),
    (32, 24, 64, 128, 32),
    (16, 9, 256, 256, 35),
]


_assert_close_like_reference = assert_close_like_reference  # the tolerance rule: tests/kernel_checks.py


def _skip_if_unsupported(op, dtype, sizes):
    reason = cuda_backend.unsupported(op, torch.device("cuda"), dtype, sizes)
    if reason is not None and "shared memory" in reason:
        pytest.skip(f"this GPU cannot run the size: {reason}")
    assert reason is None, reason


def _device_limits():
    return int(torch.ops.lstmkern_cuda.device_smem_optin(torch.cuda.current_device())), \
        tuple(torch.cuda.get_device_capability())


def _skip_unless_clusters():
    smem, cc = _device_limits()
    if cc[0] != 9:
        pytest.skip(f"the cluster forward runs on compute capability 9.x only, this GPU is {cc[0]}.{cc[1]}")
    return smem, cc


HOPPER_SMEM_OPTIN = 232448  # cudaDevAttrMaxSharedMemoryPerBlockOptin of every sm_90 GPU (H100, H200): 227 KiB


def _require_headline_gpu(min_sms=0):
    """Skips unless this GPU has the limits the headline shapes' kernel choice is written for, measured rather than
    read off the device name (an H200 has the H100's SM): compute capability 9.x (thread-block clusters), exactly
    227 KiB of opt-in shared memory per block (the cluster sizes and CTA counts asserted below follow from it), and at
    least ``min_sms`` SMs (the grid forward places one CTA per SM; 16-CTA clusters need GPCs with 16 free SMs, which the
    132-SM parts have)."""
    smem, cc = _device_limits()
    sms = _sm_count()
    if cc[0] != 9 or smem != HOPPER_SMEM_OPTIN or sms < min_sms:
        pytest.skip(f"needs compute capability 9.x, {HOPPER_SMEM_OPTIN} bytes of opt-in shared memory per block and "
                    f">= {min_sms} SMs; this GPU ({torch.cuda.get_device_name()}) has {cc[0]}.{cc[1]}, {smem} bytes, "
                    f"{sms} SMs")
    return smem, cc


def _glstm_inputs(T, B, G, Hg, Ig, dtype):
    return glstm_inputs(T, B, G, Hg, Ig, dtype, device="cuda")


def _flstm_inputs(T, B, I, H, R, dtype):
    return flstm_inputs(T, B, I, H, R, dtype, device="cuda")


def _default_kernels(kind, fwd, bwd):
    """fwd / bwd: the functions under test, by default the cuda backend's."""
    default_fwd, default_bwd = (cuda_backend.glstm_fwd, cuda_backend.glstm_bwd) if kind == "glstm" else (
        cuda_backend.flstm_fwd, cuda_backend.flstm_bwd)
    return fwd or default_fwd, bwd or default_bwd


def _check_forward_and_backward(kind, inputs, dtype, with_bias, with_grad_cell, fwd=None, bwd=None):
    check_forward_and_backward(kind, inputs, dtype, with_bias, with_grad_cell, *_default_kernels(kind, fwd, bwd))


def _check_both_variants(kind, inputs, dtype, fwd=None, bwd=None):
    check_both_variants(kind, inputs, dtype, *_default_kernels(kind, fwd, bwd))


_assert_within_ulps = assert_within_ulps
_assert_forward_like_reference = assert_forward_like_reference


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", GLSTM_SHAPES, ids=str)
def test_glstm_matches_reference(shape, dtype):
    T, B, G, Hg, Ig = shape
    _skip_if_unsupported("glstm", dtype, (T, B, G * Ig, G * Hg, G, 0))
    torch.manual_seed(hash(shape) % 2**31)
    inputs = _glstm_inputs(T, B, G, Hg, Ig, dtype)
    _check_both_variants("glstm", inputs, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", GLSTM_CLUSTER_SHAPES, ids=str)
def test_glstm_cluster_matches_reference(shape, dtype):
    """The backend's own choice at group sizes beyond one CTA: cluster forward, Triton backward."""
    smem, cc = _skip_unless_clusters()
    T, B, G, Hg, Ig = shape
    if cuda_backend.glstm_cluster_size(Hg, dtype, smem, cc) < 2:
        pytest.skip(f"Hg={Hg} in {dtype} fits one CTA of this GPU ({smem} bytes): not a cluster shape here")
    _skip_if_unsupported("glstm", dtype, (T, B, G * Ig, G * Hg, G, 0))
    torch.manual_seed(hash(shape) % 2**31)
    inputs = _glstm_inputs(T, B, G, Hg, Ig, dtype)
    _check_both_variants("glstm", inputs, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("forced", GLSTM_FORCED_CLUSTERS, ids=str)
def test_glstm_forced_cluster_forward_equals_single_cta(forced, dtype):
    """cluster_size=C at a small Hg: the single-CTA forward's result where that fits (same fragments, same k order,
    same cell code, so equal up to how the compiler contracts the cell's float ops in each kernel: a few units in the
    last place), and within the reference rule."""
    smem, _cc = _skip_unless_clusters()
    C, T, B, G, Hg, Ig = forced
    torch.manual_seed(C * 1000 + Hg)
    x, h0, c0, w_ih, w_hh, bias = _glstm_inputs(T, B, G, Hg, Ig, dtype)
    fwd = torch.ops.lstmkern_cuda.glstm_persistent_fwd
    output, cell = fwd(x, h0, c0, w_ih, w_hh, bias, cluster_size=C)
    if cuda_backend._glstm_fwd_smem_bytes(Hg, dtype) <= smem:
        single_output, single_cell = fwd(x, h0, c0, w_ih, w_hh, bias, cluster_size=1)
        ulps = 4 * torch.finfo(dtype).eps
        _assert_within_ulps((output, cell), (single_output, single_cell), ulps, "the single-CTA kernel")
    _assert_forward_like_reference(glstm_reference, (x, h0, c0, w_ih, w_hh, bias), output, cell, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", GLSTM_CLUSTER_SHAPES, ids=str)
def test_glstm_cluster_backward_kernel_matches_reference(shape, dtype):
    """The cluster backward kernel (the op's automatic choice where the single-CTA backward does not fit, and
    glstm_bwd's), called directly."""
    smem, cc = _skip_unless_clusters()
    T, B, G, Hg, Ig = shape
    if cuda_backend.glstm_cluster_size(Hg, dtype, smem, cc) < 2:
        pytest.skip(f"Hg={Hg} in {dtype} fits one CTA of this GPU ({smem} bytes): not a cluster shape here")
    torch.manual_seed(hash(shape) % 2**31 + 1)
    inputs = _glstm_inputs(T, B, G, Hg, Ig, dtype)
    ops = torch.ops.lstmkern_cuda
    _check_both_variants("glstm", inputs, dtype, fwd=ops.glstm_persistent_fwd, bwd=ops.glstm_persistent_bwd)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("forced", GLSTM_FORCED_CLUSTERS, ids=str)
def test_glstm_forced_cluster_backward_matches_reference(forced, dtype):
    """cluster_size=C for both kernels at a small Hg (the partial sums make it differ from the single CTA in the
    last bits, so it is held to the reference rule rather than compared bitwise)."""
    _skip_unless_clusters()
    C, T, B, G, Hg, Ig = forced
    torch.manual_seed(C * 1000 + Hg + 1)
    inputs = _glstm_inputs(T, B, G, Hg, Ig, dtype)
    ops = torch.ops.lstmkern_cuda

    def fwd(*args):
        return ops.glstm_persistent_fwd(*args, cluster_size=C)

    def bwd(*args):
        return ops.glstm_persistent_bwd(*args, cluster_size=C)

    _check_forward_and_backward("glstm", inputs, dtype, with_bias=True, with_grad_cell=True, fwd=fwd, bwd=bwd)


def test_cluster_size_argument_is_checked():
    x, h0, c0, w_ih, w_hh, bias = _glstm_inputs(3, 2, 2, 48, 4, torch.float32)
    fwd = torch.ops.lstmkern_cuda.glstm_persistent_fwd
    for bad in (3, 16, -1, 2):  # 2: Hg = 48 is not a multiple of 32
        with pytest.raises(ValueError, match="cluster_size"):
            fwd(x, h0, c0, w_ih, w_hh, bias, cluster_size=bad)
    output, cell = fwd(x, h0, c0, w_ih, w_hh, bias)
    with pytest.raises(ValueError, match="cluster_size"):
        torch.ops.lstmkern_cuda.glstm_persistent_bwd(torch.ones_like(output), None, x, h0, c0, w_ih, w_hh, bias,
                                                    output, cell, cluster_size=2)
    if torch.cuda.get_device_capability()[0] != 9:
        x, h0, c0, w_ih, w_hh, bias = _glstm_inputs(3, 2, 2, 64, 4, torch.float32)
        with pytest.raises(ValueError, match="compute capability 9.x"):
            fwd(x, h0, c0, w_ih, w_hh, bias, cluster_size=2)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", FLSTM_SHAPES, ids=str)
def test_flstm_matches_reference(shape, dtype):
    T, B, I, H, R = shape
    _skip_if_unsupported("flstm", dtype, (T, B, I, H, 1, R))
    torch.manual_seed(hash(shape) % 2**31)
    inputs = _flstm_inputs(T, B, I, H, R, dtype)
    _check_both_variants("flstm", inputs, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", FLSTM_CLUSTER_SHAPES, ids=str)
def test_flstm_cluster_matches_reference(shape, dtype):
    """The backend's own choice beyond one CTA: cluster forward, the cluster backward where one fits (else Triton's),
    called the way autograd calls them."""
    smem, cc = _skip_unless_clusters()
    T, B, I, H, R = shape
    if cuda_backend.flstm_cluster_size(H, R, dtype, smem, cc) < 2:
        pytest.skip(f"H={H}, R={R} in {dtype} is not a cluster shape on this GPU ({smem} bytes; fits one CTA or "
                    "needs more than 16 CTAs)")
    _skip_if_unsupported("flstm", dtype, (T, B, I, H, 1, R))
    torch.manual_seed(hash(shape) % 2**31)
    inputs = _flstm_inputs(T, B, I, H, R, dtype)
    _check_both_variants("flstm", inputs, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("forced", FLSTM_FORCED_CLUSTERS, ids=str)
def test_flstm_forced_cluster_forward_equals_single_cta(forced, dtype):
    """cluster_size=C at a small shape: the single-CTA forward's result to a few units in the last place of the
    element type (z summed per rank then over ranks instead of in one k loop, and in fp16/bf16 multiplied on tensor
    cores), and within the reference rule."""
    smem, _cc = _skip_unless_clusters()
    C, T, B, I, H, R = forced
    torch.manual_seed(C * 1000 + H + T)
    x, h0, c0, w1, w2, bias = _flstm_inputs(T, B, I, H, R, dtype)
    fwd = torch.ops.lstmkern_cuda.flstm_persistent_fwd
    output, cell = fwd(x, h0, c0, w1, w2, bias, cluster_size=C)
    if cuda_backend.flstm_smem_bytes(H, R, dtype) <= smem:
        single_output, single_cell = fwd(x, h0, c0, w1, w2, bias, cluster_size=1)
        # fp32: both kernels are float32 FMA and differ only in the summation order of z (tens of ulps after a few
        # steps at most); fp16/bf16: a z rounded the other way moves h by about one ulp of the element type.
        ulps = (64 if dtype == torch.float32 else 4) * torch.finfo(dtype).eps
        _assert_within_ulps((output, cell), (single_output, single_cell), ulps, "the single-CTA kernel")
    _assert_forward_like_reference(flstm_reference, (x, h0, c0, w1, w2, bias), output, cell, dtype)


def test_flstm_cluster_size_argument_is_checked():
    x, h0, c0, w1, w2, bias = _flstm_inputs(3, 2, 4, 48, 16, torch.float32)
    fwd = torch.ops.lstmkern_cuda.flstm_persistent_fwd
    for bad in (3, 32, -1, 2):  # 2: H = 48 is not a multiple of 32
        with pytest.raises(ValueError, match="cluster_size"):
            fwd(x, h0, c0, w1, w2, bias, cluster_size=bad)
    x, h0, c0, w1, w2, bias = _flstm_inputs(3, 2, 4, 64, 24, torch.float32)
    with pytest.raises(ValueError, match="cluster_size"):  # R = 24 is not a multiple of 16
        fwd(x, h0, c0, w1, w2, bias, cluster_size=2)
    if torch.cuda.get_device_capability()[0] != 9:
        x, h0, c0, w1, w2, bias = _flstm_inputs(3, 2, 4, 64, 16, torch.float32)
        with pytest.raises(ValueError, match="compute capability 9.x"):
            fwd(x, h0, c0, w1, w2, bias, cluster_size=2)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("forced", FLSTM_FORCED_CLUSTERS, ids=str)
def test_flstm_forced_cluster_backward_matches_reference(forced, dtype):
    """cluster_size=C for both the forward and the backward kernel (csrc/flstm_cluster_bwd.cu) at small shapes: B past
    the batch tiles, T = 1, C = 16 (Rs = 1 and 2), with and without bias and a cell-state gradient."""
    _skip_unless_clusters()
    C, T, B, I, H, R = forced
    torch.manual_seed(C * 1000 + H + T + 1)
    inputs = _flstm_inputs(T, B, I, H, R, dtype)
    ops = torch.ops.lstmkern_cuda

    def fwd(*args):
        return ops.flstm_persistent_fwd(*args, cluster_size=C)

    def bwd(*args):
        return ops.flstm_persistent_bwd(*args, cluster_size=C)

    _check_both_variants("flstm", inputs, dtype, fwd=fwd, bwd=bwd)


@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16), ids=str)
def test_flstm_infer_backward_runs_on_the_cluster_kernel(dtype):
    """flstm-infer's layer (I = H = 1024, R = 256): the backward op's automatic choice and the backend's are the
    cluster backward with C = 16 on an H100/H200, and it holds to the reference rule."""
    smem, cc = _require_headline_gpu()
    assert cuda_backend.flstm_bwd_cluster_size(1024, 256, dtype, smem, cc) == 16
    assert cuda_backend._flstm_cluster_bwd_max_active(torch.cuda.current_device(), 1024, 256, 16, dtype) >= 1
    torch.manual_seed(12)
    inputs = _flstm_inputs(8, 16, 1024, 1024, 256, dtype)
    ops = torch.ops.lstmkern_cuda
    _check_forward_and_backward("flstm", inputs, dtype, with_bias=True, with_grad_cell=True,
                                fwd=ops.flstm_persistent_fwd, bwd=ops.flstm_persistent_bwd)


def test_flstm_backward_cluster_size_argument_is_checked():
    x, h0, c0, w1, w2, bias = _flstm_inputs(3, 2, 4, 48, 16, torch.float32)
    output, cell = torch.ops.lstmkern_cuda.flstm_persistent_fwd(x, h0, c0, w1, w2, bias)
    args = (torch.ones_like(output), None, x, h0, c0, w1, w2, bias, output, cell)
    for bad in (3, 32, -1, 2):  # 2: H = 48 is not a multiple of 32
        with pytest.raises(ValueError, match="cluster_size"):
            torch.ops.lstmkern_cuda.flstm_persistent_bwd(*args, cluster_size=bad)


def _sm_count():
    return torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", FLSTM_GRID_SHAPES, ids=str)
def test_flstm_grid_matches_reference(shape, dtype):
    """The backend's own choice beyond any cluster: grid-cooperative forward and backward (called the way autograd calls
    them)."""
    T, B, I, H, R = shape
    smem, cc = _device_limits()
    if cuda_backend.flstm_cluster_size(H, R, dtype, smem, cc) != 0:
        pytest.skip(f"H={H}, R={R} in {dtype} fits one CTA or a cluster of this GPU: not a grid shape here")
    if cuda_backend.flstm_grid_ctas(H, R, dtype, smem, _sm_count()) == 0:
        pytest.skip(f"H={H}, R={R} in {dtype}: the grid forward does not fit this GPU ({smem} bytes, "
                    f"{_sm_count()} SMs)")
    _skip_if_unsupported("flstm", dtype, (T, B, I, H, 1, R))
    torch.manual_seed(hash(shape) % 2**31)
    inputs = _flstm_inputs(T, B, I, H, R, dtype)
    _check_both_variants("flstm", inputs, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("forced", FLSTM_FORCED_GRIDS, ids=str)
def test_flstm_forced_grid_forward_equals_single_cta(forced, dtype):
    """grid_ctas=N at a small shape: the single-CTA forward's result to a few units in the last place (as for the
    cluster forward: z summed per rank then over ranks, rounded to the element type in fp16/bf16), within the
    reference rule, and on 9.x bitwise the cluster forward's with C = N where that cluster size exists."""
    N, T, B, I, H, R = forced
    smem, cc = _device_limits()
    torch.manual_seed(N * 1000 + H + T)
    x, h0, c0, w1, w2, bias = _flstm_inputs(T, B, I, H, R, dtype)
    fwd = torch.ops.lstmkern_cuda.flstm_persistent_fwd
    output, cell = fwd(x, h0, c0, w1, w2, bias, grid_ctas=N)
    if cuda_backend.flstm_smem_bytes(H, R, dtype) <= smem:
        single_output, single_cell = fwd(x, h0, c0, w1, w2, bias, cluster_size=1)
        ulps = (64 if dtype == torch.float32 else 4) * torch.finfo(dtype).eps
        _assert_within_ulps((output, cell), (single_output, single_cell), ulps, "the single-CTA kernel")
    if cc[0] == 9 and N in (2, 4, 8, 16):
        # Same partial products, same rank order of the z sum, same gate product and cell code: bitwise equal unless
        # the compiler contracts the cell's expressions differently in the two kernels (then within an ulp or two).
        cluster_output, cluster_cell = fwd(x, h0, c0, w1, w2, bias, cluster_size=N)
        _assert_within_ulps((output, cell), (cluster_output, cluster_cell), 2 * torch.finfo(dtype).eps,
                            "the cluster kernel")
    _assert_forward_like_reference(flstm_reference, (x, h0, c0, w1, w2, bias), output, cell, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("forced", FLSTM_FORCED_GRIDS, ids=str)
def test_flstm_forced_grid_backward_matches_reference(forced, dtype):
    """grid_ctas=N for both the forward and the backward kernel (csrc/flstm_grid_bwd.cu) at small shapes: B past the
    batch tiles, T = 1, N = 1, N not a power of two, with and without bias and a cell-state gradient; on 9.x every
    gradient within an ulp or two of the cluster backward with C = N (same products, same rank order of the dz sum)."""
    N, T, B, I, H, R = forced
    smem, cc = _device_limits()
    if N > _sm_count():
        pytest.skip(f"grid_ctas={N} exceeds the {_sm_count()} SMs of this GPU")
    torch.manual_seed(N * 1000 + H + T + 2)
    inputs = _flstm_inputs(T, B, I, H, R, dtype)
    ops = torch.ops.lstmkern_cuda

    def fwd(*args):
        return ops.flstm_persistent_fwd(*args, grid_ctas=N)

    def bwd(*args):
        return ops.flstm_persistent_bwd(*args, grid_ctas=N)

    _check_both_variants("flstm", inputs, dtype, fwd=fwd, bwd=bwd)
    if cc[0] == 9 and N in (2, 4, 8, 16):
        output, cell = ops.flstm_persistent_fwd(*inputs, cluster_size=N)
        args = (torch.randn_like(output), torch.randn_like(cell), *inputs, output, cell)
        grid_grads = ops.flstm_persistent_bwd(*args, grid_ctas=N)
        cluster_grads = ops.flstm_persistent_bwd(*args, cluster_size=N)
        # Bitwise equal unless the compiler contracts the cell's expressions differently in the two kernels (then a
        # few ulps, carried through the recurrence and the gradient GEMMs).
        ulps = (16 if dtype == torch.float32 else 2) * torch.finfo(dtype).eps
        for name, got, other in zip(("dx", "dh0", "dc0", "dweight_1", "dweight_2", "dbias"), grid_grads,
                                    cluster_grads):
            assert rel_err(got, other) <= ulps, (name, rel_err(got, other))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_flstm_train_backward_runs_on_the_grid_kernel(dtype):
    """flstm-train's layer (I = H = 2048, R = 512): no single CTA or cluster fits an H100/H200, so the backward op's
    automatic choice and the backend's are the grid backward on as many CTAs as the grid forward (64 in fp16/bf16, 128
    in fp32), all resident, and it holds to the reference rule (T = 2, B = 64)."""
    smem, cc = _require_headline_gpu(min_sms=64)
    N = cuda_backend.flstm_grid_ctas(2048, 512, dtype, smem, _sm_count())
    if N == 0:
        pytest.skip(f"the grid forward of flstm-train in {dtype} does not fit this GPU ({_sm_count()} SMs)")
    assert cuda_backend.flstm_bwd_cluster_size(2048, 512, dtype, smem, cc) == 0
    assert cuda_backend.flstm_bwd_grid_ctas(2048, 512, dtype, smem, _sm_count()) == N
    resident = torch.ops.lstmkern_cuda.flstm_grid_bwd_max_resident_ctas(torch.cuda.current_device(), 2048, 512, N,
                                                                        dtype)
    assert resident >= N, resident
    assert cuda_backend._flstm_backward_kernel(torch.cuda.current_device(), 2048, 512, dtype, smem, cc,
                                               _sm_count()) == (0, N)
    torch.manual_seed(21)
    inputs = _flstm_inputs(2, 64, 2048, 2048, 512, dtype)
    ops = torch.ops.lstmkern_cuda
    _check_forward_and_backward("flstm", inputs, dtype, with_bias=True, with_grad_cell=True,
                                fwd=ops.flstm_persistent_fwd, bwd=ops.flstm_persistent_bwd)


def test_flstm_backward_grid_ctas_argument_is_checked():
    x, h0, c0, w1, w2, bias = _flstm_inputs(3, 2, 4, 64, 16, torch.float32)
    output, cell = torch.ops.lstmkern_cuda.flstm_persistent_fwd(x, h0, c0, w1, w2, bias)
    args = (torch.ones_like(output), None, x, h0, c0, w1, w2, bias, output, cell)
    bwd = torch.ops.lstmkern_cuda.flstm_persistent_bwd
    for bad in (-1, 3, 8):  # 3, 8: H = 64 is not a multiple of 16 * grid_ctas
        with pytest.raises(ValueError, match="grid_ctas"):
            bwd(*args, grid_ctas=bad)
    with pytest.raises(ValueError, match="cluster_size and grid_ctas"):
        bwd(*args, cluster_size=2, grid_ctas=2)


def test_flstm_grid_ctas_argument_is_checked():
    x, h0, c0, w1, w2, bias = _flstm_inputs(3, 2, 4, 64, 16, torch.float32)
    fwd = torch.ops.lstmkern_cuda.flstm_persistent_fwd
    for bad in (-1, 3, 8):  # 3, 8: H = 64 is not a multiple of 16 * grid_ctas
        with pytest.raises(ValueError, match="grid_ctas"):
            fwd(x, h0, c0, w1, w2, bias, grid_ctas=bad)
    with pytest.raises(ValueError, match="cluster_size and grid_ctas"):
        fwd(x, h0, c0, w1, w2, bias, cluster_size=2, grid_ctas=2)
    x, h0, c0, w1, w2, bias = _flstm_inputs(3, 2, 4, 64, 24, torch.float32)
    with pytest.raises(ValueError, match="grid_ctas"):  # R = 24 is not a multiple of 16
        fwd(x, h0, c0, w1, w2, bias, grid_ctas=2)
    N = 1 << (_sm_count().bit_length())  # a power of two above the SM count
    x, h0, c0, w1, w2, bias = _flstm_inputs(1, 1, 1, 16 * N, 16, torch.float32)
    with pytest.raises(ValueError, match="SMs"):
        fwd(x, h0, c0, w1, w2, bias, grid_ctas=N)


def _check_autograd_like_reference(forward, inputs, grad_names, dtype, backend="cuda"):
    """``forward`` (lstmkern.glstm_forward or flstm_forward) on ``backend`` with autograd, against the reference run in
    ``dtype`` and in float64: the output and the gradients of x, both weights and the bias.

    inputs: (x, h0, c0, weight_a, weight_b, bias); grad_names: the names of the weight and bias gradients.
    """
    x, h0, c0, *params = inputs
    runs = []
    for run_backend, cast in ((backend, lambda t: t), ("reference", lambda t: t), ("reference", torch.Tensor.double)):
        leaves = [cast(t.detach()).clone().requires_grad_() for t in (x, *params)]
        out, (_, c_n) = forward(leaves[0], (cast(h0), cast(c0)), *leaves[1:], backend=run_backend)
        (out.double().square().sum() + c_n.double().sum()).backward()
        runs.append((out, leaves))
    (out, leaves), (out_low, leaves_low), (out64, leaves64) = runs
    _assert_close_like_reference("output", out, out_low, out64, dtype)
    for name, a, lo, r in zip(("dx", *grad_names), leaves, leaves_low, leaves64):
        _assert_close_like_reference(name, a.grad, lo.grad, r.grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
# single CTA; C = 16 on an H100; the grid forward (flstm-train's layer) on an H100
@pytest.mark.parametrize("shape", [(4, 3, 5, 24, 8), (3, 16, 1024, 1024, 256), (4, 16, 2048, 2048, 512)], ids=str)
def test_public_api_flstm_autograd_on_cuda_backend(shape, dtype):
    """End to end: lstmkern.flstm_forward with backend="cuda" and autograd (the cluster and grid shapes' backward is
    Triton's)."""
    torch.manual_seed(1)
    T, B, I, H, R = shape
    _skip_if_unsupported("flstm", dtype, (T, B, I, H, 1, R))
    _check_autograd_like_reference(lstmkern.flstm_forward, _flstm_inputs(T, B, I, H, R, dtype),
                                   ("dweight_1", "dweight_2", "dbias"), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(6, 5, 3, 24, 8), (4, 5, 4, 256, 16)], ids=str)  # single CTA; cluster on an H100
def test_public_api_autograd_on_cuda_backend(shape, dtype):
    """End to end: lstmkern.glstm_forward with backend="cuda" and autograd, against float64."""
    torch.manual_seed(0)
    T, B, G, Hg, Ig = shape
    _skip_if_unsupported("glstm", dtype, (T, B, G * Ig, G * Hg, G, 0))
    _check_autograd_like_reference(lstmkern.glstm_forward, _glstm_inputs(T, B, G, Hg, Ig, dtype),
                                   ("dweight_ih", "dweight_hh", "dbias"), dtype)


def test_auto_picks_cuda_where_supported_and_falls_back_otherwise():
    for dtype in DTYPES:
        assert resolve_backend("auto", "glstm", torch.device("cuda"), dtype, (4, 2, 8, 8, 2, 0)) == "cuda"
    assert resolve_backend("auto", "glstm", torch.device("cuda"), torch.float64, (4, 2, 8, 8, 2, 0)) != "cuda"
    huge = (4, 2, 1024, 1024, 1, 0)  # Hg = 1024 never fits one CTA's shared memory
    assert "shared memory" in cuda_backend.unsupported("glstm", torch.device("cuda"), torch.float32, huge)
    assert resolve_backend("auto", "glstm", torch.device("cuda"), torch.float32, huge) != "cuda"


def test_auto_picks_cuda_for_the_headline_glstm_on_hopper():
    """H = 1024, G = 4 (Hg = 256) in bf16 does not fit one CTA; on a Hopper GPU (H100, H200) "auto" runs the cluster
    forward with 4 CTAs per group, and such a cluster can be resident."""
    smem, cc = _require_headline_gpu()
    sizes = (512, 16, 1024, 1024, 4, 0)
    assert cuda_backend.unsupported("glstm", torch.device("cuda"), torch.bfloat16, sizes) is None
    assert resolve_backend("auto", "glstm", torch.device("cuda"), torch.bfloat16, sizes) == "cuda"
    assert cuda_backend.glstm_cluster_size(256, torch.bfloat16, smem, cc) == 4
    active = torch.ops.lstmkern_cuda.glstm_cluster_max_active_clusters(torch.cuda.current_device(), 256, 4,
                                                                      torch.bfloat16)
    assert active >= 1, active
    assert resolve_backend("auto", "glstm", torch.device("cuda"), torch.bfloat16, (256, 64, 2048, 2048, 8, 0)) == "cuda"


def test_auto_picks_cuda_for_the_headline_flstm_on_hopper():
    """flstm-infer (I = H = 1024, R = 256, B = 16) in bf16 does not fit one CTA; on a 132-SM Hopper GPU (H100 SXM,
    H200) "auto" runs the cluster forward with 16 CTAs per batch tile (and the forward really launches: C = 16 is
    resident)."""
    smem, cc = _require_headline_gpu(min_sms=132)
    sizes = (512, 16, 1024, 1024, 1, 256)
    assert cuda_backend.unsupported("flstm", torch.device("cuda"), torch.bfloat16, sizes) is None
    assert resolve_backend("auto", "flstm", torch.device("cuda"), torch.bfloat16, sizes) == "cuda"
    assert cuda_backend.flstm_cluster_size(1024, 256, torch.bfloat16, smem, cc) == 16
    # fp32 would need C = 32: the grid-cooperative forward takes it (N = 32).
    assert resolve_backend("auto", "flstm", torch.device("cuda"), torch.float32, sizes) == "cuda"
    assert cuda_backend.flstm_grid_ctas(1024, 256, torch.float32, smem, _sm_count()) == 32
    x, h0, c0, w1, w2, bias = _flstm_inputs(2, 16, 1024, 1024, 256, torch.bfloat16)
    output, _cell = cuda_backend.flstm_fwd(x, h0, c0, w1, w2, bias)
    assert torch.isfinite(output).all()


def test_auto_picks_cuda_for_flstm_train_on_hopper():
    """flstm-train (I = H = 2048, R = 512, B = 64, T = 256) in bf16 fits no cluster; on a Hopper GPU with 64 SMs or
    more "auto" runs the grid-cooperative forward on 64 CTAs (and it really launches: all 64 are resident)."""
    smem, cc = _require_headline_gpu(min_sms=64)
    sizes = (256, 64, 2048, 2048, 1, 512)
    assert cuda_backend.unsupported("flstm", torch.device("cuda"), torch.bfloat16, sizes) is None
    assert resolve_backend("auto", "flstm", torch.device("cuda"), torch.bfloat16, sizes) == "cuda"
    assert cuda_backend.flstm_cluster_size(2048, 512, torch.bfloat16, smem, cc) == 0
    assert cuda_backend.flstm_grid_ctas(2048, 512, torch.bfloat16, smem, _sm_count()) == 64
    resident = torch.ops.lstmkern_cuda.flstm_grid_max_resident_ctas(torch.cuda.current_device(), 2048, 512, 64,
                                                                     torch.bfloat16)
    assert resident >= 64, resident
    torch.manual_seed(3)
    x, h0, c0, w1, w2, bias = _flstm_inputs(2, 64, 2048, 2048, 512, torch.bfloat16)
    output, cell = cuda_backend.flstm_fwd(x, h0, c0, w1, w2, bias)
    out_low, cell_low = flstm_reference(x, h0, c0, w1, w2, bias)
    out_64, cell_64 = flstm_reference(*(t.double() for t in (x, h0, c0, w1, w2, bias)))
    _assert_close_like_reference("output", output, out_low, out_64, torch.bfloat16)
    _assert_close_like_reference("cell", cell, cell_low, cell_64, torch.bfloat16)


def _element_aligned_copy(tensor):
    """A contiguous copy of ``tensor`` whose data starts one element into its storage, as torch.empty(n + 1)[1:]
    gives: aligned to its element size only (2 or 4 bytes past a 16-byte boundary), like a slice of a larger buffer."""
    if tensor is None:
        return None
    copy = torch.empty(tensor.numel() + 1, dtype=tensor.dtype, device=tensor.device)[1:].view(tensor.shape)
    copy.copy_(tensor)
    assert copy.is_contiguous() and copy.data_ptr() % 16 != 0
    return copy


# Every kernel variant, forced at small shapes: (kind, forced kernel of the forward, of the backward). The grid forward
# reads h0 with 16-byte loads and faulted on such an h0 before its launcher learned to copy it; the other kernels read
# every user tensor element by element, which this keeps true.
_ALIGNMENT_VARIANTS = [("glstm", {"cluster_size": 1}, {"cluster_size": 1}),
                       ("glstm", {"cluster_size": 2}, {"cluster_size": 2}),
                       ("flstm", {"cluster_size": 1}, {}),
                       ("flstm", {"cluster_size": 2}, {}),
                       ("flstm", {"grid_ctas": 2}, {}),
                       ("flstm", {"grid_ctas": 2}, {"grid_ctas": 2})]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind,forward_kernel,backward_kernel", _ALIGNMENT_VARIANTS,
                         ids=["glstm-cta", "glstm-cluster2", "flstm-cta", "flstm-cluster2", "flstm-grid2",
                              "flstm-grid2-bwd"])
def test_kernels_take_tensors_that_are_only_element_aligned(kind, forward_kernel, backward_kernel, dtype):
    """Inputs, gradients and saved tensors that are contiguous but start one element into their storage: the results
    keep to the tolerance rule (no fault, no misread), for every kernel."""
    if forward_kernel.get("cluster_size", 1) > 1:
        _skip_unless_clusters()
    ops = torch.ops.lstmkern_cuda
    torch.manual_seed(17)
    if kind == "glstm":
        inputs = _glstm_inputs(3, 5, 2, 32, 3, dtype)  # Hg = 32: two CTAs of 16 units in the cluster variant
        fwd_op, bwd_op = ops.glstm_persistent_fwd, ops.glstm_persistent_bwd
    else:
        inputs = _flstm_inputs(3, 5, 3, 64, 32, dtype)  # H = 64, R = 32: 32 units per CTA in the multi-CTA variants
        fwd_op, bwd_op = ops.flstm_persistent_fwd, ops.flstm_persistent_bwd

    def fwd(*tensors):
        return fwd_op(*(_element_aligned_copy(t) for t in tensors), **forward_kernel)

    def bwd(*tensors):
        return bwd_op(*(_element_aligned_copy(t) for t in tensors), **backward_kernel)

    _check_both_variants(kind, [_element_aligned_copy(t) for t in inputs], dtype, fwd=fwd, bwd=bwd)


def test_launches_from_two_host_threads_at_once():
    """Two host threads launch the same kernel (single-CTA G-LSTM forward, float32) with different shared memory at
    once, each on its own stream: every launch succeeds and matches the single-threaded result bitwise. (The kernel's
    shared-memory limit is process state: it must never be lowered under a launch another thread prepared.)"""
    import threading

    torch.manual_seed(23)
    cases = [_glstm_inputs(4, 3, 2, Hg, 4, torch.float32) for Hg in (16, 96)]  # 7168 and 165888 bytes per CTA
    expected = [cuda_backend.glstm_fwd(*inputs) for inputs in cases]
    torch.cuda.synchronize()
    failures = []

    def worker(order):
        stream = torch.cuda.Stream()
        try:
            with torch.cuda.stream(stream):
                for _ in range(25):
                    for index in order:
                        output, cell = cuda_backend.glstm_fwd(*cases[index])
                        stream.synchronize()
                        if not (torch.equal(output, expected[index][0]) and torch.equal(cell, expected[index][1])):
                            failures.append(f"case {index}: result differs from the single-threaded one")
        except Exception as err:  # noqa: BLE001 - collected and asserted on the main thread
            failures.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=worker, args=(order,)) for order in ((0, 1), (1, 0))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]


def test_kernels_reject_bad_arguments_with_named_errors():
    x, h0, c0, w_ih, w_hh, bias = _glstm_inputs(3, 2, 2, 8, 4, torch.float32)
    with pytest.raises(ValueError, match="weight_ih"):
        cuda_backend.glstm_fwd(x, h0, c0, w_ih[:, :, :3].contiguous(), w_hh, bias)
    with pytest.raises(TypeError, match="h0"):
        cuda_backend.glstm_fwd(x, h0.half(), c0, w_ih, w_hh, bias)
    with pytest.raises(ValueError, match="shared memory"):
        big = torch.zeros(1, 4 * 1024, 1024, device="cuda")
        cuda_backend.glstm_fwd(torch.zeros(2, 1, 4, device="cuda"), torch.zeros(1, 1024, device="cuda"),
                               torch.zeros(1, 1024, device="cuda"), torch.zeros(1, 4096, 4, device="cuda"), big, None)


def test_runs_on_the_current_stream():
    """Launches go to the current stream: results are correct when produced on a side stream."""
    x, h0, c0, w_ih, w_hh, bias = _glstm_inputs(5, 3, 2, 16, 4, torch.float32)
    expected, _ = cuda_backend.glstm_fwd(x, h0, c0, w_ih, w_hh, bias)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        output, _ = cuda_backend.glstm_fwd(x, h0, c0, w_ih, w_hh, bias)
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(output, expected, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# Projected layers (LSTMP, weight_hr (P, H)): forward and backward on the F-LSTM kernels' projected mode (the backward
# of the backend's choice: single CTA, cluster or grid, Triton's only where none fits or is resident).
# Shape legend here: P projection size, Pg = P / G.

# The backend's own choice: (T, B, I, H, P, G). One CTA (G = 2, B past the 8-row tile); a cluster beyond one CTA
# (H = 1024, P = 256, G = 4: C = 8 in fp16/bf16 on an H100); a plain LSTMP (G = 1) needing C = 16 in fp16/bf16; the
# BIGLSTM-like layer scaled to one GPU (H = 4096, P = 1024, G = 4): the grid forward, N = 128 in fp16/bf16 on an H100.
PROJECTED_SHAPES = [(5, 19, 7, 64, 32, 2), (6, 16, 256, 1024, 256, 4), (4, 9, 64, 1024, 256, 1),
                    (3, 16, 1024, 4096, 1024, 4)]
# Forced cluster sizes at small shapes: (C, T, B, I, H, P, G); T = 1 and B = 17 included, C = 16 with Rs = 1.
PROJECTED_FORCED_CLUSTERS = [(2, 5, 19, 5, 64, 32, 1), (4, 1, 17, 8, 128, 64, 4), (4, 3, 9, 6, 128, 32, 2),
                             (16, 2, 3, 4, 256, 16, 1)]
# Forced CTA counts of the grid projected forward: (N, T, B, I, H, P, G); N = 6 with G = 2 (Rs = 6, the last CTA 2
# columns), T = 1 included.
PROJECTED_FORCED_GRIDS = [(2, 5, 19, 6, 64, 32, 2), (4, 1, 17, 8, 128, 64, 4), (6, 3, 9, 4, 192, 32, 2)]


def _projected_inputs(T, B, I, H, P, G, dtype):
    from kernel_checks import projected_inputs
    return projected_inputs(T, B, I, H, P, G, dtype, device="cuda")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", PROJECTED_SHAPES, ids=str)
def test_projected_glstm_matches_reference(shape, dtype):
    """Forward and backward through the backend functions (what the op calls), with and without bias, against the
    float64 reference by the tolerance rule, dweight_hr included."""
    from lstmkern.reference import glstm_reference_backward
    T, B, I, H, P, G = shape
    _skip_if_unsupported("glstm", dtype, (T, B, I, H, G, 0, P, False))
    torch.manual_seed(hash(shape) % 2**31)
    x, h0, c0, w_ih, w_hh, bias_in, w_hr = _projected_inputs(T, B, I, H, P, G, dtype)
    for bias in (bias_in, None):
        inputs64 = [None if t is None else t.double() for t in (x, h0, c0, w_ih, w_hh, bias, w_hr)]
        output, cell = cuda_backend.glstm_fwd(x, h0, c0, w_ih, w_hh, bias, w_hr)
        out_low, cell_low = glstm_reference(x, h0, c0, w_ih, w_hh, bias, w_hr)
        out_64, cell_64 = glstm_reference(*inputs64)
        _assert_close_like_reference("output", output, out_low, out_64, dtype)
        _assert_close_like_reference("cell", cell, cell_low, cell_64, dtype)
        grad_output = torch.randn(T, B, P, device="cuda", dtype=torch.float64)
        grad_cell = torch.randn(T, B, H, device="cuda", dtype=torch.float64)
        grads = cuda_backend.glstm_bwd(grad_output.to(dtype), grad_cell.float(), x, h0, c0, w_ih, w_hh, bias, output,
                                       cell, w_hr)
        grads_low = glstm_reference_backward(grad_output.to(dtype), grad_cell.float(), x, h0, c0, w_ih, w_hh, bias,
                                             out_low, cell_low, w_hr)
        grads_64 = glstm_reference_backward(grad_output, grad_cell, *inputs64[:6], out_64, cell_64, inputs64[6])
        names = ("dx", "dh0", "dc0", "dweight_ih", "dweight_hh", "dbias", "dweight_hr")
        assert len(grads) == len(names)
        for name, g, g_low, g_64 in zip(names, grads, grads_low, grads_64):
            _assert_close_like_reference(name, g, g_low, g_64, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("forced", PROJECTED_FORCED_CLUSTERS, ids=str)
def test_projected_forced_cluster_forward_matches_reference(forced, dtype):
    """cluster_size=C of the projected forward at small shapes (WMMA gate and projection products in fp16/bf16):
    within the reference rule, and within a few units in the last place of the single-CTA projected forward."""
    _skip_unless_clusters()
    C, T, B, I, H, P, G = forced
    torch.manual_seed(C * 1000 + H + G)
    x, h0, c0, w_ih, w_hh, bias, w_hr = _projected_inputs(T, B, I, H, P, G, dtype)
    fwd = torch.ops.lstmkern_cuda.glstm_persistent_fwd
    output, cell = fwd(x, h0, c0, w_ih, w_hh, bias, cluster_size=C, weight_hr=w_hr)
    single_output, single_cell = fwd(x, h0, c0, w_ih, w_hh, bias, cluster_size=1, weight_hr=w_hr)
    ulps = (64 if dtype == torch.float32 else 4) * torch.finfo(dtype).eps
    assert_within_ulps((output, cell), (single_output, single_cell), ulps, "the single-CTA projected kernel")
    assert_forward_like_reference(glstm_reference, (x, h0, c0, w_ih, w_hh, bias, w_hr), output, cell, dtype)


def test_projected_flstm_is_left_to_triton():
    reason = cuda_backend.unsupported("flstm", torch.device("cuda"), torch.float32, (3, 2, 4, 64, 1, 16, 32, False))
    assert reason is not None and "projected F-LSTM" in reason
    assert resolve_backend("auto", "flstm", torch.device("cuda"), torch.float32, (3, 2, 4, 64, 1, 16, 32, False)) != \
        "cuda"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("forced", PROJECTED_FORCED_GRIDS, ids=str)
def test_projected_forced_grid_forward_matches_reference(forced, dtype):
    """grid_ctas=N of the projected forward at small shapes: within the reference rule and within a few units in the
    last place of the single-CTA projected forward (on tensor cores in fp16/bf16 the order differs)."""
    N, T, B, I, H, P, G = forced
    torch.manual_seed(N * 1000 + H + G)
    x, h0, c0, w_ih, w_hh, bias, w_hr = _projected_inputs(T, B, I, H, P, G, dtype)
    fwd = torch.ops.lstmkern_cuda.glstm_persistent_fwd
    output, cell = fwd(x, h0, c0, w_ih, w_hh, bias, weight_hr=w_hr, grid_ctas=N)
    single_output, single_cell = fwd(x, h0, c0, w_ih, w_hh, bias, cluster_size=1, weight_hr=w_hr)
    ulps = (64 if dtype == torch.float32 else 4) * torch.finfo(dtype).eps
    assert_within_ulps((output, cell), (single_output, single_cell), ulps, "the single-CTA projected kernel")
    assert_forward_like_reference(glstm_reference, (x, h0, c0, w_ih, w_hh, bias, w_hr), output, cell, dtype)


# Forced kernels of the projected backward at small shapes, with the forward forced alike: (kernel, T, B, I, H, P, G,
# dense_input). The single CTA (G = 3, odd B; the dense input); clusters of 2 and 4 with G = 1 and 2 (B = 19: two
# batch tiles; T = 1); the grid with N = 1, 2 and 3 (G = 3, Rs = 16; G = 1 with Rs = 11, one column per item).
PROJECTED_FORCED_BACKWARDS = [
    ({"cluster_size": 1}, 3, 19, 6, 12, 6, 3, False), ({"cluster_size": 1}, 2, 5, 3, 16, 8, 2, True),
    ({"cluster_size": 2}, 3, 19, 5, 64, 32, 1, False), ({"cluster_size": 4}, 1, 5, 6, 128, 32, 2, True),
    ({"grid_ctas": 1}, 1, 5, 2, 16, 16, 1, False), ({"grid_ctas": 2}, 3, 19, 6, 64, 32, 1, False),
    ({"grid_ctas": 3}, 2, 3, 3, 96, 48, 3, False), ({"grid_ctas": 3}, 2, 9, 4, 48, 32, 1, False)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("forced", PROJECTED_FORCED_BACKWARDS, ids=str)
def test_projected_forced_backward_matches_reference(forced, dtype):
    """The projected backward on each kernel (csrc/flstm_persistent.cu, flstm_cluster_bwd.cu, flstm_grid_bwd.cu in
    their projected mode; tensor cores in fp16/bf16 on the multi-CTA ones), with and without bias and grad_cell, every
    gradient (dweight_hr included) against the float64 reference by the tolerance rule."""
    kernel, T, B, I, H, P, G, dense = forced
    if kernel.get("cluster_size", 1) > 1:
        _skip_unless_clusters()
    ops = torch.ops.lstmkern_cuda
    torch.manual_seed(sum(forced[1:7]))
    inputs = projected_inputs(T, B, I, H, P, G, dtype, device="cuda", dense_input=dense)
    for with_bias, with_grad_cell in ((True, True), (False, False)):
        check_projected_forward_and_backward(inputs, dtype, with_bias, with_grad_cell,
                                             fwd=lambda *args, **kwargs: ops.glstm_persistent_fwd(*args, **kwargs,
                                                                                                  **kernel),
                                             bwd=lambda *args, **kwargs: ops.glstm_persistent_bwd(*args, **kwargs,
                                                                                                  **kernel))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_projected_headline_backwards_run_on_persistent_kernels(monkeypatch, dtype):
    """On an H100 / H200 the backward of every projected shape of PROJECTED_SHAPES whose forward the backend runs is a
    persistent kernel (one CTA, the cluster of C = 8 / 16, the grid of N = 128 for the BIGLSTM-like layer), never
    Triton's per-step backward; and its gradients keep to the reference rule."""
    _require_headline_gpu(min_sms=132)
    from lstmkern.backends import triton as triton_backend
    monkeypatch.setattr(triton_backend, "glstm_bwd", lambda *args: pytest.fail("Triton's backward was called"))
    smem, cc = _device_limits()
    for T, B, I, H, P, G in PROJECTED_SHAPES:
        if cuda_backend.unsupported("glstm", torch.device("cuda"), dtype, (T, B, I, H, G, 0, P, False)) is not None:
            continue  # e.g. fp32 BIGLSTM: no persistent forward either
        kernel = cuda_backend._projected_backward_kernel(torch.cuda.current_device(), H, P, G, dtype, smem, cc,
                                                         _sm_count())
        assert kernel != (0, 0), (H, P, G)
        torch.manual_seed(H + P + G)
        inputs = _projected_inputs(min(T, 2), B, I, H, P, G, dtype)
        check_projected_forward_and_backward(inputs, dtype, True, True, fwd=cuda_backend.glstm_fwd,
                                             bwd=cuda_backend.glstm_bwd)


@pytest.mark.parametrize("group_input", (True, False), ids=("grouped", "dense"))
def test_projected_glstm_module_runs_on_cuda_like_the_reference(group_input):
    """GLSTM(proj_size=P) through the public module with backend="cuda" (projected forward and backward kernels
    through autograd) against the same module on the reference backend, two layers, bidirectional, float32."""
    torch.manual_seed(21)
    kwargs = dict(num_layers=2, bidirectional=True, proj_size=32, groups=2, group_input=group_input, device="cuda")
    reference = lstmkern.GLSTM(24, 64, backend="reference", **kwargs)
    cuda = lstmkern.GLSTM(24, 64, backend="cuda", **kwargs)
    cuda.load_state_dict(reference.state_dict())
    x = torch.randn(7, 5, 24, device="cuda")
    results = []
    for module in (reference, cuda):
        x_in = x.clone().requires_grad_(True)
        output, (h_n, c_n) = module(x_in)
        (output.square().sum() + h_n.sum() + c_n.sum()).backward()
        results.append((output, h_n, c_n, x_in.grad, *(p.grad for p in module.parameters())))
    for name, got, expected in zip(("output", "h_n", "c_n", "dx") + tuple(n for n, _ in cuda.named_parameters()),
                                   results[1], results[0]):
        torch.testing.assert_close(got, expected, rtol=2e-4, atol=2e-5, msg=name)
