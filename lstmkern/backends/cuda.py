"""The "cuda" backend: persistent CUDA kernels from the ``lstmkern._C`` extension (sources in csrc/).

Shape legend: T time steps, B batch, I input features, H hidden units, G groups, Hg = H / G, Ig = I / G, R rank.

One kernel launch walks the whole sequence (forward) or the whole reversed sequence (backward) with the recurrent
weights resident in shared memory:

* G-LSTM: one CTA per (group g, batch tile) keeps W_hh[g] (4Hg x Hg) in shared memory; per step it multiplies its
  h_{t-1} tile (WMMA tensor cores with float32 accumulation for fp16/bf16, float32 FMA for fp32), adds the input
  projection P_t and runs the cell. Groups and batch tiles are independent: block barriers only, no grid sync.
* F-LSTM: one CTA per batch tile keeps all of W1_h (R x H) and W2 (4H x R); per step z = W1_h h, gates = P_t + W2 z.
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
6. G <= 65535 (groups are the grid's y dimension) and T * B * 4H < 2**31 (32-bit indices in the kernels).

Steps 3-6 are :func:`persistent_rule` / :func:`flstm_persistent_rule`: pure functions of sizes, dtype, shared memory
and compute capability, testable without a GPU. The shared-memory formulas mirror csrc/persistent_layout.h (the
layouts the kernels carve); tests/test_cuda_build.py checks them against the extension's query ops.
Batch size does not limit the kernels (more batch tiles, more CTAs).

Example::
    >>> from lstmkern.backends import cuda
    >>> cuda.persistent_rule(Hg=64, B=32, dtype=torch.bfloat16, smem_bytes=232448, cc=(9, 0)) is None
    True
"""
from __future__ import annotations

import functools

import torch

__all__ = ["glstm_fwd", "glstm_bwd", "flstm_fwd", "flstm_bwd", "unsupported", "persistent_rule",
           "flstm_persistent_rule", "glstm_smem_bytes", "flstm_smem_bytes"]

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MIN_CAPABILITY = (8, 0)
_MAX_GROUPS = 65535
_INT32_MAX = 2**31 - 1
_OPS = ("glstm_persistent_fwd", "glstm_persistent_bwd", "flstm_persistent_fwd", "flstm_persistent_bwd")

# --- Shared-memory layouts: keep in sync with csrc/persistent_layout.h (a test compares them) ---------------------
_SMEM_ALIGNMENT = 128
_WMMA_TILE = 16
_WMMA_HALF_ROW_PAD = 8
_WMMA_FLOAT_ROW_PAD = 4
_GLSTM_FWD_BATCH_TILE_WMMA = 16
_GLSTM_FWD_BATCH_TILE_FMA = 8
_GLSTM_BWD_BATCH_TILE = 8
_FLSTM_BATCH_TILE = 8


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def _buffers_bytes(*sizes: int) -> int:
    """Total of buffers laid out one after another, each starting ``_SMEM_ALIGNMENT``-aligned."""
    end = 0
    for size in sizes:
        end = _round_up(end, _SMEM_ALIGNMENT) + size
    return _round_up(end, _SMEM_ALIGNMENT)


def _element_bytes(dtype: torch.dtype) -> int:
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES} for the persistent kernels, got {dtype}")
    return 4 if dtype == torch.float32 else 2


def glstm_smem_bytes(Hg: int, dtype: torch.dtype) -> int:
    """Dynamic shared memory (bytes per block) of the persistent G-LSTM kernels: max over forward and backward.

    Forward: W_hh[g]^T (padded to multiples of 16 for WMMA in fp16/bf16), the h tile, the float32 gate tile and the
    float32 cell tile. Backward: W_hh[g], float32 dgates, dh and dc tiles.

    Example::
        >>> glstm_smem_bytes(64, torch.float32)
        77824
    """
    if Hg < 1:
        raise ValueError(f"Hg must be >= 1, got {Hg}")
    elem = _element_bytes(dtype)
    if dtype == torch.float32:
        bt = _GLSTM_FWD_BATCH_TILE_FMA
        fwd = _buffers_bytes(Hg * 4 * Hg * elem, bt * Hg * 4, bt * 4 * Hg * 4, bt * Hg * 4)
    else:
        bt = _GLSTM_FWD_BATCH_TILE_WMMA
        k_pad, n_pad = _round_up(Hg, _WMMA_TILE), _round_up(4 * Hg, _WMMA_TILE)
        fwd = _buffers_bytes(k_pad * (n_pad + _WMMA_HALF_ROW_PAD) * elem, bt * (k_pad + _WMMA_HALF_ROW_PAD) * 2,
                             bt * (n_pad + _WMMA_FLOAT_ROW_PAD) * 4, bt * Hg * 4)
    bt = _GLSTM_BWD_BATCH_TILE
    bwd = _buffers_bytes(4 * Hg * Hg * elem, bt * 4 * Hg * 4, bt * Hg * 4, bt * Hg * 4)
    return max(fwd, bwd)


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
    capability ``cc`` (major, minor); otherwise the reason they cannot. B only scales the grid.

    Example::
        >>> persistent_rule(256, 8, torch.float32, 232448, (9, 0)).startswith("W_hh[g] with Hg=256 in torch.float32")
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
    if need > smem_bytes:
        return (f"W_hh[g] with Hg={Hg} in {dtype} needs {need} bytes of shared memory per block (weights plus working "
                f"buffers), the device allows {smem_bytes}")
    return None


def flstm_persistent_rule(H: int, R: int, B: int, dtype: torch.dtype, smem_bytes: int, cc: tuple[int, int], *,
                          T: int = 1) -> str | None:
    """Like :func:`persistent_rule` for the single-CTA F-LSTM kernels (all of W1_h and W2 resident in one CTA)."""
    reason = _common_rule(dtype, cc)
    if reason is not None:
        return reason
    if T * B * 4 * H > _INT32_MAX:
        return f"T * B * 4H = {T * B * 4 * H} exceeds the kernels' 32-bit indexing"
    need = flstm_smem_bytes(H, R, dtype)
    if need > smem_bytes:
        return (f"W1_h and W2 with H={H}, R={R} in {dtype} need {need} bytes of shared memory per block (weights plus "
                f"working buffers), the device allows {smem_bytes}; the multi-CTA F-LSTM kernel is not implemented")
    return None


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
def _device_limits(index: int) -> tuple[int, tuple[int, int]]:
    """(opt-in shared memory per block in bytes, compute capability) of CUDA device ``index``."""
    smem = int(torch.ops.lstmkern_cuda.device_smem_optin(index))
    return smem, tuple(torch.cuda.get_device_capability(index))


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
    T, B, _I, H, G, R = sizes
    smem, cc = _device_limits(device.index if device.index is not None else torch.cuda.current_device())
    if op == "glstm":
        return persistent_rule(H // G, B, dtype, smem, cc, groups=G, T=T)
    return flstm_persistent_rule(H, R, B, dtype, smem, cc, T=T)


def _ops():
    """torch.ops.lstmkern_cuda, after making sure lstmkern._C is loaded and has the CUDA kernels."""
    problem = _extension_problem()
    if problem is not None:
        raise RuntimeError(f"backend 'cuda' is not available: {problem}")
    return torch.ops.lstmkern_cuda


# --- The backend contract --------------------------------------------------------------------------------------------

def glstm_fwd(x, h0, c0, weight_ih, weight_hh, bias):
    """(output (T, B, H) in x.dtype, cell (T, B, H) float32); see lstmkern.backends for the contract."""
    return _ops().glstm_persistent_fwd(x, h0, c0, weight_ih, weight_hh, bias)


def glstm_bwd(grad_output, grad_cell, x, h0, c0, weight_ih, weight_hh, bias, output, cell):
    """(dx, dh0, dc0, dweight_ih, dweight_hh, dbias), each in x.dtype."""
    return _ops().glstm_persistent_bwd(grad_output, grad_cell, x, h0, c0, weight_ih, weight_hh, bias,
                                         output, cell)


def flstm_fwd(x, h0, c0, weight_1, weight_2, bias):
    """(output (T, B, H) in x.dtype, cell (T, B, H) float32)."""
    return _ops().flstm_persistent_fwd(x, h0, c0, weight_1, weight_2, bias)


def flstm_bwd(grad_output, grad_cell, x, h0, c0, weight_1, weight_2, bias, output, cell):
    """(dx, dh0, dc0, dweight_1, dweight_2, dbias), each in x.dtype."""
    return _ops().flstm_persistent_bwd(grad_output, grad_cell, x, h0, c0, weight_1, weight_2, bias,
                                         output, cell)
