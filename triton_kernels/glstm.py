"""Triton kernels for one G-LSTM layer (block-diagonal groups), forward and backward.

Shape legend: T time steps, B batch, I input features, H = G*Hg hidden units, G groups, Ig = I / G, P = G*Pg
projection size (P = H, Pg = Hg without a projection).
Layouts (all contiguous, time-major): x (T, B, I); h0 (B, P); c0 (B, H); weight_ih (G, 4Hg, Ig) (grouped input) or
(G, 4Hg, I) (dense input: every group reads all of x); weight_hh (G, 4Hg, Pg); bias (G, 4Hg); weight_hr (P, H) or
None; P / pre-activations (T, B, G*4Hg) in the state dtype, i.e. (T, B, G, 4, Hg) with gates i, f, g, o inside each
group, and gate gradients dgates in the same layout in x's dtype; output (T, B, P) in x's dtype; cell (T, B, H) in
the state dtype.

Launch structure
    forward:  1 grouped GEMM (P = x W_ih^T + b, all T, groups on the grid; dense input: one GEMM with weight_ih
              viewed as one (G*4Hg, I) matrix, whose group-major rows give the same gate layout)
              + either 1 sequence-fused launch (all T steps; a program owns a (group, batch tile) and keeps W_hh[g]
              in shared memory, h and c in registers; Hg_pad <= 128 in fp16/bf16, <= 64 otherwise, no projection:
              triton_kernels/glstm_sequence.py) or T fused step launches
              (a program owns a (group, hidden tile, batch tile) and computes its 4 gates, the recurrent product and
              the cell), each followed, with a projection, by the GEMM h_t = m_t W_hr^T (it mixes all groups).
    backward: 2 grouped GEMMs (pre = P + H_prev W_hh^T, all T), then T reverse-time step launches, in each of which
              a program owns a (group, unit tile, batch tile) and runs the pointwise backward of exactly its units
              (once per unit and step) into dgates_t (kept for all T, in x's dtype). The recurrent product dgates
              W_hh (fp16/bf16 operands on tensor cores) runs without a projection inside the next step's launch
              (dh_t[own units] = grad_output[t] + dgates_{t+1} W_hh[:, own units]; + 1 GEMM for dh0), with one as a
              GEMM after each step launch (dh_total[t] += dgates_t W_hh: it sums over h's P columns, not the cell's
              H units), and each step starts with the GEMM dm_t = dh_t W_hr. Last, 3 grouped GEMMs for dweight_ih
              (+ dbias as its row sums), dweight_hh and dx over all T (+ 1 for dweight_hr = sum_t dh_t^T m_t).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common
from ._common import (ALL_DTYPES, F32, F64, HALF, autotune_configs, dot_acc, lstm_cell_backward, new_buffer, sigmoid,
                      state_dtype, step_epilogue, tanh)
from .gemm import grouped_gemm
from .bptt import reverse_time_loop
from .projection import project_step, projection_weight_grad
from .glstm_sequence import glstm_sequence_fits, glstm_sequence_forward
from .step_graph import run_steps

__all__ = ["glstm_input_projection", "glstm_forward", "glstm_backward", "glstm_sequence_fits", "GLSTM_PATHS"]

GLSTM_PATHS = ("auto", "step", "sequence")


# ----------------------------------------------------------------------------------------------------------------------
# Forward: one fused recurrent step
# ----------------------------------------------------------------------------------------------------------------------
@triton.autotune(
    **autotune_configs(
        gpu=[dict(BLOCK_B=16, BLOCK_H=32, BLOCK_K=64), dict(BLOCK_B=32, BLOCK_H=32, BLOCK_K=64),
             dict(BLOCK_B=16, BLOCK_H=64, BLOCK_K=64), dict(BLOCK_B=16, BLOCK_H=16, BLOCK_K=32)],
        num_stages=[3, 3, 3, 1],
        # The dtypes each config serves: elsewhere it spills registers on sm_90 (see tests/test_triton_aot.py).
        dtype_arg="w_hh_ptr", dtypes=[ALL_DTYPES, F32 + HALF, HALF, F32 + F64],
        interpreted=dict(BLOCK_B=16, BLOCK_H=16, BLOCK_K=16)),
    key=["B", "HG", "PG", "G"],
)
@triton.jit
def _glstm_step_kernel(p_ptr, h_prev_ptr, c_prev_ptr, w_hh_ptr, h_out_ptr, c_out_ptr, B, HG, PG, G,
                       BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr):
    """One step: gates = P_t + h_{t-1}[g] W_hh[g]^T for (group, BLOCK_H units, BLOCK_B samples), then the cell.

    p (B, G*4Hg) state dtype; h_prev (B, G*Pg) (group g reads its Pg columns); c_prev (B, H) any float dtype;
    h_out (B, H) x dtype: h_t, or m_t = o*tanh(c_t) before a projection; c_out (B, H) state dtype.
    Grid: (G * cdiv(Hg, BLOCK_H), cdiv(B, BLOCK_B)).
    """
    state_dt: tl.constexpr = c_out_ptr.dtype.element_ty
    H = G * HG
    num_h_tiles = tl.cdiv(HG, BLOCK_H)
    group = tl.program_id(0) // num_h_tiles
    offs_j = (tl.program_id(0) % num_h_tiles) * BLOCK_H + tl.arange(0, BLOCK_H)  # units within the group
    offs_b = (tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    mask_b = offs_b < B
    mask_j = offs_j < HG

    acc_i = tl.zeros((BLOCK_B, BLOCK_H), dtype=state_dt)
    acc_f = tl.zeros((BLOCK_B, BLOCK_H), dtype=state_dt)
    acc_g = tl.zeros((BLOCK_B, BLOCK_H), dtype=state_dt)
    acc_o = tl.zeros((BLOCK_B, BLOCK_H), dtype=state_dt)
    h_ptrs = h_prev_ptr + offs_b[:, None] * (G * PG) + group * PG + offs_k[None, :]
    # (BLOCK_K, BLOCK_H) tile of W_hh[g, gate*Hg + j, k]^T; gate q sits q*Hg*Pg elements further.
    w_ptrs = w_hh_ptr + group * 4 * HG * PG + offs_j[None, :] * PG + offs_k[:, None]
    gate_stride = HG * PG
    for k0 in range(0, PG, BLOCK_K):
        mask_k = (k0 + offs_k) < PG
        h = tl.load(h_ptrs, mask=mask_b[:, None] & mask_k[None, :], other=0.0)
        w_mask = mask_k[:, None] & mask_j[None, :]
        acc_i = dot_acc(h, tl.load(w_ptrs, mask=w_mask, other=0.0), acc_i)
        acc_f = dot_acc(h, tl.load(w_ptrs + gate_stride, mask=w_mask, other=0.0), acc_f)
        acc_g = dot_acc(h, tl.load(w_ptrs + 2 * gate_stride, mask=w_mask, other=0.0), acc_g)
        acc_o = dot_acc(h, tl.load(w_ptrs + 3 * gate_stride, mask=w_mask, other=0.0), acc_o)
        h_ptrs += BLOCK_K
        w_ptrs += BLOCK_K

    p_ptrs = p_ptr + offs_b[:, None] * (4 * H) + group * 4 * HG + offs_j[None, :]
    unit_offs = offs_b[:, None] * H + group * HG + offs_j[None, :]
    step_epilogue(acc_i, acc_f, acc_g, acc_o, p_ptrs, HG, c_prev_ptr + unit_offs, h_out_ptr + unit_offs,
                  c_out_ptr + unit_offs, mask_b[:, None] & mask_j[None, :])


# ----------------------------------------------------------------------------------------------------------------------
# Backward: one reverse-time step, a program per unit tile
# ----------------------------------------------------------------------------------------------------------------------
@triton.autotune(
    **autotune_configs(
        gpu=[dict(BLOCK_B=16, BLOCK_J=32, BLOCK_K=64), dict(BLOCK_B=32, BLOCK_J=32, BLOCK_K=64),
             dict(BLOCK_B=16, BLOCK_J=64, BLOCK_K=64), dict(BLOCK_B=64, BLOCK_J=32, BLOCK_K=32),
             dict(BLOCK_B=64, BLOCK_J=64, BLOCK_K=32), dict(BLOCK_B=16, BLOCK_J=16, BLOCK_K=32)],
        num_warps=[4, 4, 4, 4, 8, 4], num_stages=[3, 3, 3, 3, 3, 1],
        # The dtypes each config serves: float64 spills registers with BLOCK_B=64 on sm_90, with or without the
        # product (see tests/test_triton_aot.py).
        dtype_arg="w_hh_ptr", dtypes=[ALL_DTYPES, ALL_DTYPES, ALL_DTYPES, F32 + HALF, F32 + HALF, ALL_DTYPES],
        interpreted=dict(BLOCK_B=16, BLOCK_J=16, BLOCK_K=16)),
    key=["B", "HG", "G", "RECURRENT", "HAS_GRAD_CELL", "PROJECTED"],
)
@triton.jit
def _glstm_backward_step_kernel(pre_ptr, c_prev_ptr, c_ptr, dh_ptr, grad_cell_ptr, dc_next_ptr, dgates_next_ptr,
                                w_hh_ptr, dgates_ptr, dc_prev_ptr, m_ptr, B, HG, G,
                                RECURRENT: tl.constexpr, HAS_GRAD_CELL: tl.constexpr, PROJECTED: tl.constexpr,
                                BLOCK_B: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_K: tl.constexpr):
    """Step t of BPTT for (group, BLOCK_J units, BLOCK_B samples): the recurrent part of these units' dh_t
    (RECURRENT), then the pointwise backward of exactly these units, so that each unit's runs in one program per step.

    dh (B, H): the gradient reaching h_t from outside the recurrence, grad_output[t] (x's dtype) without a projection,
    dm_t = dh_t W_hr (state dtype) with one (PROJECTED; dh_t then already holds the recurrent part, added by the
    product launch of step t + 1). RECURRENT (no projection, t < T-1): dh_t[own units] += dgates_{t+1}[g, all 4Hg]
    W_hh[g][:, own units], with dgates_next (B, G*4Hg) written by the previous launch. The product's operands are
    dgates and W_hh both in x's dtype: fp16/bf16 on tensor cores with float32 accumulation, float32 with IEEE float32
    products, float64 in float64.
    pre (B, G*4Hg), c (B, H), dc_next (B, H) the gradient reaching c_t from step t+1, grad_cell (B, H): state dtype;
    c_prev (B, H) any float dtype. Writes dgates (B, G*4Hg) in x's dtype (rounded once, for both the next step's
    product and the weight-gradient GEMMs), dc_prev (B, H) in the state dtype and, PROJECTED, m_t = o*tanh(c_t)
    (B, H) in x's dtype (m_ptr) for the dweight_hr GEMM. Grid: (G * cdiv(Hg, BLOCK_J), cdiv(B, BLOCK_B)).
    """
    state_dt: tl.constexpr = dc_prev_ptr.dtype.element_ty
    grad_dt: tl.constexpr = dgates_ptr.dtype.element_ty
    H = G * HG
    num_j_tiles = tl.cdiv(HG, BLOCK_J)
    group = tl.program_id(0) // num_j_tiles
    offs_j = (tl.program_id(0) % num_j_tiles) * BLOCK_J + tl.arange(0, BLOCK_J)  # units within the group
    offs_b = (tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    mask_b = offs_b < B
    mask_j = offs_j < HG
    mask = mask_b[:, None] & mask_j[None, :]
    unit_offs = offs_b[:, None] * H + group * HG + offs_j[None, :]
    gate_offs = offs_b[:, None] * (4 * H) + group * 4 * HG + offs_j[None, :]

    dh = tl.load(dh_ptr + unit_offs, mask=mask, other=0.0).to(state_dt)
    if RECURRENT:
        # The reduction runs over the group's 4Hg gate rows in one sweep: rows q*Hg + k of W_hh[g] (Hg columns, as
        # Pg = Hg here) are contiguous across gates, and so are a sample's 4Hg dgates of the group.
        acc = tl.zeros((BLOCK_B, BLOCK_J), dtype=state_dt)
        offs_k = tl.arange(0, BLOCK_K)
        dg_ptrs = dgates_next_ptr + offs_b[:, None] * (4 * H) + group * 4 * HG + offs_k[None, :]
        w_ptrs = w_hh_ptr + group * 4 * HG * HG + offs_k[:, None] * HG + offs_j[None, :]
        for k0 in range(0, 4 * HG, BLOCK_K):
            mask_k = (k0 + offs_k) < 4 * HG
            dg = tl.load(dg_ptrs, mask=mask_b[:, None] & mask_k[None, :], other=0.0)
            w = tl.load(w_ptrs, mask=mask_k[:, None] & mask_j[None, :], other=0.0).to(grad_dt)
            acc = dot_acc(dg, w, acc)
            dg_ptrs += BLOCK_K
            w_ptrs += BLOCK_K * HG
        dh += acc
    dc = tl.load(dc_next_ptr + unit_offs, mask=mask, other=0.0)
    if HAS_GRAD_CELL:
        dc += tl.load(grad_cell_ptr + unit_offs, mask=mask, other=0.0).to(state_dt)
    pre_i = tl.load(pre_ptr + gate_offs, mask=mask, other=0.0)
    pre_f = tl.load(pre_ptr + gate_offs + HG, mask=mask, other=0.0)
    pre_g = tl.load(pre_ptr + gate_offs + 2 * HG, mask=mask, other=0.0)
    pre_o = tl.load(pre_ptr + gate_offs + 3 * HG, mask=mask, other=0.0)
    c_prev = tl.load(c_prev_ptr + unit_offs, mask=mask, other=0.0).to(state_dt)
    c = tl.load(c_ptr + unit_offs, mask=mask, other=0.0)
    dpre_i, dpre_f, dpre_g, dpre_o, dc_prev = lstm_cell_backward(pre_i, pre_f, pre_g, pre_o, c_prev, c, dh, dc)
    tl.store(dgates_ptr + gate_offs, dpre_i.to(grad_dt), mask=mask)
    tl.store(dgates_ptr + gate_offs + HG, dpre_f.to(grad_dt), mask=mask)
    tl.store(dgates_ptr + gate_offs + 2 * HG, dpre_g.to(grad_dt), mask=mask)
    tl.store(dgates_ptr + gate_offs + 3 * HG, dpre_o.to(grad_dt), mask=mask)
    tl.store(dc_prev_ptr + unit_offs, dc_prev, mask=mask)
    if PROJECTED:
        m = sigmoid(pre_o) * tanh(c)  # the forward's m_t, recomputed as the reference does
        tl.store(m_ptr + unit_offs, m.to(m_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------------------------
def _dense_input(x: torch.Tensor, weight_ih: torch.Tensor) -> bool:
    """Whether every group reads all of x (weight_ih (G, 4Hg, I), G > 1; with G = 1 both forms are one GEMM)."""
    return weight_ih.shape[0] > 1 and weight_ih.shape[2] == x.shape[2]


def glstm_input_projection(x: torch.Tensor, weight_ih: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """P[t, b, g, :] = x[t, b, g-slice] W_ih[g]^T + bias[g] (grouped input) or x[t, b] W_ih[g]^T + bias[g] (dense
    input) for all T and groups in one launch.

    Args: x (T, B, I); weight_ih (G, 4Hg, Ig) or (G, 4Hg, I); bias (G, 4Hg) or None.
    Returns P (T, B, G*4Hg) in the state dtype.

    Example::
        >>> P = glstm_input_projection(torch.randn(4, 2, 6), torch.randn(3, 8, 2), None)  # (4, 2, 24)
    """
    T, B, I = x.shape
    G, four_hg, ig = weight_ih.shape
    proj = new_buffer((T, B, G * four_hg), state_dtype(x.dtype), x.device)
    if _dense_input(x, weight_ih):
        # weight_ih as one (G*4Hg, I) matrix: its rows, group-major, are P's columns (T, B, G, 4, Hg).
        N = G * four_hg
        return grouped_gemm(x, weight_ih, proj, groups=1, M=T * B, N=N, K=I, a_strides=(0, I, 1),
                            b_strides=(0, 1, I), c_strides=(0, N, 1), bias=bias)
    return grouped_gemm(x, weight_ih, proj, groups=G, M=T * B, N=four_hg, K=ig,
                        a_strides=(ig, I, 1), b_strides=(four_hg * ig, 1, ig), c_strides=(four_hg, G * four_hg, 1),
                        bias=bias, bias_group_stride=four_hg)


def glstm_forward(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, weight_ih: torch.Tensor,
                  weight_hh: torch.Tensor, bias: torch.Tensor | None, weight_hr: torch.Tensor | None = None, *,
                  path: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """One G-LSTM layer (same contract as reference.glstm_reference).

    Args: x (T, B, I); h0 (B, P); c0 (B, H); weight_ih (G, 4Hg, Ig) or (G, 4Hg, I) (dense input);
        weight_hh (G, 4Hg, Pg); bias (G, 4Hg) or None; weight_hr (P, H) or None (then P = H);
        path: "sequence" (one launch for all steps; not with a projection), "step" (one launch per step) or "auto"
        (sequence where :func:`glstm_sequence_fits`, Hg_pad <= 128 in fp16/bf16 and <= 64 otherwise, and there is
        no projection; see :mod:`.glstm_sequence`).
    Returns output (T, B, P) in x's dtype, cell (T, B, H) in the state dtype.

    Example::
        >>> out, cell = glstm_forward(x, h0, c0, w_ih, w_hh, b)   # x (T, B, G*Ig) on a GPU
    """
    if path not in GLSTM_PATHS:
        raise ValueError(f"path must be one of {GLSTM_PATHS}, got {path!r}")
    if path == "sequence" and weight_hr is not None:
        raise ValueError("path='sequence' has no projection (weight_hr): use 'step' or 'auto'")
    T, B, _ = x.shape
    G, four_hg, pg = weight_hh.shape
    hg = four_hg // 4
    H = G * hg
    proj = glstm_input_projection(x, weight_ih, bias)
    output = new_buffer((T, B, G * pg), x.dtype, x.device)
    cell = new_buffer((T, B, H), state_dtype(x.dtype), x.device)
    if weight_hr is None and (path == "sequence" or (path == "auto" and glstm_sequence_fits(hg, x.dtype))):
        glstm_sequence_forward(proj, h0, c0, weight_hh, output, cell)
        return output, cell
    # With a projection the step kernel writes m_t here and one GEMM projects it into output[t].
    cell_output = new_buffer((B, H), x.dtype, x.device) if weight_hr is not None else None
    grid = lambda meta: (G * triton.cdiv(hg, meta["BLOCK_H"]), triton.cdiv(B, meta["BLOCK_B"]))  # noqa: E731

    def loop():  # views only: no allocation or host sync inside, so step_graph can capture it
        for t in range(T):
            h_prev, c_prev = (h0, c0) if t == 0 else (output[t - 1], cell[t - 1])
            _glstm_step_kernel[grid](proj[t], h_prev, c_prev, weight_hh,
                                     output[t] if cell_output is None else cell_output, cell[t], B, hg, pg, G)
            if weight_hr is not None:
                project_step(cell_output, weight_hr, output[t])
    run_steps("glstm_forward", loop, (proj, h0, c0, weight_hh, output, cell, cell_output, weight_hr), (T, B, hg, pg, G))
    return output, cell


def glstm_backward(grad_output: torch.Tensor, grad_cell: torch.Tensor | None, x: torch.Tensor, h0: torch.Tensor,
                   c0: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias: torch.Tensor | None,
                   output: torch.Tensor, cell: torch.Tensor, weight_hr: torch.Tensor | None = None):
    """BPTT for :func:`glstm_forward` (same contract as reference.glstm_reference_backward).

    Returns (dx (T, B, I), dh0 (B, P), dc0 (B, H), dweight_ih, dweight_hh, dbias (G, 4Hg)), in x's dtype, and
    dweight_hr (P, H) as a 7th tensor when weight_hr is given.

    Example::
        >>> dx, dh0, dc0, dw_ih, dw_hh, db = glstm_backward(gy, None, x, h0, c0, w_ih, w_hh, b, out, cell)
    """
    T, B, I = x.shape
    G, four_hg, pg = weight_hh.shape
    hg = four_hg // 4
    H, P = G * hg, G * pg
    ig = weight_ih.shape[2]
    sdt = state_dtype(x.dtype)
    dev = x.device
    grad_output = grad_output.contiguous()
    grad_cell = grad_cell.contiguous() if grad_cell is not None else None
    h_prev = torch.cat((h0.unsqueeze(0), output[:-1]), dim=0)  # (T, B, P): the h each step started from

    # Time-parallel recompute of every step's pre-activations: pre = x W_ih^T + b + h_prev W_hh^T.
    pre = glstm_input_projection(x, weight_ih, bias)
    grouped_gemm(h_prev, weight_hh, pre, groups=G, M=T * B, N=four_hg, K=pg, a_strides=(pg, P, 1),
                 b_strides=(four_hg * pg, 1, pg), c_strides=(four_hg, G * four_hg, 1), accumulate=True)

    # Reverse time (the loop and its buffers: triton_kernels/bptt.py). dgates are kept for all T (the weight-gradient
    # GEMMs need them) in x's dtype: rounded once, they are both the A operand of the recurrent product (fp16/bf16 on
    # tensor cores, as the CUDA backward kernels do) and the operand of the time-parallel GEMMs below.
    dgates = new_buffer((T, B, G * four_hg), x.dtype, dev)
    unit_grid = lambda meta: (G * triton.cdiv(hg, meta["BLOCK_J"]), triton.cdiv(B, meta["BLOCK_B"]))  # noqa: E731
    # Per-step views, made once: the loop body only launches (no allocation, no host sync: CUDA-graph capturable).
    dgates_steps, pre_steps, cell_steps = dgates.unbind(0), pre.unbind(0), cell.unbind(0)
    c_prev_steps = (c0,) + cell_steps[:-1]
    grad_output_steps = grad_output.unbind(0)
    # Without a cell gradient the kernel does not read grad_cell (HAS_GRAD_CELL=False): any tensor stands in.
    grad_cell_steps = grad_cell.unbind(0) if grad_cell is not None else grad_output_steps
    has_grad_cell = grad_cell is not None

    def add_recurrent_product(t, dh, accumulate):
        """dh (B, P) (+)= dgates_t W_hh (block-diagonal): the gradient reaching h_{t-1} through the recurrence."""
        return grouped_gemm(dgates_steps[t], weight_hh, dh, groups=G, M=B, N=pg, K=four_hg,
                            a_strides=(four_hg, G * four_hg, 1), b_strides=(four_hg * pg, pg, 1),
                            c_strides=(pg, P, 1), accumulate=accumulate)

    def step(t, dm, dc_in, dh_out, dc_out, m_out):
        if weight_hr is not None:
            # The product mixes the cell's units (index space H) into h's (P): a pointwise launch per unit tile on
            # dm_t, then one product launch adding dgates_t W_hh into dh_total[t] (dh_out).
            _glstm_backward_step_kernel[unit_grid](
                pre_steps[t], c_prev_steps[t], cell_steps[t], dm, grad_cell_steps[t], dc_in, dgates_steps[t],
                weight_hh, dgates_steps[t], dc_out, m_out, B, hg, G,
                RECURRENT=False, HAS_GRAD_CELL=has_grad_cell, PROJECTED=True)
            add_recurrent_product(t, dh_out, accumulate=True)
            return
        # Without a projection the step's own launch multiplies dgates_{t+1} (written by the previous launch) by
        # W_hh for its units, so the recurrent gradient travels in dgates: dm / dh_out are None, and dh0 =
        # dgates_0 W_hh is formed after the loop.
        recurrent = t + 1 < T
        _glstm_backward_step_kernel[unit_grid](
            pre_steps[t], c_prev_steps[t], cell_steps[t], grad_output_steps[t], grad_cell_steps[t], dc_in,
            dgates_steps[t + 1] if recurrent else dgates_steps[t], weight_hh, dgates_steps[t], dc_out,
            dgates_steps[t], B, hg, G, RECURRENT=recurrent, HAS_GRAD_CELL=has_grad_cell, PROJECTED=False)
    rev = reverse_time_loop(step, grad_output, weight_hr, H, x.dtype, sdt, name="glstm_backward",
                            tensors=(pre, c0, cell, grad_output, grad_cell, dgates, weight_hh),
                            scalars=(T, B, hg, pg, G))
    dh0 = (rev.dh0.to(x.dtype) if weight_hr is not None else
           add_recurrent_product(0, new_buffer((B, P), x.dtype, dev), accumulate=False))

    # Weight gradients and dx: time-parallel grouped GEMMs over all T*B rows. For fp16/bf16 both operands are 16-bit
    # (tensor cores, float32 accumulation); dbias sums the same x-dtype dgates in float32.
    dweight_ih = new_buffer(weight_ih.shape, x.dtype, dev)
    dweight_hh = new_buffer(weight_hh.shape, x.dtype, dev)
    dbias = new_buffer((G, four_hg), x.dtype, dev)
    dx = new_buffer(x.shape, x.dtype, dev)
    # A = dgates[g]^T (4Hg, T*B): row sums are dbias.
    dgates_t_strides = (four_hg, 1, G * four_hg)
    if _dense_input(x, weight_ih):
        N = G * four_hg  # all groups as one (G*4Hg)-wide gate gradient, against weight_ih as one (G*4Hg, I) matrix
        grouped_gemm(dgates, x, dweight_ih, groups=1, M=N, N=I, K=T * B, a_strides=(0, 1, N), b_strides=(0, I, 1),
                     c_strides=(0, I, 1), rowsum=dbias)
        grouped_gemm(dgates, weight_ih, dx, groups=1, M=T * B, N=I, K=N, a_strides=(0, N, 1), b_strides=(0, I, 1),
                     c_strides=(0, I, 1))
    else:
        grouped_gemm(dgates, x, dweight_ih, groups=G, M=four_hg, N=ig, K=T * B, a_strides=dgates_t_strides,
                     b_strides=(ig, I, 1), c_strides=(four_hg * ig, ig, 1), rowsum=dbias, rowsum_group_stride=four_hg)
        grouped_gemm(dgates, weight_ih, dx, groups=G, M=T * B, N=ig, K=four_hg, a_strides=(four_hg, G * four_hg, 1),
                     b_strides=(four_hg * ig, ig, 1), c_strides=(ig, I, 1))
    grouped_gemm(dgates, h_prev, dweight_hh, groups=G, M=four_hg, N=pg, K=T * B, a_strides=dgates_t_strides,
                 b_strides=(pg, P, 1), c_strides=(four_hg * pg, pg, 1))
    grads = (dx, dh0, rev.dc0.to(x.dtype), dweight_ih, dweight_hh, dbias)
    if weight_hr is None:
        return grads
    return grads + (projection_weight_grad(rev.dh_total[1:], rev.cell_output, x.dtype),)


# ----------------------------------------------------------------------------------------------------------------------
# Ahead-of-time compile check
# ----------------------------------------------------------------------------------------------------------------------
# (T, B, G, Ig, Hg, Pg, dense input, forward path): the sequence-fused forward at the largest padded Hg it accepts
# (its largest tiles; smaller Hg pads only shrink them), the step forward beyond it, and a dense-input layer with a
# projection (Pg = 0: none), which adds the backward step's PROJECTED variant and the projection and dense-input GEMM
# layouts. Sizes are multiples of 16, as at typical shapes, so Triton specialises on the alignment facts those
# launches carry.
_AOT_LAYERS = ((2, 32, 2, 64, 64, 0, False, "sequence"), (2, 32, 2, 128, 128, 0, False, "step"),
               (2, 32, 2, 64, 128, 64, True, "step"))


def aot_launches(dtype: torch.dtype) -> None:
    """Call this module's launchers as the backend does, on small CPU tensors of ``dtype``, for the ahead-of-time
    compile check (:mod:`.aot` intercepts every kernel launch and compiles what it records; nothing runs here).

    Covers every layer shape of ``_AOT_LAYERS``: forward with and without bias, backward with and without a cell
    gradient, hence every kernel and every specialisation (pointer dtypes, constexpr flags, pads) a G-LSTM launches.
    """
    sdt = state_dtype(dtype)
    for T, B, G, ig, hg, pg, dense, path in _AOT_LAYERS:
        H, P = G * hg, G * (pg or hg)
        x = torch.zeros(T, B, G * ig, dtype=dtype)
        h0, c0 = torch.zeros(B, P, dtype=dtype), torch.zeros(B, H, dtype=dtype)
        weight_ih = torch.zeros(G, 4 * hg, G * ig if dense else ig, dtype=dtype)
        weight_hh = torch.zeros(G, 4 * hg, pg or hg, dtype=dtype)
        weight_hr = torch.zeros(P, H, dtype=dtype) if pg else None
        for bias in (torch.zeros(G, 4 * hg, dtype=dtype), None):
            output, cell = glstm_forward(x, h0, c0, weight_ih, weight_hh, bias, weight_hr, path=path)
            for grad_cell in (torch.zeros(T, B, H, dtype=sdt), None):
                glstm_backward(torch.zeros_like(output), grad_cell, x, h0, c0, weight_ih, weight_hh, bias, output,
                               cell, weight_hr)
