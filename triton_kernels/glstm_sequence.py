"""Sequence-fused G-LSTM forward: all T recurrent steps of one layer (no projection) in one launch.

Shape legend: T time steps, B batch, G groups, Hg hidden units per group, H = G*Hg; Hg_pad = the padded tile extent
of Hg (:func:`._common.dot_pad`).
Layouts (contiguous, time-major, as :mod:`.glstm`): P / pre-activations (T, B, G*4Hg) in the state dtype, i.e.
(T, B, G, 4, Hg) with gates i, f, g, o inside each group (the input projection x W_ih^T + b, already computed);
h0, c0 (B, H); weight_hh (G, 4Hg, Hg); output (T, B, H) in x's dtype; cell (T, B, H) in the state dtype.

How a program works. A program owns one (group, batch tile): all 4Hg gate rows of its group, so it never needs
another program's results, and the whole time loop runs inside it. The recurrence is computed transposed,

    gates_q^T (Hg_pad, BLOCK_B) = P_t,q^T + W_hh[g, q] (Hg_pad, Hg_pad) @ h_{t-1}^T (Hg_pad, BLOCK_B),  q = i, f, g, o

so the weights are the left operand (M = Hg_pad rows: on sm_90 a full warpgroup MMA tile, where a batch tile as M
would be 16 rows) and the new h^T, produced by the cell in the same (unit, sample) layout, is directly the next
step's right operand: no transpose inside the loop. The 4 gate tiles of W_hh[g] are loaded once before the loop
(loop-invariant; the compiler keeps them on chip: shared memory for the tensor-core operand on sm_90). c and h^T are
carried in registers; every step reads P_t and writes h_t, c_t once.

Numerics (the reference's rounding points, :func:`lstmkern.reference.glstm_reference`): h is rounded to x's dtype
before it is multiplied (fp16/bf16 operands on tensor cores, float32 accumulation; float32 and float64 at full IEEE
precision, :func:`._common.dot_acc`), P, c and the gate sums are in the state dtype. The 16-bit product is accumulated
in float32 where the reference rounds it to the layer dtype first: one rounding fewer, never less accurate.

Which Hg it takes (:func:`glstm_sequence_fits`): Hg_pad <= 128 for fp16/bf16: the 4 weight tiles (128 KiB) sit in
shared memory beside the h^T operand, 140-152 KiB per program on sm_90, 83-254 registers, no spills. Hg_pad <= 64 for
float32 and float64, the old kernel's range: their IEEE products (FMA; DMMA for float64) take both operands from
registers, and at Hg_pad = 128 the weights alone need 256 / 512 KiB of shared memory and the registers spill.
Numbers per config: tests/test_triton_aot.py's table (``python -m triton_kernels.aot``).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import F32, F64, HALF, autotune_configs, dot_acc, dot_pad, lstm_cell, state_dtype

__all__ = ["glstm_sequence_fits", "glstm_sequence_forward", "SEQUENCE_MAX_HG_PAD"]

# Largest padded Hg per layer dtype (see the module docstring; tests/test_triton_aot.py holds every config to it).
SEQUENCE_MAX_HG_PAD = {torch.float16: 128, torch.bfloat16: 128, torch.float32: 64, torch.float64: 64}


def glstm_sequence_fits(hidden_per_group: int, dtype: torch.dtype) -> bool:
    """Whether :func:`glstm_sequence_forward` takes a layer of ``hidden_per_group`` units per group in ``dtype``
    (x's dtype): its padded recurrent weights fit on chip without spilling.

    Example::
        >>> glstm_sequence_fits(96, torch.bfloat16), glstm_sequence_fits(96, torch.float32)
        (True, False)
    """
    return dtype in SEQUENCE_MAX_HG_PAD and hidden_per_group >= 1 and \
        dot_pad(hidden_per_group) <= SEQUENCE_MAX_HG_PAD[dtype]


def _config_class(named_args, constexprs):
    """What the autotune configs depend on: the layer dtype; for 16-bit also whether the weight tiles are 128 wide and
    whether Hg is a multiple of 16. Triton specialises on that divisibility: without it every load and store of the
    tiles is scalar with its own address, which costs registers (at Hg = 100 only BLOCK_B=16 with 8 warps fits)."""
    dtype = named_args["w_hh_ptr"].dtype
    if dtype not in HALF:
        return dtype
    return "half" + (" 128" if constexprs["HG_PAD"] > 64 else "") + ("" if named_args["HG"] % 16 == 0 else " unaligned")


@triton.jit
def _gate_preactivation(w, h, p, UNITS_ON_ROWS: tl.constexpr):
    """P + the recurrent product for one gate, in the kernel's tile orientation (see _glstm_sequence_fused_kernel)."""
    # if/else, not an early return: Triton compiles the statements after a constexpr-true return too.
    if UNITS_ON_ROWS:
        pre = dot_acc(w, h, p)  # (Hg_pad, Hg_pad) @ (Hg_pad, BLOCK_B): gates^T
    else:
        pre = dot_acc(h, w, p)  # (BLOCK_B, Hg_pad) @ (Hg_pad, Hg_pad): gates
    return pre


# The classes each config serves (see _config_class): elsewhere it spills registers on sm_90 under Triton 3.6 or 3.8
# (tests/test_triton_aot.py for Hg a multiple of 16, tests/test_triton_sequence.py also at Hg = 100). float32 and
# float64 fit only BLOCK_B=16 with 8 warps: the IEEE product's operands are held in registers (float32: 220-228
# registers, float64: 228-236).
_HALF = ("half", "half unaligned", "half 128", "half 128 unaligned")


@triton.autotune(
    **autotune_configs(gpu=[dict(BLOCK_B=16), dict(BLOCK_B=32), dict(BLOCK_B=16), dict(BLOCK_B=32), dict(BLOCK_B=16),
                            dict(BLOCK_B=32), dict(BLOCK_B=64)],
                       num_warps=[4, 4, 8, 8, 16, 16, 16], num_stages=1,
                       dtype_arg=_config_class,
                       dtypes=[_HALF[:3], _HALF[:1], _HALF + F32 + F64, _HALF[:3], _HALF[:3], _HALF[:3], _HALF[:1]],
                       interpreted=dict(BLOCK_B=16)),
    key=["B", "HG", "G"],
)
@triton.jit(do_not_specialize=["T"])
def _glstm_sequence_fused_kernel(p_ptr, h0_ptr, c0_ptr, w_hh_ptr, out_ptr, cell_ptr, T, B, HG, G,
                                 HG_PAD: tl.constexpr, BLOCK_B: tl.constexpr):
    """All T steps for (group, BLOCK_B samples): W_hh[g] loaded once, h and c carried on chip.

    Tile orientation: UNITS_ON_ROWS (fp16/bf16, float32): every tile is (Hg_pad units, BLOCK_B samples) and
    gates^T = P^T + W_hh[g] h^T, the weights as the tensor-core product's left operand (see the module docstring).
    Otherwise (float64, whose product runs on the FMA-like DMMA path with both operands in registers, and fits sm_90's
    registers only this way round): tiles are (BLOCK_B, Hg_pad) and gates = P + h W_hh[g]^T. Triton cannot index a
    register tile by a runtime row, so each gate is its own (Hg_pad x Hg_pad) weight tile and product.
    p (T, B, G*4Hg) state dtype; h0, c0 (B, H); w_hh (G, 4Hg, Hg) x dtype; writes out (T, B, H) x dtype and
    cell (T, B, H) state dtype. Grid: (G, cdiv(B, BLOCK_B)).
    """
    state_dt: tl.constexpr = cell_ptr.dtype.element_ty
    x_dt: tl.constexpr = out_ptr.dtype.element_ty
    UNITS_ON_ROWS: tl.constexpr = x_dt != tl.float64
    H = G * HG
    group = tl.program_id(0)
    offs_b = (tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    units = tl.arange(0, HG_PAD)  # hidden units of the group, and the reduction index of the recurrent product
    # 2-D index tiles of the chosen orientation: sample, unit, and (for the weights) reduction index.
    if UNITS_ON_ROWS:
        b2, j2, k2 = offs_b[None, :], units[:, None], units[None, :]
    else:
        b2, j2, k2 = offs_b[:, None], units[None, :], units[:, None]
    mask = (j2 < HG) & (b2 < B)

    # W_hh[g, gate*Hg + j, k] as (j, k) tiles (UNITS_ON_ROWS) or (k, j) tiles. Padding is zero, so padded units get
    # pre-activation 0, hence c = 0 and h = 0 forever, and padded h entries never contribute to the product.
    w_ptrs = w_hh_ptr + group * 4 * HG * HG + j2 * HG + k2
    w_mask = (j2 < HG) & (k2 < HG)
    w_i = tl.load(w_ptrs, mask=w_mask, other=0.0)
    w_f = tl.load(w_ptrs + HG * HG, mask=w_mask, other=0.0)
    w_g = tl.load(w_ptrs + 2 * HG * HG, mask=w_mask, other=0.0)
    w_o = tl.load(w_ptrs + 3 * HG * HG, mask=w_mask, other=0.0)

    unit_offs = b2 * H + group * HG + j2  # the tile's elements of a (B, H) tensor
    h = tl.load(h0_ptr + unit_offs, mask=mask, other=0.0).to(x_dt)
    c = tl.load(c0_ptr + unit_offs, mask=mask, other=0.0).to(state_dt)
    p_ptrs = p_ptr + b2 * (4 * H) + group * 4 * HG + j2
    out_ptrs = out_ptr + unit_offs
    cell_ptrs = cell_ptr + unit_offs
    # P_t is read one step ahead: step t's loads of P_{t+1} are in flight during its products and cell, instead of
    # standing between h_{t-1} and the product on the recurrence's critical path.
    next_i = tl.load(p_ptrs, mask=mask, other=0.0)
    next_f = tl.load(p_ptrs + HG, mask=mask, other=0.0)
    next_g = tl.load(p_ptrs + 2 * HG, mask=mask, other=0.0)
    next_o = tl.load(p_ptrs + 3 * HG, mask=mask, other=0.0)
    for t in range(T):
        p_i, p_f, p_g, p_o = next_i, next_f, next_g, next_o
        p_ptrs += B * 4 * H
        next_mask = mask & (t + 1 < T)
        next_i = tl.load(p_ptrs, mask=next_mask, other=0.0)
        next_f = tl.load(p_ptrs + HG, mask=next_mask, other=0.0)
        next_g = tl.load(p_ptrs + 2 * HG, mask=next_mask, other=0.0)
        next_o = tl.load(p_ptrs + 3 * HG, mask=next_mask, other=0.0)
        pre_i = _gate_preactivation(w_i, h, p_i, UNITS_ON_ROWS)
        pre_f = _gate_preactivation(w_f, h, p_f, UNITS_ON_ROWS)
        pre_g = _gate_preactivation(w_g, h, p_g, UNITS_ON_ROWS)
        pre_o = _gate_preactivation(w_o, h, p_o, UNITS_ON_ROWS)
        h_state, c = lstm_cell(pre_i, pre_f, pre_g, pre_o, c)
        # The next step multiplies by h rounded to x's dtype, exactly as the reference does.
        h = h_state.to(x_dt)
        tl.store(cell_ptrs, c, mask=mask)
        tl.store(out_ptrs, h, mask=mask)
        out_ptrs += B * H
        cell_ptrs += B * H


def glstm_sequence_forward(proj: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, weight_hh: torch.Tensor,
                           output: torch.Tensor, cell: torch.Tensor) -> None:
    """The recurrence of one G-LSTM layer without a projection, all T steps in one launch; writes output and cell.

    Args: proj (T, B, G*4Hg) state dtype: the input pre-activations x W_ih^T + b
        (:func:`.glstm.glstm_input_projection`); h0 (B, H); c0 (B, H); weight_hh (G, 4Hg, Hg) in x's dtype;
        output (T, B, H) in x's dtype and cell (T, B, H) in the state dtype, contiguous, written in full.
    Raises ValueError, before any launch, when :func:`glstm_sequence_fits` rejects Hg for this dtype (use the
    per-step path) or a tensor's shape, dtype, device or layout is not the above.

    Example::
        >>> proj = glstm_input_projection(x, w_ih, b)                 # x (T, B, G*Ig) on a GPU, Hg = 96
        >>> output = torch.empty(T, B, G * 96, dtype=x.dtype, device=x.device)
        >>> cell = torch.empty(T, B, G * 96, dtype=torch.float32, device=x.device)
        >>> glstm_sequence_forward(proj, h0, c0, w_hh, output, cell)
    """
    G, four_hg, hg = weight_hh.shape
    if four_hg != 4 * hg:
        raise ValueError(f"weight_hh must be (G, 4Hg, Hg) (no projection), got {tuple(weight_hh.shape)}")
    if output.dim() != 3 or output.shape[2] != G * hg or not output.is_contiguous():
        raise ValueError(f"output must be a contiguous (T, B, G*Hg = {G * hg}) tensor, got {tuple(output.shape)}")
    T, B, H = output.shape
    dtype, sdt = output.dtype, state_dtype(output.dtype)
    if not glstm_sequence_fits(hg, dtype):
        raise ValueError(f"weight_hh: Hg = {hg} in {dtype} does not fit the sequence-fused kernel (padded Hg at most "
                         f"{SEQUENCE_MAX_HG_PAD.get(dtype)}); use the per-step path")
    expected = dict(proj=(proj, (T, B, 4 * H), sdt), h0=(h0, (B, H), None), c0=(c0, (B, H), None),
                    cell=(cell, (T, B, H), sdt), weight_hh=(weight_hh, (G, 4 * hg, hg), dtype))
    for name, (tensor, shape, want_dtype) in expected.items():
        if tuple(tensor.shape) != shape or (want_dtype is not None and tensor.dtype != want_dtype) or \
                not tensor.is_contiguous() or tensor.device != output.device:
            raise ValueError(f"{name} must be a contiguous {shape} tensor"
                             f"{'' if want_dtype is None else f' of {want_dtype}'} on {output.device}, "
                             f"got {tuple(tensor.shape)} {tensor.dtype} on {tensor.device}"
                             f"{'' if tensor.is_contiguous() else ' (not contiguous)'}")
    if T == 0 or B == 0:
        return
    grid = lambda meta: (G, triton.cdiv(B, meta["BLOCK_B"]))  # noqa: E731
    _glstm_sequence_fused_kernel[grid](proj, h0, c0, weight_hh, output, cell, T, B, hg, G, HG_PAD=dot_pad(hg))


# ----------------------------------------------------------------------------------------------------------------------
# Ahead-of-time compile check (triton_kernels/aot.py finds this module and calls aot_launches for every dtype)
# ----------------------------------------------------------------------------------------------------------------------
def aot_launches(dtype: torch.dtype) -> None:
    """Launch the kernel as a G-LSTM layer would, on small CPU tensors of ``dtype``, for the ahead-of-time compile
    check (:mod:`.aot` intercepts the launch; nothing runs): at Hg = 64 and, where the dtype takes it, Hg = 128, the
    largest tiles of each autotune class (a smaller Hg pads to one of these or to smaller tiles). Sizes are multiples
    of 16, as at typical shapes, so the launch carries the alignment facts Triton specialises on."""
    T, B, G = 2, 32, 2
    sdt = state_dtype(dtype)
    for hg in sorted({64, SEQUENCE_MAX_HG_PAD[dtype]}):
        H = G * hg
        glstm_sequence_forward(torch.zeros(T, B, 4 * H, dtype=sdt), torch.zeros(B, H, dtype=dtype),
                               torch.zeros(B, H, dtype=dtype), torch.zeros(G, 4 * hg, hg, dtype=dtype),
                               torch.zeros(T, B, H, dtype=dtype), torch.zeros(T, B, H, dtype=sdt))
