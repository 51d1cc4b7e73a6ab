"""The word-level language model of the benchmark and the recurrent layers it compares.

    tokens (T, B) -> embedding (T, B, E) -> dropout -> recurrent stack (T, B, H) -> dropout -> Linear -> logits (T, B, V)

Shape legend: T BPTT steps, B batch columns, E embedding size, H hidden size, L recurrent layers, V vocabulary,
G groups (G-LSTM), R rank (F-LSTM).

Recurrent layer names (the ``--models`` list of ``python -m bench.lm.train``):
    lstm        torch.nn.LSTM (cuDNN on GPU)
    glstm<G>    lstmkern.GLSTM with G groups, e.g. glstm2, glstm4, glstm8
    flstm-<R>   lstmkern.FLSTM with rank R in every layer, e.g. flstm-64; plain "flstm" is full rank
    lstm-iss    nn.LSTM trained with lstmkern.compress.iss's group-lasso penalty, then shrunk (see train.py)
    lstm-svd    nn.LSTM trained, then made low-rank by lstmkern.compress.low_rank(part="joint") and fine-tuned
    lstmp-<P>           torch.nn.LSTM with proj_size=P (LSTMP; f-lm's BIGLSTM shape, scaled down), e.g. lstmp-64
    glstmp<G>-<P>       lstmkern.GLSTM with G groups and proj_size=P (the paper's G-LSTM of an LSTMP), e.g. glstmp4-64
    flstmp-<R>-<P>      lstmkern.FLSTM with rank R and proj_size=P (the paper's F-LSTM of an LSTMP), e.g. flstmp-32-64
                        (the projected models' decoder reads P features)
    toeplitz-<r>        lstmkern.ToeplitzLikeLSTM, gate matrices Toeplitz-like of displacement rank r, e.g. toeplitz-4
    hybrid-<r>-<P>      lstmkern.CompactLSTM (Lu et al.'s hybrid): the L Toeplitz-like layers of toeplitz-<r>, then one
                        LSTMP layer (nn.LSTM, proj_size=P) on top, so one layer deeper than the others; the decoder
                        reads its P-wide projection, e.g. hybrid-4-32
"""
from __future__ import annotations

import re

import torch
from torch import Tensor, nn

import lstmkern

_GLSTM_NAME = re.compile(r"^glstm(\d+)?$")
_FLSTM_NAME = re.compile(r"^flstm(?:-(\d+))?$")
_TOEPLITZ_NAME = re.compile(r"^toeplitz-([1-9]\d*)$")
_HYBRID_NAME = re.compile(r"^hybrid-([1-9]\d*)-([1-9]\d*)$")
_LSTMP_NAME = re.compile(r"^lstmp-([1-9]\d*)$")
_GLSTMP_NAME = re.compile(r"^glstmp([1-9]\d*)-([1-9]\d*)$")
_FLSTMP_NAME = re.compile(r"^flstmp-([1-9]\d*)-([1-9]\d*)$")
_NAMED = (_GLSTM_NAME, _FLSTM_NAME, _TOEPLITZ_NAME, _HYBRID_NAME, _LSTMP_NAME, _GLSTMP_NAME, _FLSTMP_NAME)
PLAIN_LSTM_NAMES = ("lstm", "lstm-iss", "lstm-svd")


def check_model_name(name: str) -> None:
    """Raise ValueError unless ``name`` is one of the recurrent layer names above."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    if name in PLAIN_LSTM_NAMES or any(p.match(name) for p in _NAMED):
        return
    raise ValueError(f"unknown model {name!r}: expected one of lstm, glstm<G> (e.g. glstm4), flstm-<R> "
                     f"(e.g. flstm-64), lstm-iss, lstm-svd, lstmp-<P> (e.g. lstmp-64), glstmp<G>-<P> (e.g. "
                     f"glstmp4-64), flstmp-<R>-<P> (e.g. flstmp-32-64), toeplitz-<r> (e.g. toeplitz-4), "
                     f"hybrid-<r>-<P> (e.g. hybrid-4-32)")


def build_recurrent(name: str, input_size: int, hidden_size: int, num_layers: int, dropout: float,
                    backend: str = "auto", device=None, dtype=None) -> nn.Module:
    """The recurrent stack called ``name`` (time-major, nn.LSTM's call convention), input E -> hidden H.

    Example::
        >>> rnn = build_recurrent("glstm4", 256, 256, num_layers=2, dropout=0.2)   # lstmkern.GLSTM, groups=4
    """
    check_model_name(name)
    factory = {"device": device, "dtype": dtype}
    # nn.LSTM / GLSTM / FLSTM apply `dropout` between layers only: with one layer it would do nothing (and nn.LSTM warns).
    between_layers = dropout if num_layers > 1 else 0.0
    if name in PLAIN_LSTM_NAMES:
        return nn.LSTM(input_size, hidden_size, num_layers, dropout=between_layers, **factory)
    if match := _GLSTM_NAME.match(name):
        groups = int(match.group(1) or 1)
        return lstmkern.GLSTM(input_size, hidden_size, num_layers, groups=groups, dropout=between_layers,
                              backend=backend, **factory)
    if match := _FLSTM_NAME.match(name):
        rank = int(match.group(1)) if match.group(1) else None
        return lstmkern.FLSTM(input_size, hidden_size, num_layers, dropout=between_layers, rank=rank,
                              backend=backend, **factory)
    if match := _LSTMP_NAME.match(name):
        return nn.LSTM(input_size, hidden_size, num_layers, dropout=between_layers, proj_size=int(match.group(1)),
                       **factory)
    if match := _GLSTMP_NAME.match(name):
        return lstmkern.GLSTM(input_size, hidden_size, num_layers, dropout=between_layers,
                              proj_size=int(match.group(2)), groups=int(match.group(1)), backend=backend, **factory)
    if match := _FLSTMP_NAME.match(name):
        return lstmkern.FLSTM(input_size, hidden_size, num_layers, dropout=between_layers,
                              proj_size=int(match.group(2)), rank=int(match.group(1)), backend=backend, **factory)
    if match := _TOEPLITZ_NAME.match(name):
        return lstmkern.ToeplitzLikeLSTM(input_size, hidden_size, num_layers, dropout=between_layers,
                                         displacement_rank=int(match.group(1)), **factory)
    match = _HYBRID_NAME.match(name)
    # num_layers + 1 >= 2 layers, so `dropout` applies between them.
    return lstmkern.CompactLSTM(input_size, hidden_size, num_layers + 1, dropout=dropout,
                                structured_layers=num_layers, displacement_rank=int(match.group(1)),
                                proj_size=int(match.group(2)), **factory)


def output_size(recurrent: nn.Module) -> int:
    """Features per step that the recurrent stack outputs: its projection size if it has one (nn.LSTM with
    proj_size, the hybrid), else its hidden size."""
    return getattr(recurrent, "proj_size", 0) or recurrent.hidden_size


def count_parameters(module: nn.Module) -> int:
    """Number of distinct parameter elements (a tied weight counts once)."""
    return sum(p.numel() for p in module.parameters())


class LanguageModel(nn.Module):
    """Embedding -> recurrent stack -> dropout -> Linear decoder over the vocabulary.

    ``tie_weights`` shares the embedding matrix with the decoder (Press & Wolf; Inan et al.), which needs E == H.
    forward(tokens (T, B) int64, state (the recurrent stack's, e.g. (h, c) each (L, B, H)) or None) -> (logits (T, B, V),
    new state). The decoder reads the stack's output: H features, or P for a projected top layer.

    Example::
        >>> model = LanguageModel(10001, build_recurrent("lstm", 128, 128, 1, 0.0), embedding_size=128, dropout=0.2)
        >>> logits, state = model(torch.randint(0, 10001, (35, 4)), None)     # logits: (35, 4, 10001)
    """

    def __init__(self, vocab_size: int, recurrent: nn.Module, embedding_size: int, dropout: float,
                 tie_weights: bool = False, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.embedding = nn.Embedding(vocab_size, embedding_size, **factory)
        self.rnn = recurrent
        self.dropout = nn.Dropout(dropout)
        self.decoder = nn.Linear(output_size(recurrent), vocab_size, **factory)
        # Small uniform init of the embedding and decoder, as in the classic PTB recipes (Zaremba et al.).
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if tie_weights:
            if embedding_size != output_size(recurrent):
                raise ValueError(f"tie_weights needs embedding_size == the recurrent output size, got "
                                 f"{embedding_size} and {output_size(recurrent)}")
            self.decoder.weight = self.embedding.weight

    def forward(self, tokens: Tensor, state: tuple[Tensor, Tensor] | None = None):
        embedded = self.dropout(self.embedding(tokens))
        output, state = self.rnn(embedded, state)
        return self.decoder(self.dropout(output)), state


def detach_state(state):
    """Cut the graph at a BPTT window boundary but keep the values (the state carries on to the next window).

    ``state`` is None, a tensor, or nested tuples of tensors: (h, c) from nn.LSTM / GLSTM / FLSTM / ToeplitzLikeLSTM,
    per-layer tuples from the StackedLSTM that ISS shrinking returns, or the hybrid's ((h_s, c_s), (h_p, c_p)).
    """
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    return tuple(detach_state(s) for s in state)
