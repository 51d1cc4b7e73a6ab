"""StackedLSTM: single-layer LSTMs chained, so every layer can have its own hidden size (what ISS shrinking yields).

Shape legend: T time steps, B batch, L layers, D directions (2 if bidirectional else 1), H_l hidden (cell) units of
layer l, P_l its output width (its proj_size if > 0, else H_l).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

__all__ = ["StackedLSTM"]


class StackedLSTM(nn.Module):
    """A stack of single-layer LSTM modules (nn.LSTM, lstmkern.GLSTM or lstmkern.FLSTM, num_layers=1 each) with
    per-layer hidden sizes, dropout between layers, and nn.LSTM's call convention for the input and output.

    ``forward(input, hx=None) -> output, (h_n, c_n)``: input (T, B, I) (or (B, T, I) with batch_first, or a
    PackedSequence) and output (T, B, D*P_{L-1}) exactly like nn.LSTM. Because the layers' sizes differ, the states
    are per layer: hx is None or a pair (h0, c0) of length-L sequences of (D, B, P_l) and (D, B, H_l) tensors, and
    h_n, c_n are tuples of L tensors (D, B, P_l) and (D, B, H_l). Layers may be projected (proj_size > 0).

    Example::
        >>> stack = StackedLSTM([nn.LSTM(8, 5), nn.LSTM(5, 3)])
        >>> out, (h_n, c_n) = stack(torch.randn(7, 2, 8))     # out: (7, 2, 3); h_n[0]: (1, 2, 5), h_n[1]: (1, 2, 3)
    """

    def __init__(self, layers: Sequence[nn.Module], dropout: float = 0.0):
        super().__init__()
        layers = list(layers)
        if not layers:
            raise ValueError("layers must hold at least one LSTM module, got an empty sequence")
        first = layers[0]
        for i, layer in enumerate(layers):
            if getattr(layer, "num_layers", None) != 1:
                raise ValueError(f"layers[{i}] must be a single-layer LSTM module (num_layers=1), "
                                 f"got {type(layer).__name__} with num_layers={getattr(layer, 'num_layers', None)}")
            if layer.bidirectional != first.bidirectional or layer.batch_first != first.batch_first:
                raise ValueError(f"layers[{i}] must match layers[0] in bidirectional and batch_first")
            if i > 0:
                previous = layers[i - 1]
                width = getattr(previous, "proj_size", 0) or previous.hidden_size
                expected = width * (2 if first.bidirectional else 1)
                if layer.input_size != expected:
                    raise ValueError(f"layers[{i}].input_size must be {expected} (the previous layer's output "
                                     f"features), got {layer.input_size}")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        self.layers = nn.ModuleList(layers)
        self.dropout = float(dropout)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def input_size(self) -> int:
        return self.layers[0].input_size

    @property
    def hidden_sizes(self) -> list[int]:
        return [layer.hidden_size for layer in self.layers]

    @property
    def bidirectional(self) -> bool:
        return self.layers[0].bidirectional

    @property
    def batch_first(self) -> bool:
        return self.layers[0].batch_first

    def forward(self, input, hx: Optional[tuple[Sequence[Tensor], Sequence[Tensor]]] = None):
        if hx is not None:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2 or any(len(s) != self.num_layers for s in hx):
                raise ValueError(f"hx must be None or (h0, c0), each a sequence of {self.num_layers} per-layer "
                                 f"(D, B, H_l) tensors")
        out = input
        h_n, c_n = [], []
        for index, layer in enumerate(self.layers):
            if index > 0 and self.dropout > 0 and self.training:
                if isinstance(out, PackedSequence):
                    out = out._replace(data=nn.functional.dropout(out.data, self.dropout, training=True))
                else:
                    out = nn.functional.dropout(out, self.dropout, training=True)
            out, (h, c) = layer(out, None if hx is None else (hx[0][index], hx[1][index]))
            h_n.append(h)
            c_n.append(c)
        return out, (tuple(h_n), tuple(c_n))

    def extra_repr(self) -> str:
        return f"hidden_sizes={self.hidden_sizes}" + (f", dropout={self.dropout}" if self.dropout else "")


# Safe for torch.load(weights_only=True), like GLSTM and FLSTM (see lstmkern/modules.py).
torch.serialization.add_safe_globals([StackedLSTM])
