"""Where the FFT product of a Toeplitz-like LSTM layer beats the dense one: one step's recurrent product.

For each hidden size H and displacement rank r, times the product a ToeplitzLikeLSTM layer makes at every time step,
gates (B, 4H) = h (B, H) times the 4H x H recurrent matrix, two ways on the same h:
    fft    lstmkern.structured's FFT path (the generators' spectra formed once per forward call, as the layer does,
           so they are outside the timing: per step only FFT(h), r inverse FFTs and rffts per gate, one irfft)
    dense  h @ W.T with the same matrix written out (torch.matmul, i.e. MKL/OpenBLAS on CPU)
Repetitions are interleaved (fft, dense, fft, dense, ...) so drifting machine load hits both alike; each repetition
runs the product in a loop for at least --min-seconds and the table reports the median time per product.
Clock: by default one thread and the process's CPU time (time.process_time), which other processes competing for the
cores do not inflate (a shared machine's wall times scatter by 10x); --clock wall with --threads N for wall time.
The crossover for each (r, B) is the smallest H from which the FFT path is faster at every larger H measured.

    python -m bench.bench_structured                               # H = 64..4096, r = 1, 4, 16, B = 1 and 32
    python -m bench.bench_structured --sizes 256,1024 --ranks 4 --batch 32 --threads 2

Shape legend: B batch, H hidden size (= block size n), r displacement rank.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from lstmkern.structured import _apply, _spectra, toeplitz_like_dense

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of positive ints, got {text!r}")
    return values


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_structured", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=_ints, default=[64, 128, 256, 512, 1024, 2048, 4096], help="hidden sizes H")
    parser.add_argument("--ranks", type=_ints, default=[1, 4, 16], help="displacement ranks r")
    parser.add_argument("--batch", type=_ints, default=[1, 32], help="batch sizes B")
    parser.add_argument("--reps", type=int, default=7, help="interleaved repetitions per case (median reported)")
    parser.add_argument("--min-seconds", type=float, default=0.05, help="minimum length of one timed repetition")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="cpu: process CPU time (robust to other load; meant for --threads 1); wall: perf_counter")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default bench/results/structured-<time>-cpu.json)")
    return parser.parse_args(argv)


def _calls_per_rep(fn, min_seconds: float, clock) -> int:
    """Calls that take about ``min_seconds`` (at least one), from one timed warm call after a first one."""
    fn()
    start = clock()
    fn()
    once = max(clock() - start, 1e-7)
    return max(1, int(min_seconds / once))


def _time_rep(fn, calls: int, clock) -> float:
    start = clock()
    for _ in range(calls):
        fn()
    return (clock() - start) / calls


def measure(H: int, r: int, B: int, reps: int, min_seconds: float, dtype: torch.dtype, clock=time.perf_counter
            ) -> dict:
    """Median seconds per product of the FFT and dense paths for one (H, r, B)."""
    generator_scale = (3.0 * r * H * H) ** -0.25
    g = torch.randn(4, 1, r, H, dtype=dtype) * generator_scale
    h = torch.randn(4, 1, r, H, dtype=dtype) * generator_scale
    spectra = _spectra(g, h)
    # The dense operand: the same matrix, as the FFT path's image of the identity (O(r H^2 log H); the explicit
    # construction costs O(r H^3), hours at H = 4096). Checked against the explicit one where that is cheap.
    weight = _apply(torch.eye(H, dtype=dtype), spectra).T.contiguous()          # (4H, H)
    if H <= 256:
        torch.testing.assert_close(weight, toeplitz_like_dense(g, h), rtol=1e-4, atol=1e-5)
    state = torch.randn(B, H, dtype=dtype)
    impls = {"fft": lambda: _apply(state, spectra), "dense": lambda: torch.matmul(state, weight.T)}
    max_error = (impls["fft"]() - impls["dense"]()).abs().max().item()
    calls = {name: _calls_per_rep(fn, min_seconds, clock) for name, fn in impls.items()}
    times = {name: [] for name in impls}
    for _ in range(reps):
        for name, fn in impls.items():
            times[name].append(_time_rep(fn, calls[name], clock))
    fft_s, dense_s = statistics.median(times["fft"]), statistics.median(times["dense"])
    return {"H": H, "r": r, "B": B, "fft_us": fft_s * 1e6, "dense_us": dense_s * 1e6, "speedup": dense_s / fft_s,
            "max_abs_diff": max_error, "calls_per_rep": calls}


def crossovers(rows: list[dict]) -> dict[str, int | None]:
    """For each (r, B): the smallest H from which the FFT path is faster at every larger measured H (None: never)."""
    result = {}
    for key in sorted({(row["r"], row["B"]) for row in rows}):
        series = sorted((row for row in rows if (row["r"], row["B"]) == key), key=lambda row: row["H"])
        crossover = None
        for row in reversed(series):
            if row["fft_us"] >= row["dense_us"]:
                break
            crossover = row["H"]
        result[f"r={key[0]} B={key[1]}"] = crossover
    return result


def format_table(rows: list[dict]) -> str:
    lines = ["| H | r | B | dense us | fft us | dense / fft |", "|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['H']} | {row['r']} | {row['B']} | {row['dense_us']:,.1f} | {row['fft_us']:,.1f} | "
                     f"{row['speedup']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"recurrent step product, Toeplitz-like (FFT) vs dense, {args.dtype}, {torch.get_num_threads()} thread(s), "
          f"{args.clock} clock, torch {torch.__version__}", flush=True)
    rows = []
    with torch.no_grad():
        for H in args.sizes:
            for r in args.ranks:
                if r > H:
                    continue
                for B in args.batch:
                    row = measure(H, r, B, args.reps, args.min_seconds, dtype, clock)
                    print(f"  H={H:>5} r={r:>3} B={B:>3}: dense {row['dense_us']:>11,.1f} us  "
                          f"fft {row['fft_us']:>11,.1f} us  ({row['speedup']:.2f}x)", flush=True)
                    rows.append(row)
    table, cross = format_table(rows), crossovers(rows)
    print()
    print(table)
    print("crossover H (FFT faster from this H on): " + ", ".join(f"{k}: {v}" for k, v in cross.items()))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS_DIR / f"structured-{stamp}-cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    from bench.bench_kernels import read_commit  # noqa: PLC0415
    meta = {"commit": read_commit(), "command": " ".join(["python", "-m", "bench.bench_structured", *sys.argv[1:]])
            if argv is None else "main(" + repr(argv) + ")", "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "dtype": args.dtype, "reps": args.reps, "clock": args.clock, "utc": stamp}
    out.write_text(json.dumps({"meta": meta, "rows": rows, "crossover_H": cross}, indent=1) + "\n")
    print(f"results: {out}")
    return rows


if __name__ == "__main__":
    main()
