"""Read the dense gate matrices of any supported LSTM module, one (layer, direction) at a time.

Shape legend: L layers, D directions (2 if bidirectional else 1), H hidden (cell) units, P the output and recurrent
width (proj_size if > 0, else H), I_k input features of layer k (I_0 = input_size, I_k = D*P after that), G groups,
Hg = H/G, Pg = P/G, Ig = I_k/G, R rank.

The compression tools (:func:`lstmkern.compress.low_rank`, :func:`lstmkern.compress.norm_report`) reason about the
matrices nn.LSTM would use: W_ih (4H, I_k), W_hh (4H, P) with rows i, f, g, o, one bias (4H,) (nn.LSTM's two
biases summed) and, with a projection, W_hr (P, H). This module turns every supported module into that view.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..modules import FLSTM, GLSTM

DIRECTION_NAMES = ("forward", "reverse")


def suffixes(bidirectional: bool) -> tuple[str, ...]:
    """Parameter-name suffix of each direction, as nn.LSTM names them."""
    return ("", "_reverse") if bidirectional else ("",)


def check_lstm_like(model, name: str = "model", allowed: tuple[type, ...] = (nn.LSTM, GLSTM, FLSTM)) -> None:
    """TypeError unless ``model`` is one of ``allowed``."""
    if not isinstance(model, allowed):
        expected = ", ".join(t.__module__.split(".")[0] + "." + t.__name__ for t in allowed)
        raise TypeError(f"{name} must be one of {expected}; got {type(model).__name__}")


def output_size(model) -> int:
    """P: the width of each direction's output and recurrent state (proj_size if > 0, else hidden_size)."""
    return getattr(model, "proj_size", 0) or model.hidden_size


def layer_input_size(model, layer: int) -> int:
    D = 2 if model.bidirectional else 1
    return model.input_size if layer == 0 else D * output_size(model)


def projection(model, layer: int, direction: int) -> Optional[Tensor]:
    """W_hr (P, H) of one layer and direction (the parameter itself, not a copy), or None without a projection."""
    if not getattr(model, "proj_size", 0):
        return None
    if isinstance(model, nn.LSTM):
        return getattr(model, f"weight_hr_l{layer}{suffixes(model.bidirectional)[direction]}")
    return model.layer_projection(layer, direction)


def dense_weights(model, layer: int, direction: int) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """(W_ih (4H, I_k), W_hh (4H, P), bias (4H,) or None) of one layer and direction, detached (the projection W_hr,
    if any, is :func:`projection`'s).

    nn.LSTM: its two biases summed. GLSTM: the block-diagonal matrices the groups amount to (exactly the weights for
    G = 1); with ``group_input=False`` W_ih is the groups' full-width rows stacked. FLSTM: the product W2 W1 split
    at column I_k. Any module with an ``effective_weights(layer, direction)`` method (e.g.
    :class:`lstmkern.compress.LowRankLSTM`): what that returns.
    """
    with torch.no_grad():
        if hasattr(model, "effective_weights"):
            w_ih, w_hh, b = model.effective_weights(layer, direction)
            return w_ih.detach(), w_hh.detach(), (None if b is None else b.detach())
        sfx = suffixes(model.bidirectional)[direction]
        if isinstance(model, nn.LSTM):
            w_ih = getattr(model, f"weight_ih_l{layer}{sfx}").detach()
            w_hh = getattr(model, f"weight_hh_l{layer}{sfx}").detach()
            b = None
            if model.bias:
                b = (getattr(model, f"bias_ih_l{layer}{sfx}") + getattr(model, f"bias_hh_l{layer}{sfx}")).detach()
            return w_ih, w_hh, b
        if isinstance(model, GLSTM):
            w_ih, w_hh, b = model.layer_parameters(layer, direction)
            G, hg = model.groups, model.hidden_size // model.groups
            # Group g owns rows g*4Hg .. (g+1)*4Hg in its own gate order; put them in nn.LSTM's global i, f, g, o
            # order: global row gate*H + g*Hg + j  <-  group g's row gate*Hg + j.
            def to_global_rows(w: Tensor, block_diagonal: bool) -> Tensor:
                # (G*4Hg, cols), rows grouped by group; a dense-input W_ih's groups all read every column.
                dense = torch.block_diag(*w.unbind(0)) if block_diagonal else w.reshape(G * 4 * hg, -1)
                return dense.view(G, 4, hg, -1).transpose(0, 1).reshape(4 * G * hg, -1)
            bias = None if b is None else b.view(G, 4, hg).transpose(0, 1).reshape(-1).detach()
            return (to_global_rows(w_ih.detach(), model.group_input), to_global_rows(w_hh.detach(), True), bias)
        if isinstance(model, FLSTM):
            w1, w2, b = model.layer_parameters(layer, direction)
            w = w2.detach() @ w1.detach()
            I = layer_input_size(model, layer)
            return w[:, :I], w[:, I:], (None if b is None else b.detach())
    raise TypeError(f"model must be an nn.LSTM, GLSTM, FLSTM or LowRankLSTM, got {type(model).__name__}")
