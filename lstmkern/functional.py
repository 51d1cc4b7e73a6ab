"""Functional API: one G-LSTM or F-LSTM layer, one direction.

Shape legend: T time steps, B batch, I input features, H hidden (cell) units, G groups (Ig = I/G, Hg = H/G), R rank,
P projection size (LSTMP, ``weight_hr`` (P, H); without one the output and recurrent input are H wide: read "P" as H).

Every call goes the same way: validate the arguments (clear ValueError/TypeError before any kernel runs) -> the
registered custom op (:mod:`lstmkern.ops`, autograd and torch.compile support), which chooses the backend
(:func:`lstmkern.backends.resolve_backend`) -> the backend's launcher -> its kernels.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import ops
from .backends import check_backend_name, resolve_backend

__all__ = ["glstm_forward", "flstm_forward"]

_FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def _check_tensor(name: str, value, ndim: int, x: Tensor) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(value.shape)}")
    if value.dtype != x.dtype:
        raise TypeError(f"{name} must have x's dtype {x.dtype}, got {value.dtype}")
    if value.device != x.device:
        raise ValueError(f"{name} must be on x's device {x.device}, got {value.device}")
    return value


def _check_shape(name: str, value: Tensor, expected: tuple[int, ...], meaning: str) -> None:
    if tuple(value.shape) != expected:
        raise ValueError(f"{name} must have shape {expected} {meaning}, got {tuple(value.shape)}")


def _check_input(x) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"x must be 3-D (T, B, I) or (B, T, I) with batch_first, got shape {tuple(x.shape)}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x must be float64, float32, float16 or bfloat16, got {x.dtype}")


def _initial_state(hx, x: Tensor, B: int, H: int, P: int) -> tuple[Tensor, Tensor]:
    if hx is None:
        return x.new_zeros(B, P), x.new_zeros(B, H)
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"hx must be None or a pair (h0, c0), got {type(hx).__name__}")
    h0 = _check_tensor("h0", hx[0], 2, x)
    c0 = _check_tensor("c0", hx[1], 2, x)
    _check_shape("h0", h0, (B, P), "(B, P)" if P != H else "(B, H)")
    _check_shape("c0", c0, (B, H), "(B, H)")
    return h0, c0


def _check_projection(weight_hr, x: Tensor, H: int) -> int:
    """P of a valid weight_hr (P, H) with 1 <= P < H (nn.LSTM's rule), or H without one."""
    if weight_hr is None:
        return H
    weight_hr = _check_tensor("weight_hr", weight_hr, 2, x)
    P = weight_hr.shape[0]
    if weight_hr.shape[1] != H or not 1 <= P < H:
        raise ValueError(f"weight_hr must have shape (P, H) with H = {H} from the gate weights and 1 <= P < H, "
                         f"got {tuple(weight_hr.shape)}")
    return P


def _time_major(x: Tensor, batch_first: bool) -> Tensor:
    return x.transpose(0, 1) if batch_first else x


def run_layer(op: str, x: Tensor, h0: Tensor, c0: Tensor, weight_a: Tensor, weight_b: Tensor, bias: Optional[Tensor],
              backend: str, weight_hr: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Validated, time-major, T >= 1 inputs -> (output (T, B, P), cell (T, B, H)) through the custom op.

    The modules use this to keep every step's cell state (PackedSequence needs the state at each sequence's end).
    ``backend`` is the request ("auto" or a name); the op resolves it on the real sizes when it runs (see
    :mod:`lstmkern.ops`). Outside torch.compile it is resolved here first too, so an impossible request fails with a
    clear error before any tensor is copied; under torch.compile the sizes may be symbolic, so that is left to the op.
    """
    if not torch.compiler.is_compiling():
        resolve_backend(backend, op, x.device, x.dtype, ops.layer_sizes(op, x, c0, weight_a, weight_hr))
    fwd = ops.glstm_fwd if op == "glstm" else ops.flstm_fwd
    output, cell, _workspace = fwd(
        x.contiguous(), h0.contiguous(), c0.contiguous(), weight_a.contiguous(), weight_b.contiguous(),
        None if bias is None else bias.contiguous(), None if weight_hr is None else weight_hr.contiguous(), backend)
    return output, cell


def _finish(op, x, hx, weight_a, weight_b, bias, weight_hr, H, P, batch_first, backend):
    x_tm = _time_major(x, batch_first)
    T, B, _ = x_tm.shape
    h0, c0 = _initial_state(hx, x, B, H, P)
    if T == 0:
        return x.new_empty(x.shape[:2] + (P,)), (h0, c0)
    output, cell = run_layer(op, x_tm, h0, c0, weight_a, weight_b, bias, backend, weight_hr)
    h_n, c_n = output[-1], cell[-1].to(x.dtype)
    return _time_major(output, batch_first), (h_n, c_n)


def glstm_forward(x: Tensor, hx: Optional[tuple[Tensor, Tensor]], weight_ih: Tensor, weight_hh: Tensor,
                  bias: Optional[Tensor] = None, *, weight_hr: Optional[Tensor] = None, batch_first: bool = False,
                  backend: str = "auto") -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One G-LSTM layer (Kuchaiev & Ginsburg 2017): G LSTMs whose recurrences are independent.

    Args:
        x: (T, B, I), or (B, T, I) with ``batch_first``.
        hx: (h0 (B, P), c0 (B, H)), or None for zeros (P = H without a projection).
        weight_ih: group g's input weights, rows i, f, g, o (PyTorch's gate order): (G, 4Hg, Ig) when group g reads
            only x[..., g*Ig:(g+1)*Ig] (grouped input), or (G, 4Hg, I) when every group reads all of x (dense input:
            only the recurrence is block-diagonal). The form is read from the last dimension.
        weight_hh: (G, 4Hg, Pg): group g's recurrent weights, reading h[:, g*Pg:(g+1)*Pg] (Pg = P/G).
        bias: (G, 4Hg) or None. With G = 1 this is nn.LSTM's ``bias_ih_l0 + bias_hh_l0``.
        weight_hr: (P, H) or None: the LSTMP projection h_t = (o_t * tanh(c_t)) W_hr^T (nn.LSTM's ``proj_size``),
            1 <= P < H, P divisible by G.
        backend: "auto", or a backend name (see :data:`lstmkern.backends.BACKEND_NAMES`).
    Returns:
        output (T, B, P) (or (B, T, P)), and (h_n (B, P), c_n (B, H)).

    Example::
        >>> x = torch.randn(7, 2, 12)
        >>> w_ih, w_hh, b = torch.randn(3, 20, 4), torch.randn(3, 20, 5), torch.randn(3, 20)
        >>> out, (h_n, c_n) = lstmkern.glstm_forward(x, None, w_ih, w_hh, b)   # out: (7, 2, 15)
        >>> w_hh, w_hr = torch.randn(3, 20, 2), torch.randn(6, 15)             # projected to P = 6
        >>> out, (h_n, c_n) = lstmkern.glstm_forward(x, None, w_ih, w_hh, b, weight_hr=w_hr)  # out: (7, 2, 6)
    """
    _check_input(x)
    check_backend_name(backend)
    weight_ih = _check_tensor("weight_ih", weight_ih, 3, x)
    weight_hh = _check_tensor("weight_hh", weight_hh, 3, x)
    G, four_hg, ig = weight_ih.shape
    if G < 1 or four_hg == 0 or four_hg % 4 != 0:
        raise ValueError(f"weight_ih must have shape (G, 4*H/G, I/G) or (G, 4*H/G, I) with G >= 1 and 4 gates per "
                         f"group, got {tuple(weight_ih.shape)}")
    hg = four_hg // 4
    H = G * hg
    I = x.shape[-1]
    if G * ig != I and ig != I:
        raise ValueError(f"x has {I} input features but weight_ih of shape {tuple(weight_ih.shape)} expects "
                         f"G * I/G = {G} * {ig} = {G * ig} (grouped input) or {ig} (dense input)")
    P = _check_projection(weight_hr, x, H)
    if P % G:
        raise ValueError(f"the projection size P = {P} (weight_hr's first dimension) must be divisible by G = {G}")
    _check_shape("weight_hh", weight_hh, (G, four_hg, P // G),
                 "(G, 4*H/G, P/G) to match weight_ih and weight_hr" if weight_hr is not None
                 else "(G, 4*H/G, H/G) to match weight_ih")
    if bias is not None:
        bias = _check_tensor("bias", bias, 2, x)
        _check_shape("bias", bias, (G, four_hg), "(G, 4*H/G)")
    return _finish("glstm", x, hx, weight_ih, weight_hh, bias, weight_hr, H, P, batch_first, backend)


def flstm_forward(x: Tensor, hx: Optional[tuple[Tensor, Tensor]], weight_1: Tensor, weight_2: Tensor,
                  bias: Optional[Tensor] = None, *, weight_hr: Optional[Tensor] = None, batch_first: bool = False,
                  backend: str = "auto") -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One F-LSTM layer (Kuchaiev & Ginsburg 2017): gates = W2 (W1 [x_t; h_{t-1}]) + b.

    Args:
        x: (T, B, I), or (B, T, I) with ``batch_first``.
        hx: (h0 (B, P), c0 (B, H)), or None for zeros (P = H without a projection).
        weight_1: (R, I + P), the first (narrow) stage.
        weight_2: (4H, R), the second stage, rows i, f, g, o.
        bias: (4H,) or None.
        weight_hr: (P, H) or None: the LSTMP projection h_t = (o_t * tanh(c_t)) W_hr^T, 1 <= P < H.
        backend: "auto", or a backend name (see :data:`lstmkern.backends.BACKEND_NAMES`).
    Returns:
        output (T, B, P) (or (B, T, P)), and (h_n (B, P), c_n (B, H)).

    With R = I + H, W1 = identity and W2 = [W_ih W_hh] this is nn.LSTM (with weight_hr: nn.LSTM(proj_size=P)).

    Example::
        >>> x = torch.randn(7, 2, 12)
        >>> w1, w2 = torch.randn(5, 12 + 16), torch.randn(64, 5)
        >>> out, (h_n, c_n) = lstmkern.flstm_forward(x, None, w1, w2)   # out: (7, 2, 16)
    """
    _check_input(x)
    check_backend_name(backend)
    weight_1 = _check_tensor("weight_1", weight_1, 2, x)
    weight_2 = _check_tensor("weight_2", weight_2, 2, x)
    four_h, R = weight_2.shape
    if R < 1:
        raise ValueError(f"rank R must be >= 1, got weight_2 of shape {tuple(weight_2.shape)}")
    if four_h == 0 or four_h % 4 != 0:
        raise ValueError(f"weight_2 must have shape (4H, R) with 4 gates, got {tuple(weight_2.shape)}")
    H = four_h // 4
    I = x.shape[-1]
    P = _check_projection(weight_hr, x, H)
    source = f"P = {P} from weight_hr" if weight_hr is not None else f"H = {H} from weight_2"
    width = "I + P" if weight_hr is not None else "I + H"
    _check_shape("weight_1", weight_1, (R, I + P), f"(R, {width}) with R = {R} from weight_2, I = {I} from x, {source}")
    if bias is not None:
        bias = _check_tensor("bias", bias, 1, x)
        _check_shape("bias", bias, (four_h,), "(4H,)")
    return _finish("flstm", x, hx, weight_1, weight_2, bias, weight_hr, H, P, batch_first, backend)
