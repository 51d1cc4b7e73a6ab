#!/usr/bin/env python3
"""Rebuild the shipped word-level corpus data/kjv/{train,valid,test}.txt.xz from Debian's bible-kjv packages.

The King James Version (1611) is in the public domain; Debian ships it in the packages ``bible-kjv-text`` (the text in
the Bible Retrieval System's compressed format, /usr/lib/bible.data) and ``bible-kjv`` (the ``bible`` program that
decodes it). This script:

1. downloads both .deb files with ``apt-get download`` (or takes them from --debs DIR), unpacks them with
   ``dpkg-deb -x`` into a temporary directory;
2. prints Genesis 1:1 .. Revelation 22:21 with ``bible -l 100000 -p <dir>/usr/lib gen1:1-rev22:21`` (one verse per
   line; the wide line width stops the program from wrapping verses);
3. keeps the 31,102 verse lines (dropping chapter headings and blank lines) and strips the verse number;
4. normalises each verse: lowercase; tokens are words (letters with inner apostrophes, e.g. ``lord's``), digit runs,
   and every other non-space character on its own (punctuation), joined by single spaces;
5. splits the verses deterministically into contiguous chunks of ``CHUNK_VERSES`` verses; chunk k goes to valid when
   k % 20 == 18, to test when k % 20 == 19, else to train (90/5/5, and every split samples the whole book);
6. builds the vocabulary from train only: the ``VOCAB_SIZE - 1`` most frequent words (ties broken alphabetically)
   plus ``<unk>``; every other word, in every split, becomes ``<unk>`` (PTB convention: the loader appends ``<eos>``
   to each line, so the model's vocabulary is VOCAB_SIZE + 1);
7. writes the three files xz-compressed (preset 9, deterministic) and prints their sizes, token counts and SHA-256.

Usage (as root, after ``apt-get update``)::

    python data/build_corpus.py                 # writes data/kjv/*.txt.xz
    python data/build_corpus.py --debs /tmp/d   # use already downloaded .deb files
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import lzma
import re
import subprocess
import tempfile
from pathlib import Path

PACKAGES = ("bible-kjv-text=4.38", "bible-kjv=4.38")
CHUNK_VERSES = 100
VOCAB_SIZE = 10000
UNK = "<unk>"
TOKEN_PATTERN = re.compile(r"[a-z]+(?:'[a-z]+)*|[0-9]+|[^\sa-z0-9]")
VERSE_LINE = re.compile(r"^\s+\d+\s(.*)$")


def tokenize(text: str) -> list[str]:
    """Lowercase ``text`` and split it into word, number and punctuation tokens."""
    return TOKEN_PATTERN.findall(text.lower())


def extract_verses(debs_dir: Path, work_dir: Path) -> list[str]:
    """Unpack the two .deb files found in ``debs_dir`` and return the KJV verses, one string per verse."""
    debs = sorted(debs_dir.glob("bible-kjv*.deb"))
    if len(debs) != 2:
        raise SystemExit(f"expected bible-kjv and bible-kjv-text .deb files in {debs_dir}, found {[d.name for d in debs]}")
    root = work_dir / "root"
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    printed = subprocess.run(
        [str(root / "usr/bin/bible"), "-l", "100000", "-p", str(root / "usr/lib"), "gen1:1-rev22:21"],
        check=True, capture_output=True, text=True,
    ).stdout
    verses = [m.group(1) for line in printed.splitlines() if (m := VERSE_LINE.match(line))]
    if len(verses) != 31102:  # the KJV has 31,102 verses: anything else means the output format changed
        raise SystemExit(f"expected 31102 verses from the bible program, got {len(verses)}")
    return verses


def split_chunks(lines: list[list[str]]) -> dict[str, list[list[str]]]:
    """Deterministic 90/5/5 split by contiguous chunks of CHUNK_VERSES lines."""
    splits: dict[str, list[list[str]]] = {"train": [], "valid": [], "test": []}
    for start in range(0, len(lines), CHUNK_VERSES):
        chunk_index = start // CHUNK_VERSES
        name = {18: "valid", 19: "test"}.get(chunk_index % 20, "train")
        splits[name].extend(lines[start:start + CHUNK_VERSES])
    return splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--debs", type=Path, default=None, help="directory with the two .deb files (default: download)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "kjv")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work_dir = Path(tmp)
        debs_dir = args.debs
        if debs_dir is None:
            debs_dir = work_dir / "debs"
            debs_dir.mkdir()
            subprocess.run(["apt-get", "download", *PACKAGES], check=True, cwd=debs_dir)
        verses = extract_verses(debs_dir, work_dir)

    tokenized = [tokenize(v) for v in verses]
    splits = split_chunks(tokenized)
    counts = collections.Counter(tok for line in splits["train"] for tok in line)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    vocab = {word for word, _ in ranked[:VOCAB_SIZE - 1]} | {UNK}

    args.out.mkdir(parents=True, exist_ok=True)
    for name, lines in splits.items():
        text = "".join(" ".join(t if t in vocab else UNK for t in line) + "\n" for line in lines)
        blob = lzma.compress(text.encode("utf-8"), format=lzma.FORMAT_XZ, preset=9)
        path = args.out / f"{name}.txt.xz"
        path.write_bytes(blob)
        n_tokens = sum(len(line) for line in lines)
        n_unk = sum(t not in vocab for line in lines for t in line)
        print(f"{path}: {len(lines)} lines, {n_tokens} tokens (+{len(lines)} <eos>), {n_unk} <unk> "
              f"({100.0 * n_unk / n_tokens:.2f}%), {len(blob)} bytes xz, sha256 {hashlib.sha256(blob).hexdigest()}")
    print(f"vocabulary: {len(vocab)} words incl. {UNK} (+ <eos> added by the loader); "
          f"{len(counts)} distinct train tokens")


if __name__ == "__main__":
    main()
