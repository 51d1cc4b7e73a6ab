"""The "cuda" backend: persistent CUDA kernels from the ``lstmkern._C`` extension (sources in csrc/).

Shape legend: T time steps, B batch, I input features, H hidden units, G groups, Hg = H / G, Ig = I / G, R rank,
C thread-block-cluster size, Hs = Hg / C (G-LSTM) or H / C (F-LSTM) hidden units per CTA of a cluster.

One kernel launch walks the whole sequence (forward) or the whole reversed sequence (backward) with the recurrent
weights resident in shared memory:

* G-LSTM: one CTA per (group g, batch tile) keeps W_hh[g] (4Hg x Hg) in shared memory; per step it multiplies its
  h_{t-1} tile (WMMA tensor cores with float32 accumulation for fp16/bf16, float32 FMA for fp32), adds the input
  projection P_t and runs the cell. Groups and batch tiles are independent: block barriers only, no grid sync.
* G-LSTM groups too large for one CTA (e.g. Hg = 256 in bf16, where W_hh[g] alone is 512 KiB), on compute capability
  9.x: a thread-block cluster of C CTAs per (group, batch tile) (csrc/glstm_cluster.cu). CTA rank r keeps the gate
  rows of hidden units [r Hs, (r+1) Hs) resident, and the CTAs exchange their slices of h_t through distributed
  shared memory with one cluster barrier per step. For these shapes :func:`glstm_bwd` runs the cluster backward
  kernel (each CTA's gate rows contribute to all of dh_{t-1}, the partials summed through DSMEM; verified under the
  CPU emulator, tests/test_emu.py; GPU tests in tests/test_gpu_cuda.py), which fits wherever the cluster forward
  does (tests/test_backward_coverage.py).
* F-LSTM: one CTA per batch tile keeps all of W1_h (R x H) and W2 (4H x R); per step z = W1_h h, gates = P_t + W2 z.
* F-LSTM layers too large for one CTA (e.g. H = 1024, R = 256 in bf16: 2.5 MiB of weights), on compute capability
  9.x: a thread-block cluster of C CTAs per batch tile (csrc/flstm_cluster.cu). CTA rank r owns hidden units
  [r Hs, (r+1) Hs) and keeps their columns of W1_h (R x Hs) and their gate rows of W2 (4Hs x R) resident; per step
  it forms a partial z from its own slice of h, the C partials are reduced through distributed shared memory (each
  CTA sums R / C columns in rank order and pushes them, rounded to the element type, to every CTA; two cluster
  barriers per step), and it computes the gates and the cell of its own units. For these shapes :func:`flstm_bwd`
  runs the cluster backward (csrc/flstm_cluster_bwd.cu), the same decomposition in reverse time: each CTA runs the
  cell backward of its own units, forms a partial dz = dgates W2[own rows], the partials are exchanged exactly like
  the forward's z, and each CTA computes the recurrent dh of its own units, dz W1_h[:, own], with no exchange
  (verified against the reference under the CPU emulator, tests/test_emu_flstm_bwd.py); where no cluster backward
  fits (:func:`flstm_bwd_cluster_size`) or none can be resident, the grid backward below, and Triton's backward only
  where that cannot be resident either.
* F-LSTM layers too large for any cluster (e.g. flstm-train, H = 2048, R = 512 in bf16: 10 MiB of weights), or
  beyond one CTA on a GPU without clusters (compute capability 8.x): the grid-cooperative forward
  (csrc/flstm_grid.cu). The same per-step algorithm as the cluster forward on N co-resident CTAs (the whole grid, one
  per SM at most) covering the whole batch, with z exchanged through a global workspace (L2) and two grid barriers per
  step (cooperative launch, cooperative_groups grid sync); :func:`flstm_bwd` runs the cluster backward where one
  fits (:func:`flstm_bwd_cluster_size`; not for flstm-train, whose W2 rows alone exceed a CTA at C = 16), else the
  grid-cooperative backward (csrc/flstm_grid_bwd.cu, :func:`flstm_bwd_grid_ctas`): the cluster backward's algorithm
  on N co-resident CTAs with dz exchanged through a global workspace like the forward's z (flstm-train in bf16 on an
  H100: N = 64, 197376 B per CTA; verified under the CPU emulator, tests/test_emu_flstm_grid_bwd.py), and Triton's
  backward only where neither fits or is resident.
* Projected G-LSTM layers (LSTMP, weight_hr (P, H); G = 1 is a plain LSTMP): a step gates_t = P_t + W_hh (W_hr
  m_{t-1}) is the F-LSTM step with W1_h := W_hr, R := P, W2 := W_hh, so the F-LSTM forwards run it in their projected
  mode (single CTA, csrc/flstm_persistent.cu; a cluster of C CTAs, csrc/flstm_cluster.cu, C a multiple of G; or the
  grid of N CTAs, csrc/flstm_grid.cu, N a multiple of G, e.g. N = 128 for a BIGLSTM-like H = 4096, P = 1024, G = 4
  layer in bf16 on an H100): the z they exchange is the layer's output h_t = W_hr m_t, and group g's gate rows read
  only its P / G columns of z. :func:`projected_rule`, :func:`projected_cluster_size`, :func:`projected_grid_ctas`.
  The backward runs on the F-LSTM backwards in their projected mode (csrc/flstm_persistent.cu, flstm_cluster_bwd.cu,
  flstm_grid_bwd.cu): the total gradient reaching h_t, dz_t = grad_output[t] + dgates_{t+1} W_hh, is the F-LSTM's dz
  (exchanged the same way, a CTA's partial covering its group's P / G columns), and dm_t = dz_t W_hr its dh product
  (:func:`projected_bwd_cluster_size`, :func:`projected_bwd_grid_ctas`; Triton's backward only where none fits or is
  resident). The projected F-LSTM (three factors per step) is not covered (Triton runs it).
* The dense-input G-LSTM (weight_ih (G, 4Hg, I)) differs only in the launchers' input GEMMs (forward and backward).
* Backward: gates recomputed time-parallel (one GEMM), a persistent reverse-time kernel for dgates / dh / dc, then
  the weight gradients and dx as time-parallel GEMMs (cuBLAS). Numerics follow :mod:`lstmkern.reference`.

When the backend applies (``unsupported`` returns the first of these that fails; "auto" picks cuda only when it
returns None, and otherwise falls through to triton, then reference):

1. the tensors are on a CUDA device;
2. ``lstmkern._C`` imports and was built with CUDA (its ``lstmkern_cuda`` ops have CUDA kernels);
3. dtype is float32, float16 or bfloat16 (float64 is not: the kernels accumulate in float32);
4. the device has compute capability >= 8.0 (WMMA on bf16, large opt-in shared memory);
5. the resident weights plus the working buffers fit the device's opt-in shared memory per block
   (cudaDevAttrMaxSharedMemoryPerBlockOptin: 227 KiB on H100, 163 KiB on A100), for the forward and the backward
   kernel alike: :func:`glstm_smem_bytes` (W_hh[g] in the input dtype, e.g. Hg <= 144 in bf16/fp16 and Hg <= 114 in
   fp32 on 227 KiB) and :func:`flstm_smem_bytes` (W1_h and W2 in the input dtype);
   for G-LSTM, where the single-CTA kernels do not fit, the cluster forward applies instead when the compute
   capability is 9.x and some C in (2, 4, 8) has Hg a multiple of 16 C and :func:`glstm_cluster_smem_bytes` (the
   per-CTA share: Hg x 4Hs weights, two h tiles, gates and cell) fits; the smallest such C is used
   (:func:`glstm_cluster_size`; e.g. bf16/fp16 Hg = 256 -> C = 4 with 172800 B per CTA, fp32 Hg = 256 -> C = 8),
   with the cluster backward (:func:`glstm_cluster_bwd_smem_bytes`) for its backward;
   for F-LSTM, where the single-CTA kernels do not fit, the cluster forward applies instead when the compute
   capability is 9.x, R is a multiple of 16 and some C in (2, 4, 8, 16) has H a multiple of 16 C and
   :func:`flstm_cluster_smem_bytes` (the per-CTA share: R x Hs and 4Hs x R weights, the own h slice, two float32
   partial-z / gate tiles, the rounded z tile and the cell slice) fits; the smallest such C is used
   (:func:`flstm_cluster_size`; e.g. bf16/fp16 H = 1024, R = 256 -> C = 16 with 217088 B per CTA; fp32 needs C = 32
   there and is not covered), the device must be able to hold such a cluster (cudaOccupancyMaxActiveClusters >= 1;
   C = 16 exceeds the portable cluster size, which H100 and H200 allow explicitly), and the backward must run too:
   on the cluster backward (:func:`flstm_bwd_cluster_size`, its own per-CTA share :func:`flstm_cluster_bwd_smem_bytes`
   fitting and a cluster of it resident; e.g. flstm-infer in bf16/fp16 -> C = 16 with 217856 B per CTA), or else on the
   Triton backend, which must then support the op;
   for F-LSTM, where neither the single-CTA kernels nor a cluster fit, the grid-cooperative forward applies when R is
   a multiple of 16 and some N <= the device's SM count has H a multiple of 16 N and :func:`flstm_grid_smem_bytes`
   (the per-CTA share: R x Hs and 4Hs x R weights plus one batch tile of h, z and gates; independent of B) fits; the
   smallest such N is used (:func:`flstm_grid_ctas`; e.g. flstm-train H = 2048, R = 512 in bf16/fp16 on an H100 ->
   N = 64 with 198912 B per CTA, in fp32 -> N = 128; H = 1024, R = 256 in bf16 on an A100 -> N = 32), and the
   backward must run too: on the cluster backward where one fits (as above), else on the grid backward
   (:func:`flstm_bwd_grid_ctas`, its own per-CTA share :func:`flstm_grid_bwd_smem_bytes` fitting and all N CTAs
   resident), else on the Triton backend;
6. G <= 65535 (groups are the grid's y dimension) and T * B * 4H < 2**31 (32-bit indices in the kernels);
7. with a projection (P > 0): a G-LSTM (the projected F-LSTM is not covered) whose single-CTA projected forward fits,
   or, on compute capability 9.x, some cluster of :func:`projected_cluster_size` (resident on the device), or else the
   grid of :func:`projected_grid_ctas` (all N resident); and its backward runs too: on the persistent projected
   backward (:func:`projected_bwd_cluster_size`, else :func:`projected_bwd_grid_ctas`, resident on the device), else
   on the Triton backend, which must then support the op.

Steps 3-6 are :func:`persistent_rule` / :func:`flstm_persistent_rule`: pure functions of sizes, dtype, shared memory,
compute capability (and, for the grid F-LSTM forward, the SM count), testable without a GPU (the Triton condition of
step 5 is checked by :func:`unsupported`).
The shared-memory formulas and the kernel choice mirror csrc/persistent_layout.h (the layouts the kernels carve);
tests/test_cuda_build.py checks them against the extension's query ops.
Batch size does not limit the kernels (more batch tiles, more CTAs).

Example::
    >>> from lstmkern.backends import cuda
    >>> cuda.persistent_rule(Hg=64, B=32, dtype=torch.bfloat16, smem_bytes=232448, cc=(9, 0)) is None
    True
    >>> cuda.glstm_cluster_size(256, torch.bfloat16, smem_bytes=232448, cc=(9, 0))   # H = 1024, G = 4 on an H100
    4
    >>> cuda.flstm_cluster_size(1024, 256, torch.bfloat16, smem_bytes=232448, cc=(9, 0))  # flstm-infer on an H100
    16

Forcing a kernel (tests, compute-sanitizer): ``torch.ops.lstmkern_cuda.glstm_persistent_fwd(..., cluster_size=C)``
with C = 1 (single CTA) or 2, 4, 8 (cluster; Hg a multiple of 16 C); the default 0 makes the choice above. Likewise
``flstm_persistent_fwd(..., cluster_size=C)`` with C = 1 or 2, 4, 8, 16 (H a multiple of 16 C, R of 16), and
``flstm_persistent_fwd(..., grid_ctas=N)`` the grid forward on N CTAs (N <= SM count, H a multiple of 16 N, R of 16).
``flstm_persistent_bwd(..., cluster_size=C)`` forces the single-CTA (1) or the cluster (2, 4, 8, 16) F-LSTM backward,
``flstm_persistent_bwd(..., grid_ctas=N)`` the grid backward on N CTAs (same rule as the grid forward).
A projected layer: ``glstm_persistent_fwd(..., weight_hr=W_hr, cluster_size=C)`` with C = 1 or 2, 4, 8, 16 (a
multiple of G, H a multiple of 16 C, P / G of 16), or ``grid_ctas=N`` (N a multiple of G, H a multiple of 16 N); the
same arguments force its backward, ``glstm_persistent_bwd(..., weight_hr=W_hr, cluster_size=C)`` or ``grid_ctas=N``
(whose seventh result is dweight_hr; an empty tensor without weight_hr).
"""
from __future__ import annotations

import functools

import torch

__all__ = ["glstm_fwd", "glstm_bwd", "flstm_fwd", "flstm_bwd", "unsupported", "persistent_rule",
           "flstm_persistent_rule", "glstm_smem_bytes", "flstm_smem_bytes", "glstm_cluster_smem_bytes",
           "glstm_cluster_bwd_smem_bytes", "glstm_cluster_size", "flstm_cluster_smem_bytes", "flstm_cluster_size",
           "flstm_cluster_bwd_smem_bytes", "flstm_bwd_cluster_size",
           "flstm_grid_smem_bytes", "flstm_grid_ctas", "flstm_grid_bwd_smem_bytes", "flstm_bwd_grid_ctas",
           "projected_rule", "projected_smem_bytes",
           "projected_cluster_smem_bytes", "projected_cluster_size", "projected_grid_smem_bytes",
           "projected_grid_ctas", "projected_cluster_bwd_smem_bytes", "projected_grid_bwd_smem_bytes",
           "projected_bwd_cluster_size", "projected_bwd_grid_ctas"]

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MIN_CAPABILITY = (8, 0)
_MAX_GROUPS = 65535
_INT32_MAX = 2**31 - 1
_OPS = ("glstm_persistent_fwd", "glstm_persistent_bwd", "flstm_persistent_fwd", "flstm_persistent_bwd")
# Layer forms beyond the plain G-LSTM / F-LSTM (see lstmkern.backends): projected G-LSTM layers run forward and
# backward on the F-LSTM kernels' projected mode; the dense input is the launchers' input GEMM.
SUPPORTS_PROJECTION = True
SUPPORTS_DENSE_INPUT = True

# --- Shared-memory layouts: keep in sync with csrc/persistent_layout.h (a test compares them) ---------------------
_SMEM_ALIGNMENT = 128
_WMMA_TILE = 16
_WMMA_HALF_ROW_PAD = 8
_WMMA_FLOAT_ROW_PAD = 4
_GLSTM_FWD_BATCH_TILE_WMMA = 16
_GLSTM_FWD_BATCH_TILE_FMA = 8
_GLSTM_BWD_BATCH_TILE_WMMA = 16
_GLSTM_BWD_BATCH_TILE_FMA = 8
_FLSTM_BATCH_TILE = 8
_CLUSTER_SIZES = (2, 4, 8)       # 8 is the portable maximum
_CLUSTER_UNIT_MULTIPLE = 16      # Hs = Hg / C must be a multiple of this
_CLUSTER_CAPABILITY_MAJOR = 9    # the cluster kernel's code is built for sm_90a only
_FLSTM_CLUSTER_SIZES = (2, 4, 8, 16)  # 16 is non-portable (allowed on H100 / H200)
_FLSTM_CLUSTER_RANK_MULTIPLE = 16     # R must be whole WMMA tiles


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def _buffers_bytes(*sizes: int) -> int:
    """Total of buffers laid out one after another, each starting ``_SMEM_ALIGNMENT``-aligned."""
    end = 0
    for size in sizes:
        end = _round_up(end, _SMEM_ALIGNMENT) + size
    return _round_up(end, _SMEM_ALIGNMENT)


def _operand_tile_ld(n: int, dtype: torch.dtype) -> int:
    """Leading dimension of an element-type tile n wide in the multi-CTA layouts (operand_tile_ld in
    csrc/persistent_layout.h): rows padded by 8 elements on the WMMA paths, unpadded for float32."""
    return n if dtype == torch.float32 else n + _WMMA_HALF_ROW_PAD


def _float_tile_ld(n: int, dtype: torch.dtype) -> int:
    """Leading dimension of a float32 tile n wide (float_tile_ld): rows padded by 4 on the WMMA paths."""
    return n if dtype == torch.float32 else n + _WMMA_FLOAT_ROW_PAD


def _element_bytes(dtype: torch.dtype) -> int:
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES} for the persistent kernels, got {dtype}")
    return 4 if dtype == torch.float32 else 2


def glstm_smem_bytes(Hg: int, dtype: torch.dtype) -> int:
    """Dynamic shared memory (bytes per block) of the persistent G-LSTM kernels: max over forward and backward.

    Forward: W_hh[g]^T (padded to multiples of 16 for WMMA in fp16/bf16), the h tile, the float32 gate tile and the
    float32 cell tile. Backward: W_hh[g] (padded likewise), the dgates tile (the element type: the WMMA A operand in
    fp16/bf16), float32 dh and dc tiles.

    Example::
        >>> glstm_smem_bytes(64, torch.float32)
        77824
    """
    if Hg < 1:
        raise ValueError(f"Hg must be >= 1, got {Hg}")
    return max(_glstm_fwd_smem_bytes(Hg, dtype), _glstm_bwd_smem_bytes(Hg, dtype))


def _glstm_bwd_smem_bytes(Hg: int, dtype: torch.dtype) -> int:
    """The single-CTA G-LSTM backward alone (glstm_bwd_layout in csrc/persistent_layout.h)."""
    elem = _element_bytes(dtype)
    if dtype == torch.float32:
        bt = _GLSTM_BWD_BATCH_TILE_FMA
        return _buffers_bytes(4 * Hg * Hg * elem, bt * 4 * Hg * elem, bt * Hg * 4, bt * Hg * 4)
    bt = _GLSTM_BWD_BATCH_TILE_WMMA
    k_pad, n_pad = _round_up(4 * Hg, _WMMA_TILE), _round_up(Hg, _WMMA_TILE)
    return _buffers_bytes(k_pad * (n_pad + _WMMA_HALF_ROW_PAD) * elem, bt * (k_pad + _WMMA_HALF_ROW_PAD) * elem,
                          bt * (n_pad + _WMMA_FLOAT_ROW_PAD) * 4, bt * Hg * 4)


def _glstm_fwd_smem_bytes(Hg: int, dtype: torch.dtype) -> int:
    """The single-CTA G-LSTM forward alone (glstm_fwd_layout in csrc/persistent_layout.h)."""
    elem = _element_bytes(dtype)
    if dtype == torch.float32:
        bt = _GLSTM_FWD_BATCH_TILE_FMA
        return _buffers_bytes(Hg * 4 * Hg * elem, bt * Hg * 4, bt * 4 * Hg * 4, bt * Hg * 4)
    bt = _GLSTM_FWD_BATCH_TILE_WMMA
    k_pad, n_pad = _round_up(Hg, _WMMA_TILE), _round_up(4 * Hg, _WMMA_TILE)
    return _buffers_bytes(k_pad * (n_pad + _WMMA_HALF_ROW_PAD) * elem, bt * (k_pad + _WMMA_HALF_ROW_PAD) * 2,
                          bt * (n_pad + _WMMA_FLOAT_ROW_PAD) * 4, bt * Hg * 4)


def _glstm_cluster_shape_ok(Hg: int, C: int) -> bool:
    """glstm_cluster_shape_ok in csrc/persistent_layout.h: C in (2, 4, 8) and Hg a multiple of 16 C."""
    return C in _CLUSTER_SIZES and Hg >= 1 and Hg % (_CLUSTER_UNIT_MULTIPLE * C) == 0


def _check_glstm_cluster_shape(Hg: int, C: int, kernel: str) -> None:
    if not _glstm_cluster_shape_ok(Hg, C):
        raise ValueError(f"the cluster G-LSTM {kernel} takes C in {_CLUSTER_SIZES} and Hg a multiple of "
                         f"{_CLUSTER_UNIT_MULTIPLE} C, got C={C}, Hg={Hg}")


def glstm_cluster_smem_bytes(Hg: int, C: int, dtype: torch.dtype) -> int:
    """Dynamic shared memory (bytes per CTA) of the cluster G-LSTM forward with C CTAs per group: the CTA's 4Hs gate
    columns of W_hh[g]^T (Hg x 4Hs, rows padded by 8 elements in fp16/bf16), two h tiles of the whole group (BT x Hg),
    the float32 gate tile (BT x 4Hs) and cell tile (BT x Hs). Raises ValueError unless C is 2, 4 or 8 and Hg is a
    multiple of 16 C.

    Example::
        >>> glstm_cluster_smem_bytes(256, 4, torch.bfloat16)
        172800
    """
    _check_glstm_cluster_shape(Hg, C, "forward")
    elem = _element_bytes(dtype)
    hs = Hg // C
    bt = _GLSTM_FWD_BATCH_TILE_FMA if dtype == torch.float32 else _GLSTM_FWD_BATCH_TILE_WMMA
    h_elem = 4 if dtype == torch.float32 else 2  # the h tile is float32 for the FMA loop
    w_ld, h_ld, gates_ld = _operand_tile_ld(4 * hs, dtype), _operand_tile_ld(Hg, dtype), _float_tile_ld(4 * hs, dtype)
    return _buffers_bytes(Hg * w_ld * elem, bt * h_ld * h_elem, bt * h_ld * h_elem, bt * gates_ld * 4, bt * hs * 4)


def glstm_cluster_bwd_smem_bytes(Hg: int, C: int, dtype: torch.dtype) -> int:
    """Dynamic shared memory (bytes per CTA) of the cluster G-LSTM backward kernel with C CTAs per group: the CTA's
    4Hs gate rows of W_hh[g] (4Hs x Hg), the dgates tile (BT x 4Hs; the element type, the WMMA A operand, in
    fp16/bf16), two float32 partial dh tiles (BT x Hg) and dc (BT x Hs); BT = 16 in fp16/bf16 (WMMA), 8 in float32;
    rows padded by 8 elements (4 for float32 tiles) in fp16/bf16. Same accepted (Hg, C) as
    :func:`glstm_cluster_smem_bytes`.

    Example::
        >>> glstm_cluster_bwd_smem_bytes(256, 4, torch.bfloat16)
        180992
    """
    _check_glstm_cluster_shape(Hg, C, "backward")
    elem = _element_bytes(dtype)
    hs = Hg // C
    bt = _GLSTM_BWD_BATCH_TILE_FMA if dtype == torch.float32 else _GLSTM_BWD_BATCH_TILE_WMMA
    w_ld, dgates_ld = _operand_tile_ld(Hg, dtype), _operand_tile_ld(4 * hs, dtype)
    partial_ld = _float_tile_ld(Hg, dtype)
    return _buffers_bytes(4 * hs * w_ld * elem, bt * dgates_ld * elem, bt * partial_ld * 4, bt * partial_ld * 4,
                          bt * hs * 4)


def _smallest_cluster(sizes: tuple[int, ...], accepted, per_cta_bytes, smem_bytes: int, cc: tuple[int, int]) -> int:
    """The smallest cluster size C of ``sizes`` with ``accepted(C)`` and ``per_cta_bytes(C) <= smem_bytes``, on
    compute capability 9.x (the cluster kernels' code is built for sm_90a only); 0 where none qualifies."""
    if cc[0] != _CLUSTER_CAPABILITY_MAJOR:
        return 0
    return next((C for C in sizes if accepted(C) and per_cta_bytes(C) <= smem_bytes), 0)


def _smallest_grid(H: int, sm_count: int, accepted, per_cta_bytes, smem_bytes: int) -> int:
    """The smallest CTA count N <= ``sm_count`` (one CTA per SM, all co-resident) with 16 N <= H, ``accepted(N)`` and
    ``per_cta_bytes(N) <= smem_bytes``; 0 where none qualifies (smallest_fitting_grid in csrc/persistent_layout.h)."""
    return next((N for N in range(1, min(sm_count, H // _CLUSTER_UNIT_MULTIPLE) + 1)
                 if accepted(N) and per_cta_bytes(N) <= smem_bytes), 0)


def glstm_cluster_size(Hg: int, dtype: torch.dtype, smem_bytes: int, cc: tuple[int, int]) -> int:
    """The G-LSTM forward kernel the extension's automatic choice runs (mirrors glstm_fwd_cluster_size in
    csrc/persistent_layout.h): 1 = single CTA per group (its forward and backward both fit ``smem_bytes``); else the
    smallest cluster size C in (2, 4, 8) accepted for Hg whose per-CTA share fits, on compute capability 9.x; else 1
    where the single-CTA forward alone fits; 0 = nothing fits.

    Example::
        >>> [glstm_cluster_size(256, torch.float32, 232448, cc) for cc in ((9, 0), (8, 0))]
        [8, 0]
    """
    if glstm_smem_bytes(Hg, dtype) <= smem_bytes:
        return 1
    cluster = _smallest_cluster(_CLUSTER_SIZES, lambda C: _glstm_cluster_shape_ok(Hg, C),
                                lambda C: glstm_cluster_smem_bytes(Hg, C, dtype), smem_bytes, cc)
    return cluster or (1 if _glstm_fwd_smem_bytes(Hg, dtype) <= smem_bytes else 0)


def flstm_smem_bytes(H: int, R: int, dtype: torch.dtype) -> int:
    """Dynamic shared memory (bytes per block) of the persistent F-LSTM kernels: W1_h (R x H) and W2 (4H x R) in the
    input dtype plus float32 tiles (h, z, gates, c forward; dgates, dz, dh, dc backward) of 8 batch rows.

    Example::
        >>> flstm_smem_bytes(64, 16, torch.bfloat16)
        23040
    """
    if H < 1 or R < 1:
        raise ValueError(f"H and R must be >= 1, got H={H}, R={R}")
    elem = _element_bytes(dtype)
    bt = _FLSTM_BATCH_TILE
    # Forward and backward hold the same buffer sizes (in a different order), hence the same total.
    return _buffers_bytes(H * R * elem, R * 4 * H * elem, bt * H * 4, bt * R * 4, bt * 4 * H * 4, bt * H * 4)


def _flstm_cluster_shape_ok(H: int, R: int, C: int) -> bool:
    return (C in _FLSTM_CLUSTER_SIZES and H >= 1 and R >= 1 and H % (_CLUSTER_UNIT_MULTIPLE * C) == 0
            and R % _FLSTM_CLUSTER_RANK_MULTIPLE == 0)


def flstm_cluster_smem_bytes(H: int, R: int, C: int, dtype: torch.dtype) -> int:
    """Dynamic shared memory (bytes per CTA) of the cluster F-LSTM forward with C CTAs per batch tile
    (flstm_cluster_fwd_layout in csrc/persistent_layout.h): the CTA's columns of W1_h^T (Hs x R) and gate rows of W2^T
    (R x 4Hs), rows padded by 8 elements in fp16/bf16; its h slice (BT x Hs); two float32 tiles each holding the
    partial z (BT x R) or the gate tile (BT x 4Hs), rows padded by 4 in fp16/bf16; the rounded z (BT x R) and the
    float32 cell slice (BT x Hs); BT = 16 (WMMA) for fp16/bf16, 8 for fp32. Raises ValueError unless C is 2, 4, 8 or
    16, H a multiple of 16 C and R a multiple of 16.

    Example::
        >>> flstm_cluster_smem_bytes(1024, 256, 16, torch.bfloat16)
        217088
    """
    if not _flstm_cluster_shape_ok(H, R, C):
        raise ValueError(f"the cluster F-LSTM forward takes C in {_FLSTM_CLUSTER_SIZES}, H a multiple of "
                         f"{_CLUSTER_UNIT_MULTIPLE} C and R a multiple of {_FLSTM_CLUSTER_RANK_MULTIPLE}, got C={C}, "
                         f"H={H}, R={R}")
    return _flstm_cluster_layout_bytes(H, R, C, dtype)


def _flstm_cluster_layout_bytes(H: int, R: int, C: int, dtype: torch.dtype, groups: int = 1) -> int:
    """flstm_cluster_fwd_layout's total (the F-LSTM, groups = 1, or the projected mode, whose W2 has R / groups
    rows); the caller has checked the shape."""
    elem = _element_bytes(dtype)
    hs = H // C
    bt = _FLSTM_BATCH_TILE if dtype == torch.float32 else _WMMA_TILE
    w1h_ld, w2_ld, h_ld, z_ld = (_operand_tile_ld(n, dtype) for n in (R, 4 * hs, hs, R))
    partial_ld, gates_ld = _float_tile_ld(R, dtype), _float_tile_ld(4 * hs, dtype)
    partial = bt * max(partial_ld, gates_ld) * 4
    return _buffers_bytes(hs * w1h_ld * elem, R // groups * w2_ld * elem, bt * h_ld * elem, partial, partial,
                          bt * z_ld * elem, bt * hs * 4)


def _flstm_fwd_smem_bytes(H: int, R: int, dtype: torch.dtype) -> int:
    """The single-CTA F-LSTM forward alone (flstm_fwd_layout; the backward's layout has the same total)."""
    return flstm_smem_bytes(H, R, dtype)


def flstm_cluster_size(H: int, R: int, dtype: torch.dtype, smem_bytes: int, cc: tuple[int, int]) -> int:
    """The F-LSTM forward kernel the extension's automatic choice runs (mirrors flstm_fwd_cluster_size in
    csrc/persistent_layout.h): 1 = single CTA per batch tile (its forward and backward fit ``smem_bytes``); else the
    smallest C in (2, 4, 8, 16) accepted for (H, R) whose per-CTA share fits, on compute capability 9.x; 0 = nothing
    fits.

    Example::
        >>> [flstm_cluster_size(1024, 256, torch.bfloat16, 232448, cc) for cc in ((9, 0), (8, 0))]
        [16, 0]
    """
    if flstm_smem_bytes(H, R, dtype) <= smem_bytes:
        return 1
    cluster = _smallest_cluster(_FLSTM_CLUSTER_SIZES, lambda C: _flstm_cluster_shape_ok(H, R, C),
                                lambda C: flstm_cluster_smem_bytes(H, R, C, dtype), smem_bytes, cc)
    return cluster or (1 if _flstm_fwd_smem_bytes(H, R, dtype) <= smem_bytes else 0)


def flstm_cluster_bwd_smem_bytes(H: int, R: int, C: int, dtype: torch.dtype) -> int:
    """Dynamic shared memory (bytes per CTA) of the cluster F-LSTM backward with C CTAs per batch tile
    (flstm_cluster_bwd_layout in csrc/persistent_layout.h): the CTA's gate rows of W2 (4Hs x R) and columns of W1_h
    (R x Hs) as stored, rows padded by 8 elements in fp16/bf16; one buffer in the input dtype holding in turn its
    dgates tile (BT x 4Hs) and the rounded dz (BT x R); two float32 tiles each holding the partial dz (BT x R) or the
    recurrent dh (BT x Hs), rows padded by 4 in fp16/bf16; the float32 dc slice (BT x Hs); BT = 16 (WMMA) for
    fp16/bf16, 8 for fp32. Same accepted (H, R, C) as :func:`flstm_cluster_smem_bytes`.

    Example::
        >>> flstm_cluster_bwd_smem_bytes(1024, 256, 16, torch.bfloat16)
        217856
    """
    if not _flstm_cluster_shape_ok(H, R, C):
        raise ValueError(f"the cluster F-LSTM backward takes C in {_FLSTM_CLUSTER_SIZES}, H a multiple of "
                         f"{_CLUSTER_UNIT_MULTIPLE} C and R a multiple of {_FLSTM_CLUSTER_RANK_MULTIPLE}, got C={C}, "
                         f"H={H}, R={R}")
    return _flstm_cluster_bwd_layout_bytes(H, R, C, dtype)


def _flstm_cluster_bwd_layout_bytes(H: int, R: int, C: int, dtype: torch.dtype, groups: int = 1) -> int:
    """flstm_cluster_bwd_layout's total (the F-LSTM, groups = 1, or the projected mode, whose W2 rows have R / groups
    columns); the caller has checked the shape."""
    elem = _element_bytes(dtype)
    hs = H // C
    bt = _FLSTM_BATCH_TILE if dtype == torch.float32 else _WMMA_TILE
    w2_ld, w1h_ld, dgates_ld, dz_ld = (_operand_tile_ld(n, dtype) for n in (R // groups, hs, 4 * hs, R))
    partial = bt * max(_float_tile_ld(R, dtype), _float_tile_ld(hs, dtype)) * 4
    return _buffers_bytes(4 * hs * w2_ld * elem, R * w1h_ld * elem, bt * max(dgates_ld, dz_ld) * elem, partial,
                          partial, bt * hs * 4)


def flstm_bwd_cluster_size(H: int, R: int, dtype: torch.dtype, smem_bytes: int, cc: tuple[int, int]) -> int:
    """The F-LSTM backward kernel (mirrors flstm_bwd_cluster_size in csrc/persistent_layout.h, the op's automatic
    choice): 1 = the single-CTA backward fits ``smem_bytes``; else the smallest C in (2, 4, 8, 16) accepted for (H, R)
    whose per-CTA backward share (:func:`flstm_cluster_bwd_smem_bytes`) fits, on compute capability 9.x; 0 = none (the
    Triton backward runs).

    Example::
        >>> [flstm_bwd_cluster_size(1024, 256, torch.bfloat16, 232448, cc) for cc in ((9, 0), (8, 0))]
        [16, 0]
    """
    if flstm_smem_bytes(H, R, dtype) <= smem_bytes:  # the backward's layout has the forward's total
        return 1
    return _smallest_cluster(_FLSTM_CLUSTER_SIZES, lambda C: _flstm_cluster_shape_ok(H, R, C),
                             lambda C: flstm_cluster_bwd_smem_bytes(H, R, C, dtype), smem_bytes, cc)


def _flstm_grid_shape_ok(H: int, R: int, N: int) -> bool:
    return (N >= 1 and H >= 1 and R >= 1 and H % (_CLUSTER_UNIT_MULTIPLE * N) == 0
            and R % _FLSTM_CLUSTER_RANK_MULTIPLE == 0)


def flstm_grid_smem_bytes(H: int, R: int, N: int, dtype: torch.dtype) -> int:
    """Dynamic shared memory (bytes per CTA) of the grid-cooperative F-LSTM forward with N CTAs (flstm_grid_fwd_layout
    in csrc/persistent_layout.h): the CTA's columns of W1_h^T (Hs x R) and gate rows of W2^T (R x 4Hs), rows padded by
    8 elements in fp16/bf16, and one batch tile of its h slice (BT x Hs), of z (BT x R) and of its float32 gates
    (BT x 4Hs, rows padded by 4 in fp16/bf16); BT = 16 (WMMA) for fp16/bf16, 8 for fp32. Independent of B (the CTA
    loops over the batch tiles; the partial and reduced z live in a global workspace). Raises ValueError unless N >= 1,
    H is a multiple of 16 N and R a multiple of 16.

    Example::
        >>> flstm_grid_smem_bytes(2048, 512, 64, torch.bfloat16)   # flstm-train on an H100
        198912
    """
    if not _flstm_grid_shape_ok(H, R, N):
        raise ValueError(f"the grid F-LSTM forward takes N >= 1 CTAs, H a multiple of {_CLUSTER_UNIT_MULTIPLE} N and R "
                         f"a multiple of {_FLSTM_CLUSTER_RANK_MULTIPLE}, got N={N}, H={H}, R={R}")
    elem = _element_bytes(dtype)
    hs = H // N
    bt = _FLSTM_BATCH_TILE if dtype == torch.float32 else _WMMA_TILE
    w1h_ld, w2_ld, h_ld, z_ld = (_operand_tile_ld(n, dtype) for n in (R, 4 * hs, hs, R))
    gates_ld = _float_tile_ld(4 * hs, dtype)
    return _buffers_bytes(hs * w1h_ld * elem, R * w2_ld * elem, bt * h_ld * elem, bt * z_ld * elem, bt * gates_ld * 4)


def flstm_grid_ctas(H: int, R: int, dtype: torch.dtype, smem_bytes: int, sm_count: int) -> int:
    """The CTA count of the grid-cooperative F-LSTM forward (mirrors flstm_fwd_grid_ctas in csrc/persistent_layout.h):
    the smallest N <= ``sm_count`` with H a multiple of 16 N (and R of 16) whose per-CTA share fits ``smem_bytes``, or
    0. One CTA per SM is always resident then, so all N are (what the cooperative launch needs).

    Example::
        >>> flstm_grid_ctas(2048, 512, torch.bfloat16, 232448, 132)   # flstm-train on an H100
        64
        >>> flstm_grid_ctas(1024, 256, torch.bfloat16, 166912, 108)   # flstm-infer on an A100
        32
    """
    return _smallest_grid(H, sm_count, lambda N: _flstm_grid_shape_ok(H, R, N),
                          lambda N: flstm_grid_smem_bytes(H, R, N, dtype), smem_bytes)


def flstm_grid_bwd_smem_bytes(H: int, R: int, N: int, dtype: torch.dtype) -> int:
    """Dynamic shared memory (bytes per CTA) of the grid-cooperative F-LSTM backward with N CTAs
    (flstm_grid_bwd_layout in csrc/persistent_layout.h): the CTA's gate rows of W2 (4Hs x R) and columns of W1_h
    (R x Hs) as stored, rows padded by 8 elements in fp16/bf16, and one batch tile of its dgates (BT x 4Hs, input dtype)
    and of dz (BT x R, input dtype) and its float32 recurrent dh (BT x Hs, rows padded by 4 in fp16/bf16); BT = 16
    (WMMA) for fp16/bf16, 8 for fp32. Independent of B. Same accepted (H, R, N) as :func:`flstm_grid_smem_bytes`.

    Example::
        >>> flstm_grid_bwd_smem_bytes(2048, 512, 64, torch.bfloat16)   # flstm-train on an H100
        197376
    """
    if not _flstm_grid_shape_ok(H, R, N):
        raise ValueError(f"the grid F-LSTM backward takes N >= 1 CTAs, H a multiple of {_CLUSTER_UNIT_MULTIPLE} N and "
                         f"R a multiple of {_FLSTM_CLUSTER_RANK_MULTIPLE}, got N={N}, H={H}, R={R}")
    return _flstm_grid_bwd_layout_bytes(H, R, N, dtype)


def _flstm_grid_bwd_layout_bytes(H: int, R: int, N: int, dtype: torch.dtype, groups: int = 1,
                                 projected: bool = False) -> int:
    """flstm_grid_bwd_layout's total: the F-LSTM, or the projected mode, whose W2 rows have R / groups columns and
    whose dgates and dz tiles share one buffer; the caller has checked the shape."""
    elem = _element_bytes(dtype)
    hs = H // N
    bt = _FLSTM_BATCH_TILE if dtype == torch.float32 else _WMMA_TILE
    w2_ld, w1h_ld, dgates_ld, dz_ld = (_operand_tile_ld(n, dtype) for n in (R // groups, hs, 4 * hs, R))
    operands = (bt * max(dgates_ld, dz_ld) * elem,) if projected else (bt * dgates_ld * elem, bt * dz_ld * elem)
    return _buffers_bytes(4 * hs * w2_ld * elem, R * w1h_ld * elem, *operands, bt * _float_tile_ld(hs, dtype) * 4)


def flstm_bwd_grid_ctas(H: int, R: int, dtype: torch.dtype, smem_bytes: int, sm_count: int) -> int:
    """The CTA count of the grid-cooperative F-LSTM backward (mirrors flstm_bwd_grid_ctas in
    csrc/persistent_layout.h), which runs where :func:`flstm_bwd_cluster_size` finds neither a single CTA nor a
    cluster: the smallest N <= ``sm_count`` with H a multiple of 16 N (and R of 16) whose per-CTA backward share fits
    ``smem_bytes``, or 0.

    Example::
        >>> flstm_bwd_grid_ctas(2048, 512, torch.bfloat16, 232448, 132)   # flstm-train on an H100
        64
    """
    return _smallest_grid(H, sm_count, lambda N: _flstm_grid_shape_ok(H, R, N),
                          lambda N: flstm_grid_bwd_smem_bytes(H, R, N, dtype), smem_bytes)


# --- Projected layers (LSTMP) on the F-LSTM forward kernels: keep in sync with csrc/persistent_layout.h ------------

def _projected_shape_ok(H: int, P: int, G: int) -> bool:
    """projected_shape_ok in csrc/persistent_layout.h: H, P, G >= 1 with H and P divisible by G."""
    return H >= 1 and P >= 1 and G >= 1 and H % G == 0 and P % G == 0


def _projected_cluster_shape_ok(H: int, P: int, G: int, C: int) -> bool:
    """projected_cluster_shape_ok: the F-LSTM cluster rule for (H, P, C), C a multiple of G (each CTA's units lie in
    one group) and Pg = P / G a multiple of 16 (whole WMMA k-tiles of the group's columns of z)."""
    return (_projected_shape_ok(H, P, G) and _flstm_cluster_shape_ok(H, P, C) and C % G == 0
            and (P // G) % _WMMA_TILE == 0)


def projected_smem_bytes(H: int, P: int, G: int, dtype: torch.dtype) -> int:
    """Dynamic shared memory (bytes per block) of the single-CTA projected forward (csrc/flstm_persistent.cu in its
    projected mode, flstm_fwd_layout with r = P and G groups): W_hr^T (H x P) and the block-diagonal W_hh^T
    (Pg x 4H) in the input dtype plus float32 tiles m (BT x H), z (BT x P), gates (BT x 4H) and c (BT x H), BT = 8.
    Raises ValueError unless H, P, G >= 1 with H and P divisible by G.

    Example::
        >>> projected_smem_bytes(64, 32, 2, torch.float32)
        37888
    """
    if not _projected_shape_ok(H, P, G):
        raise ValueError(f"a projected layer needs H, P, G >= 1 with H and P divisible by G, got H={H}, P={P}, G={G}")
    elem = _element_bytes(dtype)
    bt = _FLSTM_BATCH_TILE
    return _buffers_bytes(H * P * elem, P // G * 4 * H * elem, bt * H * 4, bt * P * 4, bt * 4 * H * 4, bt * H * 4)


def projected_cluster_smem_bytes(H: int, P: int, G: int, C: int, dtype: torch.dtype) -> int:
    """Dynamic shared memory (bytes per CTA) of the cluster projected forward with C CTAs per batch tile
    (csrc/flstm_cluster.cu in its projected mode, flstm_cluster_fwd_layout with r = P and G groups): as
    :func:`flstm_cluster_smem_bytes` for (H, R = P, C), except that the CTA's gate rows of W_hh are Pg x 4Hs. Raises
    ValueError unless C is 2, 4, 8 or 16 and a multiple of G, H a multiple of 16 C and P / G a multiple of 16.

    Example::
        >>> projected_cluster_smem_bytes(1024, 256, 4, 16, torch.bfloat16)
        115712
    """
    if not _projected_cluster_shape_ok(H, P, G, C):
        raise ValueError(f"the cluster projected forward takes C in {_FLSTM_CLUSTER_SIZES} a multiple of G, H a "
                         f"multiple of {_CLUSTER_UNIT_MULTIPLE} C and P / G a multiple of {_WMMA_TILE}, got C={C}, "
                         f"H={H}, P={P}, G={G}")
    return _flstm_cluster_layout_bytes(H, P, C, dtype, groups=G)


def projected_cluster_size(H: int, P: int, G: int, dtype: torch.dtype, smem_bytes: int, cc: tuple[int, int]) -> int:
    """The projected forward kernel the extension's automatic choice runs (mirrors projected_fwd_cluster_size in
    csrc/persistent_layout.h): 1 = single CTA per batch tile where :func:`projected_smem_bytes` fits; else the smallest
    C in (2, 4, 8, 16) accepted for (H, P, G) whose per-CTA share fits, on compute capability 9.x; 0 = nothing fits.

    Example::
        >>> [projected_cluster_size(1024, 256, 4, torch.bfloat16, 232448, cc) for cc in ((9, 0), (8, 0))]
        [8, 0]
    """
    if _projected_shape_ok(H, P, G) and projected_smem_bytes(H, P, G, dtype) <= smem_bytes:
        return 1
    return _smallest_cluster(_FLSTM_CLUSTER_SIZES, lambda C: _projected_cluster_shape_ok(H, P, G, C),
                             lambda C: projected_cluster_smem_bytes(H, P, G, C, dtype), smem_bytes, cc)


def _projected_grid_shape_ok(H: int, P: int, G: int, N: int) -> bool:
    """projected_grid_shape_ok: the grid F-LSTM rule for (H, P, N), N a multiple of G and P / G a multiple of 16."""
    return (_projected_shape_ok(H, P, G) and _flstm_grid_shape_ok(H, P, N) and N % G == 0
            and (P // G) % _WMMA_TILE == 0)


def projected_grid_smem_bytes(H: int, P: int, G: int, N: int, dtype: torch.dtype) -> int:
    """Dynamic shared memory (bytes per CTA) of the grid projected forward with N CTAs (csrc/flstm_grid.cu in its
    projected mode, flstm_grid_fwd_layout with r = P and G groups): as :func:`flstm_grid_smem_bytes` for (H, R = P, N)
    except that the CTA's gate rows of W_hh are Pg x 4Hs. Raises ValueError unless N >= 1 is a multiple of G, H a
    multiple of 16 N and P / G a multiple of 16.

    Example::
        >>> projected_grid_smem_bytes(4096, 1024, 4, 128, torch.bfloat16)   # BIGLSTM-like, G = 4, on an H100
        178432
    """
    if not _projected_grid_shape_ok(H, P, G, N):
        raise ValueError(f"the grid projected forward takes N >= 1 CTAs a multiple of G, H a multiple of "
                         f"{_CLUSTER_UNIT_MULTIPLE} N and P / G a multiple of {_WMMA_TILE}, got N={N}, H={H}, P={P}, "
                         f"G={G}")
    elem = _element_bytes(dtype)
    hs = H // N
    bt = _FLSTM_BATCH_TILE if dtype == torch.float32 else _WMMA_TILE
    w1h_ld, w2_ld, h_ld, z_ld = (_operand_tile_ld(n, dtype) for n in (P, 4 * hs, hs, P))
    gates_ld = _float_tile_ld(4 * hs, dtype)
    return _buffers_bytes(hs * w1h_ld * elem, P // G * w2_ld * elem, bt * h_ld * elem, bt * z_ld * elem,
                          bt * gates_ld * 4)


def projected_grid_ctas(H: int, P: int, G: int, dtype: torch.dtype, smem_bytes: int, sm_count: int) -> int:
    """The CTA count of the grid projected forward (mirrors projected_fwd_grid_ctas in csrc/persistent_layout.h): the
    smallest accepted N <= ``sm_count`` whose per-CTA share fits ``smem_bytes``, or 0. Used where
    :func:`projected_cluster_size` is 0.

    Example::
        >>> projected_grid_ctas(4096, 1024, 4, torch.bfloat16, 232448, 132)
        128
    """
    return _smallest_grid(H, sm_count, lambda N: _projected_grid_shape_ok(H, P, G, N),
                          lambda N: projected_grid_smem_bytes(H, P, G, N, dtype), smem_bytes)


def projected_cluster_bwd_smem_bytes(H: int, P: int, G: int, C: int, dtype: torch.dtype) -> int:
    """Dynamic shared memory (bytes per CTA) of the cluster projected backward with C CTAs per batch tile
    (csrc/flstm_cluster_bwd.cu in its projected mode, flstm_cluster_bwd_layout with r = P and G groups): as
    :func:`flstm_cluster_bwd_smem_bytes` for (H, R = P, C), except that the CTA's gate rows of W_hh have Pg = P / G
    columns. Same accepted (H, P, G, C) as :func:`projected_cluster_smem_bytes`. (The single-CTA projected backward
    holds the forward's buffers: :func:`projected_smem_bytes`.)

    Example::
        >>> projected_cluster_bwd_smem_bytes(1024, 256, 4, 16, torch.bfloat16)
        119552
    """
    if not _projected_cluster_shape_ok(H, P, G, C):
        raise ValueError(f"the cluster projected backward takes C in {_FLSTM_CLUSTER_SIZES} a multiple of G, H a "
                         f"multiple of {_CLUSTER_UNIT_MULTIPLE} C and P / G a multiple of {_WMMA_TILE}, got C={C}, "
                         f"H={H}, P={P}, G={G}")
    return _flstm_cluster_bwd_layout_bytes(H, P, C, dtype, groups=G)


def projected_grid_bwd_smem_bytes(H: int, P: int, G: int, N: int, dtype: torch.dtype) -> int:
    """Dynamic shared memory (bytes per CTA) of the grid projected backward with N CTAs (csrc/flstm_grid_bwd.cu in its
    projected mode, flstm_grid_bwd_layout with r = P and G groups): as :func:`flstm_grid_bwd_smem_bytes` for
    (H, R = P, N) except that the CTA's gate rows of W_hh have Pg columns and its dgates and dz tiles share one buffer
    (so that wherever the grid forward fits, the backward fits with the same N). Same accepted (H, P, G, N) as
    :func:`projected_grid_smem_bytes`.

    Example::
        >>> projected_grid_bwd_smem_bytes(4096, 1024, 4, 128, torch.bfloat16)   # BIGLSTM-like, G = 4, on an H100
        184832
    """
    if not _projected_grid_shape_ok(H, P, G, N):
        raise ValueError(f"the grid projected backward takes N >= 1 CTAs a multiple of G, H a multiple of "
                         f"{_CLUSTER_UNIT_MULTIPLE} N and P / G a multiple of {_WMMA_TILE}, got N={N}, H={H}, P={P}, "
                         f"G={G}")
    return _flstm_grid_bwd_layout_bytes(H, P, N, dtype, groups=G, projected=True)


def projected_bwd_cluster_size(H: int, P: int, G: int, dtype: torch.dtype, smem_bytes: int,
                               cc: tuple[int, int]) -> int:
    """The projected backward kernel the extension's automatic choice runs (mirrors projected_bwd_cluster_size in
    csrc/persistent_layout.h): 1 = single CTA per batch tile where :func:`projected_smem_bytes` fits (the backward
    holds the forward's buffers); else the smallest C in (2, 4, 8, 16) accepted for (H, P, G) whose per-CTA backward
    share (:func:`projected_cluster_bwd_smem_bytes`) fits, on compute capability 9.x; 0 = none (then
    :func:`projected_bwd_grid_ctas`).

    Example::
        >>> [projected_bwd_cluster_size(1024, 256, 4, torch.bfloat16, 232448, cc) for cc in ((9, 0), (8, 0))]
        [8, 0]
    """
    if _projected_shape_ok(H, P, G) and projected_smem_bytes(H, P, G, dtype) <= smem_bytes:
        return 1
    return _smallest_cluster(_FLSTM_CLUSTER_SIZES, lambda C: _projected_cluster_shape_ok(H, P, G, C),
                             lambda C: projected_cluster_bwd_smem_bytes(H, P, G, C, dtype), smem_bytes, cc)


def projected_bwd_grid_ctas(H: int, P: int, G: int, dtype: torch.dtype, smem_bytes: int, sm_count: int) -> int:
    """The CTA count of the grid projected backward (mirrors projected_bwd_grid_ctas in csrc/persistent_layout.h),
    used where :func:`projected_bwd_cluster_size` is 0: the smallest accepted N <= ``sm_count`` whose per-CTA backward
    share fits ``smem_bytes``, or 0.

    Example::
        >>> projected_bwd_grid_ctas(4096, 1024, 4, torch.bfloat16, 232448, 132)
        128
    """
    return _smallest_grid(H, sm_count, lambda N: _projected_grid_shape_ok(H, P, G, N),
                          lambda N: projected_grid_bwd_smem_bytes(H, P, G, N, dtype), smem_bytes)


def projected_rule(H: int, P: int, G: int, B: int, dtype: torch.dtype, smem_bytes: int, cc: tuple[int, int], *,
                   T: int = 1, sm_count: int = 0) -> str | None:
    """None when the persistent forward kernels can run a projected G-LSTM layer (weight_hr (P, H), G groups; G = 1 is
    a plain LSTMP) with batch ``B`` and ``T`` steps in ``dtype`` on a device with ``smem_bytes`` opt-in shared memory
    per block, compute capability ``cc`` and ``sm_count`` SMs (0: unknown, the grid forward is not considered);
    otherwise the reason. The kernels are the F-LSTM forwards in their projected mode: one CTA or a cluster
    (:func:`projected_cluster_size`), else the grid (:func:`projected_grid_ctas`); the backward runs on the F-LSTM
    backwards' projected mode (:func:`projected_bwd_cluster_size`, :func:`projected_bwd_grid_ctas`), else on Triton's
    (:func:`unsupported` checks that one of them can run).

    Example::
        >>> projected_rule(1024, 256, 4, 16, torch.bfloat16, 232448, (9, 0)) is None   # cluster of 8 CTAs
        True
        >>> projected_rule(4096, 1024, 4, 16, torch.bfloat16, 232448, (9, 0), sm_count=132) is None   # grid of 128
        True
    """
    reason = _common_rule(dtype, cc)
    if reason is not None:
        return reason
    if not _projected_shape_ok(H, P, G):
        return f"a projected layer needs H and P divisible by G, got H={H}, P={P}, G={G}"
    if T * B * 4 * H > _INT32_MAX or T * B * P > _INT32_MAX:
        return f"T * B * 4H = {T * B * 4 * H} exceeds the kernels' 32-bit indexing"
    if projected_cluster_size(H, P, G, dtype, smem_bytes, cc) > 0:
        return None
    if projected_grid_ctas(H, P, G, dtype, smem_bytes, sm_count) > 0:
        return None
    if cc[0] != _CLUSTER_CAPABILITY_MAJOR:
        cluster = f"the thread-block-cluster forward needs compute capability 9.x, the device has {cc[0]}.{cc[1]}"
    else:
        accepted = [C for C in _FLSTM_CLUSTER_SIZES if _projected_cluster_shape_ok(H, P, G, C)]
        if not accepted:
            cluster = (f"the thread-block-cluster forward needs C in {_FLSTM_CLUSTER_SIZES} a multiple of G, H a "
                       f"multiple of {_CLUSTER_UNIT_MULTIPLE} C and P / G a multiple of {_WMMA_TILE}")
        else:
            per_cta = ", ".join(f"C={C}: {projected_cluster_smem_bytes(H, P, G, C, dtype)}" for C in accepted)
            cluster = f"the thread-block-cluster forward does not fit either (bytes per CTA: {per_cta})"
    if sm_count < 1:
        grid = "the grid-cooperative forward was not considered (SM count unknown)"
    else:
        largest = max((N for N in range(1, sm_count + 1) if _projected_grid_shape_ok(H, P, G, N)), default=0)
        if largest == 0:
            grid = (f"the grid-cooperative forward needs N a multiple of G with H a multiple of "
                    f"{_CLUSTER_UNIT_MULTIPLE} N and P / G a multiple of {_WMMA_TILE}")
        else:
            grid = (f"the grid-cooperative forward does not fit either on up to {sm_count} SMs (N={largest}: "
                    f"{projected_grid_smem_bytes(H, P, G, largest, dtype)} bytes per CTA)")
    return (f"W_hr and W_hh with H={H}, P={P}, G={G} in {dtype} need {projected_smem_bytes(H, P, G, dtype)} bytes of "
            f"shared memory per block on one CTA (weights plus working buffers), the device allows {smem_bytes}; "
            f"{cluster}; {grid}")


def _common_rule(dtype: torch.dtype, cc: tuple[int, int]) -> str | None:
    if dtype == torch.float64:
        return "float64 is not supported by the persistent CUDA kernels (they accumulate in float32); use 'reference'"
    if dtype not in _DTYPES:
        return f"dtype {dtype} is not supported (expected one of {_DTYPES})"
    if tuple(cc) < _MIN_CAPABILITY:
        return f"the persistent kernels need compute capability >= 8.0, the device has {cc[0]}.{cc[1]}"
    return None


def persistent_rule(Hg: int, B: int, dtype: torch.dtype, smem_bytes: int, cc: tuple[int, int], *, groups: int = 1,
                    T: int = 1) -> str | None:
    """None when the persistent G-LSTM kernels can run a layer with ``groups`` groups of ``Hg`` hidden units, batch
    ``B`` and ``T`` steps in ``dtype`` on a device with ``smem_bytes`` opt-in shared memory per block and compute
    capability ``cc`` (major, minor); otherwise the reason they cannot. B only scales the grid. Either the single-CTA
    forward and backward fit, or (compute capability 9.x) the cluster forward of :func:`glstm_cluster_size` does, whose
    backward is the cluster backward (:func:`glstm_cluster_bwd_smem_bytes` fits wherever the forward's share does:
    tests/test_backward_coverage.py walks every shape).

    Example::
        >>> persistent_rule(256, 8, torch.float32, 232448, (9, 0)) is None   # cluster of 8 CTAs per group
        True
        >>> persistent_rule(256, 8, torch.float32, 232448, (8, 0)).startswith("W_hh[g] with Hg=256 in torch.float32")
        True
    """
    reason = _common_rule(dtype, cc)
    if reason is not None:
        return reason
    if groups > _MAX_GROUPS:
        return f"G={groups} groups exceed the kernels' grid limit of {_MAX_GROUPS}"
    if T * B * 4 * groups * Hg > _INT32_MAX:
        return f"T * B * 4H = {T * B * 4 * groups * Hg} exceeds the kernels' 32-bit indexing"
    need = glstm_smem_bytes(Hg, dtype)
    if need <= smem_bytes or glstm_cluster_size(Hg, dtype, smem_bytes, cc) > 1:
        return None
    if cc[0] != _CLUSTER_CAPABILITY_MAJOR:
        cluster = f"the thread-block-cluster forward needs compute capability 9.x, the device has {cc[0]}.{cc[1]}"
    else:
        accepted = [C for C in _CLUSTER_SIZES if _glstm_cluster_shape_ok(Hg, C)]
        if not accepted:
            cluster = (f"the thread-block-cluster forward needs Hg to be a multiple of {_CLUSTER_UNIT_MULTIPLE} C "
                       f"for C in {_CLUSTER_SIZES}")
        else:
            per_cta = ", ".join(f"C={C}: {glstm_cluster_smem_bytes(Hg, C, dtype)}" for C in accepted)
            cluster = f"the thread-block-cluster forward does not fit either (bytes per CTA: {per_cta})"
    return (f"W_hh[g] with Hg={Hg} in {dtype} needs {need} bytes of shared memory per block (weights plus working "
            f"buffers), the device allows {smem_bytes}; {cluster}")


def flstm_persistent_rule(H: int, R: int, B: int, dtype: torch.dtype, smem_bytes: int, cc: tuple[int, int], *,
                          T: int = 1, sm_count: int = 0) -> str | None:
    """Like :func:`persistent_rule` for the F-LSTM kernels, in this order: the single-CTA forward and backward fit (all
    of W1_h and W2 resident in one CTA); else (compute capability 9.x) the cluster forward of
    :func:`flstm_cluster_size` fits; else the grid-cooperative forward of :func:`flstm_grid_ctas` fits on at most
    ``sm_count`` CTAs (0: the SM count is unknown, the grid forward is not considered). The backward of the last two is
    the cluster backward where :func:`flstm_bwd_cluster_size` finds one, else the grid backward where
    :func:`flstm_bwd_grid_ctas` does, else Triton's (:func:`unsupported` checks that one of them can run).

    Example::
        >>> flstm_persistent_rule(1024, 256, 16, torch.bfloat16, 232448, (9, 0)) is None   # cluster of 16 CTAs
        True
        >>> flstm_persistent_rule(2048, 512, 64, torch.bfloat16, 232448, (9, 0), sm_count=132) is None  # grid of 64
        True
    """
    reason = _common_rule(dtype, cc)
    if reason is not None:
        return reason
    if T * B * 4 * H > _INT32_MAX:
        return f"T * B * 4H = {T * B * 4 * H} exceeds the kernels' 32-bit indexing"
    need = flstm_smem_bytes(H, R, dtype)
    if need <= smem_bytes or flstm_cluster_size(H, R, dtype, smem_bytes, cc) > 1:
        return None
    if flstm_grid_ctas(H, R, dtype, smem_bytes, sm_count) > 0:
        return None
    if cc[0] != _CLUSTER_CAPABILITY_MAJOR:
        cluster = f"the thread-block-cluster forward needs compute capability 9.x, the device has {cc[0]}.{cc[1]}"
    else:
        accepted = [C for C in _FLSTM_CLUSTER_SIZES if _flstm_cluster_shape_ok(H, R, C)]
        if not accepted:
            cluster = (f"the thread-block-cluster forward needs R a multiple of {_FLSTM_CLUSTER_RANK_MULTIPLE} and H a "
                       f"multiple of {_CLUSTER_UNIT_MULTIPLE} C for C in {_FLSTM_CLUSTER_SIZES}")
        else:
            per_cta = ", ".join(f"C={C}: {flstm_cluster_smem_bytes(H, R, C, dtype)}" for C in accepted)
            cluster = f"the thread-block-cluster forward does not fit either (bytes per CTA: {per_cta})"
    if sm_count < 1:
        grid = "the grid-cooperative forward was not considered (SM count unknown)"
    elif R % _FLSTM_CLUSTER_RANK_MULTIPLE != 0:
        grid = f"the grid-cooperative forward needs R a multiple of {_FLSTM_CLUSTER_RANK_MULTIPLE} too"
    else:
        largest = max((N for N in range(1, sm_count + 1) if _flstm_grid_shape_ok(H, R, N)), default=0)
        if largest == 0:
            grid = f"the grid-cooperative forward needs H a multiple of {_CLUSTER_UNIT_MULTIPLE} N, N >= 1"
        else:
            grid = (f"the grid-cooperative forward does not fit either on up to {sm_count} SMs (N={largest}: "
                    f"{flstm_grid_smem_bytes(H, R, largest, dtype)} bytes per CTA)")
    return (f"W1_h and W2 with H={H}, R={R} in {dtype} need {need} bytes of shared memory per block (weights plus "
            f"working buffers), the device allows {smem_bytes}; {cluster}; {grid}")


# --- Extension loading and device queries --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _extension_problem() -> str | None:
    """None when lstmkern._C is importable and registers CUDA kernels for every op, else why not."""
    try:
        from .. import _C
    except ImportError as err:
        return f"the extension lstmkern._C is not built or does not load ({err}); reinstall with nvcc available"
    if not getattr(_C, "built_with_cuda", 0):
        return "the extension lstmkern._C was built without CUDA (CPU-only build)"
    for name in _OPS:
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"lstmkern_cuda::{name}", "CUDA"):
            return f"the extension lstmkern._C registers no CUDA kernel for lstmkern_cuda::{name}"
    return None


@functools.lru_cache(maxsize=None)
def _device_limits(index: int) -> tuple[int, tuple[int, int], int]:
    """(opt-in shared memory per block in bytes, compute capability, SM count) of CUDA device ``index``."""
    smem = int(torch.ops.lstmkern_cuda.device_smem_optin(index))
    sm_count = int(torch.cuda.get_device_properties(index).multi_processor_count)
    return smem, tuple(torch.cuda.get_device_capability(index)), sm_count


def unsupported(op: str, device: torch.device, dtype: torch.dtype, sizes) -> str | None:
    """None when this backend can run ``op`` ("glstm" or "flstm") with these sizes (T, B, I, H, G, R) on tensors of
    ``device`` and ``dtype``; otherwise the reason (see the module docstring for the rule)."""
    if op not in ("glstm", "flstm"):
        raise ValueError(f"op must be 'glstm' or 'flstm', got {op!r}")
    device = torch.device(device)
    if device.type != "cuda":
        return f"backend 'cuda' needs CUDA tensors, got device {device.type}"
    if dtype == torch.float64:
        return "float64 is not supported by the persistent CUDA kernels (they accumulate in float32); use 'reference'"
    problem = _extension_problem()
    if problem is not None:
        return problem
    if not torch.cuda.is_available():
        return "CUDA is not available here (torch.cuda.is_available() is False)"
    from . import LayerSizes
    T, B, _I, H, G, R, P, _dense_input = LayerSizes(*sizes)
    smem, cc, sm_count = _device_limits(device.index if device.index is not None else torch.cuda.current_device())
    if P:
        return _projected_problem(op, device, dtype, tuple(sizes), smem, cc, sm_count)
    if op == "glstm":
        return persistent_rule(H // G, B, dtype, smem, cc, groups=G, T=T)
    reason = flstm_persistent_rule(H, R, B, dtype, smem, cc, T=T, sm_count=sm_count)
    cluster_size = flstm_cluster_size(H, R, dtype, smem, cc) if reason is None else 0
    if reason is None and cluster_size == 0:  # neither a single CTA nor a cluster: the grid-cooperative forward
        ctas = flstm_grid_ctas(H, R, dtype, smem, sm_count)
        index = device.index if device.index is not None else torch.cuda.current_device()
        try:
            resident = _flstm_grid_max_resident(index, H, R, ctas, dtype)
        except RuntimeError as err:  # the occupancy query failed: "auto" must fall back, not raise
            return f"the residency query of the {ctas}-CTA grid F-LSTM forward failed: {err}"
        if resident < ctas:
            return (f"H={H}, R={R} in {dtype} needs the grid-cooperative forward with N={ctas} CTAs of "
                    f"{flstm_grid_smem_bytes(H, R, ctas, dtype)} bytes each, all resident at once, and this device "
                    f"holds only {resident} (cudaOccupancyMaxActiveBlocksPerMultiprocessor x SM count)")
        backward_reason = _flstm_backward_problem(device, dtype, tuple(sizes), smem, cc, sm_count)
        if backward_reason is not None:
            return f"H={H}, R={R} in {dtype} runs on the grid-cooperative forward (N={ctas} CTAs); {backward_reason}"
    if cluster_size > 1:
        index = device.index if device.index is not None else torch.cuda.current_device()
        try:
            active = _flstm_cluster_max_active(index, H, R, cluster_size, dtype)
        except RuntimeError as err:  # the occupancy query failed: "auto" must fall back, not raise
            return f"the residency query of the {cluster_size}-CTA cluster F-LSTM forward failed: {err}"
        if active < 1:
            return (f"H={H}, R={R} in {dtype} needs the thread-block-cluster forward with C={cluster_size} CTAs of "
                    f"{flstm_cluster_smem_bytes(H, R, cluster_size, dtype)} bytes each, which this device cannot make "
                    f"resident (cudaOccupancyMaxActiveClusters = 0)")
        backward_reason = _flstm_backward_problem(device, dtype, tuple(sizes), smem, cc, sm_count)
        if backward_reason is not None:
            return f"H={H}, R={R} in {dtype} runs on the thread-block-cluster forward; {backward_reason}"
    return reason


def _projected_problem(op: str, device: torch.device, dtype: torch.dtype, sizes: tuple, smem: int,
                       cc: tuple[int, int], sm_count: int) -> str | None:
    """:func:`unsupported` for a projected layer (P > 0): the projected G-LSTM forward on the F-LSTM kernels
    (:func:`projected_rule`), a resident cluster where it needs one, and a persistent or Triton backward."""
    from . import LayerSizes
    T, B, _I, H, G, _R, P, _dense_input = LayerSizes(*sizes)
    if op == "flstm":
        return ("the persistent CUDA kernels do not implement the projected F-LSTM (its step W2 (W1_h (W_hr m)) needs "
                "a second cross-CTA exchange); the Triton backend does")
    reason = projected_rule(H, P, G, B, dtype, smem, cc, T=T, sm_count=sm_count)
    if reason is not None:
        return reason
    cluster_size = projected_cluster_size(H, P, G, dtype, smem, cc)
    if cluster_size == 0:  # neither one CTA nor a cluster: the grid-cooperative forward
        ctas = projected_grid_ctas(H, P, G, dtype, smem, sm_count)
        index = device.index if device.index is not None else torch.cuda.current_device()
        try:
            resident = _projected_grid_max_resident(index, H, P, G, ctas, dtype)
        except RuntimeError as err:  # the occupancy query failed: "auto" must fall back, not raise
            return f"the residency query of the {ctas}-CTA grid projected forward failed: {err}"
        if resident < ctas:
            return (f"H={H}, P={P}, G={G} in {dtype} needs the grid-cooperative projected forward with N={ctas} CTAs "
                    f"of {projected_grid_smem_bytes(H, P, G, ctas, dtype)} bytes each, all resident at once, and this "
                    f"device holds only {resident}")
    if cluster_size > 1:
        index = device.index if device.index is not None else torch.cuda.current_device()
        try:
            active = _projected_cluster_max_active(index, H, P, G, cluster_size, dtype)
        except RuntimeError as err:  # the occupancy query failed: "auto" must fall back, not raise
            return f"the residency query of the {cluster_size}-CTA cluster projected forward failed: {err}"
        if active < 1:
            return (f"H={H}, P={P}, G={G} in {dtype} needs the thread-block-cluster projected forward with "
                    f"C={cluster_size} CTAs of {projected_cluster_smem_bytes(H, P, G, cluster_size, dtype)} bytes "
                    f"each, which this device cannot make resident (cudaOccupancyMaxActiveClusters = 0)")
    index = device.index if device.index is not None else torch.cuda.current_device()
    if _projected_backward_kernel(index, H, P, G, dtype, smem, cc, sm_count) != (0, 0):
        return None
    triton_reason = _triton_problem("glstm", device, dtype, sizes)
    if triton_reason is not None:
        return (f"no persistent projected backward fits or is resident (projected_bwd_cluster_size, "
                f"projected_bwd_grid_ctas), and the Triton backend, which would run the backward, cannot run here: "
                f"{triton_reason}")
    return None


def _projected_backward_kernel(index: int, H: int, P: int, G: int, dtype: torch.dtype, smem: int,
                               cc: tuple[int, int], sm_count: int) -> tuple[int, int]:
    """The persistent projected backward :func:`glstm_bwd` runs on CUDA device ``index``, as the op's (cluster_size,
    grid_ctas): (1, 0) = single CTA, (C, 0) = the cluster backward (:func:`projected_bwd_cluster_size`, resident),
    (0, N) = the grid backward (:func:`projected_bwd_grid_ctas`, all N resident) where no single CTA fits and no
    cluster fits or is resident, (0, 0) = none (Triton's backward)."""
    if not _projected_shape_ok(H, P, G):
        return 0, 0
    return _resident_backward(
        projected_bwd_cluster_size(H, P, G, dtype, smem, cc),
        lambda C: _projected_cluster_bwd_max_active(index, H, P, G, C, dtype),
        projected_bwd_grid_ctas(H, P, G, dtype, smem, sm_count),
        lambda N: _projected_grid_bwd_max_resident(index, H, P, G, N, dtype))


def _resident_backward(cluster_size: int, clusters_active, grid_ctas: int, ctas_resident) -> tuple[int, int]:
    """The (cluster_size, grid_ctas) a persistent backward runs with: the single CTA (cluster_size 1); else the cluster
    of ``cluster_size`` CTAs where ``clusters_active(C)`` >= 1; else the grid of ``grid_ctas`` CTAs where
    ``ctas_resident(N)`` >= N (a cluster of 16 may not be resident where a grid is, e.g. a GPU whose GPCs have fewer
    free SMs); else (0, 0). A failed occupancy query counts as not resident: fall back, do not raise."""
    def at_least(query, size: int, need: int) -> bool:
        try:
            return query(size) >= need
        except RuntimeError:
            return False
    if cluster_size == 1:
        return 1, 0
    if cluster_size > 1 and at_least(clusters_active, cluster_size, 1):
        return cluster_size, 0
    if grid_ctas > 0 and at_least(ctas_resident, grid_ctas, grid_ctas):
        return 0, grid_ctas
    return 0, 0


@functools.lru_cache(maxsize=None)
def _projected_cluster_bwd_max_active(index: int, H: int, P: int, G: int, C: int, dtype: torch.dtype) -> int:
    """Clusters of the cluster projected backward (C CTAs, its shared memory for H, P, G) that CUDA device ``index``
    can hold at once (0: :func:`glstm_bwd` runs Triton's backward instead)."""
    return int(torch.ops.lstmkern_cuda.projected_cluster_bwd_max_active_clusters(index, H, P, G, C, dtype))


@functools.lru_cache(maxsize=None)
def _projected_grid_bwd_max_resident(index: int, H: int, P: int, G: int, N: int, dtype: torch.dtype) -> int:
    """CTAs of the grid projected backward (its shared memory for H, P, G, N) that CUDA device ``index`` can hold at
    once; the cooperative launch needs all N."""
    return int(torch.ops.lstmkern_cuda.projected_grid_bwd_max_resident_ctas(index, H, P, G, N, dtype))


@functools.lru_cache(maxsize=None)
def _projected_grid_max_resident(index: int, H: int, P: int, G: int, N: int, dtype: torch.dtype) -> int:
    """CTAs of the grid projected forward (its shared memory for H, P, G, N) that CUDA device ``index`` can hold at
    once; the cooperative launch needs all N."""
    return int(torch.ops.lstmkern_cuda.projected_grid_max_resident_ctas(index, H, P, G, N, dtype))


@functools.lru_cache(maxsize=None)
def _projected_cluster_max_active(index: int, H: int, P: int, G: int, C: int, dtype: torch.dtype) -> int:
    """Clusters of the cluster projected forward (C CTAs, its shared memory for H, P, G) that CUDA device ``index`` can
    hold at once."""
    return int(torch.ops.lstmkern_cuda.projected_cluster_max_active_clusters(index, H, P, G, C, dtype))


def _flstm_backward_kernel(index: int, H: int, R: int, dtype: torch.dtype, smem: int, cc: tuple[int, int],
                           sm_count: int) -> tuple[int, int]:
    """The persistent F-LSTM backward :func:`flstm_bwd` runs on CUDA device ``index``, as the op's (cluster_size,
    grid_ctas): (1, 0) = single CTA, (C, 0) = the cluster backward with C CTAs (:func:`flstm_bwd_cluster_size`,
    resident on the device), (0, N) = the grid-cooperative backward on N CTAs (:func:`flstm_bwd_grid_ctas`, all N
    resident) where no single CTA fits and no cluster fits or is resident, (0, 0) = none (Triton's backward)."""
    return _resident_backward(
        flstm_bwd_cluster_size(H, R, dtype, smem, cc),
        lambda C: _flstm_cluster_bwd_max_active(index, H, R, C, dtype),
        flstm_bwd_grid_ctas(H, R, dtype, smem, sm_count),
        lambda N: _flstm_grid_bwd_max_resident(index, H, R, N, dtype))


def _flstm_backward_problem(device: torch.device, dtype: torch.dtype, sizes: tuple, smem: int,
                            cc: tuple[int, int], sm_count: int) -> str | None:
    """None when the F-LSTM backward of a multi-CTA forward can run here: on a persistent backward kernel
    (:func:`_flstm_backward_kernel`), else on Triton's; otherwise why not."""
    _T, _B, _I, H, _G, R = tuple(sizes)[:6]
    index = device.index if device.index is not None else torch.cuda.current_device()
    if _flstm_backward_kernel(index, H, R, dtype, smem, cc, sm_count) != (0, 0):
        return None
    triton_reason = _triton_problem("flstm", device, dtype, sizes)
    if triton_reason is None:
        return None
    return (f"no persistent backward kernel fits or is resident (flstm_bwd_cluster_size, flstm_bwd_grid_ctas), and "
            f"the Triton backend, which would run the backward, cannot run here: {triton_reason}")


@functools.lru_cache(maxsize=None)
def _flstm_cluster_bwd_max_active(index: int, H: int, R: int, C: int, dtype: torch.dtype) -> int:
    """Clusters of the cluster F-LSTM backward (C CTAs, its shared memory for H, R) that CUDA device ``index`` can hold
    at once (0: :func:`flstm_bwd` runs Triton's backward instead)."""
    return int(torch.ops.lstmkern_cuda.flstm_cluster_bwd_max_active_clusters(index, H, R, C, dtype))


@functools.lru_cache(maxsize=None)
def _flstm_cluster_max_active(index: int, H: int, R: int, C: int, dtype: torch.dtype) -> int:
    """Clusters of the cluster F-LSTM forward (C CTAs, its shared memory for H, R) that CUDA device ``index`` can hold
    at once: 0 where C = 16 (beyond the portable 8) cannot be resident, e.g. no GPC with 16 free SMs."""
    return int(torch.ops.lstmkern_cuda.flstm_cluster_max_active_clusters(index, H, R, C, dtype))


@functools.lru_cache(maxsize=None)
def _flstm_grid_bwd_max_resident(index: int, H: int, R: int, N: int, dtype: torch.dtype) -> int:
    """CTAs of the grid F-LSTM backward (its shared memory for H, R, N) that CUDA device ``index`` can hold at once;
    the cooperative launch needs all N (:func:`flstm_bwd` runs Triton's backward otherwise)."""
    return int(torch.ops.lstmkern_cuda.flstm_grid_bwd_max_resident_ctas(index, H, R, N, dtype))


@functools.lru_cache(maxsize=None)
def _flstm_grid_max_resident(index: int, H: int, R: int, N: int, dtype: torch.dtype) -> int:
    """CTAs of the grid F-LSTM forward (its shared memory for H, R, N) that CUDA device ``index`` can hold at once; the
    cooperative launch needs all N."""
    return int(torch.ops.lstmkern_cuda.flstm_grid_max_resident_ctas(index, H, R, N, dtype))


def _triton_problem(op: str, device: torch.device, dtype: torch.dtype, sizes: tuple) -> str | None:
    """None when the Triton backend can run ``op``'s backward for these tensors, else why not."""
    try:
        from . import triton as triton_backend
    except ImportError as err:
        return f"backend 'triton' is not available: {err}"
    return triton_backend.unsupported(op, device, dtype, sizes)


def _ops():
    """torch.ops.lstmkern_cuda, after making sure lstmkern._C is loaded and has the CUDA kernels."""
    problem = _extension_problem()
    if problem is not None:
        raise RuntimeError(f"backend 'cuda' is not available: {problem}")
    return torch.ops.lstmkern_cuda


# --- The backend contract --------------------------------------------------------------------------------------------

def glstm_fwd(x, h0, c0, weight_ih, weight_hh, bias, weight_hr=None):
    """(output (T, B, P) in x.dtype, cell (T, B, H) float32); see lstmkern.backends for the contract. With weight_hr
    (P, H) the projected forward runs on the F-LSTM kernels in their projected mode (:func:`projected_cluster_size`);
    weight_ih may be (G, 4Hg, I) (dense input) either way."""
    return _ops().glstm_persistent_fwd(x, h0, c0, weight_ih, weight_hh, bias, weight_hr=weight_hr)


def glstm_bwd(grad_output, grad_cell, x, h0, c0, weight_ih, weight_hh, bias, output, cell, weight_hr=None):
    """(dx, dh0, dc0, dweight_ih, dweight_hh, dbias), each in x.dtype, and dweight_hr with weight_hr.

    The persistent backward kernels: the single-CTA kernel where it fits the device, else the cluster backward (the
    op's automatic choice, glstm_bwd_cluster_size in csrc/persistent_layout.h: compute capability 9.x and a cluster
    whose per-CTA share fits; verified against the reference under the CPU emulator, tests/test_emu.py); otherwise
    the Triton backward, which only needs the saved output and cell and follows the same reference numerics. A
    projected layer (weight_hr) runs the F-LSTM backwards in their projected mode (:func:`_projected_backward_kernel`:
    single CTA, cluster or grid, the counterpart of its forward; verified under the CPU emulator,
    tests/test_emu_projected_bwd.py), Triton's backward only where none fits or is resident.
    """
    ops = _ops()
    index = x.device.index if x.device.index is not None else torch.cuda.current_device()
    smem, cc, sm_count = _device_limits(index)
    if weight_hr is not None:
        H, P, G = weight_hr.shape[1], weight_hr.shape[0], weight_hh.shape[0]
        cluster_size, grid_ctas = _projected_backward_kernel(index, H, P, G, x.dtype, smem, cc, sm_count)
        if cluster_size == 0 and grid_ctas == 0:
            from . import triton as triton_backend
            return triton_backend.glstm_bwd(grad_output, grad_cell, x, h0, c0, weight_ih, weight_hh, bias, output,
                                            cell, weight_hr)
        return tuple(ops.glstm_persistent_bwd(grad_output, grad_cell, x, h0, c0, weight_ih, weight_hh, bias, output,
                                              cell, cluster_size=cluster_size, weight_hr=weight_hr,
                                              grid_ctas=grid_ctas))
    Hg = weight_hh.shape[2]
    cluster_fits = cc[0] == _CLUSTER_CAPABILITY_MAJOR and any(
        _glstm_cluster_shape_ok(Hg, C) and glstm_cluster_bwd_smem_bytes(Hg, C, x.dtype) <= smem
        for C in _CLUSTER_SIZES)
    if glstm_smem_bytes(Hg, x.dtype) > smem and not cluster_fits:
        from . import triton as triton_backend
        return triton_backend.glstm_bwd(grad_output, grad_cell, x, h0, c0, weight_ih, weight_hh, bias, output, cell)
    # The op's seventh result, dweight_hr, is empty without a projection.
    return tuple(ops.glstm_persistent_bwd(grad_output, grad_cell, x, h0, c0, weight_ih, weight_hh, bias, output,
                                          cell))[:6]


def _refuse_projected_flstm(weight_hr) -> None:
    if weight_hr is not None:
        raise ValueError("backend 'cuda' does not implement the projected F-LSTM (weight_hr); unsupported() says so "
                         "and 'auto' picks the Triton backend for it")


def flstm_fwd(x, h0, c0, weight_1, weight_2, bias, weight_hr=None):
    """(output (T, B, H) in x.dtype, cell (T, B, H) float32). weight_hr must be None (see :func:`unsupported`)."""
    _refuse_projected_flstm(weight_hr)
    return _ops().flstm_persistent_fwd(x, h0, c0, weight_1, weight_2, bias)


def flstm_bwd(grad_output, grad_cell, x, h0, c0, weight_1, weight_2, bias, output, cell, weight_hr=None):
    """(dx, dh0, dc0, dweight_1, dweight_2, dbias), each in x.dtype.

    The persistent backward kernels: the single-CTA kernel where it fits the device, else the cluster backward
    (csrc/flstm_cluster_bwd.cu, :func:`flstm_bwd_cluster_size`: compute capability 9.x, a cluster whose per-CTA share
    fits and that the device can make resident; this covers the shapes of the cluster forward, e.g. flstm-infer),
    else the grid-cooperative backward (csrc/flstm_grid_bwd.cu, :func:`flstm_bwd_grid_ctas`, all N CTAs resident; this
    covers the shapes of the grid forward, e.g. flstm-train on an H100 with N = 64, or flstm-infer on an A100);
    otherwise the Triton backward, which only needs the saved output and cell and follows the same reference
    numerics. weight_hr must be None.
    """
    _refuse_projected_flstm(weight_hr)
    ops = _ops()
    index = x.device.index if x.device.index is not None else torch.cuda.current_device()
    smem, cc, sm_count = _device_limits(index)
    cluster_size, grid_ctas = _flstm_backward_kernel(index, weight_2.shape[0] // 4, weight_2.shape[1], x.dtype, smem,
                                                     cc, sm_count)
    if cluster_size == 0 and grid_ctas == 0:
        from . import triton as triton_backend
        return triton_backend.flstm_bwd(grad_output, grad_cell, x, h0, c0, weight_1, weight_2, bias, output, cell)
    if grid_ctas > 0:
        return ops.flstm_persistent_bwd(grad_output, grad_cell, x, h0, c0, weight_1, weight_2, bias, output, cell,
                                        grid_ctas=grid_ctas)
    return ops.flstm_persistent_bwd(grad_output, grad_cell, x, h0, c0, weight_1, weight_2, bias, output, cell,
                                    cluster_size=cluster_size)
