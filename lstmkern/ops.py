"""The lstmkern custom ops: one forward and one backward op per layer type, each taking the backend that runs it.

    lstmkern::glstm_fwd(x, h0, c0, weight_ih, weight_hh, bias?, weight_hr?, backend) -> (output, cell, workspace)
    lstmkern::glstm_bwd(grad_output, grad_cell?, x, h0, c0, weight_ih, weight_hh, bias?, weight_hr?, output, cell,
                        workspace, backend) -> (dx, dh0, dc0, dweight_ih, dweight_hh, dbias, dweight_hr)
    lstmkern::flstm_fwd / lstmkern::flstm_bwd: the same with (weight_1, weight_2).

Shapes follow :mod:`lstmkern.reference` (T, B, I, H, G, R, P; time-major). ``weight_hr`` (P, H) is the optional LSTMP
projection; without it ``dweight_hr`` is an empty tensor (an op's outputs cannot be None). Backends are called with
``weight_hr`` only when there is one, and only backends that declare ``SUPPORTS_PROJECTION`` are chosen then.
``cell`` is the cell state after every step, in ``state_dtype(x.dtype)``. ``workspace`` is what the backend's backward
wants from its forward beyond ``output`` and ``cell`` (a backend that sets ``KEEPS_WORKSPACE``: the cpu backend keeps
every step's activated gates, as nn.LSTM's autograd graph and cuDNN's reserve space do), flattened to one
dimension whose size only the backend knows (the fake kernel gives it an unbacked size), empty for the backends that
recompute the gates from ``output`` and ``cell``. It is not differentiable; the modules and the functional API drop it
(with no gradient wanted it is freed as soon as the forward returns, and the forward allocated it anyway).
Each op has a fake kernel (so torch.compile traces through without running a kernel) and the forward op's autograd
formula calls the backward op of the same backend.

``backend`` is what the user asked for ("auto" or a backend name, checked by :mod:`lstmkern.functional`). The op
resolves it (:func:`lstmkern.backends.resolve_backend`) when it runs, on the real sizes: under torch.compile with
dynamic shapes the sizes are symbolic while tracing, and a choice made then would be baked into a graph that serves
every T and B. Resolving is a few dictionary look-ups; the backward op resolves the same request on the same sizes and
so reaches the same backend. An empty batch (B = 0) never reaches a backend: the ops return empty outputs and zero
weight gradients themselves, as nn.LSTM does.

Double backward (``create_graph=True``, e.g. gradient penalties): the kernels' backward is not itself differentiable,
so with grad mode on during backward the formula instead differentiates the reference maths
(:mod:`lstmkern.reference`, recomputed from the saved inputs) with autograd. First-order gradients then agree with the
backend's to rounding, and the result can be differentiated again.

Why every backend, Triton included, sits behind an opaque ``custom_op`` rather than ``torch.library.triton_op``: a
triton_op is traced into the graph kernel by kernel, and a layer's recurrence is T launches (one per step; the
sequence-fused path is one launch but only where the weights fit on chip). Tracing would unroll T launches per layer
and direction into the graph, specialise it on T (a new compile for every sequence length) and give Inductor nothing
to fuse across the step boundary that the kernels do not already fuse. As one opaque op with a fake kernel, a layer
is one graph node whatever T is, and torch.compile(fullgraph=True) still traces through with no graph break (the
per-step launch loops are written to be CUDA-graph capturable: no host sync inside them).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import reference
from .backends import get_backend, resolve_backend
from .reference import state_dtype

__all__ = ["glstm_fwd", "glstm_bwd", "flstm_fwd", "flstm_bwd"]


def layer_sizes(op: str, x: Tensor, c0: Tensor, weight_a: Tensor, weight_hr: Optional[Tensor]) -> tuple:
    """(T, B, I, H, G, R, P, dense_input) of one layer call, as :class:`lstmkern.backends.LayerSizes` (P = 0 without
    a projection; dense_input: a G-LSTM whose groups all read the whole input)."""
    T, B, I = x.shape
    G, R = (weight_a.shape[0], 0) if op == "glstm" else (1, weight_a.shape[0])
    dense_input = op == "glstm" and G > 1 and weight_a.shape[2] == I
    return (T, B, I, c0.shape[1], G, R, 0 if weight_hr is None else weight_hr.shape[0], dense_input)


def _backend_for(requested: str, op: str, x: Tensor, c0: Tensor, weight_a: Tensor, weight_hr: Optional[Tensor]):
    """The backend module that runs ``op`` on these tensors (see the module docstring for why this is done here)."""
    return get_backend(resolve_backend(requested, op, x.device, x.dtype, layer_sizes(op, x, c0, weight_a, weight_hr)))


def _projection_args(weight_hr: Optional[Tensor]) -> tuple:
    return () if weight_hr is None else (weight_hr,)


def _no_workspace(x: Tensor) -> Tensor:
    return x.new_empty(0, dtype=state_dtype(x.dtype))


def _empty_batch_fwd(x: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    T = x.shape[0]
    return (x.new_empty(T, 0, h0.shape[1]), x.new_empty(T, 0, c0.shape[1], dtype=state_dtype(x.dtype)),
            _no_workspace(x))


def _forward(module, op: str, x: Tensor, *args) -> tuple[Tensor, Tensor, Tensor]:
    """(output, cell, workspace) from ``module``'s forward function for ``op`` (empty workspace where it keeps none)."""
    result = getattr(module, f"{op}_fwd")(x, *args)
    if not getattr(module, "KEEPS_WORKSPACE", False):
        return (*result, _no_workspace(x))
    output, cell, workspace = result
    return output, cell, workspace.reshape(-1)


def _workspace_kwargs(module, workspace: Tensor) -> dict:
    return {"workspace": workspace} if getattr(module, "KEEPS_WORKSPACE", False) else {}


def _dweight_hr_placeholder(x: Tensor) -> Tensor:
    return x.new_empty(0)


def _bwd_result(grads: tuple, x: Tensor, weight_hr: Optional[Tensor]) -> tuple:
    return tuple(grads) if weight_hr is not None else tuple(grads) + (_dweight_hr_placeholder(x),)


def _empty_batch_bwd(x, h0, c0, weight_a, weight_b, weight_hr, bias_shape):
    grads = (torch.zeros_like(x), torch.zeros_like(h0), torch.zeros_like(c0), torch.zeros_like(weight_a),
             torch.zeros_like(weight_b), x.new_zeros(bias_shape))
    return grads + ((torch.zeros_like(weight_hr),) if weight_hr is not None else (_dweight_hr_placeholder(x),))


@torch.library.custom_op("lstmkern::glstm_fwd", mutates_args=())
def glstm_fwd(x: Tensor, h0: Tensor, c0: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias: Optional[Tensor],
              weight_hr: Optional[Tensor], backend: str) -> tuple[Tensor, Tensor, Tensor]:
    if x.shape[1] == 0:
        return _empty_batch_fwd(x, h0, c0)
    return _forward(_backend_for(backend, "glstm", x, c0, weight_ih, weight_hr), "glstm",
                    x, h0, c0, weight_ih, weight_hh, bias, *_projection_args(weight_hr))


@torch.library.custom_op("lstmkern::glstm_bwd", mutates_args=())
def glstm_bwd(grad_output: Tensor, grad_cell: Optional[Tensor], x: Tensor, h0: Tensor, c0: Tensor, weight_ih: Tensor,
              weight_hh: Tensor, bias: Optional[Tensor], weight_hr: Optional[Tensor], output: Tensor, cell: Tensor,
              workspace: Tensor, backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    if x.shape[1] == 0:
        return _empty_batch_bwd(x, h0, c0, weight_ih, weight_hh, weight_hr, weight_ih.shape[:2])
    module = _backend_for(backend, "glstm", x, c0, weight_ih, weight_hr)
    grads = module.glstm_bwd(grad_output, grad_cell, x, h0, c0, weight_ih, weight_hh, bias, output, cell,
                             *_projection_args(weight_hr), **_workspace_kwargs(module, workspace))
    return _bwd_result(grads, x, weight_hr)


@torch.library.custom_op("lstmkern::flstm_fwd", mutates_args=())
def flstm_fwd(x: Tensor, h0: Tensor, c0: Tensor, weight_1: Tensor, weight_2: Tensor, bias: Optional[Tensor],
              weight_hr: Optional[Tensor], backend: str) -> tuple[Tensor, Tensor, Tensor]:
    if x.shape[1] == 0:
        return _empty_batch_fwd(x, h0, c0)
    return _forward(_backend_for(backend, "flstm", x, c0, weight_1, weight_hr), "flstm",
                    x, h0, c0, weight_1, weight_2, bias, *_projection_args(weight_hr))


@torch.library.custom_op("lstmkern::flstm_bwd", mutates_args=())
def flstm_bwd(grad_output: Tensor, grad_cell: Optional[Tensor], x: Tensor, h0: Tensor, c0: Tensor, weight_1: Tensor,
              weight_2: Tensor, bias: Optional[Tensor], weight_hr: Optional[Tensor], output: Tensor, cell: Tensor,
              workspace: Tensor, backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    if x.shape[1] == 0:
        return _empty_batch_bwd(x, h0, c0, weight_1, weight_2, weight_hr, weight_2.shape[:1])
    module = _backend_for(backend, "flstm", x, c0, weight_1, weight_hr)
    grads = module.flstm_bwd(grad_output, grad_cell, x, h0, c0, weight_1, weight_2, bias, output, cell,
                             *_projection_args(weight_hr), **_workspace_kwargs(module, workspace))
    return _bwd_result(grads, x, weight_hr)


def _fake_fwd(x, h0, c0, weight_a, weight_b, bias, weight_hr, backend):
    T, B, _ = x.shape
    # The workspace's size depends on the backend, which the op chooses on the real sizes: unknown while tracing.
    workspace = x.new_empty(torch.library.get_ctx().new_dynamic_size(), dtype=state_dtype(x.dtype))
    return x.new_empty(T, B, h0.shape[1]), x.new_empty(T, B, c0.shape[1], dtype=state_dtype(x.dtype)), workspace


def _fake_bwd(grad_output, grad_cell, x, h0, c0, weight_a, weight_b, bias, weight_hr, output, cell, workspace,
              backend):
    # dbias has the bias's shape: (G, 4Hg) for G-LSTM (weight_a is weight_ih), (4H,) for F-LSTM (weight_b is weight_2).
    bias_shape = weight_a.shape[:2] if weight_a.dim() == 3 else weight_b.shape[:1]
    return (torch.empty_like(x), torch.empty_like(h0), torch.empty_like(c0), torch.empty_like(weight_a),
            torch.empty_like(weight_b), x.new_empty(bias_shape),
            torch.empty_like(weight_hr) if weight_hr is not None else x.new_empty(0))


for _op, _fake in ((glstm_fwd, _fake_fwd), (flstm_fwd, _fake_fwd), (glstm_bwd, _fake_bwd), (flstm_bwd, _fake_bwd)):
    _op.register_fake(_fake)


def _setup_context(ctx, inputs, output):
    x, h0, c0, weight_a, weight_b, bias, weight_hr, backend = inputs
    out, cell, workspace = output
    ctx.save_for_backward(x, h0, c0, weight_a, weight_b, bias, weight_hr, out, cell, workspace)
    ctx.mark_non_differentiable(workspace)
    ctx.backend = backend
    # Gradients of outputs nobody used stay None, so backward skips them instead of adding zeros.
    ctx.set_materialize_grads(False)


def _make_backward(bwd_op, reference_fwd):
    def backward(ctx, grad_output, grad_cell, _grad_workspace):
        x, h0, c0, weight_a, weight_b, bias, weight_hr, out, cell, workspace = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the gradient itself must be differentiable
            return _differentiable_backward(ctx, reference_fwd, grad_output, grad_cell)
        if grad_output is None:
            grad_output = torch.zeros_like(out)
        dx, dh0, dc0, dweight_a, dweight_b, dbias, dweight_hr = bwd_op(
            grad_output.contiguous(), None if grad_cell is None else grad_cell.contiguous(),
            x, h0, c0, weight_a, weight_b, bias, weight_hr, out, cell, workspace, ctx.backend)
        return (dx, dh0, dc0, dweight_a, dweight_b, (dbias if bias is not None else None),
                (dweight_hr if weight_hr is not None else None), None)
    return backward


def _differentiable_backward(ctx, reference_fwd, grad_output, grad_cell):
    """Gradients by autograd through the reference maths, with a graph (for double backward)."""
    inputs = ctx.saved_tensors[:7]
    wanted = [i for i, t in enumerate(inputs) if t is not None and ctx.needs_input_grad[i] and t.requires_grad]
    grads: list = [None] * 8
    if not wanted:
        return tuple(grads)
    out, cell = reference_fwd(*inputs)
    pairs = [(o, g) for o, g in ((out, grad_output), (cell, grad_cell)) if g is not None]
    if not pairs:
        return tuple(grads)
    found = torch.autograd.grad([o for o, _ in pairs], [inputs[i] for i in wanted],
                                grad_outputs=[g.to(o.dtype) for o, g in pairs], create_graph=True, allow_unused=True)
    for i, g in zip(wanted, found):
        grads[i] = torch.zeros_like(inputs[i]) if g is None else g
    return tuple(grads)


glstm_fwd.register_autograd(_make_backward(glstm_bwd, reference.glstm_reference), setup_context=_setup_context)
flstm_fwd.register_autograd(_make_backward(flstm_bwd, reference.flstm_reference), setup_context=_setup_context)
