"""Functional API: one G-LSTM or F-LSTM layer, one direction.

Shape legend: T time steps, B batch, I input features, H hidden units, G groups (Ig = I/G, Hg = H/G), R rank.

Every call goes the same way: validate the arguments (clear ValueError/TypeError before any kernel runs) -> choose the
backend (:func:`lstmkern.backends.resolve_backend`) -> the registered custom op (:mod:`lstmkern.ops`, autograd and
torch.compile support) -> the backend's launcher -> its kernels.
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


def _initial_state(hx, x: Tensor, B: int, H: int) -> tuple[Tensor, Tensor]:
    if hx is None:
        zeros = x.new_zeros(B, H)
        return zeros, zeros
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"hx must be None or a pair (h0, c0), got {type(hx).__name__}")
    h0 = _check_tensor("h0", hx[0], 2, x)
    c0 = _check_tensor("c0", hx[1], 2, x)
    _check_shape("h0", h0, (B, H), "(B, H)")
    _check_shape("c0", c0, (B, H), "(B, H)")
    return h0, c0


def _time_major(x: Tensor, batch_first: bool) -> Tensor:
    return x.transpose(0, 1) if batch_first else x


def run_layer(op: str, x: Tensor, h0: Tensor, c0: Tensor, weight_a: Tensor, weight_b: Tensor, bias: Optional[Tensor],
              backend: str) -> tuple[Tensor, Tensor]:
    """Validated, time-major, T >= 1 inputs -> (output (T, B, H), cell (T, B, H)) through the custom op.

    The modules use this to keep every step's cell state (PackedSequence needs the state at each sequence's end).
    ``backend`` is the request ("auto" or a name); the op resolves it on the real sizes when it runs (see
    :mod:`lstmkern.ops`). Outside torch.compile it is resolved here first too, so an impossible request fails with a
    clear error before any tensor is copied; under torch.compile the sizes may be symbolic, so that is left to the op.
    """
    if not torch.compiler.is_compiling():
        T, B, I = x.shape
        G, R = (weight_a.shape[0], 0) if op == "glstm" else (1, weight_a.shape[0])
        resolve_backend(backend, op, x.device, x.dtype, (T, B, I, h0.shape[1], G, R))
    fwd = ops.glstm_fwd if op == "glstm" else ops.flstm_fwd
    return fwd(x.contiguous(), h0.contiguous(), c0.contiguous(), weight_a.contiguous(), weight_b.contiguous(),
               None if bias is None else bias.contiguous(), backend)


def _finish(op, x, hx, weight_a, weight_b, bias, H, batch_first, backend):
    x_tm = _time_major(x, batch_first)
    T, B, _ = x_tm.shape
    h0, c0 = _initial_state(hx, x, B, H)
    if T == 0:
        return x.new_empty(x.shape[:2] + (H,)), (h0, c0)
    output, cell = run_layer(op, x_tm, h0, c0, weight_a, weight_b, bias, backend)
    h_n, c_n = output[-1], cell[-1].to(x.dtype)
    return _time_major(output, batch_first), (h_n, c_n)


def glstm_forward(x: Tensor, hx: Optional[tuple[Tensor, Tensor]], weight_ih: Tensor, weight_hh: Tensor,
                  bias: Optional[Tensor] = None, *, batch_first: bool = False, backend: str = "auto"
                  ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One G-LSTM layer (Kuchaiev & Ginsburg 2017): G independent LSTMs on contiguous slices of x and h.

    Args:
        x: (T, B, I), or (B, T, I) with ``batch_first``.
        hx: (h0, c0), each (B, H), or None for zeros.
        weight_ih: (G, 4Hg, Ig): group g's input weights, rows i, f, g, o (PyTorch's gate order).
        weight_hh: (G, 4Hg, Hg): group g's recurrent weights.
        bias: (G, 4Hg) or None. With G = 1 this is nn.LSTM's ``bias_ih_l0 + bias_hh_l0``.
        backend: "auto", "reference", "triton" or "cuda".
    Returns:
        output (T, B, H) (or (B, T, H)), and (h_n, c_n), each (B, H).

    Example::
        >>> x = torch.randn(7, 2, 12)
        >>> w_ih, w_hh, b = torch.randn(3, 20, 4), torch.randn(3, 20, 5), torch.randn(3, 20)
        >>> out, (h_n, c_n) = lstmkern.glstm_forward(x, None, w_ih, w_hh, b)   # out: (7, 2, 15)
    """
    _check_input(x)
    check_backend_name(backend)
    weight_ih = _check_tensor("weight_ih", weight_ih, 3, x)
    weight_hh = _check_tensor("weight_hh", weight_hh, 3, x)
    G, four_hg, ig = weight_ih.shape
    if G < 1 or four_hg == 0 or four_hg % 4 != 0:
        raise ValueError(f"weight_ih must have shape (G, 4*H/G, I/G) with G >= 1 and 4 gates per group, "
                         f"got {tuple(weight_ih.shape)}")
    hg = four_hg // 4
    I = x.shape[-1]
    if G * ig != I:
        raise ValueError(f"x has {I} input features but weight_ih of shape {tuple(weight_ih.shape)} expects "
                         f"G * I/G = {G} * {ig} = {G * ig}")
    _check_shape("weight_hh", weight_hh, (G, four_hg, hg), "(G, 4*H/G, H/G) to match weight_ih")
    if bias is not None:
        bias = _check_tensor("bias", bias, 2, x)
        _check_shape("bias", bias, (G, four_hg), "(G, 4*H/G)")
    return _finish("glstm", x, hx, weight_ih, weight_hh, bias, G * hg, batch_first, backend)


def flstm_forward(x: Tensor, hx: Optional[tuple[Tensor, Tensor]], weight_1: Tensor, weight_2: Tensor,
                  bias: Optional[Tensor] = None, *, batch_first: bool = False, backend: str = "auto"
                  ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One F-LSTM layer (Kuchaiev & Ginsburg 2017): gates = W2 (W1 [x_t; h_{t-1}]) + b.

    Args:
        x: (T, B, I), or (B, T, I) with ``batch_first``.
        hx: (h0, c0), each (B, H), or None for zeros.
        weight_1: (R, I + H), the first (narrow) stage.
        weight_2: (4H, R), the second stage, rows i, f, g, o.
        bias: (4H,) or None.
        backend: "auto", "reference", "triton" or "cuda".
    Returns:
        output (T, B, H) (or (B, T, H)), and (h_n, c_n), each (B, H).

    With R = I + H, W1 = identity and W2 = [W_ih W_hh] this is nn.LSTM.

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
    _check_shape("weight_1", weight_1, (R, I + H), f"(R, I + H) with R = {R} from weight_2, I = {I} from x, "
                                                   f"H = {H} from weight_2")
    if bias is not None:
        bias = _check_tensor("bias", bias, 1, x)
        _check_shape("bias", bias, (four_h,), "(4H,)")
    return _finish("flstm", x, hx, weight_1, weight_2, bias, H, batch_first, backend)
