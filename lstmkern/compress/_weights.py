"""Read the dense gate matrices of any supported LSTM module, one (layer, direction) at a time.

Shape legend: L layers, D directions (2 if bidirectional else 1), H hidden units, I_k input features of layer k
(I_0 = input_size, I_k = D*H after that), G groups, Hg = H/G, Ig = I_k/G, R rank.

The compression tools (:func:`lstmkern.compress.low_rank`, :func:`lstmkern.compress.norm_report`) reason about the
matrices nn.LSTM would use: W_ih (4H, I_k), W_hh (4H, H) with rows i, f, g, o, and one bias (4H,) (nn.LSTM's two
biases summed). This module turns every supported module into that view.
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
    """TypeError/ValueError unless ``model`` is one of ``allowed`` and, for nn.LSTM, has no projection."""
    if not isinstance(model, allowed):
        expected = ", ".join(t.__module__.split(".")[0] + "." + t.__name__ for t in allowed)
        raise TypeError(f"{name} must be one of {expected}; got {type(model).__name__}")
    if getattr(model, "proj_size", 0):
        raise ValueError(f"{name}.proj_size must be 0 (the compression tools do not handle projected LSTMs yet), "
                         f"got {model.proj_size}")
    if not getattr(model, "group_input", True):
        raise ValueError(f"{name}.group_input must be True (the compression tools do not handle the dense-input "
                         f"G-LSTM yet)")


def layer_input_size(model, layer: int) -> int:
    D = 2 if model.bidirectional else 1
    return model.input_size if layer == 0 else D * model.hidden_size


def dense_weights(model, layer: int, direction: int) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """(W_ih (4H, I_k), W_hh (4H, H), bias (4H,) or None) of one layer and direction, detached.

    nn.LSTM: its two biases summed. GLSTM: the block-diagonal matrices the groups amount to (exactly the weights for
    G = 1). FLSTM: the product W2 W1 split at column I_k. Any module with an ``effective_weights(layer, direction)``
    method (e.g. :class:`lstmkern.compress.LowRankLSTM`): what that returns.
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
            G, four_hg, hg = w_hh.shape
            # Group g owns rows g*4Hg .. (g+1)*4Hg in its own gate order; put them in nn.LSTM's global i, f, g, o
            # order: global row gate*H + g*Hg + j  <-  group g's row gate*Hg + j.
            def to_global_rows(w: Tensor) -> Tensor:
                dense = torch.block_diag(*w.unbind(0))  # (G*4Hg, cols), rows grouped by group
                return dense.view(G, 4, hg, -1).transpose(0, 1).reshape(4 * G * hg, -1)
            bias = None if b is None else b.view(G, 4, hg).transpose(0, 1).reshape(-1).detach()
            return to_global_rows(w_ih.detach()), to_global_rows(w_hh.detach()), bias
        if isinstance(model, FLSTM):
            w1, w2, b = model.layer_parameters(layer, direction)
            w = w2.detach() @ w1.detach()
            I = layer_input_size(model, layer)
            return w[:, :I], w[:, I:], (None if b is None else b.detach())
    raise TypeError(f"model must be an nn.LSTM, GLSTM, FLSTM or LowRankLSTM, got {type(model).__name__}")
