"""Test setup: without a GPU, Triton kernels run under Triton's interpreter on CPU tensors."""
import os

import torch

if not torch.cuda.is_available():
    # Must be set before triton is first imported (lstmkern imports it).
    os.environ.setdefault("TRITON_INTERPRET", "1")
