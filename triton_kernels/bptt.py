"""The reverse-time loop that the G-LSTM and F-LSTM backward launchers share.

Shape legend: T time steps, B batch, H hidden (cell) units, P width of h (the projection size; P = H without one).

Both backward launchers run one step kernel per time step in reverse. The kernels differ (block-diagonal W_hh vs the
factored W2 W1_h); the buffers and their hand-over from step to step do not, and live here:
  * dc (and dh without a projection) ping-pong between two buffers: a step reads the whole layer's gradients of step
    t + 1 while other programs already write step t's, so the two cannot share storage;
  * with a projection, dh_total[t + 1] = dh_t (B, P) is the whole gradient reaching h_t: it starts as grad_output[t],
    step t + 1 adds its recurrent part into it, and all T are kept for dweight_hr = sum_t dh_t^T m_t; each step first
    forms dm_t = dh_t W_hr (B, H), the gradient the cell sees, and the step kernel recomputes m_t for dweight_hr.
No allocation or host synchronisation inside the loop.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from ._common import new_buffer
from .projection import project_step_backward

__all__ = ["ReverseTimeResult", "reverse_time_loop"]


class ReverseTimeResult(NamedTuple):
    dh0: torch.Tensor                   # (B, P) state dtype: the gradient reaching h0
    dc0: torch.Tensor                   # (B, H) state dtype: the gradient reaching c0
    dh_total: torch.Tensor | None       # (T + 1, B, P) with a projection (row t + 1 = dh_t), else None
    cell_output: torch.Tensor | None    # (T, B, H) m_t in x's dtype with a projection, else None


StepLaunch = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"], None]


def reverse_time_loop(step: StepLaunch, grad_output: torch.Tensor, weight_hr: torch.Tensor | None, H: int,
                      x_dtype: torch.dtype, state_dtype: torch.dtype) -> ReverseTimeResult:
    """Run ``step(t, dh_in, dc_in, dh_out, dc_out, m_out)`` for t = T-1 .. 0.

    dh_in (B, H or P) is the gradient the cell of step t sees through h (dm_t with a projection, where the step kernel
    must also add grad_output[t] itself without one); dc_in the gradient reaching c_t from step t + 1; the step writes
    dh_out (its recurrent contribution to step t - 1; with a projection it adds into dh_total[t], which already holds
    grad_output[t - 1]), dc_out, and m_out (B, H) = m_t where given (projection only; None otherwise).

    Example::
        result = reverse_time_loop(lambda t, dh, dc, dh_out, dc_out, m: kernel[grid](...), grad_output, None, H,
                                   x.dtype, torch.float32)
    """
    T, B, P = grad_output.shape
    dev = grad_output.device
    dc = torch.zeros((2, B, H), dtype=state_dtype, device=dev)
    src = 0
    if weight_hr is None:
        dh = torch.zeros((2, B, H), dtype=state_dtype, device=dev)
        for t in range(T - 1, -1, -1):
            step(t, dh[src], dc[src], dh[1 - src], dc[1 - src], None)
            src = 1 - src
        return ReverseTimeResult(dh[src], dc[src], None, None)
    dh_total = new_buffer((T + 1, B, P), state_dtype, dev)
    dh_total[0].zero_()
    dh_total[1:].copy_(grad_output)
    dm = new_buffer((B, H), state_dtype, dev)
    cell_output = new_buffer((T, B, H), x_dtype, dev)  # m_t, recomputed by the step kernels
    for t in range(T - 1, -1, -1):
        project_step_backward(dh_total[t + 1], weight_hr, dm)
        step(t, dm, dc[src], dh_total[t], dc[1 - src], cell_output[t])
        src = 1 - src
    # dh0 is cloned: a view would keep all of dh_total alive after the backward returns.
    return ReverseTimeResult(dh_total[0].clone(), dc[src], dh_total, cell_output)
