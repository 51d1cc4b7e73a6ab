"""Tests of the word-level LM benchmark (bench/lm): data handling, one real training epoch, and DDP == one process."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.lm import train as lm_train
from bench.lm.data import DEFAULT_DATA, EOS, UNK, Corpus, batchify, bptt_windows, local_columns

REPO = Path(__file__).resolve().parents[1]


def test_shipped_corpus_is_real_and_split():
    corpus = Corpus(DEFAULT_DATA)
    assert len(corpus) == 10001  # 10k words incl. <unk>, plus <eos>
    assert corpus.train.numel() > 800_000
    assert 40_000 < corpus.valid.numel() < 60_000 and 40_000 < corpus.test.numel() < 60_000
    first = " ".join(corpus.words[i] for i in corpus.train[:10].tolist())
    assert first == "in the beginning god created the heaven and the earth"
    unk_share = (corpus.valid == corpus.index[UNK]).double().mean().item()
    assert unk_share < 0.02


def test_corpus_from_ptb_style_directory(tmp_path):
    (tmp_path / "ptb.train.txt").write_text(" the cat sat <unk> \n\n the dog sat \n")
    (tmp_path / "ptb.valid.txt").write_text(" the bird sat \n")
    (tmp_path / "ptb.test.txt").write_text(" a cat \n")
    corpus = Corpus(tmp_path)
    assert corpus.words == ["the", "cat", "sat", UNK, EOS, "dog"]
    assert corpus.train.tolist() == [0, 1, 2, 3, 4, 0, 5, 2, 4]
    assert corpus.valid.tolist() == [0, 3, 2, 4]  # "bird" is not in train: <unk>
    assert corpus.test.tolist() == [3, 1, 4]
    with pytest.raises(ValueError, match="data must be a directory"):
        Corpus(tmp_path / "missing")


def test_batching_covers_the_global_batch_exactly():
    ids = torch.arange(103)
    batched = batchify(ids, 4)  # (25, 4): column b is ids[25b : 25b + 25]
    assert batched.shape == (25, 4)
    assert batched[:, 2].tolist() == list(range(50, 75))
    halves = [local_columns(batched, rank, 2) for rank in range(2)]
    assert torch.equal(torch.cat(halves, dim=1), batched)
    windows = list(bptt_windows(batched, 7))
    assert [w[0].shape[0] for w in windows] == [7, 7, 7, 3]  # 24 input rows: the last row is only a target
    for inputs, targets in windows:
        assert torch.equal(inputs + 1, targets)  # targets are the next token of the same stream
    with pytest.raises(ValueError, match="divisible"):
        local_columns(batched, 0, 3)


def test_one_epoch_trains_and_perplexity_drops(tmp_path):
    out = tmp_path / "lm.json"
    rows = lm_train.main([
        "--models", "glstm3,flstm-7", "--device", "cpu", "--embedding-size", "15", "--hidden-size", "15",
        "--max-train-tokens", "6000", "--max-eval-tokens", "2000", "--batch-size", "8", "--bptt", "13",
        "--epochs", "1", "--lr", "0.01", "--log-interval", "0", "--no-plot", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert [r["model"] for r in saved["rows"]] == ["glstm3", "flstm-7"]
    for row in rows:
        losses = row["train_losses"]
        assert len(losses) == math.ceil((6000 // 8 - 1) / 13)
        assert all(math.isfinite(v) for v in losses)
        # Uniform guessing over 10001 words is ln(10001) = 9.21 nats; one epoch must get well below it.
        assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0
        assert math.isfinite(row["val_ppl"]) and row["val_ppl"] < 2000
        assert math.isfinite(row["test_ppl"]) and row["test_ppl"] < 2000
        assert row["recurrent_params"] < row["total_params"]


def _run_benchmark(launcher: list[str], out: Path) -> dict:
    """Run bench.lm.train in a fresh process (group) on a tiny float64 GLSTM setup; return the saved JSON."""
    args = ["-m", "bench.lm.train", "--models", "glstm2", "--device", "cpu", "--dtype", "float64",
            "--dropout", "0", "--embedding-size", "8", "--hidden-size", "10", "--batch-size", "4",
            "--eval-batch-size", "4", "--bptt", "9", "--max-train-tokens", "3000", "--max-eval-tokens", "800",
            "--max-steps", "5", "--epochs", "2", "--log-interval", "0", "--no-plot", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, *launcher, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


def test_two_ddp_processes_match_one_process(tmp_path):
    single = _run_benchmark([], tmp_path / "one.json")
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    double = _run_benchmark(torchrun, tmp_path / "two.json")
    assert double["meta"]["world_size"] == 2 and single["meta"]["world_size"] == 1
    one, two = single["rows"][0], double["rows"][0]
    assert len(one["train_losses"]) == len(two["train_losses"]) == 10  # 2 epochs x 5 steps
    # Each process trains on half of the 4 streams; DDP averages the gradients, so every step's weights, and with
    # them the global-batch losses and the evaluation, must equal the single-process run's.
    torch.testing.assert_close(torch.tensor(two["train_losses"]), torch.tensor(one["train_losses"]),
                               rtol=1e-9, atol=1e-9)
    assert math.isclose(two["val_ppl"], one["val_ppl"], rel_tol=1e-9)
    assert math.isclose(two["test_ppl"], one["test_ppl"], rel_tol=1e-9)
    assert one["train_losses"][-1] < one["train_losses"][0]


def test_compiled_training_matches_eager(tmp_path):
    """--compile trains the same model under torch.compile: in float64 without dropout, the same losses step by step."""
    args = ["--models", "glstm2,flstm-3", "--device", "cpu", "--dtype", "float64", "--dropout", "0",
            "--embedding-size", "8", "--hidden-size", "10", "--batch-size", "4", "--eval-batch-size", "4", "--bptt", "9",
            "--max-train-tokens", "2000", "--max-eval-tokens", "500", "--max-steps", "4", "--epochs", "1",
            "--log-interval", "0", "--no-plot"]
    eager = lm_train.main(args + ["--out", str(tmp_path / "eager.json")])
    compiled = lm_train.main(args + ["--compile", "true", "--out", str(tmp_path / "compiled.json")])
    for e, c in zip(eager, compiled):
        assert len(e["train_losses"]) == len(c["train_losses"]) == 4
        torch.testing.assert_close(torch.tensor(c["train_losses"]), torch.tensor(e["train_losses"]), rtol=1e-9,
                                   atol=1e-9)
        assert math.isclose(c["val_ppl"], e["val_ppl"], rel_tol=1e-9)


def test_compressed_models_shrink_then_fine_tune(tmp_path):
    """lstm-iss and lstm-svd: trained, compressed (fewer recurrent parameters than nn.LSTM), then fine-tuned."""
    rows = lm_train.main([
        "--models", "lstm,lstm-iss,lstm-svd", "--device", "cpu", "--embedding-size", "12", "--hidden-size", "16",
        "--max-train-tokens", "3000", "--max-eval-tokens", "600", "--batch-size", "8", "--bptt", "10", "--epochs", "2",
        "--max-steps", "6", "--lr", "0.05", "--iss-strength", "1.0", "--iss-threshold", "0.05", "--svd-rank", "4",
        "--log-interval", "0", "--no-plot", "--out", str(tmp_path / "lm.json")])
    dense, iss_row, svd_row = rows
    for row in (iss_row, svd_row):
        assert len(row["train_losses"]) == 12  # 1 epoch before compression + 1 fine-tune epoch, 6 steps each
        assert row["recurrent_params"] < dense["recurrent_params"]
        assert "fine-tune" in row["notes"]
        assert math.isfinite(row["test_ppl"])
    assert svd_row["recurrent_params"] == 4 * (12 + 16) + 4 * 16 * 4 + 4 * 16  # W1 (R, I+H), W2 (4H, R), bias (4H,)
    assert "hidden [16] -> [" in iss_row["notes"]


def test_structured_and_hybrid_models_train(tmp_path):
    """toeplitz-<r> and hybrid-<r>-<P>: built as named (true parameter counts), trained end to end on the corpus."""
    from bench.lm.model import build_recurrent, check_model_name, count_parameters

    for bad in ("toeplitz", "toeplitz-0", "hybrid-4", "hybrid-0-3", "toeplitz-2-3"):
        with pytest.raises(ValueError, match="unknown model"):
            check_model_name(bad)
    E, H, r, P = 12, 10, 3, 4
    toeplitz = build_recurrent("toeplitz-3", E, H, 1, 0.0)
    assert count_parameters(toeplitz) == 2 * r * H * (4 * 2 + 4) + 4 * H  # 2 column blocks of H for E = 12 inputs
    hybrid = build_recurrent("hybrid-3-4", E, H, 1, 0.2)
    lstmp = 4 * H * (H + P) + 8 * H + P * H  # nn.LSTM(H, H, proj_size=P): W_ih, W_hh (4H, P), two biases, W_hr
    assert count_parameters(hybrid) == count_parameters(toeplitz) + lstmp
    rows = lm_train.main([
        "--models", "toeplitz-3,hybrid-3-4", "--device", "cpu", "--embedding-size", str(E), "--hidden-size", str(H),
        "--max-train-tokens", "3000", "--max-eval-tokens", "600", "--batch-size", "8", "--bptt", "10", "--epochs", "1",
        "--max-steps", "12", "--lr", "0.02", "--log-interval", "0", "--no-plot", "--out", str(tmp_path / "lm.json")])
    vocab = 10001
    for row, recurrent, width in zip(rows, (toeplitz, hybrid), (H, P)):
        assert row["recurrent_params"] == count_parameters(recurrent)
        assert row["total_params"] == row["recurrent_params"] + vocab * E + (width + 1) * vocab  # decoder reads width
        losses = row["train_losses"]
        assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
        assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses
        assert math.isfinite(row["test_ppl"])


def test_projected_models_train(tmp_path):
    """lstmp-<P>, glstmp<G>-<P>, flstmp-<R>-<P> (the f-lm table's shapes, scaled down): true parameter counts, the
    decoder reads P features, and they train end to end on the corpus."""
    from bench.lm.model import build_recurrent, check_model_name, count_parameters

    for bad in ("lstmp", "lstmp-0", "glstmp4", "flstmp-3"):
        with pytest.raises(ValueError, match="unknown model"):
            check_model_name(bad)
    E, H, P, G, R = 12, 16, 4, 2, 6
    lstmp = build_recurrent("lstmp-4", E, H, 1, 0.0)
    glstmp = build_recurrent("glstmp2-4", E, H, 1, 0.0)
    flstmp = build_recurrent("flstmp-6-4", E, H, 1, 0.0)
    assert count_parameters(lstmp) == 4 * H * (E + P) + 8 * H + P * H
    assert count_parameters(glstmp) == 4 * H * (E + P) // G + 4 * H + P * H
    assert count_parameters(flstmp) == R * (E + P) + 4 * H * R + 4 * H + P * H
    rows = lm_train.main([
        "--models", "lstmp-4,glstmp2-4,flstmp-6-4", "--device", "cpu", "--embedding-size", str(E),
        "--hidden-size", str(H), "--max-train-tokens", "3000", "--max-eval-tokens", "600", "--batch-size", "8",
        "--bptt", "10", "--epochs", "1", "--max-steps", "12", "--lr", "0.02", "--log-interval", "0", "--no-plot",
        "--out", str(tmp_path / "lm.json")])
    vocab = 10001
    for row, recurrent in zip(rows, (lstmp, glstmp, flstmp)):
        assert row["recurrent_params"] == count_parameters(recurrent)
        assert row["total_params"] == row["recurrent_params"] + vocab * E + (P + 1) * vocab
        losses = row["train_losses"]
        assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
        assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses
