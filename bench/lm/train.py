"""End-to-end word-level language-model benchmark: nn.LSTM vs lstmkern's G-LSTM, F-LSTM, structured (Toeplitz-like and
hybrid) and compressed LSTMs.

Run ``python -m bench.lm.train --help``. Every model in ``--models`` is trained with truncated BPTT (the recurrent state
is carried, detached, from one window to the next), dropout and gradient-norm clipping, then evaluated on the valid and
test splits. One row per model: recurrent and total parameters, valid and test perplexity, training tokens/s and wall
time; printed as a table, written to bench/results/lm-<timestamp>-<device>.json and plotted to a PNG beside it.

Several processes (``torchrun --nproc-per-node N -m bench.lm.train ...``): DistributedDataParallel over gloo (CPU) or
nccl (GPU); the global batch of B streams is split into N contiguous blocks of B/N streams, one per process, so the
averaged gradients and the reported losses are those of one process running the whole batch.

Shape legend: T BPTT length, B global batch, Bl = B / world_size local batch, V vocabulary, H hidden size.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .data import DEFAULT_DATA, Corpus, batchify, bptt_windows, local_columns
from .model import LanguageModel, build_recurrent, check_model_name, count_parameters, detach_state

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"


@dataclasses.dataclass
class Config:
    """Hyper-parameters of one benchmark run (the same for every model in it)."""
    models: tuple[str, ...] = ("lstm", "glstm2", "glstm4", "flstm-64", "flstm-32", "flstm-16", "lstm-iss", "lstm-svd",
                               "toeplitz-4", "toeplitz-12", "toeplitz-16", "hybrid-4-32",
                               "lstmp-64", "glstmp4-64", "flstmp-32-64")
    embedding_size: int = 128
    hidden_size: int = 128
    num_layers: int = 1
    tie_weights: bool = False
    dropout: float = 0.2
    bptt: int = 35
    batch_size: int = 32          # global: split over the processes under torchrun
    eval_batch_size: int = 16     # global as well
    epochs: int = 2
    lr: float = 3e-3              # Adam
    clip: float = 1.0             # max global gradient norm
    max_train_tokens: int = 150_000   # 0 = the whole train split
    max_eval_tokens: int = 20_000     # 0 = the whole valid / test split
    max_steps: int = 0                # 0 = no limit; else stop each epoch after this many steps (tests)
    iss_strength: float = 1.5e-2      # weight of the ISS group-lasso penalty for lstm-iss
    iss_threshold: float = 2e-2       # ISS: weights below this are set to 0 after every step
    svd_rank: int = 32                # rank of lstm-svd's joint factorization
    finetune_epochs: int = 1          # lstm-iss, lstm-svd: epochs of fine-tuning after compression, of `epochs`
    backend: str = "auto"             # lstmkern backend of the GLSTM / FLSTM layers
    dtype: str = "float32"
    seed: int = 1234
    log_interval: int = 50
    compile: bool = False             # train the model under torch.compile (inside DDP when distributed)


PRESETS = {
    # About ten minutes on 2 CPU cores: small models, a 150k-token slice of train, 20k tokens of valid/test, 2 epochs.
    # toeplitz-12 and toeplitz-16 have exactly flstm-32's and glstm4's recurrent parameters at E = H = 128.
    "cpu": {},
    # H = 1024, two layers, the whole train split: meant for one GPU and one 10-minute run of all the models.
    "gpu": dict(embedding_size=1024, hidden_size=1024, num_layers=2, dropout=0.4, batch_size=64, eval_batch_size=32,
                epochs=2, lr=1e-3, max_train_tokens=0, svd_rank=256, log_interval=100,
                models=("lstm", "glstm2", "glstm4", "glstm8", "flstm-512", "flstm-256", "lstm-iss", "lstm-svd",
                        "lstmp-512", "glstmp4-512", "flstmp-256-512")),
}


# ----------------------------------------------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Runtime:
    """Where this process runs: its rank among world_size processes and its device."""
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_runtime(device_arg: str) -> Runtime:
    """Set up torch.distributed when started by torchrun (WORLD_SIZE > 1) and pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device_arg == "auto":
        device_arg = "cuda" if torch.cuda.is_available() else "cpu"
    if device_arg == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' was asked for but torch.cuda.is_available() is False")
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    elif device_arg == "cpu":
        device = torch.device("cpu")
    else:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device_arg!r}")
    if world_size > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(rank, world_size, device)


def all_reduce_sum(values: Tensor, runtime: Runtime) -> Tensor:
    """Sum of ``values`` over the processes (a copy; no-op with one process)."""
    values = values.clone()
    if runtime.distributed:
        dist.all_reduce(values)
    return values


def device_label(device: torch.device) -> str:
    """Short file-name-safe name of the device, e.g. 'cpu' or 'NVIDIA-H100-80GB-HBM3'."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")


# ----------------------------------------------------------------------------------------------------------------
# Training and evaluation
# ----------------------------------------------------------------------------------------------------------------

def evaluate(model: nn.Module, data: Tensor, cfg: Config) -> tuple[float, int]:
    """Sum of the token cross-entropies over this process's columns ``data`` (rows, Bl), and the token count."""
    model.eval()
    total, count, state = 0.0, 0, None
    with torch.no_grad():
        for inputs, targets in bptt_windows(data, cfg.bptt):
            logits, state = model(inputs, state)
            total += nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
            count += targets.numel()
    return total, count


def perplexity(model: nn.Module, data: Tensor, cfg: Config, runtime: Runtime) -> float:
    """exp(mean token cross-entropy) over all processes' columns of ``data``."""
    total, count = evaluate(model, data, cfg)
    summed = all_reduce_sum(torch.tensor([total, float(count)], dtype=torch.float64), runtime)
    return math.exp(summed[0].item() / summed[1].item())


def train_epoch(model: nn.Module, data: Tensor, cfg: Config, optimizer: torch.optim.Optimizer, runtime: Runtime,
                epoch: int, label: str, extra_loss=None, after_step=None) -> dict:
    """One pass of truncated BPTT over this process's columns ``data`` (rows, Bl).

    ``model`` may be DDP-wrapped; ``extra_loss`` (a callable returning a scalar) is added to the loss (e.g. the ISS
    penalty) and ``after_step`` (a callable) runs after every optimizer step (e.g. ISS's zeroing). Returns the per-step losses averaged over processes (the loss of the global batch), the number of
    tokens trained on by all processes, and the seconds spent.
    """
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    total_steps = math.ceil((data.shape[0] - 1) / cfg.bptt)
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    step_losses: list[Tensor] = []
    tokens = 0
    state = None
    start = last_log = time.perf_counter()
    tokens_at_last_log = 0
    for step, (inputs, targets) in enumerate(bptt_windows(data, cfg.bptt), start=1):
        if step > total_steps:
            break
        state = detach_state(state)
        logits, state = model(inputs, state)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        objective = loss if extra_loss is None else loss + extra_loss()
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        torch.nn.utils.clip_grad_norm_(parameters, cfg.clip)
        optimizer.step()
        if after_step is not None:
            after_step()
        step_losses.append(loss.detach())
        tokens += targets.numel() * runtime.world_size
        if cfg.log_interval and (step % cfg.log_interval == 0 or step == total_steps):
            # Every process reaches this line at the same step, so the all-reduce inside is safe.
            recent = all_reduce_sum(torch.stack(step_losses[-cfg.log_interval:]).mean().double(), runtime)
            now = time.perf_counter()
            if runtime.is_main:
                mean_loss = recent.item() / runtime.world_size
                rate = (tokens - tokens_at_last_log) / max(now - last_log, 1e-9)
                print(f"  [{label}] epoch {epoch} step {step:>5}/{total_steps} loss {mean_loss:6.3f} "
                      f"ppl {math.exp(min(mean_loss, 50.0)):9.2f} {rate:9.0f} tok/s", flush=True)
            last_log, tokens_at_last_log = now, tokens
    if runtime.device.type == "cuda":
        torch.cuda.synchronize(runtime.device)
    seconds = time.perf_counter() - start
    losses = all_reduce_sum(torch.stack(step_losses).double(), runtime) / runtime.world_size
    return {"losses": losses.tolist(), "tokens": tokens, "seconds": seconds}


def _wrap(model: nn.Module, runtime: Runtime, compile_model: bool = False) -> nn.Module:
    """``model`` as trained: under torch.compile if asked, then in DDP when distributed (DDP outside, as PyTorch
    recommends, so its bucketed all-reduce overlaps the compiled backward)."""
    if compile_model:
        model = torch.compile(model)
    if not runtime.distributed:
        return model
    device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def _fit(model: nn.Module, train: Tensor, cfg: Config, runtime: Runtime, epochs: int, label: str,
         extra_loss=None, after_step=None) -> dict:
    """Train ``model`` (unwrapped) for ``epochs`` epochs under DDP when distributed; returns the joined epoch logs."""
    wrapped = _wrap(model, runtime, cfg.compile)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    log = {"losses": [], "tokens": 0, "seconds": 0.0}
    for epoch in range(1, epochs + 1):
        result = train_epoch(wrapped, train, cfg, optimizer, runtime, epoch, label, extra_loss, after_step)
        log["losses"] += result["losses"]
        log["tokens"] += result["tokens"]
        log["seconds"] += result["seconds"]
    return log


# ----------------------------------------------------------------------------------------------------------------
# Compression (lstm-iss, lstm-svd)
# ----------------------------------------------------------------------------------------------------------------

class CompressionUnavailable(RuntimeError):
    """lstmkern.compress (or the part of it a model needs) cannot be imported."""


def _import_compress():
    try:
        import lstmkern.compress as compress  # noqa: PLC0415 (optional: written separately from the benchmark)
    except ImportError as err:
        raise CompressionUnavailable(f"lstmkern.compress is not importable ({err})") from err
    return compress


def iss_shrink(model: LanguageModel, cfg: Config) -> str:
    """Zero the small weights of ``model.rnn``'s ISS components, remove the all-zero units (the decoder reads the last
    layer, so it is one of the components' consumers and loses the matching columns); returns a note for the table."""
    from lstmkern.compress import iss  # noqa: PLC0415
    iss.zero_small_(model.rnn, [model.decoder], cfg.iss_threshold)
    model.rnn, (model.decoder,), report = iss.shrink(model.rnn, [model.decoder])
    return f"ISS: hidden {report.hidden_before} -> {report.hidden_after}"


def svd_compress(model: LanguageModel, cfg: Config) -> str:
    """Replace ``model.rnn`` by its rank-``svd_rank`` joint factorization (an FLSTM)."""
    from lstmkern.compress import low_rank  # noqa: PLC0415
    model.rnn = low_rank(model.rnn, cfg.svd_rank, part="joint", method="svd")
    return f"SVD joint rank {cfg.svd_rank}"


# ----------------------------------------------------------------------------------------------------------------
# One model, all models
# ----------------------------------------------------------------------------------------------------------------

def run_model(name: str, corpus: Corpus, cfg: Config, runtime: Runtime, splits: dict[str, Tensor]) -> dict:
    """Train, (compress,) and evaluate one model; returns its result row (the same on every process)."""
    check_model_name(name)
    dtype = getattr(torch, cfg.dtype)
    if name in ("lstm-iss", "lstm-svd"):
        _import_compress()  # fail (and skip the model) before spending time on training
    torch.manual_seed(cfg.seed)  # same initial weights in every process and for every run of a model
    recurrent = build_recurrent(name, cfg.embedding_size, cfg.hidden_size, cfg.num_layers, cfg.dropout,
                                backend=cfg.backend, device=runtime.device, dtype=dtype)
    # ISS removes decoder columns, which a decoder tied to the embedding cannot lose: lstm-iss is always untied.
    tie = cfg.tie_weights and name != "lstm-iss"
    model = LanguageModel(len(corpus), recurrent, cfg.embedding_size, cfg.dropout, tie, device=runtime.device,
                          dtype=dtype)
    notes = ""
    start = time.perf_counter()
    extra_loss = after_step = None
    if name == "lstm-iss":
        # Wen et al. 2018: group lasso over each hidden unit's whole component (its gate rows, its recurrent column and
        # the decoder column reading it), and weights below the threshold set to exactly zero after every step.
        from lstmkern.compress import iss  # noqa: PLC0415
        extra_loss = lambda: cfg.iss_strength * iss.penalty(model.rnn, [model.decoder])  # noqa: E731
        after_step = lambda: iss.zero_small_(model.rnn, [model.decoder], cfg.iss_threshold)  # noqa: E731
    # The compressed models spend `finetune_epochs` of their `epochs` on fine-tuning after compression (without the
    # ISS penalty: Wen et al. fine-tune the learned structure), so every model gets the same passes over the data.
    compressed = name in ("lstm-iss", "lstm-svd")
    epochs = max(cfg.epochs - cfg.finetune_epochs, 1) if compressed else cfg.epochs
    log = _fit(model, splits["train"], cfg, runtime, epochs, name, extra_loss, after_step)
    if compressed:
        notes = iss_shrink(model, cfg) if name == "lstm-iss" else svd_compress(model, cfg)
        notes += f", then {cfg.finetune_epochs} fine-tune epoch(s)"
        finetune = _fit(model, splits["train"], cfg, runtime, cfg.finetune_epochs, name + " finetune")
        log["losses"] += finetune["losses"]
        log["tokens"] += finetune["tokens"]
        log["seconds"] += finetune["seconds"]
    val_ppl = perplexity(model, splits["valid"], cfg, runtime)
    test_ppl = perplexity(model, splits["test"], cfg, runtime)
    if runtime.device.type == "cuda":
        torch.cuda.synchronize(runtime.device)
    wall = time.perf_counter() - start
    return {
        "model": name,
        "recurrent_params": count_parameters(model.rnn),
        "total_params": count_parameters(model),
        "val_ppl": val_ppl,
        "test_ppl": test_ppl,
        "train_tokens_per_s": log["tokens"] / log["seconds"],
        "wall_s": wall,
        "train_losses": log["losses"],
        "notes": notes,
    }


def format_table(rows: list[dict]) -> str:
    """The result rows as a Markdown table."""
    lines = ["| model | recurrent params | total params | val ppl | test ppl | train tok/s | wall s | notes |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['model']} | - | - | - | - | - | - | skipped: {r['skipped']} |")
            continue
        lines.append(f"| {r['model']} | {r['recurrent_params']:,} | {r['total_params']:,} | {r['val_ppl']:.2f} | "
                     f"{r['test_ppl']:.2f} | {r['train_tokens_per_s']:,.0f} | {r['wall_s']:.1f} | {r['notes']} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> str:
    """Test perplexity vs recurrent parameters and vs wall time, one point per model; returns what was done."""
    try:
        import matplotlib  # noqa: PLC0415
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return "matplotlib is not installed: no plot (pip install matplotlib to get one)"
    done = [r for r in rows if "skipped" not in r]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, xlabel in ((axes[0], "recurrent_params", "recurrent parameters"), (axes[1], "wall_s", "wall time (s)")):
        for r in done:
            ax.scatter(r[key], r["test_ppl"])
            ax.annotate(r["model"], (r[key], r["test_ppl"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test perplexity")
        ax.grid(True, alpha=0.3)
    fig.suptitle("word-level LM: test perplexity")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot: {path}"


def parse_args(argv=None) -> tuple[argparse.Namespace, Config]:
    parser = argparse.ArgumentParser(prog="python -m bench.lm.train", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                        help="defaults for everything below (cpu: a few minutes on 2 cores; gpu: H=1024 on one GPU)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="directory with train/valid/test text files in PTB/WikiText form (default: shipped KJV)")
    parser.add_argument("--models", type=str, default=None,
                        help="comma-separated: lstm, glstm<G>, flstm-<R>, lstm-iss, lstm-svd, lstmp-<P>, "
                             "glstmp<G>-<P>, flstmp-<R>-<P>, toeplitz-<r>, hybrid-<r>-<P> (see bench/lm/model.py)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/lm-<time>-<dev>.json)")
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")
    for field in dataclasses.fields(Config):
        if field.name == "models":
            continue
        flag = "--" + field.name.replace("_", "-")
        if field.type in ("bool", bool):
            parser.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=None,
                                metavar="BOOL")
        else:
            kind = {"int": int, "float": float, "str": str}[field.type if isinstance(field.type, str) else
                                                           field.type.__name__]
            parser.add_argument(flag, type=kind, default=None)
    args = parser.parse_args(argv)
    values = dataclasses.asdict(Config())
    values.update(PRESETS[args.preset])
    for field in dataclasses.fields(Config):
        given = getattr(args, field.name, None)
        if given is not None:
            values[field.name] = given
    if args.models is not None:
        values["models"] = tuple(m.strip() for m in args.models.split(",") if m.strip())
    cfg = Config(**values)
    for name in cfg.models:
        check_model_name(name)
    if cfg.dtype not in ("float32", "float64", "bfloat16", "float16"):
        raise ValueError(f"dtype must be float32, float64, bfloat16 or float16, got {cfg.dtype!r}")
    return args, cfg


def main(argv=None) -> list[dict]:
    args, cfg = parse_args(argv)
    runtime = init_runtime(args.device)
    if runtime.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ and runtime.distributed:
        torch.set_num_threads(1)  # N processes on a few cores: one thread each, or they fight over the cores
    say = print if runtime.is_main else (lambda *a, **k: None)
    corpus = Corpus(args.data)
    train_ids = corpus.train[: cfg.max_train_tokens] if cfg.max_train_tokens else corpus.train
    valid_ids = corpus.valid[: cfg.max_eval_tokens] if cfg.max_eval_tokens else corpus.valid
    test_ids = corpus.test[: cfg.max_eval_tokens] if cfg.max_eval_tokens else corpus.test
    splits = {
        "train": local_columns(batchify(train_ids, cfg.batch_size), runtime.rank, runtime.world_size).to(runtime.device),
        "valid": local_columns(batchify(valid_ids, cfg.eval_batch_size), runtime.rank, runtime.world_size).to(runtime.device),
        "test": local_columns(batchify(test_ids, cfg.eval_batch_size), runtime.rank, runtime.world_size).to(runtime.device),
    }
    say(f"lstm LM benchmark: data {args.data} (vocab {len(corpus)}; train {train_ids.numel():,} of "
        f"{corpus.train.numel():,} tokens, valid {valid_ids.numel():,}, test {test_ids.numel():,}); "
        f"device {runtime.device} x {runtime.world_size} process(es), {torch.get_num_threads()} thread(s) each")
    say("config: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cfg).items()), flush=True)

    rows = []
    for name in cfg.models:
        say(f"== {name}", flush=True)
        try:
            row = run_model(name, corpus, cfg, runtime, splits)
        except CompressionUnavailable as err:
            say(f"  skipping {name}: {err}", flush=True)
            rows.append({"model": name, "skipped": str(err)})
            continue
        say(f"  {name}: val ppl {row['val_ppl']:.2f} test ppl {row['test_ppl']:.2f} "
            f"({row['train_tokens_per_s']:,.0f} tok/s, {row['wall_s']:.1f} s) {row['notes']}", flush=True)
        rows.append(row)

    if runtime.is_main:
        print()
        print(format_table(rows))
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
        out = args.out or RESULTS_DIR / f"lm-{stamp}-{device_label(runtime.device)}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        from bench.bench_kernels import read_commit  # noqa: PLC0415 (the kernel benchmark's reader of .git)
        meta = {"commit": read_commit(), "command": " ".join([Path(sys.executable).name, "-m", "bench.lm.train", *sys.argv[1:]]),
                "preset": args.preset, "data": str(args.data), "device": device_label(runtime.device),
                "world_size": runtime.world_size, "threads_per_process": torch.get_num_threads(),
                "torch": torch.__version__, "python": platform.python_version(), "utc": stamp,
                "config": dataclasses.asdict(cfg)}
        out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
        print(f"results: {out}")
        if not args.no_plot:
            print(plot(rows, out.with_suffix(".png")))
    if runtime.distributed:
        # Rank 0 writes the results while the others are done: without the barrier a rank tears its gloo pairs down
        # while rank 0 still holds them, which aborted rank 1 at exit once in CI-like runs ("terminate called without
        # an active exception").
        dist.barrier()
        dist.destroy_process_group()
    return rows


if __name__ == "__main__":
    main()
