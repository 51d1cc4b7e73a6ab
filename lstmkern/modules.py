"""GLSTM and FLSTM: drop-in replacements for torch.nn.LSTM built on lstmkern's layers.

Shape legend: T time steps, B batch, I input features, H hidden units, G groups (Hg = H/G), R rank, L layers,
D directions (2 if bidirectional else 1). Layer k reads I_k features: I_0 = input_size, I_k = D*H after that.

Both modules follow nn.LSTM's call convention: ``forward(input, hx=None) -> output, (h_n, c_n)`` with input (T, B, I)
(or (B, T, I) with batch_first, or a PackedSequence), h_n and c_n of shape (L*D, B, H), dropout between layers.
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
        if proj_size > 0:
            raise NotImplementedError(f"proj_size={proj_size}: projections (LSTMP) are not implemented yet; "
                                      f"use proj_size=0")
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

    def layer_input_size(self, layer: int) -> int:
        return self.input_size if layer == 0 else self.hidden_size * self.num_directions

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
        LD, H = self.num_layers * self.num_directions, self.hidden_size
        if hx is None:
            h0 = c0 = x.new_zeros(LD, B, H)
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"hx must be None or a pair (h0, c0), got {type(hx).__name__}")
            h0, c0 = hx
            for name, t in (("h0", h0), ("c0", c0)):
                if not isinstance(t, Tensor):
                    raise TypeError(f"{name} must be a Tensor, got {type(t).__name__}")
                if tuple(t.shape) != (LD, B, H):
                    raise ValueError(f"{name} must have shape (num_layers*num_directions, B, H) = {(LD, B, H)}, "
                                     f"got {tuple(t.shape)}")
                if t.dtype != x.dtype:
                    raise TypeError(f"{name} must have the input's dtype {x.dtype}, got {t.dtype}")
                if t.device != x.device:
                    raise ValueError(f"{name} must be on the input's device {x.device}, got {t.device}")
            if sorted_indices is not None:
                h0, c0 = h0.index_select(1, sorted_indices), c0.index_select(1, sorted_indices)
        if T == 0:
            output, h_n, c_n = x.new_empty(0, B, self.num_directions * H), h0, c0
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
        batch = torch.arange(B, device=x.device)
        if lengths is None:
            last = torch.full((B,), T - 1, device=x.device, dtype=torch.long)
            reverse = None
        else:
            last = (lengths - 1).to(x.device)
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
                out, cell = run_layer(self._op, seq, h0[k], c0[k], *self.layer_parameters(layer, direction),
                                      self.backend)
                h_n.append(out[last, batch])
                c_n.append(cell[last, batch].to(x.dtype))
                if direction == 1:
                    out = out.flip(0) if reverse is None else _gather_time(out, reverse)
                outputs.append(out)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = nn.functional.dropout(layer_input, self.dropout, training=True)
        return layer_input, torch.stack(h_n), torch.stack(c_n)

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

    Groups never mix: group g of layer k reads only group g's slice of layer k-1's output (bidirectional layers read
    both directions' group-g units), so a unidirectional stack is G independent networks of H/G units side by side
    until a dense layer (e.g. the model's output head) combines them. Kuchaiev & Ginsburg mix groups by a projection or
    by a dense layer between G-LSTM layers; lstmkern does not insert one for you.

    Parameters per layer k and direction suffix ("" or "_reverse"):
        weight_ih_l{k}{suffix}: (G, 4Hg, I_k/G), weight_hh_l{k}{suffix}: (G, 4Hg, Hg), bias_l{k}{suffix}: (G, 4Hg).
    Initialisation: every weight and bias uniform in ±1/sqrt(Hg), nn.LSTM's rule applied to each group's fan-in.
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
                 groups: int = 1, backend: str = "auto", device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size,
                         backend)
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            raise ValueError(f"groups must be a positive int, got {groups!r}")
        if input_size % groups or hidden_size % groups:
            raise ValueError(f"groups={groups} must divide input_size={input_size} and hidden_size={hidden_size}")
        self.groups = groups
        G, hg = groups, hidden_size // groups
        factory = {"device": device, "dtype": dtype}
        for layer in range(num_layers):
            ig = self.layer_input_size(layer) // G
            for suffix in self._suffixes():
                self.register_parameter(f"weight_ih_l{layer}{suffix}", nn.Parameter(torch.empty(G, 4 * hg, ig, **factory)))
                self.register_parameter(f"weight_hh_l{layer}{suffix}", nn.Parameter(torch.empty(G, 4 * hg, hg, **factory)))
                if bias:
                    self.register_parameter(f"bias_l{layer}{suffix}", nn.Parameter(torch.empty(G, 4 * hg, **factory)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size // self.groups)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _extra_repr_sizes(self) -> str:
        return f", groups={self.groups}"

    @classmethod
    def from_lstm(cls, lstm: nn.LSTM, backend: str = "auto") -> "GLSTM":
        """A one-group GLSTM computing exactly what ``lstm`` computes (weights copied, the two biases summed)."""
        _check_plain_lstm(lstm)
        ref = next(lstm.parameters())
        module = cls(lstm.input_size, lstm.hidden_size, lstm.num_layers, bias=lstm.bias,
                     batch_first=lstm.batch_first, dropout=lstm.dropout, bidirectional=lstm.bidirectional,
                     groups=1, backend=backend, device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for layer in range(lstm.num_layers):
                for suffix in module._suffixes():
                    getattr(module, f"weight_ih_l{layer}{suffix}")[0].copy_(getattr(lstm, f"weight_ih_l{layer}{suffix}"))
                    getattr(module, f"weight_hh_l{layer}{suffix}")[0].copy_(getattr(lstm, f"weight_hh_l{layer}{suffix}"))
                    if lstm.bias:
                        getattr(module, f"bias_l{layer}{suffix}")[0].copy_(
                            getattr(lstm, f"bias_ih_l{layer}{suffix}") + getattr(lstm, f"bias_hh_l{layer}{suffix}"))
        module.train(lstm.training)
        return module


class FLSTM(_StackedLSTM):
    """Factorized LSTM (F-LSTM): each layer's gate matrix W (4H x (I_k + H)) is the product W2 W1 of rank R_k.

    Signature: nn.LSTM's positional arguments (input_size, hidden_size, num_layers, bias, batch_first, dropout,
    bidirectional, proj_size); ``rank``, ``backend``, ``device`` and ``dtype`` are keyword-only.

    Parameters per layer k and direction suffix ("" or "_reverse"):
        weight_1_l{k}{suffix}: (R_k, I_k + H), weight_2_l{k}{suffix}: (4H, R_k), bias_l{k}{suffix}: (4H,).
    ``rank``: None for full rank (R_k = I_k + H), one int for every layer, or a sequence with one int per layer.
    A rank above a layer's full rank I_k + H is lowered to it with a warning (W2 W1 cannot have a higher rank).
    Initialisation keeps the product's scale like nn.LSTM's: W1 uniform in ±sqrt(3 / (I_k + H)) (variance
    1/(I_k + H)) and W2 uniform in ±sqrt((I_k + H) / (H R_k)), so each entry of W2 W1 has variance 1/(3H), that of
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
            width = self.layer_input_size(layer) + H
            for suffix in self._suffixes():
                self.register_parameter(f"weight_1_l{layer}{suffix}", nn.Parameter(torch.empty(R, width, **factory)))
                self.register_parameter(f"weight_2_l{layer}{suffix}", nn.Parameter(torch.empty(4 * H, R, **factory)))
                if bias:
                    self.register_parameter(f"bias_l{layer}{suffix}", nn.Parameter(torch.empty(4 * H, **factory)))
        self.reset_parameters()

    def _layer_ranks(self, rank) -> list[int]:
        if rank is None:
            return [self.layer_input_size(k) + self.hidden_size for k in range(self.num_layers)]
        ranks = [rank] * self.num_layers if isinstance(rank, int) and not isinstance(rank, bool) else rank
        if not isinstance(ranks, Sequence) or len(ranks) != self.num_layers:
            raise ValueError(f"rank must be None, an int or a sequence of {self.num_layers} ints, got {rank!r}")
        for r in ranks:
            if not isinstance(r, int) or isinstance(r, bool) or r < 1:
                raise ValueError(f"every rank must be an int >= 1, got {rank!r}")
        clamped = []
        for k, r in enumerate(ranks):
            full = self.layer_input_size(k) + self.hidden_size
            if r > full:  # W2 W1 of rank > I_k + H is still rank I_k + H: only more parameters and FLOPs
                warnings.warn(f"rank {r} of layer {k} exceeds its full rank I_k + H = {full}; using {full}",
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
                width = self.layer_input_size(layer) + H
                for direction in range(self.num_directions):
                    w1, w2, b = self.layer_parameters(layer, direction)
                    nn.init.uniform_(w1, -math.sqrt(3.0 / width), math.sqrt(3.0 / width))
                    nn.init.uniform_(w2, -math.sqrt(width / (H * R)), math.sqrt(width / (H * R)))
                    if b is not None:
                        nn.init.uniform_(b, -1.0 / math.sqrt(H), 1.0 / math.sqrt(H))

    def _extra_repr_sizes(self) -> str:
        return f", rank={self.rank}"

    @classmethod
    def from_lstm(cls, lstm: nn.LSTM, backend: str = "auto") -> "FLSTM":
        """A full-rank FLSTM computing exactly what ``lstm`` computes: W1 = identity, W2 = [W_ih W_hh]."""
        _check_plain_lstm(lstm)
        ref = next(lstm.parameters())
        module = cls(lstm.input_size, lstm.hidden_size, lstm.num_layers, bias=lstm.bias,
                     batch_first=lstm.batch_first, dropout=lstm.dropout, bidirectional=lstm.bidirectional,
                     rank=None, backend=backend, device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for layer in range(lstm.num_layers):
                for direction, suffix in enumerate(module._suffixes()):
                    w1, w2, b = module.layer_parameters(layer, direction)
                    w1.copy_(torch.eye(w1.shape[0], dtype=w1.dtype, device=w1.device))
                    w2.copy_(torch.cat((getattr(lstm, f"weight_ih_l{layer}{suffix}"),
                                        getattr(lstm, f"weight_hh_l{layer}{suffix}")), dim=1))
                    if b is not None:
                        b.copy_(getattr(lstm, f"bias_ih_l{layer}{suffix}") + getattr(lstm, f"bias_hh_l{layer}{suffix}"))
        module.train(lstm.training)
        return module


def _check_plain_lstm(lstm) -> None:
    if not isinstance(lstm, nn.LSTM):
        raise TypeError(f"lstm must be a torch.nn.LSTM, got {type(lstm).__name__}")
    if lstm.proj_size:
        raise ValueError(f"lstm.proj_size must be 0 (projections are not supported), got {lstm.proj_size}")


# Whole-model checkpoints (torch.save(model) / torch.load(f)): torch.load's default weights_only=True unpickles only
# allow-listed classes. These modules hold only parameters and plain fields (ints, floats, bools, strings, lists), so
# they are safe to allow; a drop-in for nn.LSTM must not make every user script add lstmkern's classes to its list.
torch.serialization.add_safe_globals([GLSTM, FLSTM])
