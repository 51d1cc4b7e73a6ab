"""Triton kernels and launchers for lstmkern (installed as ``lstmkern.triton_kernels``); self-contained.

Shape legend: T time steps, B batch, I input features, H hidden units, G groups, R rank, P projection size,
Hg = H / G, Ig = I / G, Pg = P / G.
Launchers take and return plain tensors (time-major, contiguous); see :mod:`.glstm`, :mod:`.flstm` and
:mod:`.projection` (the LSTMP projection's GEMMs).
"""
from .flstm import FLSTM_PATHS, flstm_backward, flstm_forward, flstm_input_projection, flstm_sequence_fits
from .gemm import grouped_gemm
from .glstm import GLSTM_PATHS, glstm_backward, glstm_forward, glstm_input_projection, glstm_sequence_fits

__all__ = ["grouped_gemm", "glstm_input_projection", "glstm_forward", "glstm_backward", "glstm_sequence_fits",
           "GLSTM_PATHS", "flstm_input_projection", "flstm_forward", "flstm_backward", "flstm_sequence_fits",
           "FLSTM_PATHS"]
