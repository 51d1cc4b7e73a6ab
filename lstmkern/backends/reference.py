"""The "reference" backend: plain PyTorch (cuBLAS on GPU), exact in float64. See :mod:`lstmkern.reference`."""
from __future__ import annotations

import torch

from ..reference import (flstm_reference as flstm_fwd, flstm_reference_backward as flstm_bwd,
                         glstm_reference as glstm_fwd, glstm_reference_backward as glstm_bwd)

__all__ = ["glstm_fwd", "glstm_bwd", "flstm_fwd", "flstm_bwd", "unsupported"]

# The reference implements every layer form: the LSTMP projection (weight_hr as the functions' last argument) and
# the dense-input G-LSTM (weight_ih (G, 4Hg, I)).
SUPPORTS_PROJECTION = True
SUPPORTS_DENSE_INPUT = True

_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def unsupported(op: str, device: torch.device, dtype: torch.dtype, sizes) -> str | None:
    if dtype not in _DTYPES:
        return f"dtype {dtype} is not supported (expected one of {_DTYPES})"
    return None
