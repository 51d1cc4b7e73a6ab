"""Intrinsic Sparse Structures (Wen et al. 2018, "Learning Intrinsic Sparse Structures within Long Short-Term
Memory"): group lasso over whole hidden units, then physically remove the units that reached zero.

Shape legend: L layers, D directions (2 if bidirectional else 1), H hidden (cell) units per direction, P the output
and recurrent width (proj_size if > 0, else H), I_k input features of layer k (I_0 = input_size, I_k = D*P after
that), G groups (Hg = H/G, Pg = P/G, Ig = I_k/G), R rank of an F-LSTM layer.

The ISS component of unit k of layer l, direction d, is every weight that exists only because of that unit:

    nn.LSTM  rows gate*H + k (gate = i, f, g, o) of W_ih, W_hh, b_ih, b_hh; column k of W_hh;
    GLSTM    (k = g*Hg + j) rows gate*Hg + j of group g's weight_ih, weight_hh and bias; column j of group g's
             weight_hh;
    FLSTM    rows gate*H + k of W2 and of the bias; column I_l + k of W1 (where h_k enters);
  plus the columns reading h_k: feature d*H + k of layer l+1's input weights (both of its directions: W_ih, the
  group that reads it (every group with ``group_input=False``), or W1), or of every consumer nn.Linear's weight after
  the last layer.

With a projection (proj_size = P > 0, h = W_hr m, m = o * tanh(c) H-wide) there are two kinds of unit, chosen by
the ``units`` argument of every function here ("cell", the default, "projected" or "both"):

  cell unit k (0 <= k < H): m_k is read only by column k of W_hr (P, H), so the component is the unit's four gate
    rows of W_ih, W_hh (P columns) / W2 and of the bias, plus column k of W_hr; no column of W_hh, W1, the next
    layer or a consumer (they read the P-wide h). Removing it shrinks H and c.
  projected unit p (0 <= p < P): h_p is what the recurrence, the next layer and the consumers read (the LSTMP's
    hidden state, which Wen et al.'s hidden-state ISS then applies to). Its component is row p of W_hr (which
    produces h_p), column p of the recurrent matrix in every gate row that reads it (nn.LSTM: column p of W_hh;
    GLSTM: column p mod Pg of group p // Pg's weight_hh, the one group reading h_p; FLSTM: column I_l + p of W1),
    plus the columns reading h_p next: feature d*P + p of layer l+1's input weights (both of its directions, as
    above for h_k), or of every consumer nn.Linear's weight after the last layer. Removing it shrinks P: the
    layer's output, h_0 / h_n and the next layer's input.

The two kinds overlap (W_hr[p, k] and the W_hh entry of unit k's gate row in column p belong to both), as the
components of one kind already do without a projection (unit k's rows and column k of W_hh cross).

When a component is all zero, the unit's value reaches nothing and nothing reaches it, so removing it changes no
output (a removed projected unit's output feature is exactly 0 and is dropped). Workflow: add
``lam * penalty(model, consumers)`` to the loss, call ``zero_small_`` after each optimizer step, then ``shrink``
once at the end (the same ``units`` throughout).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from ..modules import FLSTM, GLSTM
from ._weights import check_lstm_like, layer_input_size, output_size, projection, suffixes
from .stacked import StackedLSTM

__all__ = ["penalty", "component_norms", "zero_small_", "shrink", "ShrinkReport", "UNITS"]

_ElementFn = Callable[[Tensor], Tensor]

UNITS = ("cell", "projected", "both")
"""The values of the ``units`` argument: which kind of ISS component a call works on (see the module docstring)."""


# ----------------------------------------------------------------------------------------------------------------------
# Reading a model: which tensors make up each layer, and what they contribute to each unit's component.

def _check(model, consumers) -> list[nn.Linear]:
    check_lstm_like(model, "model")
    if isinstance(consumers, nn.Module) or not isinstance(consumers, (list, tuple)):
        raise TypeError(f"consumers must be a list of nn.Linear (the modules reading the last layer's output), "
                        f"got {type(consumers).__name__}")
    D = 2 if model.bidirectional else 1
    for i, lin in enumerate(consumers):
        if not isinstance(lin, nn.Linear):
            raise TypeError(f"consumers[{i}] must be an nn.Linear, got {type(lin).__name__}")
        if lin.in_features != D * output_size(model):
            letter = "P" if _projected(model) else "H"
            raise ValueError(f"consumers[{i}].in_features must be D*{letter} = {D * output_size(model)} (the LSTM's "
                             f"output features), got {lin.in_features}")
    return list(consumers)


def _unit_kinds(model, units) -> tuple[bool, bool]:
    """(cell units?, projected units?) for a ``units`` argument; ValueError for anything else."""
    if not isinstance(units, str) or units not in UNITS:
        raise ValueError(f"units must be one of {UNITS}, got {units!r}")
    if units != "cell" and not _projected(model):
        raise ValueError(f"units={units!r} needs a projected model (proj_size > 0); without a projection the "
                         f"hidden units are the cell units: use units='cell'")
    return units in ("cell", "both"), units in ("projected", "both")


def _projected(model) -> bool:
    return getattr(model, "proj_size", 0) > 0


def _tensors(model, layer: int, direction: int) -> dict[str, Optional[Tensor]]:
    """The parameters of one layer and direction under kind-neutral names ("hr": W_hr (P, H) or None)."""
    sfx = suffixes(model.bidirectional)[direction]
    hr = projection(model, layer, direction)
    if isinstance(model, nn.LSTM):
        return {"ih": getattr(model, f"weight_ih_l{layer}{sfx}"), "hh": getattr(model, f"weight_hh_l{layer}{sfx}"),
                "b_ih": getattr(model, f"bias_ih_l{layer}{sfx}") if model.bias else None,
                "b_hh": getattr(model, f"bias_hh_l{layer}{sfx}") if model.bias else None, "hr": hr}
    a, b, bias = model.layer_parameters(layer, direction)
    if isinstance(model, GLSTM):
        return {"ih": a, "hh": b, "bias": bias, "hr": hr}
    return {"w1": a, "w2": b, "bias": bias, "hr": hr}


def _off_diagonal(n: int, like: Tensor) -> Tensor:
    return 1.0 - torch.eye(n, dtype=like.dtype, device=like.device)


def _own_sums(model, layer: int, direction: int, fn: _ElementFn) -> Tensor:
    """(H,): sum of fn over each cell unit's own rows, biases, recurrent column (without a projection) or projection
    column (with one), each weight counted once."""
    H = model.hidden_size
    t = _tensors(model, layer, direction)
    # Without a projection h_k itself is fed back, so column k of the recurrent matrix belongs to unit k; with one
    # the recurrence reads the P-wide W_hr m, and column k of W_hr belongs to unit k instead.
    projected = t["hr"] is not None
    if isinstance(model, nn.LSTM):
        hh = fn(t["hh"]).view(4, H, -1)  # (4, H, P)
        total = fn(t["ih"]).view(4, H, -1).sum((0, 2)) + hh.sum((0, 2))
        if not projected:
            total = total + (hh * _off_diagonal(H, hh)).sum((0, 1))  # column k minus the rows of unit k counted above
        for name in ("b_ih", "b_hh"):
            if t[name] is not None:
                total = total + fn(t[name]).view(4, H).sum(0)
    elif isinstance(model, GLSTM):
        G = model.groups
        hg = H // G
        hh = fn(t["hh"]).view(G, 4, hg, -1)  # (G, 4, Hg, Pg)
        # Grouped (G, 4Hg, Ig) and dense-input (G, 4Hg, I) weight_ih alike: group g's rows gate*Hg + j.
        total = fn(t["ih"]).view(G, 4, hg, -1).sum((1, 3)) + hh.sum((1, 3))
        if not projected:
            total = total + (hh * _off_diagonal(hg, hh)).sum((1, 2))
        if t["bias"] is not None:
            total = total + fn(t["bias"]).view(G, 4, hg).sum(1)
        total = total.reshape(H)
    else:
        total = fn(t["w2"]).view(4, H, -1).sum((0, 2))
        if not projected:
            total = total + fn(t["w1"][:, layer_input_size(model, layer):]).sum(0)
        if t["bias"] is not None:
            total = total + fn(t["bias"]).view(4, H).sum(0)
    if projected:
        total = total + fn(t["hr"]).sum(0)
    return total


def _projected_own_sums(model, layer: int, direction: int, fn: _ElementFn) -> Tensor:
    """(P,): sum of fn over each projected unit's row of W_hr and its column of the recurrent matrix."""
    t = _tensors(model, layer, direction)
    total = fn(t["hr"]).sum(1)  # row p of W_hr computes h_p
    if isinstance(model, nn.LSTM):
        return total + fn(t["hh"]).sum(0)  # (4H, P): column p, every gate row
    if isinstance(model, GLSTM):
        # (G, 4Hg, Pg): group g's column j reads h_{g*Pg + j}; no other group reads it.
        return total + fn(t["hh"]).sum(1).reshape(-1)
    return total + fn(t["w1"][:, layer_input_size(model, layer):]).sum(0)  # W1 (R, I_l + P): column I_l + p


def _input_column_sums(model, layer: int, direction: int, fn: _ElementFn) -> Tensor:
    """(I_layer,): sum of fn over the weights reading each input feature of ``layer`` (one direction)."""
    t = _tensors(model, layer, direction)
    if isinstance(model, nn.LSTM):
        return fn(t["ih"]).sum(0)
    if isinstance(model, GLSTM):
        if not model.group_input:
            return fn(t["ih"]).sum((0, 1))  # (G, 4Hg, I): every group reads every feature
        return fn(t["ih"]).sum(1).reshape(-1)  # (G, Ig) -> feature g*Ig + j, the one group g reads
    return fn(t["w1"][:, :layer_input_size(model, layer)]).sum(0)


def _component_sums(model, consumers: list[nn.Linear], fn: _ElementFn, kind: str) -> list[Tensor]:
    """Per layer a (D, H) (kind "cell") or (D, P) (kind "projected") tensor: sum of fn over every weight of each
    unit's component."""
    L, D = model.num_layers, (2 if model.bidirectional else 1)
    projected_kind = kind == "projected"
    width = model.proj_size if projected_kind else model.hidden_size
    own_sums = _projected_own_sums if projected_kind else _own_sums
    # The next layer and the consumers read the layer's output h: the hidden (cell) units without a projection, the
    # projected units with one; a projected model's cell units have no readers outside their layer.
    has_readers = projected_kind or not _projected(model)
    result = []
    for layer in range(L):
        readers = []
        if has_readers:
            if layer + 1 < L:
                readers = [_input_column_sums(model, layer + 1, d2, fn) for d2 in range(D)]
            else:
                readers = [fn(lin.weight).sum(0) for lin in consumers]
        reader_sum = torch.stack(readers).sum(0) if readers else None  # (D*width,)
        rows = []
        for d in range(D):
            own = own_sums(model, layer, d, fn)
            rows.append(own if reader_sum is None else own + reader_sum[d * width:(d + 1) * width])
        result.append(torch.stack(rows))
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Public: penalty, norms, zeroing.

def penalty(model, consumers: Sequence[nn.Linear], eps: float = 1e-8, *, units: str = "cell") -> Tensor:
    """ISS group-lasso penalty: sum over all layers, directions and units of sqrt(||component||^2 + eps).

    Differentiable (eps keeps the gradient finite at a zero component). Add ``lam * penalty(...)`` to the loss.

    Args:
        model: nn.LSTM, lstmkern.GLSTM or lstmkern.FLSTM, with or without a projection (proj_size).
        consumers: the nn.Linear modules reading the last layer's output (in_features = D*P); may be empty, then
            the last layer's components hold only its own weights. With a projection they read the P-wide h, so
            they belong to the projected units' components and to no cell unit's.
        eps: smoothing inside the square root.
        units: "cell" (the H cell units; the only kind without a projection), "projected" (the P projected units
            of a projected model) or "both" (the sum of the two penalties: every cell and every projected unit is
            one term; a weight in both kinds of component counts in both).
    Returns:
        A scalar tensor in the parameters' dtype.

    Example::
        >>> lstm, head = torch.nn.LSTM(8, 16, num_layers=2), torch.nn.Linear(16, 3)
        >>> loss = task_loss + 1e-3 * iss.penalty(lstm, [head])
        >>> lstmp, head = torch.nn.LSTM(8, 16, proj_size=4), torch.nn.Linear(4, 3)
        >>> loss = task_loss + 1e-3 * iss.penalty(lstmp, [head], units="both")   # shrink H and P
    """
    consumers = _check(model, consumers)
    cell, proj = _unit_kinds(model, units)
    kinds = [kind for kind, wanted in (("cell", cell), ("projected", proj)) if wanted]
    sums = [s for kind in kinds for s in _component_sums(model, consumers, lambda w: w * w, kind)]
    return sum((s + eps).sqrt().sum() for s in sums)


def component_norms(model, consumers: Sequence[nn.Linear], *, units: str = "cell") -> list[Tensor]:
    """Per layer a (D, H) tensor of the cell units' component Frobenius norms (detached), or with
    ``units="projected"`` a (D, P) tensor of the projected units' ones; 0 where a unit is removable.
    ("both" is refused: the two kinds have different widths, call once per kind.)"""
    consumers = _check(model, consumers)
    if units == "both":
        raise ValueError("component_norms takes units='cell' or units='projected' (one kind per call: their norms "
                         "have widths H and P), got units='both'")
    _unit_kinds(model, units)
    with torch.no_grad():
        return [s.sqrt() for s in _component_sums(model, consumers, lambda w: w * w, units)]


def _zeroable_tensors(model, consumers: list[nn.Linear], cell: bool, proj: bool) -> list[Tensor]:
    """Every tensor (or view) whose entries all belong to some component of the requested kinds, each entry once."""
    projected = _projected(model)
    # Units whose value h the next layer and the consumers read: the cell units without a projection, the projected
    # units with one.
    output_units = proj or (cell and not projected)
    out = [lin.weight for lin in consumers] if output_units else []
    for layer in range(model.num_layers):
        for d in range(2 if model.bidirectional else 1):
            t = _tensors(model, layer, d)
            if isinstance(model, FLSTM):
                if cell:
                    out += [t["w2"]] + ([t["bias"]] if t["bias"] is not None else [])
                if output_units:
                    # W1's recurrent columns read h, its input columns the previous layer's h; layer 0's read x,
                    # which belongs to no unit.
                    out.append(t["w1"][:, model.input_size:] if layer == 0 else t["w1"])
            elif cell:  # nn.LSTM and GLSTM: every weight is some cell unit's gate row or column of W_hr / W_hh
                out += [w for name, w in t.items() if w is not None and name != "hr"]
            else:  # projected units only: the recurrent columns, and the input columns reading the previous layer
                out += [t["hh"]] + ([t["ih"]] if layer > 0 else [])
            if projected:  # W_hr: cell unit k's column k, projected unit p's row p
                out.append(t["hr"])
    return out


def zero_small_(model, consumers: Sequence[nn.Linear], threshold: float, *, units: str = "cell") -> int:
    """Set every component weight with |w| < threshold to exactly zero, in place (Wen et al.'s step after each
    update), for the components of ``units`` ("cell", "projected" or "both", as in :func:`penalty`).

    Left alone: consumer biases and the weights reading layer 0's input x (no unit's); with a projection and
    ``units="cell"`` also the consumers' weights and FLSTM's W1 (they read the P-wide h); with ``units="projected"``
    the biases, layer 0's W_ih and FLSTM's W2 (only cell units' rows).

    Returns: how many weights were non-zero before and are zero now.

    Example::
        >>> optimizer.step(); iss.zero_small_(lstm, [head], 1e-4)
    """
    consumers = _check(model, consumers)
    cell, proj = _unit_kinds(model, units)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold < 0:
        raise ValueError(f"threshold must be a number >= 0, got {threshold!r}")
    count = 0
    with torch.no_grad():
        for t in _zeroable_tensors(model, consumers, cell, proj):
            small = (t.abs() < threshold) & (t != 0)
            count += int(small.sum().item())
            t.masked_fill_(small, 0.0)
    return count


# ----------------------------------------------------------------------------------------------------------------------
# Shrinking.

@dataclass
class ShrinkReport:
    """What :func:`shrink` did, per layer l.

    hidden_before / hidden_after: H_l before and after.
    zero_components: per layer, per direction, how many cell-unit components were all zero.
    removed: per layer, per direction, the removed cell unit indices (in the original numbering).
    proj_before / proj_after: P_l before and after (0 without a projection).
    zero_projected_components: per layer, per direction, how many projected-unit components were all zero (0
        without a projection).
    removed_projected: per layer, per direction, the removed projected unit indices (empty unless P shrank).
    """
    hidden_before: list[int]
    hidden_after: list[int]
    zero_components: list[list[int]]
    removed: list[list[list[int]]]
    proj_before: list[int]
    proj_after: list[int]
    zero_projected_components: list[list[int]]
    removed_projected: list[list[list[int]]]

    def __str__(self) -> str:
        projected = any(self.proj_before)
        header = "layer  hidden before -> after  all-zero components per direction"
        if projected:
            header += "  proj before -> after  all-zero projected components per direction"
        lines = [header]
        for layer, (a, b, z) in enumerate(zip(self.hidden_before, self.hidden_after, self.zero_components)):
            line = f"{layer:5d}  {a:13d} -> {b:<5d}  {str(z):<34s}"
            if projected:
                line += (f"  {self.proj_before[layer]:11d} -> {self.proj_after[layer]:<5d}  "
                         f"{self.zero_projected_components[layer]}")
            lines.append(line.rstrip())
        return "\n".join(lines)


def _units_to_keep(zero: Tensor, groups: int, min_kept: int, removable: bool) -> list[Tensor]:
    """zero: (D, N) bool, N units in ``groups`` equal contiguous groups. Returns per direction the sorted indices of
    the units to keep.

    Directions share one width, so each removes the same number m of its all-zero units (the lowest-indexed ones):
    m = the smallest zero count over directions and groups (every group removes m so groups stay equal), and at
    least ``min_kept`` units per group stay.
    """
    D, N = zero.shape
    n_g = N // groups
    zero = zero.view(D, groups, n_g)
    m = max(min(int(zero.sum(-1).min().item()), n_g - min_kept), 0) if removable else 0
    keep = []
    for d in range(D):
        kept = []
        for g in range(groups):
            zero_units = torch.nonzero(zero[d, g]).flatten()[:m]
            mask = torch.ones(n_g, dtype=torch.bool)
            mask[zero_units] = False
            kept.append(torch.nonzero(mask).flatten() + g * n_g)
        keep.append(torch.cat(kept))
    return keep


def _gate_rows(keep: Tensor, H: int) -> Tensor:
    """Rows gate*H + k of a (4H, ...) gate matrix for the kept units k, gates in order."""
    return (torch.arange(4).unsqueeze(1) * H + keep.unsqueeze(0)).reshape(-1)


def _shrunk_layer(model, layer: int, keep: list[Tensor], keep_proj: Optional[list[Tensor]],
                  in_keep: Optional[Tensor]) -> nn.Module:
    """A single-layer module of model's kind holding only the kept cell units (keep, per direction), the kept
    projected units (keep_proj, per direction; None without a projection) and reading only the kept input features
    (in_keep, sorted indices into layer's input; None = all). W_hr keeps the kept projected units' rows and the kept
    cell units' columns."""
    ref = next(model.parameters())
    H, P = model.hidden_size, model.proj_size
    H_new = keep[0].numel()
    P_new = keep_proj[0].numel() if P else 0
    I_old = layer_input_size(model, layer)
    I_new = I_old if in_keep is None else in_keep.numel()
    cols_in = torch.arange(I_old) if in_keep is None else in_keep
    dev = ref.device
    common = dict(bias=model.bias, batch_first=model.batch_first, bidirectional=model.bidirectional,
                  proj_size=P_new, device=ref.device, dtype=ref.dtype)
    # Columns of the recurrent matrix (W_hh, or W1 after the input columns) that stay: the kept units' h without a
    # projection, the kept projected units' h with one.
    recurrent_cols = keep_proj if P else keep
    if isinstance(model, nn.LSTM):
        new = nn.LSTM(I_new, H_new, 1, **common)
    elif isinstance(model, GLSTM):
        new = GLSTM(I_new, H_new, 1, groups=model.groups, group_input=model.group_input, backend=model.backend,
                    **common)
    else:
        # W2 W1 of the shrunk layer has rank at most I_new + (P_new or H_new): a larger kept rank would only add
        # parameters and FLOPs, so such a layer is stored at full rank instead (W1 = I, W2 = W2_kept W1_kept: the
        # same product).
        rank = min(model.ranks[layer], I_new + (P_new or H_new))
        new = FLSTM(I_new, H_new, 1, rank=rank, backend=model.backend, **common)
    with torch.no_grad():
        for d, sfx in enumerate(suffixes(model.bidirectional)):
            old, units = _tensors(model, layer, d), keep[d].to(dev)
            rows = _gate_rows(keep[d], H).to(dev)
            if isinstance(model, nn.LSTM):
                getattr(new, f"weight_ih_l0{sfx}").copy_(old["ih"][rows][:, cols_in.to(dev)])
                getattr(new, f"weight_hh_l0{sfx}").copy_(old["hh"][rows][:, recurrent_cols[d].to(dev)])
                if model.bias:
                    getattr(new, f"bias_ih_l0{sfx}").copy_(old["b_ih"][rows])
                    getattr(new, f"bias_hh_l0{sfx}").copy_(old["b_hh"][rows])
            elif isinstance(model, GLSTM):
                G = model.groups
                hg = H // G
                local = (keep[d] % hg).view(G, -1)  # (G, Hg_new): kept units inside each group
                group_rows = (torch.arange(4).view(1, 4, 1) * hg + local.unsqueeze(1)).reshape(G, -1).to(dev)
                w_ih, w_hh, b = new.layer_parameters(0, d)
                rows_ih = old["ih"].gather(1, group_rows.unsqueeze(2).expand(-1, -1, old["ih"].shape[2]))
                if model.group_input:
                    # Kept input features, window by window: next-layer groups read contiguous windows of D*Hg (or
                    # D*Pg) features, each covering whole groups of the previous layer, which all keep the same
                    # number, so every window keeps the same number.
                    ig = I_old // G
                    window_cols = (cols_in % ig).view(G, -1).to(dev)
                    window_of_col = (cols_in // ig).view(G, -1)
                    if not torch.equal(window_of_col, torch.arange(G).unsqueeze(1).expand_as(window_of_col)):
                        raise AssertionError("kept input features are not spread evenly over the groups")
                    w_ih.copy_(rows_ih.gather(2, window_cols.unsqueeze(1).expand(-1, rows_ih.shape[1], -1)))
                else:  # every group reads every kept feature
                    w_ih.copy_(rows_ih[:, :, cols_in.to(dev)])
                rows_hh = old["hh"].gather(1, group_rows.unsqueeze(2).expand(-1, -1, old["hh"].shape[2]))
                # Group g's recurrent columns: its own units' h without a projection, its Pg-wide slice of the
                # projected h with one; either way the kept ones, every group keeping the same number.
                recurrent_width = old["hh"].shape[2]
                local_cols = (recurrent_cols[d] % recurrent_width).view(G, -1).to(dev)
                w_hh.copy_(rows_hh.gather(2, local_cols.unsqueeze(1).expand(-1, rows_hh.shape[1], -1)))
                if b is not None:
                    b.copy_(old["bias"].gather(1, group_rows))
            else:
                w1, w2, b = new.layer_parameters(0, d)
                w1_kept = old["w1"][:, torch.cat((cols_in, I_old + recurrent_cols[d])).to(dev)]
                if w1.shape[0] == w1_kept.shape[0]:
                    w1.copy_(w1_kept)
                    w2.copy_(old["w2"][rows])
                else:
                    w1.copy_(torch.eye(w1.shape[0], dtype=w1.dtype, device=dev))
                    w2.copy_(old["w2"][rows] @ w1_kept)
                if b is not None:
                    b.copy_(old["bias"][rows])
            if P:
                projection(new, 0, d).copy_(old["hr"][keep_proj[d].to(dev)][:, units])
    return new


def shrink(model, consumers: Sequence[nn.Linear], *, units: str = "cell"
           ) -> tuple[StackedLSTM, list[nn.Linear], ShrinkReport]:
    """Remove the units (of kind ``units``: "cell", "projected" or "both", as in :func:`penalty`) whose ISS
    component is entirely zero; outputs are unchanged exactly.

    Rule (documented choice): every layer gets its own hidden size (and projection size), so the result is a
    :class:`StackedLSTM` of single-layer modules of model's kind (nn.LSTM, GLSTM or FLSTM; an FLSTM layer keeps its
    rank, or is stored at full rank where that is smaller). Within a layer the directions share H (and P), so each
    direction removes the same number m of its all-zero units, m = the smallest all-zero count over directions; for
    GLSTM also over groups, so each group removes m units and the groups stay equal (H_new = G (Hg - m), and for
    projected units P_new = G (Pg - m)). The lowest-indexed all-zero units go first (only all-zero, i.e. norm-0,
    units are ever removed); at least one cell unit per group stays. With no consumers the last layer's output is
    the model's output, so that layer keeps all its output units (its cell units without a projection, its
    projected units with one).

    With a projection (proj_size = P): ``units="cell"`` shrinks H only, so every layer keeps P (output, h_n, the
    next layer's input and the consumers keep their shapes; the consumers are returned as copies), and every layer
    can shrink, the last one too. ``units="projected"`` shrinks P only: the output, h_0 / h_n, the next layer's
    input and the consumers lose the removed features, and at least one projected unit per group stays (P_new >= G).
    "both" removes projected units first, then cell units. Always H_new > P_new (proj_size < hidden_size, as
    nn.LSTM, GLSTM and FLSTM require): at least P_new/G + 1 cell units per group stay.

    Returns:
        (new_model, new_consumers, report): new_model(x) followed by new_consumers gives the same outputs as
        model(x) followed by consumers (up to the rounding of dropping zero terms from sums), and new_model(x)'s
        output is model(x)'s on the kept output features (the removed ones are exactly 0); h_n and c_n keep only
        the surviving units (removed projected units' h_n is exactly 0, removed cell units' c_n is 0 whenever the
        initial state is 0). An initial state for new_model is the old one restricted to the kept units.
        ``report`` is a :class:`ShrinkReport`. The inputs are not modified.

    Example::
        >>> small, (small_head,), report = iss.shrink(lstm, [head])
        >>> print(report.hidden_before, "->", report.hidden_after)
        >>> small, (small_head,), report = iss.shrink(lstmp, [head], units="both")   # H and P
    """
    consumers = _check(model, consumers)
    cell, proj = _unit_kinds(model, units)
    L, D = model.num_layers, (2 if model.bidirectional else 1)
    H, P = model.hidden_size, model.proj_size
    G = model.groups if isinstance(model, GLSTM) else 1
    projected = _projected(model)

    def nonzero(w: Tensor) -> Tensor:
        return (w != 0).to(torch.float64)

    with torch.no_grad():
        cell_counts = _component_sums(model, consumers, nonzero, "cell")
        proj_counts = _component_sums(model, consumers, nonzero, "projected") if projected else None
    layers, keeps, keep_projs = [], [], []
    in_keep = None
    for layer in range(L):
        # The last layer's output is the model's: without consumers reading it, no output unit of it may go.
        outputs_removable = layer + 1 < L or bool(consumers)
        keep_proj = None
        if projected:
            keep_proj = _units_to_keep((proj_counts[layer] == 0).cpu(), G, 1, removable=proj and outputs_removable)
        min_cell = (keep_proj[0].numel() // G + 1) if projected else 1  # H_new > P_new: Hg_new >= Pg_new + 1
        keep = _units_to_keep((cell_counts[layer] == 0).cpu(), G, min_cell,
                              removable=cell and (projected or outputs_removable))
        layers.append(_shrunk_layer(model, layer, keep, keep_proj, in_keep))
        keeps.append(keep)
        keep_projs.append(keep_proj)
        # The next layer (or the consumers) reads the kept output units: cell units without a projection, projected
        # units with one.
        out_keep, width = (keep_proj, P) if projected else (keep, H)
        in_keep = torch.cat([d * width + out_keep[d] for d in range(D)])
    new_consumers = []
    for lin in consumers:
        new = nn.Linear(in_keep.numel(), lin.out_features, bias=lin.bias is not None, device=lin.weight.device,
                        dtype=lin.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(lin.weight[:, in_keep.to(lin.weight.device)])
            if lin.bias is not None:
                new.bias.copy_(lin.bias)
        new_consumers.append(new.train(lin.training))

    def removed(kept: list[Tensor], n: int) -> list[list[int]]:
        return [sorted(set(range(n)) - set(k.tolist())) for k in kept]

    report = ShrinkReport(
        hidden_before=[H] * L, hidden_after=[k[0].numel() for k in keeps],
        zero_components=[[int(c) for c in (counts == 0).sum(1)] for counts in cell_counts],
        removed=[removed(keep, H) for keep in keeps],
        proj_before=[P] * L, proj_after=[k[0].numel() if projected else 0 for k in keep_projs],
        zero_projected_components=([[int(c) for c in (counts == 0).sum(1)] for counts in proj_counts] if projected
                                   else [[0] * D for _ in range(L)]),
        removed_projected=[removed(k, P) if projected else [[] for _ in range(D)] for k in keep_projs])
    return StackedLSTM(layers, dropout=model.dropout).train(model.training), new_consumers, report
