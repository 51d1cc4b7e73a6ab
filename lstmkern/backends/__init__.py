"""Backends of the lstmkern ops and the rule that picks one.

Every backend is a module here with the same four functions (the contract the kernels are held to):

    glstm_fwd(x, h0, c0, weight_ih, weight_hh, bias) -> (output, cell)
    glstm_bwd(grad_output, grad_cell, x, h0, c0, weight_ih, weight_hh, bias, output, cell)
        -> (dx, dh0, dc0, dweight_ih, dweight_hh, dbias)
    flstm_fwd(x, h0, c0, weight_1, weight_2, bias) -> (output, cell)
    flstm_bwd(grad_output, grad_cell, x, h0, c0, weight_1, weight_2, bias, output, cell)
        -> (dx, dh0, dc0, dweight_1, dweight_2, dbias)

and ``unsupported(op, device, dtype, sizes) -> str | None``: None when the backend can run ``op`` ("glstm" or "flstm")
on tensors of this torch.device and torch.dtype with ``sizes`` = LayerSizes(T, B, I, H, G, R, P, dense_input) (a
tuple; G = 1 for F-LSTM, R = 0 for G-LSTM, P = 0 without projection), otherwise the reason it cannot (shown to the user
when they asked for that backend by name). Projection (P > 0) and dense input are offered only to backends that set
``SUPPORTS_PROJECTION`` / ``SUPPORTS_DENSE_INPUT``; their four functions then take ``weight_hr`` (P, H) as a last
argument (the backward then also returns dweight_hr) and/or weight_ih of shape (G, 4Hg, I).
A backend that sets ``KEEPS_WORKSPACE`` returns a third tensor from its forward functions, ``workspace``: whatever its
backward wants from the forward beyond output and cell (cuDNN's reserve space; the cpu backend keeps every step's
activated gates so its backward does not recompute them), and its backward functions take it back as the keyword
``workspace``. The ops save it for the backward; for every other backend it is an empty tensor.
It takes plain values, not tensors, so torch.compile can evaluate the choice once while tracing.

What a backend may assume (the validation in :mod:`lstmkern.functional` has run): x (T, B, I) contiguous, T >= 1;
h0, c0 (B, H) contiguous; weights and bias contiguous; every tensor of x's dtype and device; shapes as documented in
:mod:`lstmkern.reference`. bias may be None; grad_cell may be None (no gradient reaches the cell states).
What it must return: output (T, B, H) in x's dtype; cell (T, B, H) in ``reference.state_dtype(x.dtype)``; gradients in
the dtype and shape of the matching input; dbias shaped like the bias would be, even when bias is None.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import NamedTuple

import torch

BACKEND_NAMES = ("reference", "triton", "cuda", "cpu")


class LayerSizes(NamedTuple):
    """Sizes of one layer call (see the shape legend in lstmkern.reference). G = 1 for F-LSTM, R = 0 for G-LSTM.
    P = 0 without a projection (LSTMP); dense_input: a G-LSTM (G > 1) whose groups all read the whole input."""
    T: int
    B: int
    I: int
    H: int
    G: int
    R: int
    P: int = 0
    dense_input: bool = False


_AUTO_ORDER = ("cuda", "triton", "reference")


def get_backend(name: str) -> ModuleType:
    """The backend module called ``name`` (imported on first use, so a missing Triton or extension only matters
    when that backend is asked for)."""
    if name not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of 'auto', {', '.join(repr(n) for n in BACKEND_NAMES)}; got {name!r}")
    return importlib.import_module(f"lstmkern.backends.{name}")


def check_backend_name(requested) -> str:
    """``requested`` if it is "auto" or a backend name, else a clear TypeError/ValueError (no kernel has run yet)."""
    if not isinstance(requested, str):
        raise TypeError(f"backend must be a str, got {type(requested).__name__}")
    if requested != "auto" and requested not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of 'auto', {', '.join(repr(n) for n in BACKEND_NAMES)}; got {requested!r}")
    return requested


def _unsupported(name: str, op: str, device: torch.device, dtype: torch.dtype, sizes: tuple) -> str | None:
    try:
        module = get_backend(name)
    except ImportError as err:  # e.g. Triton not installed, or the CUDA extension not built
        return f"backend {name!r} is not available: {err}"
    sizes = LayerSizes(*sizes)
    # Layer forms a backend opts into: its four functions then take weight_hr as a last argument (projection) or
    # weight_ih of shape (G, 4Hg, I) (dense input).
    if sizes.P and not getattr(module, "SUPPORTS_PROJECTION", False):
        return f"backend {name!r} does not implement projections (proj_size / weight_hr) yet"
    if sizes.dense_input and not getattr(module, "SUPPORTS_DENSE_INPUT", False):
        return f"backend {name!r} does not implement the dense-input G-LSTM (weight_ih of shape (G, 4Hg, I)) yet"
    return module.unsupported(op, device, dtype, sizes)


def resolve_backend(requested: str, op: str, device: torch.device, dtype: torch.dtype, sizes: tuple) -> str:
    """Turn ``requested`` ("auto" or a backend name) into the backend that will run, or raise a clear error.

    ``sizes`` is (T, B, I, H, G, R) as in :class:`LayerSizes`. "auto" takes the first of cuda (persistent kernels),
    triton, reference that supports the device, dtype and sizes; on CPU tensors it is the C++ "cpu" backend where it
    supports the dtype and the extension is built, else the reference (the Triton interpreter is a correctness tool,
    not a fast path).
    """
    if not isinstance(requested, str):
        raise TypeError(f"backend must be a str, got {type(requested).__name__}")
    if requested == "auto":
        if device.type != "cuda":
            if device.type == "cpu" and _unsupported("cpu", op, device, dtype, sizes) is None:
                return "cpu"
            return "reference"
        for name in _AUTO_ORDER:
            if _unsupported(name, op, device, dtype, sizes) is None:
                return name
        return "reference"
    if requested not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of 'auto', {', '.join(repr(n) for n in BACKEND_NAMES)}; got {requested!r}")
    reason = _unsupported(requested, op, device, dtype, sizes)
    if reason is not None:
        raise ValueError(f"backend={requested!r} cannot run {op} here: {reason}")
    return requested
