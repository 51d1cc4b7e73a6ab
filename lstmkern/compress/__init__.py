"""Compression toolkit for trained LSTMs (nn.LSTM, GLSTM, FLSTM; projected ones (proj_size) too).

- :func:`low_rank`: factorize W_ih / W_hh / [W_ih W_hh] by truncated SVD or semi-NMF (Winata et al. 2019); the
  result runs on lstmkern's F-LSTM op (an :class:`lstmkern.FLSTM` for the joint factorization, else a
  :class:`LowRankLSTM`) and can be fine-tuned.
- :func:`norm_report`: norms and singular values of every gate matrix, to pick ranks.
- :mod:`lstmkern.compress.iss`: Intrinsic Sparse Structures (Wen et al. 2018): group-lasso ``penalty`` over whole
  hidden units, ``zero_small_`` and ``shrink`` to a smaller dense LSTM (:class:`StackedLSTM`); with a projection
  ``units=`` picks the cell units (H shrinks, P stays: the default), the projected units (P shrinks) or both.
"""
from . import iss
from .low_rank import LowRankLSTM, SemiNMFResult, low_rank, select_rank, semi_nmf, svd_factors
from .norms import NormReport, NormRow, norm_report
from .stacked import StackedLSTM

__all__ = ["low_rank", "LowRankLSTM", "select_rank", "svd_factors", "semi_nmf", "SemiNMFResult", "norm_report",
           "NormReport", "NormRow", "iss", "StackedLSTM"]
