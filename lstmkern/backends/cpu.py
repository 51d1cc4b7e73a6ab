"""The "cpu" backend: C++ kernels for CPU tensors from the ``lstmkern._C`` extension (csrc/cpu_lstm.cpp), built in
every install (with or without CUDA). "auto" picks it for CPU tensors wherever the extension is there.

Shape legend: T time steps, B batch, I input features, H hidden units, G groups, Hg = H / G, R rank, P projection
size (P = H without one).

How one call runs (no Python per step, no allocation per step):

* the input projection of all T steps is one large GEMM (per group for a grouped G-LSTM input), written into the
  gate buffer (T*B, 4H);
* per step, the recurrent product and the pointwise cell are one ``at::parallel_for`` over tasks (group, chunk of
  hidden units): a task multiplies h_{t-1} by its units' rows of W_hh[g] (small GEMMs into the gate buffer, with the
  weights packed once per call where the BLAS is MKL) and runs the fused, vectorised cell (AVX2 with inlined float32
  exp/tanh where the CPU has AVX2, else scalar) for those units, writing h_t and c_t into ``output`` and ``cell`` and
  the activated gates back into the gate buffer; F-LSTM first forms z = h_{t-1} W1_h^T by rank chunks (a second region
  per step);
* the forward returns its gate buffer (every step's activated gates sigmoid(i), sigmoid(f), tanh(g), sigmoid(o),
  (T*B, 4H) in the state dtype) as the workspace (``KEEPS_WORKSPACE``), so the backward neither recomputes the gates
  nor their activations (as nn.LSTM's autograd graph keeps them): it walks back with one region per step (G-LSTM: dh
  columns of W_hh[g], then the cell backward of the same units, writing the gradients of the pre-activations into a
  buffer of its own; F-LSTM: plus dz_t by rank chunks, and z = W1 [x_t; h_{t-1}], a product (I+P)/4H the size of the
  gates', recomputed time-parallel for dweight_2), then forms the weight gradients, dx and dbias as large GEMMs after
  the loop;
* with a projection (``weight_hr`` (P, H)) the cell writes m_t = o * tanh(c_t) into a per-call buffer and one more
  region per step forms h_t = m_t W_hr^T into ``output``; the backward adds dh_t = grad_output[t] + the recurrent part
  (kept for every t), forms dm_t = dh_t W_hr just before the cell backward of the same units (which also writes m_t
  from the saved c_t), and dweight_hr = sum_t dh_t^T m_t is one GEMM after the loop.

Numerics follow :mod:`lstmkern.reference` (same formulas, same order within a step; GEMM summation order differs),
in float32 or float64, which is also the state dtype, and in bfloat16: the state (``cell``, ``grad_cell``) and all
accumulation in float32, and the float32 kernels round to bfloat16 where the reference's bfloat16 products and casts
round (input projection, each step's recurrent product, F-LSTM's z, m_t, the projection, h_t; in the backward
F-LSTM's recomputed z and m_t), so h_t, which the next step multiplies by, is a bfloat16 value; gradients are
accumulated in float32 and rounded once. float16 is refused (the "reference" backend runs it).

Example::
    >>> import torch, lstmkern
    >>> layer = lstmkern.GLSTM(64, 64, groups=4)          # CPU tensors: backend "auto" resolves to "cpu"
    >>> out, (h_n, c_n) = layer(torch.randn(10, 3, 64))
    >>> lstmp = lstmkern.GLSTM(64, 64, proj_size=16, groups=4)   # LSTMP: out (10, 3, 16), runs here too
"""
from __future__ import annotations

import functools

import torch

__all__ = ["glstm_fwd", "glstm_bwd", "flstm_fwd", "flstm_bwd", "unsupported", "cell_isa", "parallel_width"]

# The dense-input G-LSTM (weight_ih (G, 4Hg, I): every group reads all of x) is one GEMM for the input projection.
SUPPORTS_DENSE_INPUT = True
# Projections (LSTMP, weight_hr (P, H)): the four functions take weight_hr as a last argument.
SUPPORTS_PROJECTION = True
# The forward returns (output, cell, gates): its gate buffer, every step's activated gates (T*B, 4H) in the state
# dtype; the backward takes it as ``workspace`` (flattened or not) instead of recomputing the gates (see
# lstmkern.backends).
KEEPS_WORKSPACE = True

_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
_OPS = ("glstm_fwd", "glstm_bwd", "flstm_fwd", "flstm_bwd")


@functools.lru_cache(maxsize=None)
def _extension_problem() -> str | None:
    """None when lstmkern._C loads and registers CPU kernels for every lstmkern_cpu op, else why not."""
    try:
        from .. import _C  # noqa: F401  (loading the library registers the ops)
    except ImportError as err:
        return f"the extension lstmkern._C is not built or does not load ({err}); reinstall lstmkern"
    for name in _OPS:
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"lstmkern_cpu::{name}", "CPU"):
            return f"the extension lstmkern._C registers no CPU kernel for lstmkern_cpu::{name} (an older build?)"
    return None


def unsupported(op: str, device: torch.device, dtype: torch.dtype, sizes) -> str | None:
    """None when this backend can run ``op`` ("glstm" or "flstm") on tensors of ``device`` and ``dtype``, otherwise the
    reason. Sizes do not limit it."""
    if op not in ("glstm", "flstm"):
        raise ValueError(f"op must be 'glstm' or 'flstm', got {op!r}")
    if torch.device(device).type != "cpu":
        return f"backend 'cpu' needs CPU tensors, got device {torch.device(device).type}"
    if dtype not in _DTYPES:
        return (f"dtype {dtype} is not supported by the CPU kernels (float32, float64 and bfloat16 only); use "
                f"'reference' for float16")
    return _extension_problem()


def cell_isa() -> str:
    """The instruction set the CPU kernels' pointwise cell runs with here: "avx2" or "default"."""
    return _ops().cell_isa()


def parallel_width() -> int:
    """How many threads the CPU kernels' parallel regions run on now: torch.get_num_threads() in a correct build (the
    extension is compiled with OpenMP), 1 in a build that silently lost it."""
    return _ops().parallel_width()


def _ops():
    """torch.ops.lstmkern_cpu with lstmkern._C loaded (importing it registers the ops; a caller may reach these
    functions without having asked ``unsupported`` first)."""
    from .. import _C  # noqa: F401
    return torch.ops.lstmkern_cpu


def glstm_fwd(x, h0, c0, weight_ih, weight_hh, bias, weight_hr=None):
    return _ops().glstm_fwd(x, h0, c0, weight_ih, weight_hh, bias, weight_hr)


def _gates(workspace, x):
    # The ops hand the workspace back flattened; the kernels check its size against (T*B, 4H).
    return workspace.view(x.shape[0] * x.shape[1], -1) if workspace.numel() else workspace


def _gradients(grads: tuple, weight_hr) -> tuple:
    # The ops always return dweight_hr (empty without a projection); the backend contract returns it only with one.
    return tuple(grads) if weight_hr is not None else tuple(grads[:6])


def glstm_bwd(grad_output, grad_cell, x, h0, c0, weight_ih, weight_hh, bias, output, cell, weight_hr=None, *,
              workspace):
    return _gradients(_ops().glstm_bwd(grad_output, grad_cell, x, h0, c0, weight_ih, weight_hh, bias, output, cell,
                                       _gates(workspace, x), weight_hr), weight_hr)


def flstm_fwd(x, h0, c0, weight_1, weight_2, bias, weight_hr=None):
    return _ops().flstm_fwd(x, h0, c0, weight_1, weight_2, bias, weight_hr)


def flstm_bwd(grad_output, grad_cell, x, h0, c0, weight_1, weight_2, bias, output, cell, weight_hr=None, *,
              workspace):
    return _gradients(_ops().flstm_bwd(grad_output, grad_cell, x, h0, c0, weight_1, weight_2, bias, output, cell,
                                       _gates(workspace, x), weight_hr), weight_hr)
