"""Norms and singular values of an LSTM's gate matrices: the numbers that tell how far a model can be factorized.

Shape legend: L layers, D directions, H hidden (cell) units, P the recurrent width (proj_size if > 0, else H), I_k
input features of layer k.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..modules import FLSTM, GLSTM
from ._weights import DIRECTION_NAMES, check_lstm_like, dense_weights
from .low_rank import LowRankLSTM, select_rank

__all__ = ["norm_report", "NormReport", "NormRow"]

MATRIX_NAMES = ("W_ih", "W_hh", "[W_ih W_hh]")


@dataclass(frozen=True, eq=False)  # eq on a tensor field would be ambiguous
class NormRow:
    """Norms of one matrix of one layer and direction (computed in float64).

    matrix: "W_ih" (4H, I_k), "W_hh" (4H, P) or "[W_ih W_hh]" (4H, I_k + P).
    rank_90 / rank_99: the smallest rank keeping 90% / 99% of sum(sigma^2) (what ``low_rank(model, 0.9)`` picks).
    singular_values: all of them, descending, float64 (CPU).
    """
    layer: int
    direction: str
    matrix: str
    shape: tuple[int, int]
    frobenius: float
    nuclear: float
    spectral: float
    rank_90: int
    rank_99: int
    singular_values: Tensor


class NormReport(list):
    """A list of :class:`NormRow` (layer-major, then direction, then W_ih, W_hh, [W_ih W_hh]); ``str()`` or
    :meth:`table` gives a printable table."""

    def table(self) -> str:
        header = ("layer", "dir", "matrix", "shape", "frobenius", "nuclear", "spectral", "rank90%", "rank99%", "max rank")
        lines = [header]
        for r in self:
            lines.append((str(r.layer), r.direction, r.matrix, f"{r.shape[0]}x{r.shape[1]}", f"{r.frobenius:.4g}",
                          f"{r.nuclear:.4g}", f"{r.spectral:.4g}", str(r.rank_90), str(r.rank_99),
                          str(r.singular_values.numel())))
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        text = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines]
        text.insert(1, "-" * len(text[0]))
        return "\n".join(text)

    def __str__(self) -> str:
        return self.table()


def norm_report(model) -> NormReport:
    """Frobenius, nuclear and spectral norms and singular values of W_ih, W_hh and [W_ih W_hh] per layer/direction.

    Args:
        model: nn.LSTM, lstmkern.GLSTM (its block-diagonal matrices), lstmkern.FLSTM (the products W2 W1) or
            :class:`LowRankLSTM` (the products of its factors), projected or not. Biases and the projection W_hr
            (which :func:`low_rank` keeps unfactorized) are not included.
    Returns:
        :class:`NormReport`, a list of :class:`NormRow`; ``print(report)`` shows the table.

    Example::
        >>> report = norm_report(torch.nn.LSTM(16, 32, num_layers=2))
        >>> print(report)                       # 6 rows: 2 layers x 3 matrices
        >>> [r.rank_90 for r in report if r.matrix == "[W_ih W_hh]"]
    """
    check_lstm_like(model, "model", (torch.nn.LSTM, GLSTM, FLSTM, LowRankLSTM))
    D = 2 if model.bidirectional else 1
    rows = NormReport()
    for layer in range(model.num_layers):
        for d in range(D):
            w_ih, w_hh, _ = dense_weights(model, layer, d)
            for name, w in zip(MATRIX_NAMES, (w_ih, w_hh, torch.cat((w_ih, w_hh), dim=1))):
                w = w.detach().double()
                s = torch.linalg.svdvals(w).cpu()
                rows.append(NormRow(layer=layer, direction=DIRECTION_NAMES[d], matrix=name, shape=tuple(w.shape),
                                    frobenius=torch.linalg.matrix_norm(w).item(), nuclear=s.sum().item(),
                                    spectral=s[0].item(), rank_90=select_rank(s, 0.9), rank_99=select_rank(s, 0.99),
                                    singular_values=s))
    return rows
