"""Word-level corpora in PTB / WikiText form and the batching used for truncated BPTT.

A corpus directory holds ``train``, ``valid`` and ``test`` text files, each ``<name>.txt`` or ``<name>.txt.xz`` (or
PTB's ``ptb.<name>.txt``, WikiText's ``wiki.<name>.tokens``): one sentence per line, tokens separated by whitespace.
Every line ends with an ``<eos>`` token. The vocabulary is built from train; a valid/test word missing from it maps to
``<unk>`` (which must then be in the train vocabulary, as it is in PTB, WikiText and the shipped corpus).

Shape legend: N tokens in a split, B batch columns (global batch), Bl = B / world_size columns per process,
T = BPTT length (time steps per training step).
"""
from __future__ import annotations

import lzma
from pathlib import Path

import torch
from torch import Tensor

EOS = "<eos>"
UNK = "<unk>"
SPLITS = ("train", "valid", "test")
# The corpus shipped in the repository (see data/kjv/SOURCE.md): the King James Bible, 0.94M tokens, 10k vocabulary.
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "data" / "kjv"


def _split_file(directory: Path, split: str) -> Path:
    """The file holding ``split`` in ``directory``, whichever of the usual names it has."""
    candidates = [f"{split}.txt", f"{split}.txt.xz", f"ptb.{split}.txt", f"wiki.{split}.tokens", f"{split}.tokens"]
    for name in candidates:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"no {split} file in {directory}: expected one of {', '.join(candidates)}")


def read_lines(path: Path) -> list[list[str]]:
    """Tokens of every non-empty line of ``path`` (plain text or .xz), each line ending with <eos>."""
    raw = lzma.decompress(path.read_bytes()) if path.suffix == ".xz" else path.read_bytes()
    return [line.split() + [EOS] for line in raw.decode("utf-8").splitlines() if line.strip()]


class Corpus:
    """The three splits of a corpus as 1-D LongTensors of token ids, and the vocabulary.

    Attributes: ``words`` (list, id -> word), ``index`` (dict, word -> id), ``train``/``valid``/``test`` (N,) int64.

    Example::
        >>> corpus = Corpus(DEFAULT_DATA)
        >>> len(corpus.words), corpus.train.shape      # (10001, torch.Size([850269]))
    """

    def __init__(self, directory: str | Path = DEFAULT_DATA):
        directory = Path(directory)
        if not directory.is_dir():
            raise ValueError(f"data must be a directory with train/valid/test text files, got {str(directory)!r}")
        self.directory = directory
        lines = {split: read_lines(_split_file(directory, split)) for split in SPLITS}
        # Ids in order of first appearance in train: deterministic, and the same in every process under DDP.
        self.index: dict[str, int] = {}
        for line in lines["train"]:
            for word in line:
                self.index.setdefault(word, len(self.index))
        self.words = list(self.index)
        unk_id = self.index.get(UNK)
        for split in SPLITS:
            ids = []
            for line in lines[split]:
                for word in line:
                    word_id = self.index.get(word, unk_id)
                    if word_id is None:
                        raise ValueError(f"{split} has the word {word!r}, which is not in the train vocabulary, "
                                         f"and the train split has no {UNK} token to map it to")
                    ids.append(word_id)
            setattr(self, split, torch.tensor(ids, dtype=torch.int64))

    def __len__(self) -> int:
        return len(self.words)


def batchify(ids: Tensor, batch_size: int) -> Tensor:
    """Lay the token stream ``ids`` (N,) out as ``batch_size`` parallel streams: (N // batch_size, batch_size).

    Column b is the contiguous slice ids[b * n : (b + 1) * n]; the tail that does not fill a row is dropped. Carrying
    the recurrent state from one BPTT window to the next is then correct for every column.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = ids.numel() // batch_size
    if rows < 2:
        raise ValueError(f"{ids.numel()} tokens are too few for batch_size={batch_size} (need at least 2 rows)")
    return ids[: rows * batch_size].view(batch_size, rows).t().contiguous()


def local_columns(batched: Tensor, rank: int, world_size: int) -> Tensor:
    """The columns (streams) of a (rows, B) batched split that process ``rank`` of ``world_size`` trains on: (rows, Bl).

    Each process takes a contiguous block of B / world_size columns, so the processes together cover exactly the
    global batch a single process would see, and the mean loss over processes equals the single-process loss.
    """
    batch_size = batched.shape[1]
    if batch_size % world_size != 0:
        raise ValueError(f"the global batch size ({batch_size}) must be divisible by the number of processes "
                         f"({world_size})")
    per_rank = batch_size // world_size
    return batched[:, rank * per_rank:(rank + 1) * per_rank]


def bptt_windows(batched: Tensor, bptt: int):
    """Yield (input, target) pairs of shape (T, Bl), T <= bptt, walking down the rows of ``batched``."""
    for start in range(0, batched.shape[0] - 1, bptt):
        length = min(bptt, batched.shape[0] - 1 - start)
        yield batched[start:start + length], batched[start + 1:start + 1 + length]
