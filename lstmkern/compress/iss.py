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

With a projection (proj_size = P > 0, h = W_hr m, m = o * tanh(c) H-wide) unit k's value m_k is read only by column k
of W_hr (P, H); the recurrence and the next layer read the P-wide h, which belongs to no single unit. So the component
is the unit's four gate rows of W_ih, W_hh (P columns) / W2 and of the bias, plus column k of W_hr; no column of
W_hh, W1, the next layer or a consumer. Shrinking removes cell units (H and c shrink) and keeps P, the layer's
interface: outputs, h_n and every following layer keep their shapes.

When a component is all zero, unit k's value reaches nothing and nothing reaches it, so removing it (H -> H - 1)
changes no output. Workflow: add ``lam * penalty(model, consumers)`` to the loss, call ``zero_small_`` after each
optimizer step, then ``shrink`` once at the end.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from ..modules import FLSTM, GLSTM
from ._weights import check_lstm_like, layer_input_size, output_size, projection, suffixes
from .stacked import StackedLSTM

__all__ = ["penalty", "component_norms", "zero_small_", "shrink", "ShrinkReport"]

_ElementFn = Callable[[Tensor], Tensor]


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
    """(H,): sum of fn over each unit's own rows, biases, recurrent column (without a projection) or projection
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


def _component_sums(model, consumers: list[nn.Linear], fn: _ElementFn) -> list[Tensor]:
    """Per layer a (D, H) tensor: sum of fn over every weight of each unit's component."""
    L, D, H = model.num_layers, (2 if model.bidirectional else 1), model.hidden_size
    result = []
    for layer in range(L):
        if _projected(model):
            readers = []  # the next layer and the consumers read the P-wide h: no unit's own weights
        elif layer + 1 < L:
            readers = [_input_column_sums(model, layer + 1, d2, fn) for d2 in range(D)]
        else:
            readers = [fn(lin.weight).sum(0) for lin in consumers]
        reader_sum = torch.stack(readers).sum(0) if readers else None  # (D*H,)
        rows = []
        for d in range(D):
            own = _own_sums(model, layer, d, fn)
            rows.append(own if reader_sum is None else own + reader_sum[d * H:(d + 1) * H])
        result.append(torch.stack(rows))
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Public: penalty, norms, zeroing.

def penalty(model, consumers: Sequence[nn.Linear], eps: float = 1e-8) -> Tensor:
    """ISS group-lasso penalty: sum over all layers, directions and units of sqrt(||component||^2 + eps).

    Differentiable (eps keeps the gradient finite at a zero component). Add ``lam * penalty(...)`` to the loss.

    Args:
        model: nn.LSTM, lstmkern.GLSTM or lstmkern.FLSTM, with or without a projection (proj_size).
        consumers: the nn.Linear modules reading the last layer's output (in_features = D*P); may be empty, then
            the last layer's components hold only its own weights. With a projection they read the P-wide h, so
            they belong to no component (accepted, checked, and left out).
        eps: smoothing inside the square root.
    Returns:
        A scalar tensor in the parameters' dtype.

    Example::
        >>> lstm, head = torch.nn.LSTM(8, 16, num_layers=2), torch.nn.Linear(16, 3)
        >>> loss = task_loss + 1e-3 * iss.penalty(lstm, [head])
    """
    consumers = _check(model, consumers)
    sums = _component_sums(model, consumers, lambda w: w * w)
    return sum((s + eps).sqrt().sum() for s in sums)


def component_norms(model, consumers: Sequence[nn.Linear]) -> list[Tensor]:
    """Per layer a (D, H) tensor of the components' Frobenius norms (detached); 0 where a unit is removable."""
    consumers = _check(model, consumers)
    with torch.no_grad():
        return [s.sqrt() for s in _component_sums(model, consumers, lambda w: w * w)]


def _zeroable_tensors(model, consumers: list[nn.Linear]) -> list[Tensor]:
    """Every tensor (or view) whose entries all belong to some component."""
    projected = _projected(model)
    out = [] if projected else [lin.weight for lin in consumers]
    if isinstance(model, FLSTM):
        for layer in range(model.num_layers):
            for d in range(2 if model.bidirectional else 1):
                w1, w2, b = model.layer_parameters(layer, d)
                if projected:  # W1 reads x and the P-wide h: no unit's own weights
                    out += [w2, model.layer_projection(layer, d)]
                else:  # layer 0's W1 columns for x are shared by all units: not part of any component
                    out += [w1[:, model.input_size:] if layer == 0 else w1, w2]
                out += [b] if b is not None else []
        return out
    # nn.LSTM and GLSTM: every weight is some unit's gate row or, with a projection, some unit's W_hr column.
    return out + list(model.parameters())


def zero_small_(model, consumers: Sequence[nn.Linear], threshold: float) -> int:
    """Set every component weight with |w| < threshold to exactly zero, in place (Wen et al.'s step after each
    update). Consumer biases and FLSTM layer 0's input columns of W1 (no unit's own weights) are left alone; so are,
    with a projection, the consumers' weights and FLSTM's whole W1 (they read the P-wide h).

    Returns: how many weights were non-zero before and are zero now.

    Example::
        >>> optimizer.step(); iss.zero_small_(lstm, [head], 1e-4)
    """
    consumers = _check(model, consumers)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold < 0:
        raise ValueError(f"threshold must be a number >= 0, got {threshold!r}")
    count = 0
    with torch.no_grad():
        for t in _zeroable_tensors(model, consumers):
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
    zero_components: per layer, per direction, how many components were all zero.
    removed: per layer, per direction, the removed unit indices (in the original numbering).
    """
    hidden_before: list[int]
    hidden_after: list[int]
    zero_components: list[list[int]]
    removed: list[list[list[int]]]

    def __str__(self) -> str:
        lines = ["layer  hidden before -> after  all-zero components per direction"]
        for layer, (a, b, z) in enumerate(zip(self.hidden_before, self.hidden_after, self.zero_components)):
            lines.append(f"{layer:5d}  {a:13d} -> {b:<5d}  {z}")
        return "\n".join(lines)


def _units_to_keep(model, zero: Tensor, removable: bool) -> list[Tensor]:
    """zero: (D, H) bool. Returns per direction the sorted indices of the units to keep.

    Directions share one H, so each removes the same number m of its all-zero units (the lowest-indexed ones):
    m = the smallest zero count over directions (and, for GLSTM, over groups: every group removes m so groups stay
    equal and H stays G * Hg). At least one unit (per group) is kept; with a projection at least Pg + 1 per group,
    so that H_new > P as nn.LSTM (and GLSTM, FLSTM) require of proj_size.
    """
    D, H = zero.shape
    G = model.groups if isinstance(model, GLSTM) else 1
    hg = H // G
    min_kept = (model.proj_size // G + 1) if _projected(model) else 1
    zero = zero.view(D, G, hg)
    m = max(min(int(zero.sum(-1).min().item()), hg - min_kept), 0) if removable else 0
    keep = []
    for d in range(D):
        kept = []
        for g in range(G):
            zero_units = torch.nonzero(zero[d, g]).flatten()[:m]
            mask = torch.ones(hg, dtype=torch.bool)
            mask[zero_units] = False
            kept.append(torch.nonzero(mask).flatten() + g * hg)
        keep.append(torch.cat(kept))
    return keep


def _gate_rows(keep: Tensor, H: int) -> Tensor:
    """Rows gate*H + k of a (4H, ...) gate matrix for the kept units k, gates in order."""
    return (torch.arange(4).unsqueeze(1) * H + keep.unsqueeze(0)).reshape(-1)


def _shrunk_layer(model, layer: int, keep: list[Tensor], in_keep: Optional[Tensor]) -> nn.Module:
    """A single-layer module of model's kind holding only the kept units (keep, per direction) and reading only the
    kept input features (in_keep, sorted indices into layer's input; None = all). With a projection the P-wide
    recurrent input is kept whole and W_hr keeps the kept units' columns."""
    ref = next(model.parameters())
    H, P = model.hidden_size, model.proj_size
    H_new = keep[0].numel()
    I_old = layer_input_size(model, layer)
    I_new = I_old if in_keep is None else in_keep.numel()
    cols_in = torch.arange(I_old) if in_keep is None else in_keep
    dev = ref.device
    common = dict(bias=model.bias, batch_first=model.batch_first, bidirectional=model.bidirectional, proj_size=P,
                  device=ref.device, dtype=ref.dtype)
    # Columns of the recurrent matrix (W_hh, or W1 after the input columns) that stay: the kept units' h without a
    # projection, all of the P-wide h with one.
    recurrent_cols = [torch.arange(P) if P else keep[d] for d in range(len(keep))]
    if isinstance(model, nn.LSTM):
        new = nn.LSTM(I_new, H_new, 1, **common)
    elif isinstance(model, GLSTM):
        new = GLSTM(I_new, H_new, 1, groups=model.groups, group_input=model.group_input, backend=model.backend,
                    **common)
    else:
        # W2 W1 of the shrunk layer has rank at most I_new + (P or H_new): a larger kept rank would only add
        # parameters and FLOPs, so such a layer is stored at full rank instead (W1 = I, W2 = W2_kept W1_kept: the
        # same product).
        rank = min(model.ranks[layer], I_new + (P or H_new))
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
                    # Kept input features, window by window: next-layer groups read contiguous windows of D*Hg
                    # features, each covering whole groups of the previous layer, so every window keeps the same
                    # number.
                    ig = I_old // G
                    window_cols = (cols_in % ig).view(G, -1).to(dev)
                    window_of_col = (cols_in // ig).view(G, -1)
                    if not torch.equal(window_of_col, torch.arange(G).unsqueeze(1).expand_as(window_of_col)):
                        raise AssertionError("kept input features are not spread evenly over the groups")
                    w_ih.copy_(rows_ih.gather(2, window_cols.unsqueeze(1).expand(-1, rows_ih.shape[1], -1)))
                else:  # every group reads every kept feature
                    w_ih.copy_(rows_ih[:, :, cols_in.to(dev)])
                rows_hh = old["hh"].gather(1, group_rows.unsqueeze(2).expand(-1, -1, old["hh"].shape[2]))
                if not P:  # group g's recurrent columns are its own units' h
                    rows_hh = rows_hh.gather(2, local.to(dev).unsqueeze(1).expand(-1, rows_hh.shape[1], -1))
                w_hh.copy_(rows_hh)
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
                projection(new, 0, d).copy_(old["hr"][:, units])
    return new


def shrink(model, consumers: Sequence[nn.Linear]) -> tuple[StackedLSTM, list[nn.Linear], ShrinkReport]:
    """Remove the hidden units whose ISS component is entirely zero; outputs are unchanged exactly.

    Rule (documented choice): every layer gets its own hidden size, so the result is a :class:`StackedLSTM` of
    single-layer modules of model's kind (nn.LSTM, GLSTM or FLSTM; an FLSTM layer keeps its rank). Within a layer
    the directions share H, so each direction removes the same number m of its all-zero units, m = the smallest
    all-zero count over directions; for GLSTM also over groups, so each group removes m units and the groups stay
    equal (H_new = G (Hg - m)). The lowest-indexed all-zero units go first; at least one unit per layer (per group)
    stays. With no consumers the last layer's output is the model's output, so that layer keeps all its units.
    With a projection (proj_size = P) only H shrinks: every layer keeps P, so its output, h_n, the next layer's
    input and the consumers are unchanged (the consumers are returned as copies), and every layer can shrink,
    the last one too, but keeps at least P/G + 1 units per group (H_new > P, as proj_size < hidden_size requires).

    Returns:
        (new_model, new_consumers, report): new_model(x) followed by new_consumers gives the same outputs as
        model(x) followed by consumers (up to the rounding of dropping zero terms from sums); h_n (without a
        projection) and c_n keep only the surviving units (the removed ones are 0 whenever the initial state is 0).
        ``report`` is a :class:`ShrinkReport`. The inputs are not modified.

    Example::
        >>> small, (small_head,), report = iss.shrink(lstm, [head])
        >>> print(report.hidden_before, "->", report.hidden_after)
    """
    consumers = _check(model, consumers)
    L, D = model.num_layers, (2 if model.bidirectional else 1)
    H = model.hidden_size
    projected = _projected(model)
    with torch.no_grad():
        nonzero_counts = _component_sums(model, consumers, lambda w: (w != 0).to(torch.float64))
    layers, keeps, zero_counts = [], [], []
    in_keep = None
    for layer in range(L):
        zero = nonzero_counts[layer] == 0
        # The last layer's output is the model's: without consumers reading it, no unit of it may go (unless the
        # P-wide projection is the output, which shrinking leaves whole).
        keep = _units_to_keep(model, zero.cpu(), removable=layer + 1 < L or bool(consumers) or projected)
        layers.append(_shrunk_layer(model, layer, keep, in_keep))
        keeps.append(keep)
        zero_counts.append(zero.sum(1).tolist())
        # The next layer (or the consumers) reads the kept units' h, or the whole P-wide h with a projection.
        in_keep = None if projected else torch.cat([d * H + keep[d] for d in range(D)])
    new_consumers = []
    for lin in consumers:
        columns = torch.arange(lin.in_features) if in_keep is None else in_keep
        new = nn.Linear(columns.numel(), lin.out_features, bias=lin.bias is not None, device=lin.weight.device,
                        dtype=lin.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(lin.weight[:, columns.to(lin.weight.device)])
            if lin.bias is not None:
                new.bias.copy_(lin.bias)
        new_consumers.append(new.train(lin.training))
    removed = [[sorted(set(range(H)) - set(k.tolist())) for k in keep] for keep in keeps]
    report = ShrinkReport(hidden_before=[H] * L, hidden_after=[k[0].numel() for k in keeps],
                          zero_components=[[int(c) for c in counts] for counts in zero_counts], removed=removed)
    return StackedLSTM(layers, dropout=model.dropout).train(model.training), new_consumers, report
