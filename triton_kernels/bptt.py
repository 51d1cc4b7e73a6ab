"""The reverse-time loop that the G-LSTM and F-LSTM backward launchers share.

Shape legend: T time steps, B batch, H hidden (cell) units, P width of h (the projection size; P = H without one).

Both backward launchers run one or two kernels per time step in reverse. The kernels differ (block-diagonal W_hh vs
the factored W2 W1_h); the buffers and their hand-over from step to step do not, and live here:
  * dc ping-pongs between two buffers: a step reads the whole layer's dc of step t + 1 while other programs already
    write step t's, so the two cannot share storage;
  * without a projection the recurrent gradient travels in the step kernels' own outputs (a step multiplies the
    gate gradients of step t + 1, dgates_{t+1} W_hh or dz_{t+1} W1_h, for its units), so no dh buffer is needed and
    the launchers form dh0 after the loop;
  * with a projection, dh_total[t + 1] = dh_t (B, P) is the whole gradient reaching h_t: it starts as grad_output[t],
    step t + 1 adds its recurrent part into it, and all T are kept for dweight_hr = sum_t dh_t^T m_t; each step first
    forms dm_t = dh_t W_hr (B, H), the gradient the cell sees, and the step kernel recomputes m_t for dweight_hr.
The loop runs through :func:`.step_graph.run_steps`: it allocates nothing and never synchronises, so once a layer's
buffers repeat it is replayed from a CUDA graph (one host call for all T steps).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from ._common import new_buffer
from .projection import project_step_backward
from .step_graph import run_steps

__all__ = ["ReverseTimeResult", "reverse_time_loop"]


class ReverseTimeResult(NamedTuple):
    dc0: torch.Tensor                   # (B, H) state dtype: the gradient reaching c0
    dh0: torch.Tensor | None            # (B, P) state dtype with a projection (the gradient reaching h0), else None
    dh_total: torch.Tensor | None       # (T + 1, B, P) with a projection (row t + 1 = dh_t), else None
    cell_output: torch.Tensor | None    # (T, B, H) m_t in x's dtype with a projection, else None


StepLaunch = Callable[[int, "torch.Tensor | None", torch.Tensor, "torch.Tensor | None", torch.Tensor,
                       "torch.Tensor | None"], None]


def reverse_time_loop(step: StepLaunch, grad_output: torch.Tensor, weight_hr: torch.Tensor | None, H: int,
                      x_dtype: torch.dtype, state_dtype: torch.dtype, *, name: str, tensors: tuple,
                      scalars: tuple) -> ReverseTimeResult:
    """Run ``step(t, dm, dc_in, dh_out, dc_out, m_out)`` for t = T-1 .. 0.

    dc_in is the gradient reaching c_t from step t + 1, dc_out the step's own for c_{t-1}. With a projection, dm
    (B, H) = dh_t W_hr is the whole gradient reaching m_t, dh_out = dh_total[t] (B, P) already holds grad_output[t-1]
    and the step adds its recurrent contribution into it, and m_out (B, H) receives m_t; without one, dm, dh_out and
    m_out are None. ``name``, ``tensors`` (every tensor the step closure touches) and ``scalars`` key the loop's CUDA
    graph (:func:`.step_graph.run_steps`); this function adds its own buffers to the key.

    Example::
        result = reverse_time_loop(lambda t, dm, dc, dh_out, dc_out, m: kernel[grid](...), grad_output, None, H,
                                   x.dtype, torch.float32, name="glstm_backward", tensors=(pre, ...), scalars=(T, B))
    """
    T, B, P = grad_output.shape
    dev = grad_output.device
    dc = torch.zeros((2, B, H), dtype=state_dtype, device=dev)
    if weight_hr is None:
        def loop():
            for t in range(T - 1, -1, -1):
                src = (T - 1 - t) % 2
                step(t, None, dc[src], None, dc[1 - src], None)
        run_steps(name, loop, tensors + (dc,), scalars)
        return ReverseTimeResult(dc[T % 2], None, None, None)
    dh_total = new_buffer((T + 1, B, P), state_dtype, dev)
    dh_total[0].zero_()
    dh_total[1:].copy_(grad_output)
    dm = new_buffer((B, H), state_dtype, dev)
    cell_output = new_buffer((T, B, H), x_dtype, dev)  # m_t, recomputed by the step kernels

    def projected_loop():
        for t in range(T - 1, -1, -1):
            src = (T - 1 - t) % 2
            project_step_backward(dh_total[t + 1], weight_hr, dm)
            step(t, dm, dc[src], dh_total[t], dc[1 - src], cell_output[t])
    run_steps(name, projected_loop, tensors + (dc, dh_total, dm, cell_output, weight_hr), scalars + ("projected",))
    # dh0 is cloned: a view would keep all of dh_total alive after the backward returns.
    return ReverseTimeResult(dc[T % 2], dh_total[0].clone(), dh_total, cell_output)
