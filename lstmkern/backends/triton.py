"""The "triton" backend: Triton kernels for G-LSTM and F-LSTM (see :mod:`lstmkern.triton_kernels`).

Shape legend and contract: :mod:`lstmkern.backends` and :mod:`lstmkern.reference` (T, B, I, H, G, R, P; time-major).

Forward: one launch for the input projection of all steps, then one launch for the whole sequence where the
recurrent weights fit on chip (small Hg for G-LSTM, small H and R for F-LSTM; no projection) or, per step, one fused
launch (G-LSTM) or two (F-LSTM: the rank product z_t once for the layer, then the gates and cell). Backward:
time-parallel gate recompute; per step in reverse time one launch (G-LSTM: the recurrent product of step t+1 and the
pointwise backward of each unit, once) or two (F-LSTM: the same, then dz_t once for the layer); time-parallel weight
gradients. Recurrent products of fp16/bf16 layers run on tensor cores, both directions. Projections (LSTMP, ``weight_hr`` (P, H)) add one GEMM per step (h_t = m_t W_hr^T forward,
dm_t = dh_t W_hr backward) and one time-parallel GEMM for dweight_hr; the dense-input G-LSTM (weight_ih (G, 4Hg, I))
runs its input projection and its dx / dweight_ih as single dense GEMMs.
Runs on CUDA tensors, or on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1; a correctness tool, slow).
The per-step launch loops allocate nothing and never sync: they run through
:func:`lstmkern.triton_kernels.step_graph.run_steps`, which replays them from a cached CUDA graph once a layer's
buffers repeat (one host call for all T steps), and a caller's own CUDA-graph capture records them too (call the
layer once before capturing, so the autotuners have run).
"""
from __future__ import annotations

import os

import torch

from ..triton_kernels import flstm_backward, flstm_forward, glstm_backward, glstm_forward

__all__ = ["glstm_fwd", "glstm_bwd", "flstm_fwd", "flstm_bwd", "unsupported"]

# Every layer form: the LSTMP projection (weight_hr as the functions' last argument) and the dense-input G-LSTM.
SUPPORTS_PROJECTION = True
SUPPORTS_DENSE_INPUT = True

_OPS = ("glstm", "flstm")
_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def unsupported(op: str, device: torch.device, dtype: torch.dtype, sizes) -> str | None:
    """None when these kernels can run ``op`` on tensors of ``device`` and ``dtype``, else the reason they cannot.

    ``sizes`` (LayerSizes T, B, I, H, G, R, P, dense_input) does not matter: every kernel masks arbitrary sizes and
    picks the per-step path where the sequence-fused one does not fit (or the layer is projected).
    """
    if op not in _OPS:
        return f"unknown op {op!r} (expected one of {_OPS})"
    if dtype not in _DTYPES:
        return f"dtype {dtype} is not supported (expected one of {_DTYPES})"
    device = torch.device(device)
    if device.type == "cuda":
        if dtype == torch.float64 and torch.cuda.get_device_capability(device) < (8, 0):
            return "float64 needs tl.dot in float64, available on compute capability 8.0 or newer"
        return None
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        if dtype == torch.bfloat16:
            return "the Triton interpreter on CPU does not compute bfloat16 matrix products correctly"
        return None
    return (f"tensors are on {device.type}; Triton kernels need CUDA tensors "
            "(or CPU tensors with TRITON_INTERPRET=1 set before triton is imported)")


def glstm_fwd(x, h0, c0, weight_ih, weight_hh, bias, weight_hr=None):
    """-> (output (T, B, P) x dtype, cell (T, B, H) state dtype); P = H without weight_hr."""
    return glstm_forward(x, h0, c0, weight_ih, weight_hh, bias, weight_hr)


def glstm_bwd(grad_output, grad_cell, x, h0, c0, weight_ih, weight_hh, bias, output, cell, weight_hr=None):
    """-> (dx, dh0, dc0, dweight_ih, dweight_hh, dbias (G, 4Hg)) + (dweight_hr,) with weight_hr."""
    return glstm_backward(grad_output, grad_cell, x, h0, c0, weight_ih, weight_hh, bias, output, cell, weight_hr)


def flstm_fwd(x, h0, c0, weight_1, weight_2, bias, weight_hr=None):
    """-> (output (T, B, P) x dtype, cell (T, B, H) state dtype); P = H without weight_hr."""
    return flstm_forward(x, h0, c0, weight_1, weight_2, bias, weight_hr)


def flstm_bwd(grad_output, grad_cell, x, h0, c0, weight_1, weight_2, bias, output, cell, weight_hr=None):
    """-> (dx, dh0, dc0, dweight_1, dweight_2, dbias (4H,)) + (dweight_hr,) with weight_hr."""
    return flstm_backward(grad_output, grad_cell, x, h0, c0, weight_1, weight_2, bias, output, cell, weight_hr)
