"""The LSTMP projection h_t = m_t W_hr^T (``weight_hr`` (P, H)) and its gradients, as launches of the grouped GEMM.

Shape legend: T time steps, B batch, H hidden (cell) units, P projection size (the width of h).

The projection mixes every hidden unit, so it cannot be fused into a step kernel whose programs each own a tile of
units: the G-LSTM and F-LSTM launchers run it as one GEMM per step after the step kernel has written m_t. The
rounding points are the reference's (:func:`lstmkern.reference._project`): m_t is rounded to x's dtype, then
multiplied by W_hr in x's dtype with float32 (float64) accumulation; the backward products run in the state dtype.
"""
from __future__ import annotations

import torch

from ._common import new_buffer
from .gemm import grouped_gemm

__all__ = ["project_step", "project_step_backward", "projection_weight_grad"]


def project_step(m: torch.Tensor, weight_hr: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """h = m W_hr^T for one step. m (B, H) and weight_hr (P, H) in x's dtype; writes h (B, P) (a view of output[t])."""
    B, H = m.shape
    P = weight_hr.shape[0]
    return grouped_gemm(m, weight_hr, h, groups=1, M=B, N=P, K=H, a_strides=(0, H, 1), b_strides=(0, 1, H),
                        c_strides=(0, P, 1))


def project_step_backward(dh: torch.Tensor, weight_hr: torch.Tensor, dm: torch.Tensor) -> torch.Tensor:
    """dm = dh W_hr for one step: dh (B, P) state dtype (the total gradient reaching h_t), weight_hr (P, H); writes
    dm (B, H) in the state dtype (the weight is widened to it first, as in the reference)."""
    B, P = dh.shape
    H = weight_hr.shape[1]
    return grouped_gemm(dh, weight_hr, dm, groups=1, M=B, N=H, K=P, a_strides=(0, P, 1), b_strides=(0, H, 1),
                        c_strides=(0, H, 1))


def projection_weight_grad(dh: torch.Tensor, m: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """dweight_hr = sum_t dh_t^T m_t over all T*B rows in one launch: dh (T, B, P) state dtype, m (T, B, H) in x's
    dtype. Returns dweight_hr (P, H) in ``dtype`` (x's)."""
    T, B, P = dh.shape
    H = m.shape[2]
    dweight_hr = new_buffer((P, H), dtype, dh.device)
    return grouped_gemm(dh, m, dweight_hr, groups=1, M=P, N=H, K=T * B, a_strides=(0, 1, P), b_strides=(0, H, 1),
                        c_strides=(0, H, 1))
