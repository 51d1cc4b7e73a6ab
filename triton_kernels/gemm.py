"""Grouped, strided batched GEMM: the one time-parallel matmul kernel behind every projection and weight gradient.

For every group g (a grid axis, so G groups are one launch):

    C[g] (+)= A[g] @ B[g] (+ bias[g] broadcast over rows)          A[g]: (M, K), B[g]: (K, N), C[g]: (M, N)
    rowsum[g] = A[g].sum(over K)                                     optional, written by the programs of column 0

All operands are addressed through explicit (group, row, column) strides, so transposes, group slices of x and h,
and column slices of a weight gradient are views, never copies. Accumulation is float32 (float64 for float64
operands); operands of different dtypes (a float32 gradient times a half weight) are both cast to the wider state
dtype first, as the reference does.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import ALL_DTYPES, F32, F64, HALF, TORCH_TO_TL, autotune_configs, dot_acc

__all__ = ["grouped_gemm"]


def _operands(named_args, constexprs):
    """What the autotune configs depend on: the operands' dtype, or "mixed" for the float32 products of a half
    layer's backward (a float32 gradient times a half weight, widened in registers, or float32 operands whose
    product lands in a half weight gradient), which need many more registers than a pure float32 product."""
    a, b, c = (named_args[name].dtype for name in ("a_ptr", "b_ptr", "c_ptr"))
    if a != b or (a == torch.float32 and c in (torch.float16, torch.bfloat16)):
        return "mixed"
    return a


# Which operand dtypes each config serves: the rest spill registers on sm_90 (see tests/test_triton_aot.py).
@triton.autotune(
    **autotune_configs(
        # The last two: small-M tiles for the per-step products of a batch (M = B rows: the F-LSTM's z_t and dz_t,
        # a projection's h_t and dm_t), where large tiles would leave most SMs idle.
        gpu=[dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=32), dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=32),
             dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32), dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64),
             dict(BLOCK_M=32, BLOCK_N=64, BLOCK_K=16), dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=64),
             dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=32)],
        num_warps=[8, 4, 4, 4, 4, 4, 4], num_stages=[3, 3, 3, 3, 3, 3, 1],
        dtype_arg=_operands, dtypes=[F32 + HALF, F32 + HALF, F64 + HALF, HALF, ALL_DTYPES + ("mixed",), ALL_DTYPES,
                                     F32 + HALF],
        interpreted=dict(BLOCK_M=32, BLOCK_N=64, BLOCK_K=32)),
    key=["M_BUCKET", "N", "K"],
    restore_value=["c_ptr"],  # with ACCUMULATE, each timing run must start from the same C
)
@triton.jit(do_not_specialize=["M", "M_BUCKET"])
def _grouped_gemm_kernel(
    a_ptr, b_ptr, c_ptr, bias_ptr, rowsum_ptr,
    M, N, K, M_BUCKET,
    stride_ag, stride_am, stride_ak,
    stride_bg, stride_bk, stride_bn,
    stride_cg, stride_cm, stride_cn,
    stride_bias_g, stride_rowsum_g,
    DOT_DTYPE: tl.constexpr, HAS_BIAS: tl.constexpr, ACCUMULATE: tl.constexpr, HAS_ROWSUM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # M_BUCKET (next power of two of M) only feeds the autotune key, so a new T does not trigger a new tuning.
    acc_dtype: tl.constexpr = tl.float64 if DOT_DTYPE == tl.float64 else tl.float32
    pid = tl.program_id(0)
    group = tl.program_id(1).to(tl.int64)
    num_n_tiles = tl.cdiv(N, BLOCK_N)
    pid_m = pid // num_n_tiles
    pid_n = pid % num_n_tiles
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N

    a_ptrs = a_ptr + group * stride_ag + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + group * stride_bg + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_dtype)
    row_sum = tl.zeros((BLOCK_M,), dtype=acc_dtype)
    for k0 in range(0, K, BLOCK_K):
        mask_k = (k0 + offs_k) < K
        a = tl.load(a_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if HAS_ROWSUM:
            row_sum += tl.sum(a.to(acc_dtype), axis=1)
        acc = dot_acc(a.to(DOT_DTYPE), b.to(DOT_DTYPE), acc)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    if HAS_BIAS:
        bias = tl.load(bias_ptr + group * stride_bias_g + offs_n, mask=mask_n, other=0.0)
        acc += bias.to(acc_dtype)[None, :]
    c_ptrs = c_ptr + group * stride_cg + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    mask_c = mask_m[:, None] & mask_n[None, :]
    if ACCUMULATE:
        acc += tl.load(c_ptrs, mask=mask_c, other=0.0).to(acc_dtype)
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask_c)
    if HAS_ROWSUM:
        tl.store(rowsum_ptr + group * stride_rowsum_g + offs_m, row_sum.to(rowsum_ptr.dtype.element_ty),
                 mask=mask_m & (pid_n == 0))


def grouped_gemm(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, *, groups: int, M: int, N: int, K: int,
                 a_strides: tuple[int, int, int], b_strides: tuple[int, int, int], c_strides: tuple[int, int, int],
                 bias: torch.Tensor | None = None, bias_group_stride: int = 0,
                 rowsum: torch.Tensor | None = None, rowsum_group_stride: int = 0,
                 accumulate: bool = False) -> torch.Tensor:
    """C[g] (+)= A[g] @ B[g] (+ bias[g]) for g < groups, one launch; optionally rowsum[g] = A[g].sum(-1).

    Args:
        a, b, c: tensors (or views) holding the operands; element (g, m, k) of A is at
            ``a.data_ptr() + g*a_strides[0] + m*a_strides[1] + k*a_strides[2]`` (in elements), likewise B, C.
        groups, M, N, K: problem sizes. bias: row vector of N per group (group stride ``bias_group_stride``).
        rowsum: receives the sum of A's rows (M per group), e.g. the bias gradient when A is the gate gradient.
        accumulate: add the product to C's current contents instead of overwriting them.
    Returns: c.

    Example (P = x W^T for a dense layer, x (M, K), W (N, K))::
        >>> grouped_gemm(x, W, P, groups=1, M=M, N=N, K=K, a_strides=(0, K, 1), b_strides=(0, 1, K),
        ...              c_strides=(0, N, 1))
    """
    # Same dtypes: multiply as they are (half inputs use tensor cores). Mixed (a state-dtype gradient times a weight):
    # cast both to the state dtype, like the reference's weight.to(state_dtype).
    if a.dtype == b.dtype:
        dot_dtype = a.dtype
    else:
        dot_dtype = torch.float64 if torch.float64 in (a.dtype, b.dtype) else torch.float32
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]), groups)  # noqa: E731
    _grouped_gemm_kernel[grid](
        a, b, c, bias if bias is not None else c, rowsum if rowsum is not None else c,
        M, N, K, triton.next_power_of_2(M),
        *a_strides, *b_strides, *c_strides, bias_group_stride, rowsum_group_stride,
        DOT_DTYPE=TORCH_TO_TL[dot_dtype], HAS_BIAS=bias is not None, ACCUMULATE=accumulate,
        HAS_ROWSUM=rowsum is not None,
    )
    return c
