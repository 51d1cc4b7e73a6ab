"""Triton kernels for one F-LSTM layer (factorized gates W2 W1), forward and backward.

Shape legend: T time steps, B batch, I input features, H hidden units, R rank, P projection size (P = H without one).
Layouts (contiguous, time-major): x (T, B, I); h0 (B, P); c0 (B, H); weight_1 (R, I+P) = [W1_x | W1_h];
weight_2 (4H, R), rows gates i, f, g, o; bias (4H,); weight_hr (P, H) or None; P / pre-activations (T, B, 4H) in the
state dtype; z = W1 [x; h] (rank R, per sample); output (T, B, P) in x's dtype; cell (T, B, H) in the state dtype;
the backward's dgates (T, B, 4H) and dz (T, B, R) in x's dtype (see Precision).

Launch structure
    forward:  input projection P = W2 (W1_x x_t) + b for all T: 1 launch with z on chip (rank padded <= 128), else
              2 GEMM launches through a (T*B, R) intermediate;
              + either 1 sequence-fused launch (all steps; a program owns a batch tile and keeps W1_h, W2, h, c on
              chip; used when H and R are small and there is no projection) or 2 launches per step: the rank product
              z_t = h_{t-1} W1_h^T (B, R) once for the layer (programs over batch x rank tiles), then the step kernel
              (a program owns a tile of hidden units: gates = P_t + z_t W2^T for its units' 4 gates, then the cell);
              with a projection each step ends with the GEMM h_t = m_t W_hr^T.
    backward: 3 GEMMs recompute pre for all T (z = W1 [x; h_prev], pre = W2 z + b), 2 launches per reverse step: the
              step kernel (a program owns a tile of units: dh_t = grad_output[t] + dz_{t+1} W1_h for its units, then
              their pointwise backward, once, giving dgates_t and dc_{t-1}) and the rank product dz_t = dgates_t W2
              once for the layer (with a projection the step is preceded by the GEMM dm_t = dh_t W_hr and followed by
              the GEMM dh_{t-1} += dz_t W1_h); then dh0 = dz_0 W1_h and 4 GEMMs over all T: dweight_2 (+ dbias as its
              row sums), the two column blocks of dweight_1, dx (+ 1 for dweight_hr = sum_t dh_t^T m_t).

Why z_t (dz_t) is one launch per step and not per unit tile: a unit-tile program needs all R columns of z for its
batch tile; recomputing them read all of W1_h in every program (flstm-infer, H 1024, R 256, B 64, bf16: 128 x 512 KiB =
64 MiB of L2 reads per step; flstm-train, H 2048, R 512: 512 MiB), and float32 partials, one per unit tile, cost as
many bytes to reduce (n_tiles x BLOCK_B x R x 4 B). Once per step: W1_h once per batch tile (2 / 8 MiB at BLOCK_B 16),
z (32 / 64 KiB) once per unit tile, for one more launch per step; the backward's dz = dgates W2 likewise.

Precision (the reference's rounding points, lstmkern/reference.py): z is rounded to x's dtype before the product with
W2, as the reference's 16-bit matmul does, so both forward products take 16-bit operands (tensor cores). The backward's
recurrent products take dgates_t and dz_t rounded to x's dtype for fp16/bf16 (float32 accumulation), as the CUDA
backward kernels do (csrc/flstm_cluster_bwd.cu, "Precision") and as the weight-gradient GEMMs already did; float32 and
float64 layers keep IEEE products in their own dtype.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (ALL_DTYPES, F32, F64, HALF, autotune_configs, dot_acc, dot_pad,
                      gradient_gemm_operand, lstm_cell, lstm_cell_backward, new_buffer, sigmoid, state_dtype,
                      step_epilogue, tanh)
from .gemm import grouped_gemm
from .bptt import reverse_time_loop
from .projection import project_step, projection_weight_grad
from .step_graph import run_steps

__all__ = ["flstm_input_projection", "flstm_forward", "flstm_backward", "flstm_sequence_fits", "FLSTM_PATHS"]

FLSTM_PATHS = ("auto", "step", "sequence")
# Sequence-fused kernel: W1_h^T (H_pad x R_pad) and 4 gate tiles of W2^T (R_pad x H_pad) stay in registers.
_SEQUENCE_MAX_WEIGHT_ELEMENTS = 5 * 64 * 64
# Fused projection: the (BLOCK_M, R_pad) tile of z stays in registers.
_PROJECTION_MAX_RANK_PAD = 128


def flstm_sequence_fits(hidden_size: int, rank: int) -> bool:
    """Whether the sequence-fused forward kernel applies (padded W1_h and W2 fit on chip)."""
    h_pad, r_pad = dot_pad(hidden_size), dot_pad(rank)
    return h_pad <= 64 and 5 * h_pad * r_pad <= _SEQUENCE_MAX_WEIGHT_ELEMENTS


# ----------------------------------------------------------------------------------------------------------------------
# Input projection with z on chip
# ----------------------------------------------------------------------------------------------------------------------
@triton.autotune(
    **autotune_configs(gpu=[dict(BLOCK_M=32, BLOCK_N=64, BLOCK_K=64), dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32),
                            dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=32), dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32)],
                       # The dtypes each config serves: elsewhere it spills registers on sm_90.
                       dtype_arg="w2_ptr", dtypes=[HALF, HALF, HALF, ALL_DTYPES],
                       interpreted=dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=32)),
    key=["M_BUCKET", "I", "H", "P", "R"],
)
@triton.jit(do_not_specialize=["M", "M_BUCKET"])
def _flstm_projection_kernel(x_ptr, w1_ptr, w2_ptr, bias_ptr, p_ptr, M, M_BUCKET, I, H, P, R,
                             HAS_BIAS: tl.constexpr, R_PAD: tl.constexpr,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """P[m, :] = W2 (W1_x x[m]) + b for BLOCK_M rows m of x viewed (T*B, I); all 4H columns per program. W1 rows
    are I + P long (P: the recurrent input's width).

    z (BLOCK_M, R_pad) is formed once and reused for every column tile; it is rounded to the weights' dtype before
    the second product, as the reference's half-precision matmul does. Grid: (cdiv(T*B, BLOCK_M),).
    """
    acc_dt: tl.constexpr = p_ptr.dtype.element_ty
    offs_m = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    offs_r = tl.arange(0, R_PAD)
    mask_m = offs_m < M
    mask_r = offs_r < R

    z = tl.zeros((BLOCK_M, R_PAD), dtype=acc_dt)
    x_ptrs = x_ptr + offs_m[:, None] * I + offs_k[None, :]
    w1_ptrs = w1_ptr + offs_r[None, :] * (I + P) + offs_k[:, None]  # (BLOCK_K, R_pad) tile of W1_x^T
    for k0 in range(0, I, BLOCK_K):
        mask_k = (k0 + offs_k) < I
        x = tl.load(x_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        w1 = tl.load(w1_ptrs, mask=mask_k[:, None] & mask_r[None, :], other=0.0)
        z = dot_acc(x, w1, z)
        x_ptrs += BLOCK_K
        w1_ptrs += BLOCK_K
    z_op = z.to(w2_ptr.dtype.element_ty)

    N = 4 * H
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        w2 = tl.load(w2_ptr + offs_n[None, :] * R + offs_r[:, None], mask=mask_r[:, None] & mask_n[None, :],
                     other=0.0)  # (R_pad, BLOCK_N) tile of W2^T
        p = dot_acc(z_op, w2, tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_dt))
        if HAS_BIAS:
            p += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(acc_dt)[None, :]
        tl.store(p_ptr + offs_m[:, None] * N + offs_n[None, :], p, mask=mask_m[:, None] & mask_n[None, :])


# ----------------------------------------------------------------------------------------------------------------------
# The rank products of the recurrence: z_t = h_{t-1} W1_h^T (forward) and dz_t = dgates_t W2 (backward)
# ----------------------------------------------------------------------------------------------------------------------
def _rank_product_launcher(w: torch.Tensor, w_strides: tuple[int, int], B: int, K: int, R: int):
    """``launch(a, out)``: out (B, R) = a (B, K) w (K, R) for one step, once for the whole layer, on the shared grouped
    GEMM (its small-M tiles); w addressed through ``w_strides`` (k, r). Forward: z_t = h_{t-1} W1_h^T (a = h_{t-1},
    K = P, w = W1_h^T); backward: dz_t = dgates_t W2 (a = dgates_t, K = 4H, w = W2). a, w and out are in the layer
    dtype: 16-bit operands on tensor cores, the sum accumulated in the state dtype and rounded to out's dtype once (z
    where the reference's 16-bit matmul rounds it, dz as the 16-bit operand of the next recurrent product and of the
    weight gradients; module docstring, Precision). No allocation."""
    def launch(a: torch.Tensor, out: torch.Tensor) -> None:
        grouped_gemm(a, w, out, groups=1, M=B, N=R, K=K, a_strides=(0, K, 1), b_strides=(0, *w_strides),
                     c_strides=(0, R, 1))
    return launch


# ----------------------------------------------------------------------------------------------------------------------
# Forward: one fused recurrent step
# ----------------------------------------------------------------------------------------------------------------------
@triton.autotune(
    **autotune_configs(
        gpu=[dict(BLOCK_B=16, BLOCK_H=32, BLOCK_R=64), dict(BLOCK_B=32, BLOCK_H=64, BLOCK_R=32),
             dict(BLOCK_B=16, BLOCK_H=64, BLOCK_R=64), dict(BLOCK_B=16, BLOCK_H=16, BLOCK_R=16)],
        num_stages=[3, 3, 3, 1],
        # The dtypes each config serves: elsewhere it spills registers on sm_90 (see tests/test_triton_aot.py).
        dtype_arg="w2_ptr", dtypes=[ALL_DTYPES, HALF, F32 + HALF, ALL_DTYPES],
        interpreted=dict(BLOCK_B=16, BLOCK_H=16, BLOCK_R=16)),
    key=["B", "H", "R"],
)
@triton.jit
def _flstm_step_kernel(p_ptr, z_ptr, c_prev_ptr, w2_ptr, h_out_ptr, c_out_ptr, B, H, R,
                       BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_R: tl.constexpr):
    """One step for (BLOCK_H units, BLOCK_B samples): gates = P_t + z_t W2^T for the tile's units (all 4 gates), then
    the cell. z_t (B, R) in the layer dtype was formed once for the whole layer by the rank product.

    p (B, 4H) state dtype; c_prev (B, H) any float dtype; h_out (B, H) x dtype: h_t, or m_t = o*tanh(c_t) before a
    projection; c_out state dtype. Grid: (cdiv(H, BLOCK_H), cdiv(B, BLOCK_B)).
    """
    state_dt: tl.constexpr = c_out_ptr.dtype.element_ty
    offs_j = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_b = (tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    offs_r = tl.arange(0, BLOCK_R)
    mask_b = offs_b < B
    mask_j = offs_j < H

    acc_i = tl.zeros((BLOCK_B, BLOCK_H), dtype=state_dt)
    acc_f = tl.zeros((BLOCK_B, BLOCK_H), dtype=state_dt)
    acc_g = tl.zeros((BLOCK_B, BLOCK_H), dtype=state_dt)
    acc_o = tl.zeros((BLOCK_B, BLOCK_H), dtype=state_dt)
    gate_stride = H * R
    z_ptrs = z_ptr + offs_b[:, None] * R + offs_r[None, :]
    w2_ptrs = w2_ptr + offs_j[None, :] * R + offs_r[:, None]  # (BLOCK_R, BLOCK_H) tile of W2[gate*H + j, r]^T
    for r0 in range(0, R, BLOCK_R):
        mask_r = (r0 + offs_r) < R
        z = tl.load(z_ptrs, mask=mask_b[:, None] & mask_r[None, :], other=0.0)
        w2_mask = mask_r[:, None] & mask_j[None, :]
        acc_i = dot_acc(z, tl.load(w2_ptrs, mask=w2_mask, other=0.0), acc_i)
        acc_f = dot_acc(z, tl.load(w2_ptrs + gate_stride, mask=w2_mask, other=0.0), acc_f)
        acc_g = dot_acc(z, tl.load(w2_ptrs + 2 * gate_stride, mask=w2_mask, other=0.0), acc_g)
        acc_o = dot_acc(z, tl.load(w2_ptrs + 3 * gate_stride, mask=w2_mask, other=0.0), acc_o)
        z_ptrs += BLOCK_R
        w2_ptrs += BLOCK_R

    p_ptrs = p_ptr + offs_b[:, None] * (4 * H) + offs_j[None, :]
    unit_offs = offs_b[:, None] * H + offs_j[None, :]
    step_epilogue(acc_i, acc_f, acc_g, acc_o, p_ptrs, H, c_prev_ptr + unit_offs, h_out_ptr + unit_offs,
                  c_out_ptr + unit_offs, mask_b[:, None] & mask_j[None, :])


# ----------------------------------------------------------------------------------------------------------------------
# Forward: all T steps in one launch (small H and R)
# ----------------------------------------------------------------------------------------------------------------------
def _sequence_class(named_args, constexprs):
    """What the sequence kernel's configs depend on: the dtype, with float32 at padded rank 128 apart (it spills with
    the 8 warps every other float32 shape needs, and fits with 4)."""
    dtype = named_args["w2_ptr"].dtype
    return "float32, R_PAD > 64" if dtype == torch.float32 and constexprs["R_PAD"] > 64 else dtype


@triton.autotune(
    **autotune_configs(gpu=[dict(BLOCK_B=16), dict(BLOCK_B=32), dict(BLOCK_B=64), dict(BLOCK_B=16), dict(BLOCK_B=16)],
                       num_warps=[4, 4, 8, 8, 4], num_stages=[3, 3, 3, 3, 1],
                       # The dtypes each config serves: elsewhere it spills registers on sm_90.
                       dtype_arg=_sequence_class,
                       dtypes=[HALF, HALF, HALF, F32 + F64, ("float32, R_PAD > 64",)],
                       interpreted=dict(BLOCK_B=16)),
    key=["B", "H", "R"],
)
@triton.jit(do_not_specialize=["T"])
def _flstm_sequence_kernel(p_ptr, h0_ptr, c0_ptr, w1_ptr, w2_ptr, out_ptr, cell_ptr, T, B, H, R, I,
                           H_PAD: tl.constexpr, R_PAD: tl.constexpr, BLOCK_B: tl.constexpr):
    """All T steps for BLOCK_B samples (every hidden unit): W1_h and W2 loaded once, h, z and c in registers.

    Grid: (cdiv(B, BLOCK_B),).
    """
    state_dt: tl.constexpr = cell_ptr.dtype.element_ty
    x_dt: tl.constexpr = out_ptr.dtype.element_ty
    offs_b = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    offs_h = tl.arange(0, H_PAD)
    offs_r = tl.arange(0, R_PAD)
    mask_b = offs_b < B
    mask_h = offs_h < H
    mask_r = offs_r < R
    mask = mask_b[:, None] & mask_h[None, :]

    w1 = tl.load(w1_ptr + I + offs_r[None, :] * (I + H) + offs_h[:, None], mask=mask_h[:, None] & mask_r[None, :],
                 other=0.0)  # (H_pad, R_pad): W1_h^T
    w2_ptrs = w2_ptr + offs_h[None, :] * R + offs_r[:, None]  # (R_pad, H_pad): W2[gate*H + j, r]^T
    w2_mask = mask_r[:, None] & mask_h[None, :]
    w2_i = tl.load(w2_ptrs, mask=w2_mask, other=0.0)
    w2_f = tl.load(w2_ptrs + H * R, mask=w2_mask, other=0.0)
    w2_g = tl.load(w2_ptrs + 2 * H * R, mask=w2_mask, other=0.0)
    w2_o = tl.load(w2_ptrs + 3 * H * R, mask=w2_mask, other=0.0)

    unit_offs = offs_b[:, None] * H + offs_h[None, :]
    h = tl.load(h0_ptr + unit_offs, mask=mask, other=0.0).to(x_dt)
    c = tl.load(c0_ptr + unit_offs, mask=mask, other=0.0).to(state_dt)
    p_ptrs = p_ptr + offs_b[:, None] * (4 * H) + offs_h[None, :]
    out_ptrs = out_ptr + unit_offs
    cell_ptrs = cell_ptr + unit_offs
    for _t in range(T):
        z = dot_acc(h, w1, tl.zeros((BLOCK_B, R_PAD), dtype=state_dt)).to(x_dt)
        pre_i = dot_acc(z, w2_i, tl.load(p_ptrs, mask=mask, other=0.0))
        pre_f = dot_acc(z, w2_f, tl.load(p_ptrs + H, mask=mask, other=0.0))
        pre_g = dot_acc(z, w2_g, tl.load(p_ptrs + 2 * H, mask=mask, other=0.0))
        pre_o = dot_acc(z, w2_o, tl.load(p_ptrs + 3 * H, mask=mask, other=0.0))
        h_state, c = lstm_cell(pre_i, pre_f, pre_g, pre_o, c)
        h = h_state.to(x_dt)
        tl.store(cell_ptrs, c, mask=mask)
        tl.store(out_ptrs, h, mask=mask)
        p_ptrs += B * 4 * H
        out_ptrs += B * H
        cell_ptrs += B * H


# ----------------------------------------------------------------------------------------------------------------------
# Backward: one reverse-time step (its dz_t = dgates_t W2 is one rank-product launch after it)
# ----------------------------------------------------------------------------------------------------------------------
@triton.autotune(
    **autotune_configs(
        gpu=[dict(BLOCK_B=16, BLOCK_J=32, BLOCK_R=64), dict(BLOCK_B=32, BLOCK_J=32, BLOCK_R=32),
             dict(BLOCK_B=16, BLOCK_J=64, BLOCK_R=32), dict(BLOCK_B=16, BLOCK_J=16, BLOCK_R=32)],
        num_stages=[3, 3, 3, 1],
        # The dtypes each config serves: elsewhere it spills registers on sm_90 (see tests/test_triton_aot.py).
        dtype_arg="w1_ptr", dtypes=[ALL_DTYPES, ALL_DTYPES, HALF + F64, ALL_DTYPES],
        interpreted=dict(BLOCK_B=16, BLOCK_J=16, BLOCK_R=16)),
    key=["B", "H", "P", "R", "HAS_GRAD_CELL", "PROJECTED"],
)
@triton.jit
def _flstm_backward_step_kernel(pre_ptr, c_prev_ptr, c_ptr, grad_out_ptr, grad_cell_ptr, dm_ptr, dz_next_ptr,
                                dc_next_ptr, w1_ptr, dgates_ptr, dc_prev_ptr, m_ptr, B, H, P, R, I,
                                HAS_GRAD_CELL: tl.constexpr, PROJECTED: tl.constexpr, BLOCK_B: tl.constexpr,
                                BLOCK_J: tl.constexpr, BLOCK_R: tl.constexpr):
    """Step t of BPTT for (BLOCK_J units, BLOCK_B samples): the gradient reaching the tile's h_t, then the pointwise
    backward of the tile's units, once.

    Without a projection dh_t[own] = grad_output[t][own] + dz_{t+1} W1_h[:, own] (dz_next (B, R) in the layer dtype:
    16-bit operands use tensor cores; zero at t = T-1); with one (PROJECTED) it is dm_t (B, H), formed by the launcher
    (dz_{t+1} W1_h and the projection mix all units). Writes dgates_t (B, 4H) in the layer dtype (the operand of dz_t
    and of the weight gradients), dc_{t-1} (B, H) state dtype, and, PROJECTED, the forward's m_t (B, H) x dtype for
    dweight_hr. pre, c, dc_next, dm: state dtype. Grid: (cdiv(H, BLOCK_J), cdiv(B, BLOCK_B)).
    """
    state_dt: tl.constexpr = dc_prev_ptr.dtype.element_ty
    offs_j = tl.program_id(0) * BLOCK_J + tl.arange(0, BLOCK_J)
    offs_b = (tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    mask_b = offs_b < B
    mask_j = offs_j < H
    mask = mask_b[:, None] & mask_j[None, :]
    unit_offs = offs_b[:, None] * H + offs_j[None, :]

    if PROJECTED:
        dh = tl.load(dm_ptr + unit_offs, mask=mask, other=0.0)
    else:  # P = H: the tile's units are also its columns of h
        dh = tl.load(grad_out_ptr + unit_offs, mask=mask, other=0.0).to(state_dt)
        offs_r = tl.arange(0, BLOCK_R)
        dz_ptrs = dz_next_ptr + offs_b[:, None] * R + offs_r[None, :]
        w1_ptrs = w1_ptr + I + offs_r[:, None] * (I + P) + offs_j[None, :]  # (BLOCK_R, BLOCK_J) tile of W1_h
        for r0 in range(0, R, BLOCK_R):
            mask_r = (r0 + offs_r) < R
            dz = tl.load(dz_ptrs, mask=mask_b[:, None] & mask_r[None, :], other=0.0)
            w1 = tl.load(w1_ptrs, mask=mask_r[:, None] & mask_j[None, :], other=0.0)
            dh = dot_acc(dz, w1, dh)
            dz_ptrs += BLOCK_R
            w1_ptrs += BLOCK_R * (I + P)
    dc = tl.load(dc_next_ptr + unit_offs, mask=mask, other=0.0)
    if HAS_GRAD_CELL:
        dc += tl.load(grad_cell_ptr + unit_offs, mask=mask, other=0.0).to(state_dt)

    gate_offs = offs_b[:, None] * (4 * H) + offs_j[None, :]
    pre_i = tl.load(pre_ptr + gate_offs, mask=mask, other=0.0)
    pre_f = tl.load(pre_ptr + gate_offs + H, mask=mask, other=0.0)
    pre_g = tl.load(pre_ptr + gate_offs + 2 * H, mask=mask, other=0.0)
    pre_o = tl.load(pre_ptr + gate_offs + 3 * H, mask=mask, other=0.0)
    c_prev = tl.load(c_prev_ptr + unit_offs, mask=mask, other=0.0).to(state_dt)
    c = tl.load(c_ptr + unit_offs, mask=mask, other=0.0)
    dpre_i, dpre_f, dpre_g, dpre_o, dc_prev = lstm_cell_backward(pre_i, pre_f, pre_g, pre_o, c_prev, c, dh, dc)
    gate_dt: tl.constexpr = dgates_ptr.dtype.element_ty
    tl.store(dgates_ptr + gate_offs, dpre_i.to(gate_dt), mask=mask)
    tl.store(dgates_ptr + gate_offs + H, dpre_f.to(gate_dt), mask=mask)
    tl.store(dgates_ptr + gate_offs + 2 * H, dpre_g.to(gate_dt), mask=mask)
    tl.store(dgates_ptr + gate_offs + 3 * H, dpre_o.to(gate_dt), mask=mask)
    tl.store(dc_prev_ptr + unit_offs, dc_prev, mask=mask)
    if PROJECTED:
        m = sigmoid(pre_o) * tanh(c)  # the forward's m_t, recomputed as the reference does
        tl.store(m_ptr + unit_offs, m.to(m_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------------------------
def flstm_input_projection(x: torch.Tensor, weight_1: torch.Tensor, weight_2: torch.Tensor,
                           bias: torch.Tensor | None, *, fused: bool | None = None) -> torch.Tensor:
    """P = W2 (W1_x x_t) + b for all T.

    Args: x (T, B, I); weight_1 (R, I+P); weight_2 (4H, R); bias (4H,) or None; fused: one launch with z on chip
        (None: wherever the padded rank is <= 128) or two GEMM launches through a (T*B, R) buffer.
    Returns: P (T, B, 4H) in the state dtype.

    Example::
        >>> P = flstm_input_projection(torch.randn(4, 2, 6), torch.randn(3, 15), torch.randn(36, 3), None)
    """
    T, B, I = x.shape
    R, w1_cols = weight_1.shape
    four_h = weight_2.shape[0]
    H, P = four_h // 4, w1_cols - I
    M = T * B
    proj = new_buffer((T, B, four_h), state_dtype(x.dtype), x.device)
    if fused is None:
        fused = dot_pad(R) <= _PROJECTION_MAX_RANK_PAD
    if fused:
        grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]),)  # noqa: E731
        _flstm_projection_kernel[grid](x, weight_1, weight_2, bias if bias is not None else proj, proj,
                                       M, triton.next_power_of_2(M), I, H, P, R,
                                       HAS_BIAS=bias is not None, R_PAD=dot_pad(R))
        return proj
    z = new_buffer((M, R), x.dtype, x.device)  # in x's dtype, like the reference's intermediate
    grouped_gemm(x, weight_1, z, groups=1, M=M, N=R, K=I, a_strides=(0, I, 1), b_strides=(0, 1, w1_cols),
                 c_strides=(0, R, 1))
    return grouped_gemm(z, weight_2, proj, groups=1, M=M, N=four_h, K=R, a_strides=(0, R, 1), b_strides=(0, 1, R),
                        c_strides=(0, four_h, 1), bias=bias)


def flstm_forward(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, weight_1: torch.Tensor,
                  weight_2: torch.Tensor, bias: torch.Tensor | None, weight_hr: torch.Tensor | None = None, *,
                  path: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """One F-LSTM layer (same contract as reference.flstm_reference).

    Args: x (T, B, I); h0 (B, P); c0 (B, H); weight_1 (R, I+P); weight_2 (4H, R); bias (4H,) or None;
        weight_hr (P, H) or None (then P = H); path: "sequence" (not with a projection), "step" or "auto" (sequence
        where :func:`flstm_sequence_fits` and there is no projection).
    Returns: output (T, B, P) in x's dtype, cell (T, B, H) in the state dtype.

    Example::
        >>> out, cell = flstm_forward(x, h0, c0, w1, w2, b)   # x (T, B, I) on a GPU
    """
    if path not in FLSTM_PATHS:
        raise ValueError(f"path must be one of {FLSTM_PATHS}, got {path!r}")
    if path == "sequence" and weight_hr is not None:
        raise ValueError("path='sequence' has no projection (weight_hr): use 'step' or 'auto'")
    T, B, I = x.shape
    R = weight_1.shape[0]
    H, P = weight_2.shape[0] // 4, h0.shape[1]
    proj = flstm_input_projection(x, weight_1, weight_2, bias)
    output = new_buffer((T, B, P), x.dtype, x.device)
    cell = new_buffer((T, B, H), state_dtype(x.dtype), x.device)
    if weight_hr is None and (path == "sequence" or (path == "auto" and flstm_sequence_fits(H, R))):
        grid = lambda meta: (triton.cdiv(B, meta["BLOCK_B"]),)  # noqa: E731
        _flstm_sequence_kernel[grid](proj, h0, c0, weight_1, weight_2, output, cell, T, B, H, R, I,
                                     H_PAD=dot_pad(H), R_PAD=dot_pad(R))
        return output, cell
    # With a projection the step kernel writes m_t here and one GEMM projects it into output[t].
    cell_output = new_buffer((B, H), x.dtype, x.device) if weight_hr is not None else None
    z = new_buffer((B, R), x.dtype, x.device)  # z_t = h_{t-1} W1_h^T, rounded to x's dtype as in the reference
    z_product = _rank_product_launcher(weight_1[:, I:], (1, I + P), B, P, R)  # W1_h^T (P, R) in weight_1 (R, I+P)
    grid = lambda meta: (triton.cdiv(H, meta["BLOCK_H"]), triton.cdiv(B, meta["BLOCK_B"]))  # noqa: E731

    def loop():  # views only: no allocation or host sync inside, so step_graph can capture it
        for t in range(T):
            h_prev, c_prev = (h0, c0) if t == 0 else (output[t - 1], cell[t - 1])
            z_product(h_prev, z)
            _flstm_step_kernel[grid](proj[t], z, c_prev, weight_2, output[t] if cell_output is None else cell_output,
                                     cell[t], B, H, R)
            if weight_hr is not None:
                project_step(cell_output, weight_hr, output[t])
    run_steps("flstm_forward", loop, (proj, h0, c0, weight_1, weight_2, output, cell, z, cell_output, weight_hr),
              (T, B, I, H, P, R))
    return output, cell


def flstm_backward(grad_output: torch.Tensor, grad_cell: torch.Tensor | None, x: torch.Tensor, h0: torch.Tensor,
                   c0: torch.Tensor, weight_1: torch.Tensor, weight_2: torch.Tensor, bias: torch.Tensor | None,
                   output: torch.Tensor, cell: torch.Tensor, weight_hr: torch.Tensor | None = None):
    """BPTT for :func:`flstm_forward` (same contract as reference.flstm_reference_backward).

    Returns (dx (T, B, I), dh0 (B, P), dc0 (B, H), dweight_1 (R, I+P), dweight_2 (4H, R), dbias (4H,)) in x's dtype,
    and dweight_hr (P, H) as a 7th tensor when weight_hr is given.

    Example::
        >>> dx, dh0, dc0, dw1, dw2, db = flstm_backward(gy, None, x, h0, c0, w1, w2, b, out, cell)
    """
    T, B, I = x.shape
    R = weight_1.shape[0]
    four_h = weight_2.shape[0]
    H, P = four_h // 4, h0.shape[1]
    M = T * B
    sdt = state_dtype(x.dtype)
    dev = x.device
    grad_output = grad_output.contiguous()
    grad_cell = grad_cell.contiguous() if grad_cell is not None else None
    h_prev = torch.cat((h0.unsqueeze(0), output[:-1]), dim=0)  # (T, B, P)

    # Time-parallel recompute: z = W1 [x; h_prev] (state dtype, also needed for dweight_2), pre = W2 z + b.
    z = new_buffer((M, R), sdt, dev)
    grouped_gemm(x, weight_1, z, groups=1, M=M, N=R, K=I, a_strides=(0, I, 1), b_strides=(0, 1, I + P),
                 c_strides=(0, R, 1))
    grouped_gemm(h_prev, weight_1[:, I:], z, groups=1, M=M, N=R, K=P, a_strides=(0, P, 1), b_strides=(0, 1, I + P),
                 c_strides=(0, R, 1), accumulate=True)
    pre = new_buffer((T, B, four_h), sdt, dev)
    grouped_gemm(z, weight_2, pre, groups=1, M=M, N=four_h, K=R, a_strides=(0, R, 1), b_strides=(0, 1, R),
                 c_strides=(0, four_h, 1), bias=bias)

    # Reverse time (the loop and its buffers: triton_kernels/bptt.py). Per step: the step kernel (pointwise backward of
    # each unit once; without a projection it first adds dz_{t+1} W1_h[:, own] to grad_output[t] itself), then
    # dz_t = dgates_t W2 once for the layer; with a projection, then dh_{t-1} += dz_t W1_h into the loop's dh_total[t].
    # dgates and dz are kept in x's dtype: for fp16/bf16 they are the 16-bit operands of the recurrent products and of
    # the weight-gradient GEMMs (as gradient_gemm_operand rounds them); for float32/float64 that is the state dtype.
    dgates = new_buffer((T, B, four_h), x.dtype, dev)
    dz = new_buffer((T + 1, B, R), x.dtype, dev)  # row T: dz_T = 0, what step T-1 reads
    dz[T].zero_()
    w1_h = weight_1[:, I:]
    dz_product = _rank_product_launcher(weight_2, (R, 1), B, four_h, R)
    grid = lambda meta: (triton.cdiv(H, meta["BLOCK_J"]), triton.cdiv(B, meta["BLOCK_B"]))  # noqa: E731

    def step(t, dm, dc_in, dh_out, dc_out, m_out):
        # Without a projection dm / dh_out are None (the kernel does not read dm then; grad_output[t] stands in): the
        # step kernel forms dh_t from dz_{t+1} and dh0 is formed after the loop.
        _flstm_backward_step_kernel[grid](
            pre[t], c0 if t == 0 else cell[t - 1], cell[t], grad_output[t],
            grad_cell[t] if grad_cell is not None else grad_output[t], dm if dm is not None else grad_output[t],
            dz[t + 1], dc_in, weight_1, dgates[t],
            dc_out, m_out if m_out is not None else dgates[t], B, H, P, R, I,
            HAS_GRAD_CELL=grad_cell is not None, PROJECTED=m_out is not None)
        dz_product(dgates[t], dz[t])
        if m_out is not None:
            grouped_gemm(dz[t], w1_h, dh_out, groups=1, M=B, N=P, K=R, a_strides=(0, R, 1),
                         b_strides=(0, I + P, 1), c_strides=(0, P, 1), accumulate=True)
    rev = reverse_time_loop(step, grad_output, weight_hr, H, x.dtype, sdt, name="flstm_backward",
                            tensors=(pre, c0, cell, grad_output, grad_cell, dgates, dz, weight_1, weight_2),
                            scalars=(T, B, I, H, P, R))
    if weight_hr is None:
        dh0 = new_buffer((B, P), x.dtype, dev)
        grouped_gemm(dz[0], w1_h, dh0, groups=1, M=B, N=P, K=R, a_strides=(0, R, 1), b_strides=(0, I + P, 1),
                     c_strides=(0, P, 1))
    else:
        dh0 = rev.dh0.to(x.dtype)
    dz = dz[:T].view(M, R)

    # Time-parallel gradients over all T*B rows (dgates, dz and z in x's dtype for fp16/bf16: gradient_gemm_operand).
    dweight_2 = new_buffer(weight_2.shape, x.dtype, dev)
    dbias = new_buffer((four_h,), x.dtype, dev)
    z = gradient_gemm_operand(z, x.dtype)
    grouped_gemm(dgates, z, dweight_2, groups=1, M=four_h, N=R, K=M, a_strides=(0, 1, four_h), b_strides=(0, R, 1),
                 c_strides=(0, R, 1), rowsum=dbias)
    dweight_1 = new_buffer(weight_1.shape, x.dtype, dev)
    grouped_gemm(dz, x, dweight_1, groups=1, M=R, N=I, K=M, a_strides=(0, 1, R), b_strides=(0, I, 1),
                 c_strides=(0, I + P, 1))
    grouped_gemm(dz, h_prev, dweight_1[:, I:], groups=1, M=R, N=P, K=M, a_strides=(0, 1, R), b_strides=(0, P, 1),
                 c_strides=(0, I + P, 1))
    dx = new_buffer(x.shape, x.dtype, dev)
    grouped_gemm(dz, weight_1, dx, groups=1, M=M, N=I, K=R, a_strides=(0, R, 1), b_strides=(0, I + P, 1),
                 c_strides=(0, I, 1))
    grads = (dx, dh0, rev.dc0.to(x.dtype), dweight_1, dweight_2, dbias)
    if weight_hr is None:
        return grads
    return grads + (projection_weight_grad(rev.dh_total[1:], rev.cell_output, x.dtype),)


# ----------------------------------------------------------------------------------------------------------------------
# Ahead-of-time compile check
# ----------------------------------------------------------------------------------------------------------------------
# (T, B, I, H, R, P, forward path): the sequence-fused forward at the largest padded rank it accepts for each padded
# H (16, 32, 64; ranks stay <= 4H), which is also the fused projection's largest padded rank (128), the step forward
# and the two-GEMM projection beyond, and a projected layer (P = 0: none), which adds the backward step's PROJECTED
# variant. Sizes are multiples of 16, as at typical shapes, so Triton specialises on the alignment facts those
# launches carry.
_AOT_LAYERS = ((2, 32, 32, 16, 64, 0, "sequence"), (2, 32, 32, 32, 128, 0, "sequence"),
               (2, 32, 64, 64, 64, 0, "sequence"), (2, 32, 128, 256, 256, 0, "step"), (2, 32, 64, 128, 64, 64, "step"))


def aot_launches(dtype: torch.dtype) -> None:
    """Call this module's launchers as the backend does, on small CPU tensors of ``dtype``, for the ahead-of-time
    compile check (:mod:`.aot` intercepts every kernel launch and compiles what it records; nothing runs here).

    Covers every layer shape of ``_AOT_LAYERS``: forward with and without bias, backward with and without a cell
    gradient, hence every kernel and every specialisation (pointer dtypes, constexpr flags, pads) an F-LSTM launches.
    """
    sdt = state_dtype(dtype)
    for T, B, I, H, R, P, path in _AOT_LAYERS:
        x = torch.zeros(T, B, I, dtype=dtype)
        h0, c0 = torch.zeros(B, P or H, dtype=dtype), torch.zeros(B, H, dtype=dtype)
        weight_1, weight_2 = torch.zeros(R, I + (P or H), dtype=dtype), torch.zeros(4 * H, R, dtype=dtype)
        weight_hr = torch.zeros(P, H, dtype=dtype) if P else None
        for bias in (torch.zeros(4 * H, dtype=dtype), None):
            output, cell = flstm_forward(x, h0, c0, weight_1, weight_2, bias, weight_hr, path=path)
            for grad_cell in (torch.zeros(T, B, H, dtype=sdt), None):
                flstm_backward(torch.zeros_like(output), grad_cell, x, h0, c0, weight_1, weight_2, bias, output, cell,
                               weight_hr)
