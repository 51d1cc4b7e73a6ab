"""lstmkern: fast kernels for compact LSTMs (G-LSTM and F-LSTM) with autograd, as PyTorch ops and modules."""
from . import ops  # registers the lstmkern:: custom ops
from .functional import flstm_forward, glstm_forward
from .modules import FLSTM, GLSTM
from .structured import CompactLSTM, ToeplitzLikeLSTM

__all__ = ["glstm_forward", "flstm_forward", "GLSTM", "FLSTM", "ToeplitzLikeLSTM", "CompactLSTM", "ops"]
__version__ = "0.1.0"
