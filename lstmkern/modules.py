"""GLSTM and FLSTM: drop-in replacements for torch.nn.LSTM built on lstmkern's layers.

Shape legend: T time steps, B batch, I input features, H hidden (cell) units, G groups (Hg = H/G), R rank, L layers,
D directions (2 if bidirectional else 1), P projection size (proj_size; the output and recurrent width: P if
proj_size > 0, else H). Layer k reads I_k features: I_0 = input_size, I_k = D*P after that.

Both modules follow nn.LSTM's call convention: ``forward(input, hx=None) -> output, (h_n, c_n)`` with input (T, B, I)
(or (B, T, I) with batch_first, or a PackedSequence), output (T, B, D*P), h_n (L*D, B, P) and c_n (L*D, B, H),
dropout between layers. With proj_size = P > 0 each layer and direction also has weight_hr_l{k}{suffix} (P, H), as
nn.LSTM: h_t = W_hr (o_t * tanh(c_t)).
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .backends import check_backend_name
from .functional import _FLOAT_DTYPES, run_layer

__all__ = ["GLSTM", "FLSTM"]


def _reverse_index(lengths: Tensor, T: int, device) -> Tensor:
    """(T, B) time index that reverses each sequence within its own length; padding stays in place (it lies after
    every sequence's end, so it never feeds a valid step)."""
    t = torch.arange(T, device=device).unsqueeze(1)
    lengths = lengths.to(device).unsqueeze(0)
    return torch.where(t < lengths, lengths - 1 - t, t)


class _StackedLSTM(nn.Module):
    """Layers x directions of one lstmkern layer type; subclasses name the parameters and the op."""

    _op: str
    _param_names: tuple[str, str, str]

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, bias: bool, batch_first: bool,
                 dropout: float, bidirectional: bool, proj_size: int, backend: str):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        for name, value in (("bias", bias), ("batch_first", batch_first), ("bidirectional", bidirectional)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {value!r} (layer-type options such as groups, rank and "
                                f"backend are keyword-only)")
        if not isinstance(proj_size, int) or isinstance(proj_size, bool) or proj_size < 0:
            raise ValueError(f"proj_size must be an int >= 0, got {proj_size!r}")
        if proj_size >= hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size, got proj_size={proj_size} and "
                             f"hidden_size={hidden_size}")
        check_backend_name(backend)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.backend = backend

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """P: the width of each direction's output and recurrent state h (proj_size if > 0, else hidden_size)."""
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    def layer_input_size(self, layer: int) -> int:
        return self.input_size if layer == 0 else self.output_size * self.num_directions

    def _register_projections(self, factory: dict) -> None:
        for layer in range(self.num_layers):
            for suffix in self._suffixes():
                if self.proj_size > 0:
                    self.register_parameter(f"weight_hr_l{layer}{suffix}",
                                            nn.Parameter(torch.empty(self.proj_size, self.hidden_size, **factory)))

    def _reset_projections(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)  # nn.LSTM's rule; W_hr's fan-in is H
        for layer in range(self.num_layers):
            for direction in range(self.num_directions):
                w_hr = self.layer_projection(layer, direction)
                if w_hr is not None:
                    nn.init.uniform_(w_hr, -bound, bound)

    def layer_projection(self, layer: int, direction: int) -> Optional[Tensor]:
        """weight_hr (P, H) of one layer and direction, or None without a projection."""
        if self.proj_size == 0:
            return None
        return getattr(self, f"weight_hr_l{layer}{self._suffixes()[direction]}")

    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    def layer_parameters(self, layer: int, direction: int) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """(weight_a, weight_b, bias or None) of one layer and direction, in the functional API's order."""
        suffix = self._suffixes()[direction]
        a, b, c = (f"{n}_l{layer}{suffix}" for n in self._param_names)
        return getattr(self, a), getattr(self, b), (getattr(self, c) if self.bias else None)

    def flatten_parameters(self) -> None:
        """No-op, for nn.LSTM compatibility (lstmkern keeps every parameter in its own tensor)."""

    def forward(self, input, hx: Optional[tuple[Tensor, Tensor]] = None):
        packed = isinstance(input, PackedSequence)
        if packed:
            sorted_indices, unsorted_indices = input.sorted_indices, input.unsorted_indices
            # Without the indices the padded batch stays in the packed (length-sorted) order.
            x, lengths = pad_packed_sequence(PackedSequence(input.data, input.batch_sizes))
        else:
            if not isinstance(input, Tensor):
                raise TypeError(f"input must be a Tensor or PackedSequence, got {type(input).__name__}")
            if input.dim() != 3:
                raise ValueError(f"input must be 3-D ({'B, T, I' if self.batch_first else 'T, B, I'}), "
                                 f"got shape {tuple(input.shape)}")
            x = input.transpose(0, 1) if self.batch_first else input
            lengths, sorted_indices, unsorted_indices = None, None, None
        if x.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"input must be floating point, got {x.dtype}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input has {x.shape[-1]} features, expected input_size={self.input_size}")
        weight = next(self.parameters())
        if x.dtype != weight.dtype:
            raise TypeError(f"input has dtype {x.dtype} but the module's parameters are {weight.dtype} "
                            f"(convert one of them, e.g. module.to({x.dtype}))")
        if x.device != weight.device:
            raise ValueError(f"input is on {x.device} but the module's parameters are on {weight.device}")
        T, B = x.shape[0], x.shape[1]
        LD, H, P = self.num_layers * self.num_directions, self.hidden_size, self.output_size
        if hx is None:
            h0, c0 = x.new_zeros(LD, B, P), x.new_zeros(LD, B, H)
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"hx must be None or a pair (h0, c0), got {type(hx).__name__}")
            h0, c0 = hx
            for name, t, width in (("h0", h0, P), ("c0", c0, H)):
                if not isinstance(t, Tensor):
                    raise TypeError(f"{name} must be a Tensor, got {type(t).__name__}")
                if tuple(t.shape) != (LD, B, width):
                    letter = "P" if name == "h0" and self.proj_size else "H"
                    raise ValueError(f"{name} must have shape (num_layers*num_directions, B, {letter}) = "
                                     f"{(LD, B, width)}, got {tuple(t.shape)}")
                if t.dtype != x.dtype:
                    raise TypeError(f"{name} must have the input's dtype {x.dtype}, got {t.dtype}")
                if t.device != x.device:
                    raise ValueError(f"{name} must be on the input's device {x.device}, got {t.device}")
            if sorted_indices is not None:
                h0, c0 = h0.index_select(1, sorted_indices), c0.index_select(1, sorted_indices)
        if T == 0:
            output, h_n, c_n = x.new_empty(0, B, self.num_directions * P), h0, c0
        else:
            output, h_n, c_n = self._run_stack(x, h0, c0, lengths)
        if unsorted_indices is not None:
            h_n, c_n = h_n.index_select(1, unsorted_indices), c_n.index_select(1, unsorted_indices)
        if packed:
            data = pack_padded_sequence(output, lengths).data
            return PackedSequence(data, input.batch_sizes, sorted_indices, unsorted_indices), (h_n, c_n)
        return (output.transpose(0, 1) if self.batch_first else output), (h_n, c_n)

    def _run_stack(self, x: Tensor, h0: Tensor, c0: Tensor, lengths: Optional[Tensor]):
        T, B = x.shape[0], x.shape[1]
        if lengths is None:  # every sequence ends at step T - 1: the final states are the last step's (no gather)
            last, batch, reverse = -1, slice(None), None
        else:
            last, batch = (lengths - 1).to(x.device), torch.arange(B, device=x.device)
            reverse = _reverse_index(lengths, T, x.device)
        h_n, c_n = [], []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                k = layer * self.num_directions + direction
                seq = layer_input
                if direction == 1:
                    seq = seq.flip(0) if reverse is None else _gather_time(seq, reverse)
                out, cell = self._run_layer(layer, direction, seq, h0[k], c0[k])
                h_n.append(out[last, batch])
                c_n.append(cell[last, batch].to(x.dtype))
                if direction == 1:
                    out = out.flip(0) if reverse is None else _gather_time(out, reverse)
                outputs.append(out)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = nn.functional.dropout(layer_input, self.dropout, training=True)
        return layer_input, torch.stack(h_n), torch.stack(c_n)

    def _run_layer(self, layer: int, direction: int, x: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor]:
        """One layer and direction over time-major x (T, B, I_k) -> (output (T, B, P), cell (T, B, H)): the cell of
        every step, since packed sequences end at different steps. Subclasses with another layer override this."""
        return run_layer(self._op, x, h0, c0, *self.layer_parameters(layer, direction), self.backend,
                         self.layer_projection(layer, direction))

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        s += self._extra_repr_sizes()
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s

    def _extra_repr_sizes(self) -> str:
        return ""


def _gather_time(seq: Tensor, index: Tensor) -> Tensor:
    return seq.gather(0, index.unsqueeze(-1).expand_as(seq))


class GLSTM(_StackedLSTM):
    """Group LSTM (G-LSTM): each layer is ``groups`` independent LSTMs on contiguous slices of its input and hidden
    state, so its weights are block-diagonal: G times fewer recurrent parameters and FLOPs than nn.LSTM.

    Signature: nn.LSTM's positional arguments (input_size, hidden_size, num_layers, bias, batch_first, dropout,
    bidirectional, proj_size); ``groups``, ``backend``, ``device`` and ``dtype`` are keyword-only.

    With the defaults (grouped input, no projection) groups never mix: group g of layer k reads only group g's slice
    of layer k-1's output, so a unidirectional stack is G independent networks of H/G units side by side until a
    dense layer (e.g. the model's output head) combines them. ``proj_size`` (a dense W_hr, as in the paper's LSTMP
    G-LSTM) or ``group_input=False`` (a dense input projection) mix them.

    Parameters per layer k and direction suffix ("" or "_reverse"):
        weight_ih_l{k}{suffix}: (G, 4Hg, I_k/G), or (G, 4Hg, I_k) with ``group_input=False``;
        weight_hh_l{k}{suffix}: (G, 4Hg, P/G) (P = H without a projection); bias_l{k}{suffix}: (G, 4Hg);
        weight_hr_l{k}{suffix}: (P, H) with ``proj_size = P > 0`` (dense: the projection mixes all groups).
    ``group_input=False`` (the form of FlashRNN's and xLSTM's "heads"): every group reads the whole input, only the
    recurrence is block-diagonal, so groups mix through the input projection of the next step and layer.
    Initialisation: every weight and bias uniform in ±1/sqrt(Hg), nn.LSTM's rule applied to each group's fan-in
    (weight_hr: ±1/sqrt(H)).
    One bias per gate (nn.LSTM's two biases only ever appear as their sum), so the parameter count is nn.LSTM's
    minus 4H per layer and direction when G = 1.

    Example::
        >>> lstm = lstmkern.GLSTM(64, 128, num_layers=2, groups=4, batch_first=True)
        >>> out, (h_n, c_n) = lstm(torch.randn(8, 30, 64))    # out: (8, 30, 128), h_n: (2, 8, 128)
    """

    _op = "glstm"
    _param_names = ("weight_ih", "weight_hh", "bias")

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0, *,
                 groups: int = 1, group_input: bool = True, backend: str = "auto", device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size,
                         backend)
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            raise ValueError(f"groups must be a positive int, got {groups!r}")
        if not isinstance(group_input, bool):
            raise TypeError(f"group_input must be a bool, got {group_input!r}")
        if hidden_size % groups:
            raise ValueError(f"groups={groups} must divide hidden_size={hidden_size}")
        if proj_size % groups:
            raise ValueError(f"groups={groups} must divide proj_size={proj_size}")
        if group_input and input_size % groups:
            raise ValueError(f"groups={groups} must divide input_size={input_size} (or use group_input=False: every "
                             f"group then reads the whole input)")
        self.groups = groups
        self.group_input = group_input
        G, hg, pg = groups, hidden_size // groups, self.output_size // groups
        factory = {"device": device, "dtype": dtype}
        for layer in range(num_layers):
            ig = self.layer_input_size(layer) // G if group_input else self.layer_input_size(layer)
            for suffix in self._suffixes():
                self.register_parameter(f"weight_ih_l{layer}{suffix}", nn.Parameter(torch.empty(G, 4 * hg, ig, **factory)))
                self.register_parameter(f"weight_hh_l{layer}{suffix}", nn.Parameter(torch.empty(G, 4 * hg, pg, **factory)))
                if bias:
                    self.register_parameter(f"bias_l{layer}{suffix}", nn.Parameter(torch.empty(G, 4 * hg, **factory)))
        self._register_projections(factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size // self.groups)
        for name, p in self.named_parameters():
            if not name.startswith("weight_hr_"):
                nn.init.uniform_(p, -bound, bound)
        self._reset_projections()

    def _extra_repr_sizes(self) -> str:
        return f", groups={self.groups}" + ("" if self.group_input else ", group_input=False")

    @classmethod
    def from_lstm(cls, lstm: nn.LSTM, backend: str = "auto") -> "GLSTM":
        """A one-group GLSTM computing exactly what ``lstm`` computes (weights copied, the two biases summed; a
        projected nn.LSTM (proj_size > 0) gives a GLSTM with the same projection)."""
        _check_plain_lstm(lstm)
        ref = next(lstm.parameters())
        module = cls(lstm.input_size, lstm.hidden_size, lstm.num_layers, bias=lstm.bias,
                     batch_first=lstm.batch_first, dropout=lstm.dropout, bidirectional=lstm.bidirectional,
                     proj_size=lstm.proj_size, groups=1, backend=backend, device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for layer in range(lstm.num_layers):
                for suffix in module._suffixes():
                    getattr(module, f"weight_ih_l{layer}{suffix}")[0].copy_(getattr(lstm, f"weight_ih_l{layer}{suffix}"))
                    getattr(module, f"weight_hh_l{layer}{suffix}")[0].copy_(getattr(lstm, f"weight_hh_l{layer}{suffix}"))
                    if lstm.bias:
                        getattr(module, f"bias_l{layer}{suffix}")[0].copy_(
                            getattr(lstm, f"bias_ih_l{layer}{suffix}") + getattr(lstm, f"bias_hh_l{layer}{suffix}"))
        _copy_projections(lstm, module)
        module.train(lstm.training)
        return module


class FLSTM(_StackedLSTM):
    """Factorized LSTM (F-LSTM): each layer's gate matrix W (4H x (I_k + H)) is the product W2 W1 of rank R_k.

    Signature: nn.LSTM's positional arguments (input_size, hidden_size, num_layers, bias, batch_first, dropout,
    bidirectional, proj_size); ``rank``, ``backend``, ``device`` and ``dtype`` are keyword-only.

    Parameters per layer k and direction suffix ("" or "_reverse"):
        weight_1_l{k}{suffix}: (R_k, I_k + P), weight_2_l{k}{suffix}: (4H, R_k), bias_l{k}{suffix}: (4H,), and
        weight_hr_l{k}{suffix}: (P, H) with ``proj_size = P > 0`` (without a projection read P as H).
    ``rank``: None for full rank (R_k = I_k + P), one int for every layer, or a sequence with one int per layer.
    A rank above a layer's full rank I_k + P is lowered to it with a warning (W2 W1 cannot have a higher rank).
    Initialisation keeps the product's scale like nn.LSTM's: W1 uniform in ±sqrt(3 / (I_k + P)) (variance
    1/(I_k + P)) and W2 uniform in ±sqrt((I_k + P) / (H R_k)), so each entry of W2 W1 has variance 1/(3H), that of
    nn.LSTM's uniform ±1/sqrt(H); the bias uniform in ±1/sqrt(H).

    Example::
        >>> lstm = lstmkern.FLSTM(64, 128, rank=32)
        >>> out, (h_n, c_n) = lstm(torch.randn(30, 8, 64))    # out: (30, 8, 128)
    """

    _op = "flstm"
    _param_names = ("weight_1", "weight_2", "bias")

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0, *,
                 rank=None, backend: str = "auto", device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size,
                         backend)
        self.ranks = self._layer_ranks(rank)
        H = hidden_size
        factory = {"device": device, "dtype": dtype}
        for layer, R in enumerate(self.ranks):
            width = self.layer_input_size(layer) + self.output_size
            for suffix in self._suffixes():
                self.register_parameter(f"weight_1_l{layer}{suffix}", nn.Parameter(torch.empty(R, width, **factory)))
                self.register_parameter(f"weight_2_l{layer}{suffix}", nn.Parameter(torch.empty(4 * H, R, **factory)))
                if bias:
                    self.register_parameter(f"bias_l{layer}{suffix}", nn.Parameter(torch.empty(4 * H, **factory)))
        self._register_projections(factory)
        self.reset_parameters()

    def _layer_ranks(self, rank) -> list[int]:
        if rank is None:
            return [self.layer_input_size(k) + self.output_size for k in range(self.num_layers)]
        ranks = [rank] * self.num_layers if isinstance(rank, int) and not isinstance(rank, bool) else rank
        if not isinstance(ranks, Sequence) or len(ranks) != self.num_layers:
            raise ValueError(f"rank must be None, an int or a sequence of {self.num_layers} ints, got {rank!r}")
        for r in ranks:
            if not isinstance(r, int) or isinstance(r, bool) or r < 1:
                raise ValueError(f"every rank must be an int >= 1, got {rank!r}")
        clamped = []
        for k, r in enumerate(ranks):
            full = self.layer_input_size(k) + self.output_size
            if r > full:  # W2 W1 of rank > I_k + P is still rank I_k + P: only more parameters and FLOPs
                width = "I_k + P" if self.proj_size else "I_k + H"
                warnings.warn(f"rank {r} of layer {k} exceeds its full rank {width} = {full}; using {full}",
                              stacklevel=3)
            clamped.append(min(r, full))
        return clamped

    @property
    def rank(self):
        """The rank if every layer has the same one, else the list of per-layer ranks."""
        return self.ranks[0] if len(set(self.ranks)) == 1 else list(self.ranks)

    def reset_parameters(self) -> None:
        H = self.hidden_size
        with torch.no_grad():
            for layer, R in enumerate(self.ranks):
                width = self.layer_input_size(layer) + self.output_size
                for direction in range(self.num_directions):
                    w1, w2, b = self.layer_parameters(layer, direction)
                    nn.init.uniform_(w1, -math.sqrt(3.0 / width), math.sqrt(3.0 / width))
                    nn.init.uniform_(w2, -math.sqrt(width / (H * R)), math.sqrt(width / (H * R)))
                    if b is not None:
                        nn.init.uniform_(b, -1.0 / math.sqrt(H), 1.0 / math.sqrt(H))
        self._reset_projections()

    def _extra_repr_sizes(self) -> str:
        return f", rank={self.rank}"

    @classmethod
    def from_lstm(cls, lstm: nn.LSTM, backend: str = "auto") -> "FLSTM":
        """A full-rank FLSTM computing exactly what ``lstm`` computes: W1 = identity, W2 = [W_ih W_hh] (and W_hr copied
        when ``lstm`` is projected)."""
        _check_plain_lstm(lstm)
        ref = next(lstm.parameters())
        module = cls(lstm.input_size, lstm.hidden_size, lstm.num_layers, bias=lstm.bias,
                     batch_first=lstm.batch_first, dropout=lstm.dropout, bidirectional=lstm.bidirectional,
                     proj_size=lstm.proj_size, rank=None, backend=backend, device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for layer in range(lstm.num_layers):
                for direction, suffix in enumerate(module._suffixes()):
                    w1, w2, b = module.layer_parameters(layer, direction)
                    w1.copy_(torch.eye(w1.shape[0], dtype=w1.dtype, device=w1.device))
                    w2.copy_(torch.cat((getattr(lstm, f"weight_ih_l{layer}{suffix}"),
                                        getattr(lstm, f"weight_hh_l{layer}{suffix}")), dim=1))
                    if b is not None:
                        b.copy_(getattr(lstm, f"bias_ih_l{layer}{suffix}") + getattr(lstm, f"bias_hh_l{layer}{suffix}"))
        _copy_projections(lstm, module)
        module.train(lstm.training)
        return module


def _check_plain_lstm(lstm) -> None:
    if not isinstance(lstm, nn.LSTM):
        raise TypeError(f"lstm must be a torch.nn.LSTM, got {type(lstm).__name__}")


def _copy_projections(lstm: nn.LSTM, module: _StackedLSTM) -> None:
    with torch.no_grad():
        for layer in range(lstm.num_layers):
            for direction, suffix in enumerate(module._suffixes()):
                w_hr = module.layer_projection(layer, direction)
                if w_hr is not None:
                    w_hr.copy_(getattr(lstm, f"weight_hr_l{layer}{suffix}"))


# Whole-model checkpoints (torch.save(model) / torch.load(f)): torch.load's default weights_only=True unpickles only
# allow-listed classes. These modules hold only parameters and plain fields (ints, floats, bools, strings, lists), so
# they are safe to allow; a drop-in for nn.LSTM must not make every user script add lstmkern's classes to its list.
torch.serialization.add_safe_globals([GLSTM, FLSTM])
