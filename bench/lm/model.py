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
"""
from __future__ import annotations

import re

import torch
from torch import Tensor, nn

import lstmkern

_GLSTM_NAME = re.compile(r"^glstm(\d+)?$")
_FLSTM_NAME = re.compile(r"^flstm(?:-(\d+))?$")
PLAIN_LSTM_NAMES = ("lstm", "lstm-iss", "lstm-svd")


def check_model_name(name: str) -> None:
    """Raise ValueError unless ``name`` is one of the recurrent layer names above."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    if name in PLAIN_LSTM_NAMES or _GLSTM_NAME.match(name) or _FLSTM_NAME.match(name):
        return
    raise ValueError(f"unknown model {name!r}: expected one of lstm, glstm<G> (e.g. glstm4), flstm-<R> "
                     f"(e.g. flstm-64), lstm-iss, lstm-svd")


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
    match = _FLSTM_NAME.match(name)
    rank = int(match.group(1)) if match.group(1) else None
    return lstmkern.FLSTM(input_size, hidden_size, rank=rank, num_layers=num_layers, dropout=between_layers,
                          backend=backend, **factory)


def count_parameters(module: nn.Module) -> int:
    """Number of distinct parameter elements (a tied weight counts once)."""
    return sum(p.numel() for p in module.parameters())


class LanguageModel(nn.Module):
    """Embedding -> recurrent stack -> dropout -> Linear decoder over the vocabulary.

    ``tie_weights`` shares the embedding matrix with the decoder (Press & Wolf; Inan et al.), which needs E == H.
    forward(tokens (T, B) int64, state (h, c) each (L, B, H) or None) -> (logits (T, B, V), new state).

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
        self.decoder = nn.Linear(recurrent.hidden_size, vocab_size, **factory)
        # Small uniform init of the embedding and decoder, as in the classic PTB recipes (Zaremba et al.).
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if tie_weights:
            if embedding_size != recurrent.hidden_size:
                raise ValueError(f"tie_weights needs embedding_size == hidden_size, got {embedding_size} and "
                                 f"{recurrent.hidden_size}")
            self.decoder.weight = self.embedding.weight

    def forward(self, tokens: Tensor, state: tuple[Tensor, Tensor] | None = None):
        embedded = self.dropout(self.embedding(tokens))
        output, state = self.rnn(embedded, state)
        return self.decoder(self.dropout(output)), state


def detach_state(state):
    """Cut the graph at a BPTT window boundary but keep the values (the state carries on to the next window).

    ``state`` is None, a tensor, or nested tuples of tensors: (h, c) from nn.LSTM / GLSTM / FLSTM, or per-layer tuples
    from the StackedLSTM that ISS shrinking returns.
    """
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    return tuple(detach_state(s) for s in state)
