"""Helpers shared by the lstmkern Triton kernels: dtypes, padding, autotune configs, products, activations,
the LSTM cell.

Shape legend: T time steps, B batch, I input features, H hidden units, G groups, R rank, Hg = H / G, Ig = I / G.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

# Under the interpreter (CPU, TRITON_INTERPRET=1) every autotune config would be run and timed: keep one config there.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

# Tests set this to True: every buffer a launcher allocates is then filled with NaN instead of left uninitialised, so
# an element a kernel forgets to write shows up as NaN in the result.
POISON_ALLOCATIONS = False

TORCH_TO_TL = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32,
               torch.float64: tl.float64}


def gradient_gemm_operand(grad: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A backward's state-dtype operand (F-LSTM's recomputed z) of the time-parallel weight-gradient GEMMs of a
    ``dtype`` layer: rounded to fp16/bf16, so those GEMMs multiply two 16-bit operands on tensor cores with float32
    accumulation instead of widening the other operand to float32 (FMA; ~200 GFLOP for glstm-train). The backward
    step kernels write dgates and dz in the layer's dtype already (as cuDNN keeps dgates; the rounding stays within the
    tests' error rule, 3x the reference's own error in that dtype). float32 and float64 are returned as they are."""
    return grad.to(dtype) if dtype in (torch.float16, torch.bfloat16) else grad


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """Cell state / accumulation dtype for inputs of ``dtype``: float64 for float64, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def new_buffer(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An output buffer every element of which a kernel will write (NaN-filled when POISON_ALLOCATIONS)."""
    if POISON_ALLOCATIONS:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def dot_pad(n: int) -> int:
    """Tile extent for a dimension of size ``n`` that is an operand of tl.dot: a power of two, at least 16."""
    return max(16, triton.next_power_of_2(n))


def make_configs(gpu: list[dict], interpreted: dict, num_warps: list[int] | None = None,
                 num_stages: int | list[int] = 3) -> list[triton.Config]:
    """Autotune configs: ``gpu`` (with matching ``num_warps`` and ``num_stages``, one value or one per config) on a
    GPU, the single ``interpreted`` one otherwise."""
    if INTERPRET:
        return [triton.Config(interpreted, num_warps=4, num_stages=1)]
    num_warps = num_warps or [4] * len(gpu)
    num_stages = [num_stages] * len(gpu) if isinstance(num_stages, int) else num_stages
    return [triton.Config(kw, num_warps=w, num_stages=st) for kw, w, st in zip(gpu, num_warps, num_stages)]


# Layer dtypes (x's dtype) an autotune config may serve; see autotune_configs.
ALL_DTYPES = tuple(TORCH_TO_TL)
F64 = (torch.float64,)
F32 = (torch.float32,)
HALF = (torch.float16, torch.bfloat16)
_TL_TO_TORCH = {tl_dtype: torch_dtype for torch_dtype, tl_dtype in TORCH_TO_TL.items()}


def autotune_configs(gpu: list[dict], interpreted: dict, *, dtype_arg, dtypes: list[tuple] | None = None,
                     num_warps: list[int] | None = None, num_stages: int | list[int] = 3) -> dict:
    """``triton.autotune`` keyword arguments: the configs of :func:`make_configs` and, on a GPU, a pruning hook that
    keeps only the configs listed for the launch's dtype.

    ``dtypes[i]``: the dtypes GPU config ``i`` may run with, read from the kernel argument named ``dtype_arg`` (a
    tensor's dtype, or a constexpr tl dtype), or computed by ``dtype_arg(named_args, constexprs)`` when it is a
    function. A config is left out for a dtype where it needs more shared memory than a block may use, or spills
    registers: ``python -m triton_kernels.aot`` (run in CI by tests/test_triton_aot.py) compiles every config this
    hook keeps, under CI's Triton and the GPU image's, and fails on either.
    """
    configs = make_configs(gpu, interpreted, num_warps, num_stages)
    if INTERPRET or dtypes is None:
        return dict(configs=configs)
    assert len(dtypes) == len(gpu), "one dtype tuple per GPU config"
    serves = {_config_key(config): frozenset(allowed) for config, allowed in zip(configs, dtypes)}

    def keep_configs_for_dtype(configs, named_args, **kwargs):
        if callable(dtype_arg):
            dtype = dtype_arg(named_args, kwargs)
        else:
            value = named_args[dtype_arg] if dtype_arg in named_args else kwargs[dtype_arg]
            dtype = value.dtype if isinstance(value, torch.Tensor) else _TL_TO_TORCH[value]
        return [config for config in configs if dtype in serves[_config_key(config)]]

    return dict(configs=configs, prune_configs_by=dict(early_config_prune=keep_configs_for_dtype))


def _config_key(config: triton.Config) -> tuple:
    return tuple(sorted(config.kwargs.items())), config.num_warps, config.num_stages


@triton.jit
def dot_acc(a, b, acc):
    """acc + a @ b at full (IEEE) precision, accumulated and returned in acc's dtype (the state dtype).

    The accumulator dtype is passed to tl.dot explicitly: Triton 3.6 asserts that a float64 accumulator matches
    ``out_dtype``, whose default is float32, so a float64 product would not compile there otherwise.
    """
    return tl.dot(a, b, acc, input_precision="ieee", out_dtype=acc.dtype)


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    # tanh(x) = 2 sigmoid(2x) - 1: saturates cleanly to +-1 (exp overflow gives inf -> 0), absolute error ~ 1 ulp.
    return 2.0 * sigmoid(2.0 * x) - 1.0


@triton.jit
def lstm_cell(pre_i, pre_f, pre_g, pre_o, c_prev):
    """Pointwise LSTM step on pre-activation gates (any tile shape, state dtype). Returns (h, c)."""
    c = sigmoid(pre_f) * c_prev + sigmoid(pre_i) * tanh(pre_g)
    h = sigmoid(pre_o) * tanh(c)
    return h, c


@triton.jit
def step_epilogue(acc_i, acc_f, acc_g, acc_o, p_ptrs, gate_stride, c_prev_ptrs, h_out_ptrs, c_out_ptrs, mask):
    """End of a fused forward step: add the input projection P_t to the recurrent gate sums, run the cell, store h, c.

    acc_*: (BLOCK_B, BLOCK_H) recurrent products in the state dtype; p_ptrs: gate i of P_t for that tile, gate q is
    q * gate_stride further; c_prev_ptrs / h_out_ptrs / c_out_ptrs: the tile's units in c_{t-1}, h_t and c_t.
    """
    state_dt: tl.constexpr = c_out_ptrs.dtype.element_ty
    pre_i = acc_i + tl.load(p_ptrs, mask=mask, other=0.0).to(state_dt)
    pre_f = acc_f + tl.load(p_ptrs + gate_stride, mask=mask, other=0.0).to(state_dt)
    pre_g = acc_g + tl.load(p_ptrs + 2 * gate_stride, mask=mask, other=0.0).to(state_dt)
    pre_o = acc_o + tl.load(p_ptrs + 3 * gate_stride, mask=mask, other=0.0).to(state_dt)
    c_prev = tl.load(c_prev_ptrs, mask=mask, other=0.0).to(state_dt)
    h, c = lstm_cell(pre_i, pre_f, pre_g, pre_o, c_prev)
    tl.store(c_out_ptrs, c, mask=mask)
    tl.store(h_out_ptrs, h.to(h_out_ptrs.dtype.element_ty), mask=mask)


@triton.jit
def lstm_cell_backward(pre_i, pre_f, pre_g, pre_o, c_prev, c, dh, dc):
    """Pointwise backward of one step, mirroring reference._cell_backward.

    dh, dc: total gradients reaching h_t and c_t. Returns (dpre_i, dpre_f, dpre_g, dpre_o, dc_prev).
    """
    i = sigmoid(pre_i)
    f = sigmoid(pre_f)
    g = tanh(pre_g)
    o = sigmoid(pre_o)
    tanh_c = tanh(c)
    d_o = dh * tanh_c
    dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
    dpre_i = dc * g * i * (1.0 - i)
    dpre_f = dc * c_prev * f * (1.0 - f)
    dpre_g = dc * i * (1.0 - g * g)
    dpre_o = d_o * o * (1.0 - o)
    return dpre_i, dpre_f, dpre_g, dpre_o, dc * f
