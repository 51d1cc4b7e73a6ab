"""Kernel microbenchmark: lstmkern's backends against cuDNN, plain PyTorch loops, torch.compile and FlashRNN.

Run ``python -m bench.bench_kernels`` (or ``python bench/bench_kernels.py``) from the repository root; ``--help`` lists
the options. Every implementation of a case runs in the same process, on the same random inputs and in the same dtype.

Shape legend (as everywhere in lstmkern):
    T  time steps            B  batch size
    I  input features        H  hidden units
    G  groups (G-LSTM)       R  rank of the factorization (F-LSTM)
    P  projection (LSTMP, nn.LSTM's proj_size; 0 = none): the output and the recurrent input are P wide
    Ig = I / G, Hg = H / G   per-group input and hidden sizes

What one case measures (one config x one implementation x one mode):
    ms, ms_p20, ms_p80   median and 20th/80th percentiles of the wall time of one call. On a GPU:
                         triton.testing.do_bench (CUDA events, L2 flushed between calls) after warm-up calls that absorb
                         compilation and autotuning. On CPU: time.perf_counter around each call, with the
                         implementations of one (config, mode) interleaved: every repetition times one call of each, in
                         an order that rotates from repetition to repetition, after two warm-up calls each; so a burst
                         of load from other processes hits all of them alike instead of one implementation's whole
                         series (a shared machine otherwise produces nonsense ratios). Every call takes the next of
                         several pre-generated random input sets (x, h0, c0 and the upstream gradient), so no call
                         re-reads the inputs the previous one left in cache.
    spread, unstable     spread = (ms_p80 - ms_p20) / ms. Above UNSTABLE_SPREAD the whole (config, mode) group is
                         measured once more (``remeasured``); a row still above it is flagged ``unstable`` (and its
                         speed-ups marked) rather than reported as if it were a number.
    tflops               GPU only (null on CPU): the model's FLOPs / median time. FLOPs count the GEMMs of the model the
                         implementation runs (input projection + recurrence; pointwise work is not counted), x3 for
                         fwdbwd.
    floor_ms             GPU only (null on CPU): max(FLOPs / matmul rate, compulsory bytes / copy bandwidth), both
                         ceilings measured in this run (a large matmul and a large device copy). It ignores the
                         sequential dependency through time, so it is a lower bound no recurrent kernel can reach at
                         small batch; ``frac_of_floor`` = floor/ms. On a CPU shared with other processes neither ceiling
                         means anything, so neither is measured there.
    peak_mb              extra memory one call allocates (CUDA caching allocator peak minus what was allocated before
                         the call) plus the bytes of the one input set and weights it uses; null on CPU.
    split                fwdbwd cases: per-call milliseconds of the forward, the backward's recurrence and the
                         backward's time-parallel GEMMs (gate recompute, dx, weight gradients), from extra profiled
                         calls after the timing (bench/phases.py; ``--no-split`` turns it off).
    max_rel_err/correct  lstmkern implementations only: normwise relative error max|a - ref| / max|ref|, maximised over
                         output, h_n, c_n (and for fwdbwd dx, dh0, dc0 and every weight gradient), against the float64
                         reference of lstmkern.reference on the same inputs cut to the first ``--check-t`` steps.

Modes: ``fwd`` runs the forward under torch.no_grad(); ``fwdbwd`` runs forward + backward with a random upstream
gradient on the output (x requires grad, as it would inside a stacked model).

Without CUDA (or with --device cpu) this runs the CPU set: lstmkern's C++ "cpu" backend against nn.LSTM of the same
size (oneDNN's fused LSTM where torch has it) and of the same parameter count, the reference backend and the naive
loop, at T=64, B=16 (CPU_DEFAULT; ``--configs cpu-targets`` is issue 14's comparison at I=H=1024 and 128; ``--configs
cpu-glstm,cpu-flstm`` the tiny smoke set, which also runs interpreted Triton). ``--threads`` fixes torch's thread
count. The json goes to a temporary directory unless ``--out`` is given, so CI never dirties the tree.

``--configs biglstm`` (GPU) is issue 13's comparison in the shape of f-lm's BIGLSTM scaled to one GPU: LSTMP cells
H = 4096 projected to P = 1024, as G-LSTM G = 4 and F-LSTM R = 512, against cuDNN's nn.LSTM(proj_size=1024).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import re
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
PROCESS_START = time.monotonic()  # --time-budget counts from here (CUDA start-up and the ceilings included)

IMPL_NAMES = (
    "lstmkern-cuda", "lstmkern-triton", "lstmkern-cpu", "lstmkern-reference",
    "cudnn", "cudnn-sameparams", "torch-naive", "torch-compile", "flashrnn",
)
LSTMKERN_IMPLS = ("lstmkern-cuda", "lstmkern-triton", "lstmkern-cpu", "lstmkern-reference")
IMPL_TIERS = (("lstmkern-cuda", "lstmkern-triton", "lstmkern-cpu", "cudnn", "cudnn-sameparams", "flashrnn"),
              ("lstmkern-reference", "torch-naive"), ("torch-compile",))
MODES = ("fwd", "fwdbwd")
SWEEP_PARAMS = ("H", "G", "R", "B", "T")

# Where glstm-flashrnn comes from: FlashRNN's speed experiments (the head-dimension figure of the README and of the
# paper, arXiv:2412.07752) run B=16, T=1024, bfloat16, hidden size 768 split into (head dim, heads) pairs; (64, 12) is
# the pair their batch-size and sequence-length experiments also use. Heads map to G-LSTM groups.
BIGLSTM_SOURCE = ("Kuchaiev & Ginsburg 2017 (f-lm): BIGLSTM = LSTMP 8192 cells projected to 1024; here H = 4096 so that "
                  "one layer fits one GPU comfortably")
FLASHRNN_SOURCE = ("FlashRNN speed experiments, NX-AI/flashrnn flashrnn/speed_experiments/kernel_speed_benchmark.py "
                   "(head-dimension benchmark: B=16, T=1024, bfloat16, hidden 768 as head_dim x heads; (64, 12) also "
                   "used by its batch-size and sequence-length benchmarks), README speed figure and arXiv:2412.07752")

# Correctness tolerance of the normwise relative error against float64, per dtype. bf16 keeps 8 mantissa bits and h is
# rounded to it every step, so a few ulps of drift over --check-t steps is expected; fp32 allows for TF32 GEMMs.
REL_TOL = {"bfloat16": 3e-2, "float16": 1e-2, "float32": 5e-3, "float64": 1e-9}

# A row whose (p80 - p20) / median exceeds this is re-measured once, then flagged unstable.
UNSTABLE_SPREAD = 0.25
# On CPU the Triton backend runs interpreted: only on configs this small (T * B * max(I, H)).
CPU_TRITON_MAX_WORK = 4096


# ----------------------------------------------------------------------------------------------------------------------
# Command line. Parsed before torch/triton are imported: on CPU, TRITON_INTERPRET=1 must be set before triton loads.
# ----------------------------------------------------------------------------------------------------------------------

def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.bench_kernels",
        description="Time lstmkern's backends against cuDNN, PyTorch loops, torch.compile and FlashRNN.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python -m bench.bench_kernels                          # default configs (GPU) or CPU smoke set\n"
               "  python -m bench.bench_kernels --configs glstm-infer,flstm-infer\n"
               "  python -m bench.bench_kernels --sweep H --values 256,512,1024 --base glstm-infer\n"
               "  python -m bench.bench_kernels --sweep G --impls lstmkern-cuda,cudnn\n"
               "  python -m bench.bench_kernels --device cpu --threads 2 --configs cpu-targets\n"
               "  python -m bench.bench_kernels --list")
    p.add_argument("--configs", default=None,
                   help="comma-separated config names (see --list); default: all default configs of the device")
    p.add_argument("--sweep", choices=SWEEP_PARAMS, default=None,
                   help="also run a sweep over one parameter of --base (H sweeps I=H together)")
    p.add_argument("--values", default=None, help="comma-separated values for --sweep (default: a built-in list)")
    p.add_argument("--base", default=None,
                   help="config the sweep starts from (default: glstm-infer, flstm-infer for R; cpu-* on CPU)")
    p.add_argument("--impls", default=None, help=f"comma-separated subset of {', '.join(IMPL_NAMES)}")
    p.add_argument("--modes", default=None, help="comma-separated subset of fwd,fwdbwd (default: each config's modes)")
    p.add_argument("--dtype", default=None, choices=("bfloat16", "float16", "float32", "float64"),
                   help="default: bfloat16 on GPU, float32 on CPU")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"),
                   help="cpu forces the CPU smoke set even where CUDA exists (the test suite uses this)")
    p.add_argument("--out", default=None,
                   help="json path; default bench/results/<timestamp>-<gpu>.json on GPU, a temp dir on CPU")
    p.add_argument("--input-sets", type=int, default=None, help="random input sets rotated per call (GPU 4, CPU 2)")
    p.add_argument("--warmup-ms", type=float, default=25.0, help="do_bench warm-up time per case (GPU)")
    p.add_argument("--rep-ms", type=float, default=100.0, help="do_bench measuring time per case (GPU)")
    p.add_argument("--cpu-reps", type=int, default=7,
                   help="interleaved repetitions on CPU (each times one call of every implementation of the case)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for the whole run (CPU); default: torch's own choice")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds after start-up after which no new case starts (the rest is recorded as skipped)")
    p.add_argument("--check-t", type=int, default=32, help="time steps of the float64 correctness check")
    p.add_argument("--no-check", action="store_true", help="skip the float64 correctness check")
    p.add_argument("--no-plot", action="store_true", help="do not write the sweep plot")
    p.add_argument("--no-split", action="store_true",
                   help="do not profile the fwd / recurrent bwd / GEMM split of fwdbwd cases")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--list", action="store_true", help="list the configs and exit")
    return p


ARGS = build_arg_parser().parse_args() if __name__ == "__main__" else None

import torch  # noqa: E402  (after argument parsing on purpose, see above)

if __name__ == "__main__":
    _FORCE_CPU = ARGS.device == "cpu"
    if ARGS.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda was asked for but torch.cuda.is_available() is False")
    if _FORCE_CPU or not torch.cuda.is_available():
        # The Triton backend can only run on CPU tensors through the interpreter, which reads this at import time.
        os.environ.setdefault("TRITON_INTERPRET", "1")

if str(REPO_ROOT) not in sys.path:  # `python bench/bench_kernels.py` without an installed lstmkern
    sys.path.insert(0, str(REPO_ROOT))

from torch import Tensor, nn  # noqa: E402

from bench.phases import profile_split, split_table  # noqa: E402
from lstmkern.triton_kernels.step_graph import stats as step_graph_stats  # noqa: E402


# ----------------------------------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchConfig:
    """One benchmark shape. ``op`` is "glstm" (uses G) or "flstm" (uses R)."""
    name: str
    op: str
    modes: tuple[str, ...]
    B: int
    T: int
    I: int
    H: int
    G: int | None = None
    R: int | None = None
    P: int = 0
    source: str | None = None
    sweep: str | None = None
    sweep_value: int | None = None

    def describe(self) -> str:
        extra = (f"G{self.G}" if self.op == "glstm" else f"R{self.R}") + (f" P{self.P}" if self.P else "")
        return f"{self.name}: {self.op} {'+'.join(self.modes)} B{self.B} T{self.T} I{self.I} H{self.H} {extra}"

    @property
    def out(self) -> int:
        """Width of the output and of the recurrent input: P with a projection, else H."""
        return self.P or self.H


GPU_CONFIGS = {c.name: c for c in (
    BenchConfig("glstm-infer", "glstm", ("fwd",), B=16, T=512, I=1024, H=1024, G=4),
    BenchConfig("glstm-train", "glstm", ("fwdbwd",), B=64, T=256, I=2048, H=2048, G=8),
    BenchConfig("flstm-infer", "flstm", ("fwd",), B=16, T=512, I=1024, H=1024, R=256),
    BenchConfig("flstm-train", "flstm", ("fwdbwd",), B=64, T=256, I=2048, H=2048, R=512),
    BenchConfig("glstm-flashrnn", "glstm", ("fwd", "fwdbwd"), B=16, T=1024, I=768, H=768, G=12,
                source=FLASHRNN_SOURCE),
    # f-lm's BIGLSTM (8192 cells projected to 1024, 1024-wide input) scaled to one GPU: H = 4096, P = 1024. The paper's
    # G-LSTM and F-LSTM variants of it; the cudnn rows are nn.LSTM(1024, 4096, proj_size=1024).
    BenchConfig("biglstm-g4", "glstm", ("fwd", "fwdbwd"), B=64, T=128, I=1024, H=4096, G=4, P=1024,
                source=BIGLSTM_SOURCE),
    BenchConfig("biglstm-f512", "flstm", ("fwd", "fwdbwd"), B=64, T=128, I=1024, H=4096, R=512, P=1024,
                source=BIGLSTM_SOURCE),
)}
# What a GPU run does without --configs (the BIGLSTM pair is asked for by name: --configs biglstm).
GPU_DEFAULT = ("glstm-infer", "glstm-train", "flstm-infer", "flstm-train", "glstm-flashrnn")

CPU_CONFIGS = {c.name: c for c in (
    # Tiny smoke shapes (Triton interpreted runs only here; the test suite and the CPU sweeps use them).
    BenchConfig("cpu-glstm", "glstm", ("fwd", "fwdbwd"), B=3, T=8, I=32, H=32, G=4),
    BenchConfig("cpu-flstm", "flstm", ("fwd", "fwdbwd"), B=3, T=8, I=32, H=32, R=8),
    # Projected (LSTMP) smoke shapes: the BIGLSTM comparison's code path at a size the CPU runs in seconds.
    BenchConfig("cpu-lstmp-g2", "glstm", ("fwd", "fwdbwd"), B=3, T=8, I=32, H=32, G=2, P=16),
    BenchConfig("cpu-lstmp-r8", "flstm", ("fwd", "fwdbwd"), B=3, T=8, I=32, H=32, R=8, P=16),
    # T=64, B=16 (issue 14's batch and length) at sizes that keep the default CPU run short.
    BenchConfig("cpu-h256-g1", "glstm", ("fwd", "fwdbwd"), B=16, T=64, I=256, H=256, G=1),
    BenchConfig("cpu-h256-g4", "glstm", ("fwd", "fwdbwd"), B=16, T=64, I=256, H=256, G=4),
    BenchConfig("cpu-h256-r64", "flstm", ("fwd", "fwdbwd"), B=16, T=64, I=256, H=256, R=64),
    BenchConfig("cpu-h128-g1", "glstm", ("fwd", "fwdbwd"), B=16, T=64, I=128, H=128, G=1),
    BenchConfig("cpu-h128-g4", "glstm", ("fwd", "fwdbwd"), B=16, T=64, I=128, H=128, G=4),
    BenchConfig("cpu-h128-r32", "flstm", ("fwd", "fwdbwd"), B=16, T=64, I=128, H=128, R=32),
    # Issue 14's targets: I = H = 1024.
    BenchConfig("cpu-h1024-g1", "glstm", ("fwd", "fwdbwd"), B=16, T=64, I=1024, H=1024, G=1),
    BenchConfig("cpu-h1024-g4", "glstm", ("fwd", "fwdbwd"), B=16, T=64, I=1024, H=1024, G=4),
    BenchConfig("cpu-h1024-r256", "flstm", ("fwd", "fwdbwd"), B=16, T=64, I=1024, H=1024, R=256),
)}
# What `make bench` runs on a CPU, and named sets --configs also accepts.
CPU_DEFAULT = ("cpu-h256-g1", "cpu-h256-g4", "cpu-h256-r64", "cpu-h128-g1", "cpu-h128-g4", "cpu-h128-r32")
CONFIG_SETS = {
    "cpu-targets": ("cpu-h1024-g1", "cpu-h1024-g4", "cpu-h1024-r256", "cpu-h128-g1", "cpu-h128-g4", "cpu-h128-r32"),
    "cpu-smoke": ("cpu-glstm", "cpu-flstm"),
    "cpu-lstmp": ("cpu-lstmp-g2", "cpu-lstmp-r8"),
    "biglstm": ("biglstm-g4", "biglstm-f512"),
}

DEFAULT_SWEEP_VALUES = {
    "gpu": {"H": [256, 512, 1024, 2048], "G": [1, 2, 4, 8, 16], "R": [64, 128, 256, 512],
            "B": [1, 8, 16, 64, 128], "T": [64, 256, 1024]},
    "cpu": {"H": [16, 32], "G": [1, 2, 4], "R": [4, 8], "B": [1, 3], "T": [4, 8]},
}


def sweep_configs(base: BenchConfig, param: str, values: list[int]) -> list[BenchConfig]:
    """Copies of ``base`` with ``param`` set to each value (an H sweep keeps I = H, as the default configs do)."""
    if param == "G" and base.op != "glstm":
        raise ValueError(f"--sweep G needs a glstm base config, got {base.name!r} ({base.op})")
    if param == "R" and base.op != "flstm":
        raise ValueError(f"--sweep R needs an flstm base config, got {base.name!r} ({base.op})")
    out = []
    for v in values:
        if v < 1:
            raise ValueError(f"--values must be positive integers, got {v}")
        changes: dict = {param: v}
        if param == "H":
            changes["I"] = v
        cfg = replace(base, name=f"{base.name}:{param}={v}", sweep=param, sweep_value=v, source=None, **changes)
        if cfg.op == "glstm" and (cfg.H % cfg.G or cfg.I % cfg.G or cfg.P % cfg.G):
            raise ValueError(f"--sweep {param}: value {v} gives H={cfg.H}, I={cfg.I}, P={cfg.P} not divisible by "
                             f"G={cfg.G}")
        if cfg.P and cfg.P >= cfg.H:
            raise ValueError(f"--sweep {param}: value {v} gives H={cfg.H} <= P={cfg.P} (a projection is narrower "
                             "than the cell, as in nn.LSTM)")
        out.append(cfg)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Model arithmetic: parameters, FLOPs, compulsory bytes
# ----------------------------------------------------------------------------------------------------------------------

def param_count(model: str, I: int, H: int, G: int | None = None, R: int | None = None, P: int = 0) -> int:
    """Parameters of one layer: "glstm" (with its one bias), "flstm", or "dense" (nn.LSTM with b_ih and b_hh); with a
    projection P > 0 the recurrent input is P wide and weight_hr (P, H) is added."""
    rec, proj = (P or H), P * H
    if model == "glstm":
        return 4 * H * (I + rec) // G + 4 * H + proj
    if model == "flstm":
        return R * (I + rec) + 4 * H * R + 4 * H + proj
    if model == "dense":
        return 4 * H * (I + rec) + 8 * H + proj
    raise ValueError(f"model must be 'glstm', 'flstm' or 'dense', got {model!r}")


def same_params_hidden(I: int, target_params: int, P: int = 0) -> int:
    """Hidden size h of an nn.LSTM(I, h) (nn.LSTM(I, h, proj_size=P) if P) whose parameter count is closest to
    ``target_params``.

    Without a projection the count 4h^2 + (4I + 8)h is quadratic in h: its positive root, then the better of the two
    neighbouring integers. With one it is linear, (4(I + P) + 8 + P) h.
    """
    if P:
        root = target_params / (4.0 * (I + P) + 8.0 + P)
        candidates = {max(1, math.floor(root)), max(1, math.ceil(root))}
        return min(candidates, key=lambda h: (abs(param_count("dense", I, h, P=P) - target_params), h))
    a, b, c = 4.0, 4.0 * I + 8.0, -float(target_params)
    root = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
    candidates = {max(1, math.floor(root)), max(1, math.ceil(root))}
    return min(candidates, key=lambda h: (abs(param_count("dense", I, h) - target_params), h))


def model_flops(model: str, mode: str, T: int, B: int, I: int, H: int, G: int | None = None,
                R: int | None = None, P: int = 0) -> float:
    """GEMM FLOPs of one layer over the sequence (2 per multiply-add); fwdbwd counts 3x the forward. With a projection
    the recurrent input is P wide and every step adds the (B x H) x (H x P) projection."""
    rec = P or H
    if model == "glstm":
        fwd = 2.0 * T * B * 4 * H * (I // G + rec // G)
    elif model == "flstm":
        fwd = 2.0 * T * B * R * (I + rec) + 2.0 * T * B * 4 * H * R
    elif model == "dense":
        fwd = 2.0 * T * B * 4 * H * (I + rec)
    else:
        raise ValueError(f"model must be 'glstm', 'flstm' or 'dense', got {model!r}")
    fwd += 2.0 * T * B * H * P
    return fwd * (3.0 if mode == "fwdbwd" else 1.0)


def compulsory_bytes(mode: str, T: int, B: int, I: int, H: int, params: int, elem: int, P: int = 0) -> float:
    """Bytes a fully fused implementation cannot avoid moving through DRAM.

    fwd: read x and the weights once, write the output (P wide with a projection). fwdbwd adds: write the float32 cell
    states the backward needs, then read the upstream gradient, h, the cell states, x and the weights again, and write
    dx and the weight gradients.
    """
    out = P or H
    fwd = elem * (T * B * I + T * B * out + params)
    if mode == "fwd":
        return float(fwd)
    cell_fp32 = 4 * T * B * H
    bwd = elem * (2 * T * B * out + 2 * T * B * I + 2 * params) + cell_fp32
    return float(fwd + cell_fp32 + bwd)


# ----------------------------------------------------------------------------------------------------------------------
# The straightforward PyTorch loops (torch-naive, and torch-compile compiles their step)
# ----------------------------------------------------------------------------------------------------------------------

def glstm_naive_step(proj_t: Tensor, h: Tensor, c: Tensor, weight_hh_t: Tensor) -> tuple[Tensor, Tensor]:
    """One G-LSTM step, group-major. proj_t (G, B, 4, Hg) input projection + bias; h, c (G, B, Hg);
    weight_hh_t (G, Hg, 4Hg) = weight_hh transposed. Returns (h, c) of the step."""
    G, B, _, hg = proj_t.shape
    gates = proj_t + torch.bmm(h, weight_hh_t).view(G, B, 4, hg)
    i, f, g, o = gates.unbind(2)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


def glstm_naive(x: Tensor, h0: Tensor, c0: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias: Tensor | None,
                step: Callable = glstm_naive_step) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """The G-LSTM loop a user would write: one batched GEMM for all inputs, then per step one bmm over the groups and
    the pointwise cell, everything in x's dtype. Shapes as :func:`lstmkern.glstm_forward` (time-major).

    Example::
        >>> out, (h_n, c_n) = glstm_naive(torch.randn(5, 2, 6), torch.zeros(2, 9), torch.zeros(2, 9),
        ...                               torch.randn(3, 12, 2), torch.randn(3, 12, 3), None)   # out: (5, 2, 9)
    """
    T, B, I = x.shape
    G, four_hg, ig = weight_ih.shape
    hg = four_hg // 4
    xg = x.reshape(T * B, G, ig).transpose(0, 1)  # (G, T*B, Ig)
    proj = torch.bmm(xg, weight_ih.transpose(1, 2))  # (G, T*B, 4Hg)
    if bias is not None:
        proj = proj + bias.unsqueeze(1)
    proj = proj.view(G, T, B, 4, hg)
    weight_hh_t = weight_hh.transpose(1, 2)
    h = h0.view(B, G, hg).transpose(0, 1)
    c = c0.view(B, G, hg).transpose(0, 1)
    outputs = []
    for t in range(T):
        h, c = step(proj[:, t], h, c, weight_hh_t)
        outputs.append(h)
    output = torch.stack(outputs).permute(0, 2, 1, 3).reshape(T, B, G * hg)  # (T, G, B, Hg) -> (T, B, H)
    return output, (h.transpose(0, 1).reshape(B, -1), c.transpose(0, 1).reshape(B, -1))


def flstm_naive_step(proj_t: Tensor, h: Tensor, c: Tensor, weight_1h_t: Tensor, weight_2_t: Tensor
                     ) -> tuple[Tensor, Tensor]:
    """One F-LSTM step: proj_t (B, 4, H); h, c (B, H); weight_1h_t (H, R); weight_2_t (R, 4H). Returns (h, c)."""
    B, _, H = proj_t.shape
    gates = proj_t + ((h @ weight_1h_t) @ weight_2_t).view(B, 4, H)
    i, f, g, o = gates.unbind(1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


def flstm_naive(x: Tensor, h0: Tensor, c0: Tensor, weight_1: Tensor, weight_2: Tensor, bias: Tensor | None,
                step: Callable = flstm_naive_step) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """The F-LSTM loop a user would write: W2 (W1_x x) for all steps as two GEMMs, then per step two mm
    (h W1_h^T, then W2) and the pointwise cell. Shapes as :func:`lstmkern.flstm_forward` (time-major).

    Example::
        >>> out, _ = flstm_naive(torch.randn(5, 2, 6), torch.zeros(2, 9), torch.zeros(2, 9),
        ...                      torch.randn(4, 15), torch.randn(36, 4), None)   # out: (5, 2, 9)
    """
    T, B, I = x.shape
    H = h0.shape[1]
    proj = (x.reshape(T * B, I) @ weight_1[:, :I].t()) @ weight_2.t()
    if bias is not None:
        proj = proj + bias
    proj = proj.view(T, B, 4, H)
    weight_1h_t, weight_2_t = weight_1[:, I:].t(), weight_2.t()
    h, c = h0, c0
    outputs = []
    for t in range(T):
        h, c = step(proj[t], h, c, weight_1h_t, weight_2_t)
        outputs.append(h)
    return torch.stack(outputs), (h, c)


_COMPILED_STEPS: dict[str, Callable] = {}


def compiled_step(op: str) -> Callable:
    """torch.compile of the naive step (compiling the whole T-step loop would unroll it into T copies)."""
    if op not in _COMPILED_STEPS:
        import torch._dynamo  # noqa: F401  (a sweep compiles one graph per shape: raise the recompile limits)
        for knob in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                     "accumulated_recompile_limit"):
            if hasattr(torch._dynamo.config, knob):
                setattr(torch._dynamo.config, knob, max(256, getattr(torch._dynamo.config, knob)))
        step = glstm_naive_step if op == "glstm" else flstm_naive_step
        _COMPILED_STEPS[op] = torch.compile(step, fullgraph=True, dynamic=False)
    return _COMPILED_STEPS[op]


# ----------------------------------------------------------------------------------------------------------------------
# Inputs and weights
# ----------------------------------------------------------------------------------------------------------------------

@dataclass
class InputSet:
    x: Tensor        # (T, B, I)
    h0: Tensor       # (B, P or H)
    c0: Tensor       # (B, H)
    grad: Tensor     # (T, B, P or H) upstream gradient of the output


def make_input_sets(n: int, T: int, B: int, I: int, H: int, dtype: torch.dtype, device: torch.device, seed: int,
                    requires_grad: bool, P: int = 0) -> list[InputSet]:
    """``n`` independent random input sets; the same seed gives the same tensors to every implementation with this H
    (and P: with a projection h0 and the output gradient are P wide)."""
    gen = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, device=device, dtype=dtype)

    sets = []
    for _ in range(n):
        x = randn(T, B, I).requires_grad_(requires_grad)
        sets.append(InputSet(x=x, h0=0.5 * randn(B, P or H), c0=randn(B, H), grad=randn(T, B, P or H)))
    return sets


def _uniform(gen: torch.Generator, shape: tuple[int, ...], bound: float, dtype, device) -> Tensor:
    return ((torch.rand(shape, generator=gen, device=device, dtype=torch.float32) * 2 - 1) * bound).to(dtype)


def make_weights(cfg: BenchConfig, dtype: torch.dtype, device: torch.device, seed: int,
                 requires_grad: bool) -> tuple[Tensor, ...]:
    """(weight_ih, weight_hh, bias) for glstm or (weight_1, weight_2, bias) for flstm, scaled like nn.LSTM's init
    (uniform in +-1/sqrt(fan-in of the recurrent block)) so the gates stay in the non-saturated range; with a
    projection (cfg.P > 0) a fourth tensor, weight_hr (P, H)."""
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    rec = cfg.out
    if cfg.op == "glstm":
        G, hg, ig = cfg.G, cfg.H // cfg.G, cfg.I // cfg.G
        k = 1.0 / math.sqrt(hg)
        ws = (_uniform(gen, (G, 4 * hg, ig), k, dtype, device), _uniform(gen, (G, 4 * hg, rec // G), k, dtype, device),
              _uniform(gen, (G, 4 * hg), k, dtype, device))
    else:
        R, I, H = cfg.R, cfg.I, cfg.H
        ws = (_uniform(gen, (R, I + rec), 1.0 / math.sqrt(I + rec), dtype, device),
              _uniform(gen, (4 * H, R), 1.0 / math.sqrt(R), dtype, device),
              _uniform(gen, (4 * H,), 1.0 / math.sqrt(H), dtype, device))
    if cfg.P:
        ws += (_uniform(gen, (cfg.P, cfg.H), 1.0 / math.sqrt(cfg.H), dtype, device),)
    return tuple(w.requires_grad_(requires_grad) for w in ws)


def _nbytes(*tensors: Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


# ----------------------------------------------------------------------------------------------------------------------
# Implementations: each builder returns a Prepared case or raises Skip(reason)
# ----------------------------------------------------------------------------------------------------------------------

class Skip(Exception):
    """An implementation that cannot run this case here; the message says why."""


@dataclass
class Prepared:
    """One implementation ready to time: ``call()`` runs one forward (or forward + backward) on the next input set."""
    call: Callable[[], None]
    grad_to_none: list[Tensor]
    model: str                 # "glstm" | "flstm" | "dense": whose FLOPs and parameters this runs
    H: int
    G: int | None
    R: int | None
    params: int
    io_bytes: int              # one input set + the weights
    check: Callable[[], float] | None = None   # normwise relative error vs float64 (lstmkern impls)
    detail: str = ""
    P: int = 0


class _Rotation:
    """Hands out the input sets in turn."""

    def __init__(self, sets: list[InputSet]):
        self.sets, self.index = sets, 0

    def next(self) -> InputSet:
        s = self.sets[self.index]
        self.index = (self.index + 1) % len(self.sets)
        return s


def _make_call(forward: Callable[[InputSet], Tensor], sets: list[InputSet], mode: str) -> Callable[[], None]:
    rotation = _Rotation(sets)
    if mode == "fwd":
        def call() -> None:
            with torch.no_grad():
                forward(rotation.next())
    else:
        def call() -> None:
            s = rotation.next()
            torch.autograd.backward(forward(s), s.grad)
    return call


def _lstmkern_api():
    try:
        import lstmkern
        from lstmkern.backends import resolve_backend
    except Exception as err:  # the package (or functional.py) is not there yet, or failed to import
        raise Skip(f"lstmkern not importable: {type(err).__name__}: {err}") from None
    for name in ("glstm_forward", "flstm_forward"):
        if not hasattr(lstmkern, name):
            raise Skip(f"lstmkern has no {name} yet")
    return lstmkern, resolve_backend


def rel_err(actual: Tensor, expected: Tensor) -> float:
    """Normwise relative error max|actual - expected| / max|expected| (in float64)."""
    a, e = actual.detach().to(torch.float64), expected.detach().to(torch.float64)
    if a.shape != e.shape:
        raise ValueError(f"shape mismatch in the correctness check: {tuple(a.shape)} vs {tuple(e.shape)}")
    if not torch.isfinite(a).all():
        return math.inf
    scale = e.abs().max().item()
    return (a - e).abs().max().item() / max(scale, 1e-30)


def _lstmkern_check(lstmkern, backend: str, cfg: BenchConfig, mode: str, s: InputSet, weights: tuple[Tensor, ...],
                    check_t: int) -> float:
    """Run the implementation and the float64 reference on the first ``check_t`` steps of ``s``; worst rel. error."""
    from lstmkern import reference

    forward = lstmkern.glstm_forward if cfg.op == "glstm" else lstmkern.flstm_forward
    ref_fwd = reference.glstm_reference if cfg.op == "glstm" else reference.flstm_reference
    ref_bwd = reference.glstm_reference_backward if cfg.op == "glstm" else reference.flstm_reference_backward
    tc = min(check_t, cfg.T)
    train = mode == "fwdbwd"
    leaves = [t.detach()[:tc].clone() if i == 0 else t.detach().clone()
              for i, t in enumerate((s.x, s.h0, s.c0, *weights))]
    for t in leaves:
        t.requires_grad_(train)
    x, h0, c0, *w = leaves
    w_hr = w[3] if len(w) == 4 else None  # weight_hr (P, H) of a projected config
    with torch.set_grad_enabled(train):
        out, (h_n, c_n) = forward(x, (h0, c0), *w[:3], weight_hr=w_hr, backend=backend)
    grad = s.grad[:tc]
    got = [out, h_n, c_n]
    if train:
        torch.autograd.backward(out, grad)
        got += [t.grad for t in leaves]
    f64 = [t.detach().to(torch.float64) for t in (x, h0, c0, *w)]
    with torch.no_grad():
        ref_out, ref_cell = ref_fwd(*f64)
        want = [ref_out, ref_out[-1], ref_cell[-1]]
        if train:
            grads = ref_bwd(grad.to(torch.float64), None, *f64[:6], ref_out, ref_cell, *f64[6:])
            want += list(grads)
    return max(rel_err(a, e) for a, e in zip(got, want))


def build_lstmkern(backend: str, cfg: BenchConfig, mode: str, ctx: "RunContext") -> Prepared:
    lstmkern, resolve_backend = _lstmkern_api()
    if backend == "triton" and ctx.device.type != "cuda" and cfg.T * cfg.B * max(cfg.I, cfg.H) > CPU_TRITON_MAX_WORK:
        raise Skip("the Triton backend runs interpreted on CPU: only on the tiny smoke configs (cpu-glstm, cpu-flstm)")
    train = mode == "fwdbwd"
    sets = make_input_sets(ctx.n_sets, cfg.T, cfg.B, cfg.I, cfg.H, ctx.dtype, ctx.device, ctx.seed, train, cfg.P)
    weights = make_weights(cfg, ctx.dtype, ctx.device, ctx.seed, train)
    # The backend contract (lstmkern.backends): sizes = (T, B, I, H, G, R, P) with G = 1 for F-LSTM, R = 0 for G-LSTM.
    sizes = (cfg.T, cfg.B, cfg.I, cfg.H, cfg.G if cfg.op == "glstm" else 1, cfg.R if cfg.op == "flstm" else 0, cfg.P)
    try:
        resolve_backend(backend, cfg.op, ctx.device, ctx.dtype, sizes)
    except ValueError as err:
        raise Skip(str(err)) from None
    forward = lstmkern.glstm_forward if cfg.op == "glstm" else lstmkern.flstm_forward
    w_hr = weights[3] if cfg.P else None

    def run(s: InputSet) -> Tensor:
        return forward(s.x, (s.h0, s.c0), *weights[:3], weight_hr=w_hr, backend=backend)[0]

    check = None
    if not ctx.no_check:
        def check() -> float:
            return _lstmkern_check(lstmkern, backend, cfg, mode, sets[0], weights, ctx.check_t)
    return Prepared(call=_make_call(run, sets, mode), grad_to_none=[*weights, *(s.x for s in sets)] if train else [],
                    model=cfg.op, H=cfg.H, G=cfg.G if cfg.op == "glstm" else None,
                    R=cfg.R if cfg.op == "flstm" else None,
                    params=param_count(cfg.op, cfg.I, cfg.H, cfg.G, cfg.R, cfg.P),
                    io_bytes=_nbytes(sets[0].x, sets[0].h0, sets[0].c0, *weights) + (_nbytes(sets[0].grad) if train
                                                                                      else 0),
                    check=check, detail=f"backend={backend!r}", P=cfg.P)


def _build_dense(cfg: BenchConfig, mode: str, ctx: "RunContext", H: int, detail: str) -> Prepared:
    train = mode == "fwdbwd"
    torch.manual_seed(ctx.seed + 2)
    lstm = nn.LSTM(cfg.I, H, proj_size=cfg.P, device=ctx.device, dtype=ctx.dtype)
    lstm.requires_grad_(train)
    sets = make_input_sets(ctx.n_sets, cfg.T, cfg.B, cfg.I, H, ctx.dtype, ctx.device, ctx.seed, train, cfg.P)

    def run(s: InputSet) -> Tensor:
        return lstm(s.x, (s.h0.unsqueeze(0), s.c0.unsqueeze(0)))[0]

    params = list(lstm.parameters())
    return Prepared(call=_make_call(run, sets, mode), grad_to_none=[*params, *(s.x for s in sets)] if train else [],
                    model="dense", H=H, G=None, R=None, params=param_count("dense", cfg.I, H, P=cfg.P), P=cfg.P,
                    io_bytes=_nbytes(sets[0].x, sets[0].h0, sets[0].c0, *params) + (_nbytes(sets[0].grad) if train
                                                                                     else 0),
                    detail=detail)


def build_cudnn(cfg: BenchConfig, mode: str, ctx: "RunContext") -> Prepared:
    backend = "cuDNN" if ctx.device.type == "cuda" and torch.backends.cudnn.is_available() else "native (no cuDNN)"
    proj = f", proj_size={cfg.P}" if cfg.P else ""
    return _build_dense(cfg, mode, ctx, cfg.H, f"nn.LSTM({cfg.I}, {cfg.H}{proj}) via {backend}")


def build_cudnn_sameparams(cfg: BenchConfig, mode: str, ctx: "RunContext") -> Prepared:
    target = param_count(cfg.op, cfg.I, cfg.H, cfg.G, cfg.R, cfg.P)
    h = same_params_hidden(cfg.I, target, cfg.P)
    if cfg.P and h <= cfg.P:
        raise Skip(f"an nn.LSTM with proj_size={cfg.P} and {target} parameters would need hidden_size {h} <= proj_size")
    proj = f", proj_size={cfg.P}" if cfg.P else ""
    return _build_dense(cfg, mode, ctx, h, f"nn.LSTM({cfg.I}, {h}{proj}): {param_count('dense', cfg.I, h, P=cfg.P)} "
                                           f"params vs {target} of the compact model")


def _build_loop(cfg: BenchConfig, mode: str, ctx: "RunContext", compiled: bool) -> Prepared:
    train = mode == "fwdbwd"
    if cfg.P:
        raise Skip("the naive loops have no projection (the nn.LSTM(proj_size) rows are the plain-PyTorch baseline)")
    if compiled and ctx.device.type != "cuda" and not ctx.compile_on_cpu:
        raise Skip("not in the CPU smoke set (compiling takes longer than its whole budget); "
                   "ask for it with --impls torch-compile")
    sets = make_input_sets(ctx.n_sets, cfg.T, cfg.B, cfg.I, cfg.H, ctx.dtype, ctx.device, ctx.seed, train)
    weights = make_weights(cfg, ctx.dtype, ctx.device, ctx.seed, train)
    loop = glstm_naive if cfg.op == "glstm" else flstm_naive
    step = compiled_step(cfg.op) if compiled else (glstm_naive_step if cfg.op == "glstm" else flstm_naive_step)

    def run(s: InputSet) -> Tensor:
        return loop(s.x, s.h0, s.c0, *weights, step=step)[0]

    return Prepared(call=_make_call(run, sets, mode), grad_to_none=[*weights, *(s.x for s in sets)] if train else [],
                    model=cfg.op, H=cfg.H, G=cfg.G if cfg.op == "glstm" else None,
                    R=cfg.R if cfg.op == "flstm" else None,
                    params=param_count(cfg.op, cfg.I, cfg.H, cfg.G, cfg.R),
                    io_bytes=_nbytes(sets[0].x, sets[0].h0, sets[0].c0, *weights) + (_nbytes(sets[0].grad) if train
                                                                                      else 0),
                    detail="torch.compile(step, fullgraph=True) in a Python loop" if compiled else "eager loop")


def flashrnn_layout(weight_hh: Tensor, bias: Tensor, h0: Tensor, c0: Tensor, G: int) -> tuple[Tensor, Tensor, Tensor]:
    """lstmkern's G-LSTM recurrent weights, bias and initial state in FlashRNN's layouts (its ``flashrnn(Wx, R, b,
    states)`` with the default shapes): R (gates, heads, Hg out, Hg in) = weight_hh (G, 4Hg, Hg) split by gate (the
    (out, in) order of nn.LSTM's weight_hh; checked against lstmkern.reference with FlashRNN's pure-PyTorch "vanilla"
    backend), b (gates, heads, Hg), states (2, B, 1, heads, Hg) = (h0, c0). Heads are groups; the gate order i, f, g, o
    is the same in both."""
    hg = weight_hh.shape[2]
    B = h0.shape[0]
    R = weight_hh.view(G, 4, hg, hg).permute(1, 0, 2, 3).contiguous()
    b = bias.view(G, 4, hg).permute(1, 0, 2).contiguous()
    return R, b, torch.stack((h0, c0)).view(2, B, 1, G, hg)


def flashrnn_input(x: Tensor, weight_ih: Tensor, G: int) -> Tensor:
    """The grouped input projection that FlashRNN leaves to the caller, x (T, B, I) -> Wx (B, T, gates, heads, Hg)."""
    T, B, I = x.shape
    hg = weight_ih.shape[1] // 4
    wx = torch.einsum("tbgi,gki->btkg", x.view(T, B, G, I // G), weight_ih)  # (B, T, 4Hg, G)
    return wx.reshape(B, T, 4, hg, G).permute(0, 1, 2, 4, 3)


def build_flashrnn(cfg: BenchConfig, mode: str, ctx: "RunContext") -> Prepared:
    """FlashRNN's head-wise LSTM (block-diagonal recurrence, heads = groups) plus the grouped input projection that
    FlashRNN leaves to the caller, so it computes the same G-LSTM layer as the lstmkern cases."""
    if cfg.op != "glstm":
        raise Skip("FlashRNN has no factorized (F-LSTM) recurrence")
    if cfg.P:
        raise Skip("FlashRNN has no projection (LSTMP)")
    if ctx.device.type != "cuda":
        raise Skip("FlashRNN's kernels need CUDA")
    if ctx.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise Skip(f"FlashRNN supports bfloat16/float16/float32, not {ctx.dtype}")
    try:
        from flashrnn import flashrnn as flashrnn_fn
    except Exception as err:
        raise Skip(f"flashrnn not importable: {type(err).__name__}: {err} (pip install flashrnn)") from None
    train = mode == "fwdbwd"
    B, T, G = cfg.B, cfg.T, cfg.G
    sets = make_input_sets(ctx.n_sets, T, B, cfg.I, cfg.H, ctx.dtype, ctx.device, ctx.seed, train)
    weight_ih, weight_hh, bias = make_weights(cfg, ctx.dtype, ctx.device, ctx.seed, False)
    # FlashRNN's layouts (flashrnn_layout), converted once here, outside the timed call; the input projection
    # (flashrnn_input) is part of the timed call, as it is of lstmkern's.
    R, b, _ = flashrnn_layout(weight_hh, bias, sets[0].h0, sets[0].c0, G)
    R, b = R.requires_grad_(train), b.requires_grad_(train)
    w_in = weight_ih.clone().requires_grad_(train)
    dtype_name = str(ctx.dtype).removeprefix("torch.")
    states = [flashrnn_layout(weight_hh, bias, s.h0, s.c0, G)[2] for s in sets]
    state_of = {id(s): st for s, st in zip(sets, states)}

    def run_backend(backend: str, s: InputSet) -> Tensor:
        wx = flashrnn_input(s.x, w_in, G)  # (B, T, gates, heads, Hg)
        out, _ = flashrnn_fn(wx, R, b, states=state_of[id(s)], function="lstm", backend=backend, dtype=dtype_name)
        return out[0]  # h for every step, (B, T, heads, Hg)

    chosen, errors = None, []
    for backend in ("cuda_fused", "cuda"):  # the fused kernel is FlashRNN's headline; "cuda" has no head-size limits
        try:
            with torch.set_grad_enabled(train):
                probe = run_backend(backend, sets[0])
                if train:
                    torch.autograd.backward(probe, torch.randn_like(probe))
            torch.cuda.synchronize()
            chosen = backend
            break
        except Exception as err:  # compilation or launch failure for this shape: try the next backend
            errors.append(f"{backend}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    if chosen is None:
        raise Skip("flashrnn failed: " + "; ".join(errors))
    grad_shape = probe.shape
    grads = [torch.randn(grad_shape, device=ctx.device, dtype=ctx.dtype) for _ in sets]
    for s, g in zip(sets, grads):
        s.grad = g  # FlashRNN's output layout (B, T, heads, Hg)

    def run(s: InputSet) -> Tensor:
        return run_backend(chosen, s)

    return Prepared(call=_make_call(run, sets, mode), grad_to_none=[w_in, R, b, *(s.x for s in sets)] if train else [],
                    model="glstm", H=cfg.H, G=G, R=None, params=param_count("glstm", cfg.I, cfg.H, G),
                    io_bytes=_nbytes(sets[0].x, states[0], w_in, R, b) + (_nbytes(sets[0].grad) if train else 0),
                    detail=f"flashrnn backend={chosen!r}" + (f" (after: {'; '.join(errors)})" if errors else ""))


BUILDERS: dict[str, Callable[[BenchConfig, str, "RunContext"], Prepared]] = {
    "lstmkern-cuda": lambda cfg, mode, ctx: build_lstmkern("cuda", cfg, mode, ctx),
    "lstmkern-triton": lambda cfg, mode, ctx: build_lstmkern("triton", cfg, mode, ctx),
    "lstmkern-cpu": lambda cfg, mode, ctx: build_lstmkern("cpu", cfg, mode, ctx),
    "lstmkern-reference": lambda cfg, mode, ctx: build_lstmkern("reference", cfg, mode, ctx),
    "cudnn": build_cudnn,
    "cudnn-sameparams": build_cudnn_sameparams,
    "torch-naive": lambda cfg, mode, ctx: _build_loop(cfg, mode, ctx, compiled=False),
    "torch-compile": lambda cfg, mode, ctx: _build_loop(cfg, mode, ctx, compiled=True),
    "flashrnn": build_flashrnn,
}


# ----------------------------------------------------------------------------------------------------------------------
# Timing and hardware ceilings
# ----------------------------------------------------------------------------------------------------------------------

@dataclass
class RunContext:
    device: torch.device
    dtype: torch.dtype
    n_sets: int
    seed: int
    check_t: int
    no_check: bool
    warmup_ms: float
    rep_ms: float
    cpu_reps: int
    compile_on_cpu: bool = False


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile of an ascending list."""
    pos = q * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _clear_grads(tensors: list[Tensor]) -> None:
    for t in tensors:
        t.grad = None


def warm_up(prepared: "Prepared") -> None:
    """Two calls before timing (they also absorb compilation and autotuning)."""
    for _ in range(2):
        prepared.call()
        _clear_grads(prepared.grad_to_none)


def time_gpu(prepared: "Prepared", ctx: RunContext) -> tuple[float, float, float]:
    """(median, p20, p80) in ms of one call by triton.testing.do_bench (CUDA events, L2 flushed between calls)."""
    import triton.testing
    torch.cuda.synchronize()
    q50, q20, q80 = triton.testing.do_bench(prepared.call, warmup=ctx.warmup_ms, rep=ctx.rep_ms,
                                            grad_to_none=prepared.grad_to_none, quantiles=[0.5, 0.2, 0.8])
    return float(q50), float(q20), float(q80)


def time_interleaved(group: dict[str, "Prepared"], reps: int) -> dict[str, list[float]]:
    """CPU wall times (ms) of ``reps`` calls of every implementation in ``group``, interleaved: repetition r times one
    call of each, starting at implementation r mod n, so position in the round does not favour anyone and a burst of
    outside load lands on all of them."""
    names = list(group)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            prepared = group[name]
            _clear_grads(prepared.grad_to_none)
            start = time.perf_counter()
            prepared.call()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def summarize(times: list[float]) -> tuple[float, float, float]:
    """(median, p20, p80) of a list of times."""
    ordered = sorted(times)
    return _quantile(ordered, 0.5), _quantile(ordered, 0.2), _quantile(ordered, 0.8)


def spread_of(ms: float, p20: float, p80: float) -> float:
    """(p80 - p20) / median: the relative width of the middle of the distribution."""
    return (p80 - p20) / ms if ms > 0 else math.inf


def measure_group(group: dict[str, "Prepared"], ctx: RunContext) -> dict[str, dict]:
    """Timing of every implementation of one (config, mode): {name: {ms, ms_p20, ms_p80, spread, unstable,
    remeasured, reps}}. A group with any row above UNSTABLE_SPREAD is measured once more (all of it on CPU, to keep the
    interleaving; the unstable rows on GPU) and the second measurement is kept."""
    for prepared in group.values():
        warm_up(prepared)
    reps = max(3, ctx.cpu_reps)

    def measure(names: list[str]) -> dict[str, tuple[float, float, float]]:
        if ctx.device.type == "cuda":
            return {n: time_gpu(group[n], ctx) for n in names}
        return {n: summarize(t) for n, t in time_interleaved({n: group[n] for n in names}, reps).items()}

    result = measure(list(group))
    unstable = [n for n, q in result.items() if spread_of(*q) > UNSTABLE_SPREAD]
    remeasured = set()
    if unstable:
        again = list(group) if ctx.device.type != "cuda" else unstable
        result.update(measure(again))
        remeasured = set(again)
    return {n: {"ms": q[0], "ms_p20": q[1], "ms_p80": q[2], "spread": spread_of(*q),
                "unstable": spread_of(*q) > UNSTABLE_SPREAD, "remeasured": n in remeasured,
                "reps": None if ctx.device.type == "cuda" else reps}
            for n, q in result.items()}


def measure_peak_mb(call: Callable[[], None], grad_to_none: list[Tensor], io_bytes: int,
                    device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    for t in grad_to_none:
        t.grad = None
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    call()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before + io_bytes) / 2**20


def measure_ceilings(ctx: RunContext) -> dict:
    """Matmul rate (TFLOP/s, in the benchmark dtype) and copy bandwidth (GB/s, read + write) of this device."""
    dev, dt = ctx.device, ctx.dtype
    if dev.type == "cuda":
        import triton.testing
        n = 8192
        a, b = torch.randn(n, n, device=dev, dtype=dt), torch.randn(n, n, device=dev, dtype=dt)
        mm_ms = triton.testing.do_bench(lambda: torch.mm(a, b), warmup=50, rep=300, return_mode="median")
        del a, b
        nbytes = 1 << 30
        src = torch.empty(nbytes, device=dev, dtype=torch.uint8).random_(0, 255)
        dst = torch.empty_like(src)
        cp_ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=50, rep=300, return_mode="median")
        del src, dst
        torch.cuda.empty_cache()
        desc_mm, desc_cp = f"torch.mm {n}x{n}x{n} {dt}", "1 GiB device-to-device copy_"
    else:
        n = 512
        a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
        nbytes = 32 << 20
        src = torch.ones(nbytes, dtype=torch.uint8)
        dst = torch.empty_like(src)

        def best_ms(fn: Callable[[], object], reps: int = 5) -> float:
            fn()
            out = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                out.append((time.perf_counter() - t0) * 1e3)
            return sorted(out)[len(out) // 2]
        mm_ms, cp_ms = best_ms(lambda: torch.mm(a, b)), best_ms(lambda: dst.copy_(src))
        desc_mm, desc_cp = f"torch.mm {n}x{n}x{n} {dt}", "32 MiB copy_"
    return {"matmul_tflops": 2.0 * n ** 3 / (mm_ms * 1e-3) / 1e12, "matmul": desc_mm,
            "copy_gbps": 2.0 * nbytes / (cp_ms * 1e-3) / 1e9, "copy": desc_cp}


# ----------------------------------------------------------------------------------------------------------------------
# Running, reporting
# ----------------------------------------------------------------------------------------------------------------------

def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _dtype_name(dt: torch.dtype) -> str:
    return str(dt).removeprefix("torch.")


def prepare_case(cfg: BenchConfig, impl: str, mode: str, ctx: RunContext) -> tuple["Prepared", float | None]:
    """Build one implementation of (cfg, mode) and run its correctness check; raises Skip when it cannot run here."""
    prepared = BUILDERS[impl](cfg, mode, ctx)
    return prepared, (prepared.check() if prepared.check is not None else None)


def step_graphs_delta(before: dict) -> dict:
    """What the Triton per-step loops did while a case group was timed (lstmkern.triton_kernels.step_graph): loops run
    eagerly, captured into CUDA graphs and replayed. Replays mean the timed calls paid no per-step host work; eager
    runs mean the buffers' addresses did not repeat from call to call (or there was nothing per-step to run)."""
    after = step_graph_stats()
    return {k: after[k] - before[k] for k in ("eager", "captured", "replayed")}


def case_record(cfg: BenchConfig, impl: str, mode: str, ctx: RunContext, ceilings: dict | None, prepared: "Prepared",
                max_rel_err: float | None, timing: dict, peak_mb: float | None) -> dict:
    """The json record of one case. tflops / floor_ms / frac_of_floor only where ``ceilings`` were measured (GPU)."""
    ms = timing["ms"]
    elem = torch.empty((), dtype=ctx.dtype).element_size()
    flops = model_flops(prepared.model, mode, cfg.T, cfg.B, cfg.I, prepared.H, prepared.G, prepared.R, prepared.P)
    nbytes = compulsory_bytes(mode, cfg.T, cfg.B, cfg.I, prepared.H, prepared.params, elem, prepared.P)
    floor_ms = (max(flops / (ceilings["matmul_tflops"] * 1e9), nbytes / (ceilings["copy_gbps"] * 1e6))
                if ceilings is not None else None)
    tol = REL_TOL[_dtype_name(ctx.dtype)]
    nonfinite = max_rel_err is not None and not math.isfinite(max_rel_err)
    if nonfinite:  # NaN/inf in the implementation's results: not representable in strict json, and never correct
        max_rel_err = None
    return {
        "config": cfg.name, "impl": impl_label(impl, ctx.device), "mode": mode, "dtype": _dtype_name(ctx.dtype),
        "B": cfg.B, "T": cfg.T, "I": cfg.I, "H": prepared.H, "G": prepared.G, "R": prepared.R, "P": prepared.P,
        "ms": ms, "ms_p20": timing["ms_p20"], "ms_p80": timing["ms_p80"],
        "tflops": flops / (ms * 1e-3) / 1e12 if ceilings is not None else None, "floor_ms": floor_ms,
        "peak_mb": peak_mb, "max_rel_err": max_rel_err,
        "correct": (max_rel_err is not None and max_rel_err <= tol) if prepared.check is not None else None,
        "spread": timing["spread"], "unstable": timing["unstable"],
        # extra fields
        "remeasured": timing["remeasured"], "reps": timing["reps"],
        "op": cfg.op, "model": prepared.model, "params": prepared.params, "flops": flops, "bytes": nbytes,
        "frac_of_floor": floor_ms / ms if floor_ms is not None else None,
        "rel_tol": tol if impl in LSTMKERN_IMPLS else None,
        "check_T": min(ctx.check_t, cfg.T) if max_rel_err is not None else None,
        "sweep": cfg.sweep, "sweep_value": cfg.sweep_value, "detail": prepared.detail, "nonfinite": nonfinite,
        "split": None, "step_graphs": None,
    }


def impl_label(impl: str, device: torch.device) -> str:
    """Name recorded for ``impl``: the nn.LSTM baselines are only "cudnn" on a GPU; on CPU they are "nn-lstm"."""
    if device.type != "cuda" and impl.startswith("cudnn"):
        return impl.replace("cudnn", "nn-lstm", 1)
    return impl


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def baseline_impls(device: torch.device) -> list[str]:
    """The speed-up columns: nn.LSTM of the same size and of the same parameter count, the naive loop, FlashRNN (GPU)."""
    bases = [impl_label("cudnn", device), impl_label("cudnn-sameparams", device), "torch-naive"]
    return bases + (["flashrnn"] if device.type == "cuda" else [])


def markdown_table(cases: list[dict], device: torch.device) -> str:
    """One row per case; speed-ups (baseline ms / lstmkern ms) only on lstmkern rows, marked "?" where either
    measurement was unstable. TFLOP/s and % of floor only on a GPU (on a shared CPU they would mean nothing)."""
    on_gpu = device.type == "cuda"
    by_key = {(c["config"], c["mode"], c["impl"]): c for c in cases}
    bases = baseline_impls(device)
    header = ["config", "mode", "impl", "H", "ms (p20–p80)", "spread"]
    header += ["TFLOP/s", "% of floor", "peak MB"] if on_gpu else []
    header += ["max rel err", "ok"] + [f"× {b}" for b in bases]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in cases:
        speedups = []
        for base in bases:
            b = by_key.get((c["config"], c["mode"], base))
            if b is None or c["impl"] not in LSTMKERN_IMPLS:
                speedups.append("—")
            else:
                shaky = "?" if (b.get("unstable") or c.get("unstable")) else ""
                speedups.append(f"{b['ms'] / c['ms']:.3g}×{shaky}")
        ok = "—" if c["correct"] is None else ("yes" if c["correct"] else "**NO**")
        spread = f"{100 * c['spread']:.0f}%" + (" **unstable**" if c.get("unstable") else "")
        width = f"{c['H']} P{c['P']}" if c.get("P") else str(c["H"])
        row = [c["config"], c["mode"], c["impl"], width, f"{c['ms']:.3f} ({c['ms_p20']:.3f}–{c['ms_p80']:.3f})",
               spread]
        if on_gpu:
            row += [_fmt(c["tflops"], ".3g"),
                    "—" if c["frac_of_floor"] is None else f"{100 * c['frac_of_floor']:.1f}%", _fmt(c["peak_mb"], ".0f")]
        row += [_fmt(c["max_rel_err"], ".1e"), ok, *speedups]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot_sweeps(cases: list[dict], dense_impl: str, out_stem: Path) -> list[str]:
    """Speed-up of each lstmkern implementation over ``dense_impl`` against the swept parameter, one PNG per sweep."""
    swept = sorted({c["sweep"] for c in cases if c["sweep"]})
    if not swept:
        return []
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("plot: matplotlib is not installed, skipping the sweep plot (pip install matplotlib)")
        return []
    written = []
    by_key = {(c["config"], c["mode"], c["impl"]): c for c in cases}
    for param in swept:
        fig, ax = plt.subplots(figsize=(6, 4))
        for impl in LSTMKERN_IMPLS:
            for mode in MODES:
                pts = sorted((c["sweep_value"], by_key[(c["config"], mode, dense_impl)]["ms"] / c["ms"])
                             for c in cases if c["sweep"] == param and c["impl"] == impl and c["mode"] == mode
                             and (c["config"], mode, dense_impl) in by_key)
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=f"{impl} {mode}")
        ax.axhline(1.0, color="gray", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(param)
        ax.set_ylabel(f"speed-up over {dense_impl}")
        ax.set_title(f"speed-up vs {param}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_stem.parent / f"{out_stem.name}-sweep-{param}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(str(path))
    return written


def read_commit() -> str:
    """HEAD's commit read from .git directly (no git process), or "unknown"."""
    git = REPO_ROOT / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(None, 1)[1]
        if (git / ref).is_file():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return "unknown"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def select(args: argparse.Namespace, on_gpu: bool) -> tuple[list[BenchConfig], list[str], list[str]]:
    """Configs, implementations and notes from the command line."""
    known = {**GPU_CONFIGS, **CPU_CONFIGS}
    notes = []
    configs: list[BenchConfig] = []
    if args.configs or not args.sweep:
        names = args.configs.split(",") if args.configs else list(GPU_DEFAULT if on_gpu else CPU_DEFAULT)
        names = [n for name in names for n in CONFIG_SETS.get(name, (name,))]
        for name in names:
            if name not in known:
                raise SystemExit(f"--configs: unknown config {name!r}; known: {', '.join([*known, *CONFIG_SETS])}")
            configs.append(known[name])
    if args.sweep:
        base_name = args.base or ({"R": "flstm-infer"}.get(args.sweep, "glstm-infer") if on_gpu
                                  else {"R": "cpu-flstm"}.get(args.sweep, "cpu-glstm"))
        if base_name not in known:
            raise SystemExit(f"--base: unknown config {base_name!r}; known: {', '.join(known)}")
        if args.values:
            try:
                values = [int(v) for v in args.values.split(",")]
            except ValueError:
                raise SystemExit(f"--values must be comma-separated integers, got {args.values!r}") from None
        else:
            values = DEFAULT_SWEEP_VALUES["gpu" if on_gpu else "cpu"][args.sweep]
        try:
            configs += sweep_configs(known[base_name], args.sweep, values)
        except ValueError as err:
            raise SystemExit(str(err)) from None
    if args.modes:
        modes = args.modes.split(",")
        bad = [m for m in modes if m not in MODES]
        if bad:
            raise SystemExit(f"--modes: unknown mode(s) {bad}; expected a subset of {MODES}")
        configs = [replace(c, modes=tuple(m for m in MODES if m in modes)) for c in configs]
    impls = list(IMPL_NAMES)
    if args.impls:
        impls = args.impls.split(",")
        bad = [i for i in impls if i not in IMPL_NAMES]
        if bad:
            raise SystemExit(f"--impls: unknown implementation(s) {bad}; expected a subset of {IMPL_NAMES}")
    if not on_gpu:
        notes.append("No CUDA device" + (" (--device cpu)" if args.device == "cpu" else "") +
                     ": ran the CPU set; GPU configs skipped: " +
                     ", ".join(GPU_CONFIGS[n].describe() for n in GPU_CONFIGS) +
                     ". Timings on CPU say nothing about GPU speed (Triton runs interpreted there).")
    return configs, impls, notes


def output_path(out: str | None, on_gpu: bool, device_name: str, stamp: _dt.datetime) -> Path:
    """--out as given (a directory, existing or ending in "/", gets the generated file name); otherwise
    bench/results/<timestamp>-<gpu>.json on a GPU and <tmp>/lstmkern-bench/<timestamp>-cpu.json on CPU."""
    name = f"{stamp.strftime('%Y%m%dT%H%M%SZ')}-{_slug(device_name) if on_gpu else 'cpu'}.json"
    if out:
        path = Path(out)
        if out.endswith(("/", os.sep)) or path.is_dir():
            path = path / name
    elif on_gpu:
        path = REPO_ROOT / "bench" / "results" / name
    else:
        path = Path(tempfile.gettempdir()) / "lstmkern-bench" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown CPU"


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def cpu_facts() -> dict:
    """What a CPU timing depends on: model, cores, torch threads, load, the BLAS/oneDNN torch has, and the instruction
    set of lstmkern's CPU cell kernels."""
    facts = {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
             "loadavg": _loadavg(), "mkldnn": torch.backends.mkldnn.is_available(),
             "mkl": torch.backends.mkl.is_available(), "lstmkern_cpu_cell_isa": None}
    try:
        from lstmkern.backends import cpu as cpu_backend
        if cpu_backend.unsupported("glstm", torch.device("cpu"), torch.float32, (1, 1, 1, 1, 1, 0)) is None:
            facts["lstmkern_cpu_cell_isa"] = cpu_backend.cell_isa()
    except Exception:  # noqa: BLE001 - the facts are informative; a missing backend shows up as skipped cases
        pass
    return facts


def main(args: argparse.Namespace) -> int:
    on_gpu = torch.cuda.is_available() and args.device != "cpu"
    if args.list:
        for reg_name, reg in (("GPU", GPU_CONFIGS), ("CPU", CPU_CONFIGS)):
            print(f"{reg_name} configs:")
            for c in reg.values():
                print(f"  {c.describe()}" + (f"  [source: {c.source}]" if c.source else ""))
        print(f"CPU default: {', '.join(CPU_DEFAULT)}")
        for name, members in CONFIG_SETS.items():
            print(f"set {name}: {', '.join(members)}")
        return 0
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    configs, impls, notes = select(args, on_gpu)
    device = torch.device("cuda" if on_gpu else "cpu")
    dtype = getattr(torch, args.dtype or ("bfloat16" if on_gpu else "float32"))
    ctx = RunContext(device=device, dtype=dtype, n_sets=args.input_sets or (4 if on_gpu else 2), seed=args.seed,
                     check_t=args.check_t, no_check=args.no_check, warmup_ms=args.warmup_ms, rep_ms=args.rep_ms,
                     cpu_reps=args.cpu_reps, compile_on_cpu=bool(args.impls) and "torch-compile" in impls)
    device_name = torch.cuda.get_device_name(device) if on_gpu else "cpu"
    for note in notes:
        log("NOTE: " + note)
    facts = None if on_gpu else cpu_facts()
    log(f"device: {device_name}, dtype {_dtype_name(dtype)}, torch {torch.__version__}"
        + (f", TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')}, {facts}" if not on_gpu else ""))
    ceilings = None
    if on_gpu:  # on a CPU shared with other processes a measured "ceiling" is noise, and so would be % of it
        ceilings = measure_ceilings(ctx)
        log(f"ceilings: matmul {ceilings['matmul_tflops']:.2f} TFLOP/s ({ceilings['matmul']}), "
            f"copy {ceilings['copy_gbps']:.1f} GB/s ({ceilings['copy']})")

    stamp = _dt.datetime.now(_dt.timezone.utc)
    out_path = output_path(args.out, on_gpu, device_name, stamp)
    log(f"json (rewritten after every case): {out_path}")
    try:
        import triton
        triton_version = triton.__version__
    except Exception:
        triton_version = None
    result = {
        "device": device_name, "torch": torch.__version__, "triton": triton_version, "commit": read_commit(),
        "timestamp": stamp.isoformat(timespec="seconds"), "cases": [],
        # extra fields
        "complete": False, "dtype": _dtype_name(dtype), "ceilings": ceilings, "cpu": facts, "skipped": [],
        "notes": notes, "configs": [{**vars(c), "modes": list(c.modes)} for c in configs],
        "flashrnn_config_source": FLASHRNN_SOURCE, "input_sets": ctx.n_sets, "unstable_spread": UNSTABLE_SPREAD,
        "timing": ("triton.testing.do_bench (CUDA events, L2 flushed), quantiles 0.5/0.2/0.8, warmup_ms=%g rep_ms=%g"
                   % (ctx.warmup_ms, ctx.rep_ms) if on_gpu
                   else f"time.perf_counter, {max(3, ctx.cpu_reps)} interleaved repetitions (one call of every "
                        f"implementation of the case each, rotating order) after 2 warm-up calls each"),
        "check": None if ctx.no_check else f"float64 lstmkern.reference on the first min(T, {ctx.check_t}) steps",
        "triton_interpret": os.environ.get("TRITON_INTERPRET"),
    }
    cases, skipped = result["cases"], result["skipped"]

    def save() -> None:
        out_path.write_text(json.dumps(result, indent=1) + "\n")

    def skip(cfg: BenchConfig, mode: str, impl: str, reason: str) -> None:
        skipped.append({"config": cfg.name, "impl": impl_label(impl, device), "mode": mode, "reason": reason})

    # One (config, mode) at a time: all its implementations are built, checked, then timed together (interleaved on
    # CPU). Within a group the most telling implementations come first, so a --time-budget loses the least.
    ordered = [i for tier in IMPL_TIERS for i in impls if i in tier]
    groups = [(cfg, mode) for cfg in configs for mode in cfg.modes]
    failed = False
    for n, (cfg, mode) in enumerate(groups, 1):
        tag = f"[{n}/{len(groups)}] {cfg.name} {mode}"
        group: dict[str, Prepared] = {}
        errors: dict[str, float | None] = {}
        for impl in ordered:
            if args.time_budget is not None and time.monotonic() - PROCESS_START > args.time_budget:
                skip(cfg, mode, impl, f"--time-budget {args.time_budget:g} s used up")
                log(f"{tag} {impl_label(impl, device)} skipped: time budget used up")
                continue
            try:
                group[impl], errors[impl] = prepare_case(cfg, impl, mode, ctx)
            except Skip as why:
                skip(cfg, mode, impl, str(why))
                log(f"{tag} {impl_label(impl, device)} skipped: {why}")
            except Exception as err:  # a crash in one implementation must not lose the others' results
                skip(cfg, mode, impl, f"error: {type(err).__name__}: {err}")
                failed |= impl in LSTMKERN_IMPLS
                log(f"{tag} {impl_label(impl, device)} FAILED: {type(err).__name__}: {err}\n{traceback.format_exc()}")
        if group:
            log(f"{tag}: timing {', '.join(impl_label(i, device) for i in group)} ...")
            graphs_before = step_graph_stats()
            try:
                timings = measure_group(group, ctx)
            except Exception as err:  # e.g. out of memory while timing: record it, keep the other groups
                for impl in group:
                    skip(cfg, mode, impl, f"error while timing: {type(err).__name__}: {err}")
                failed |= any(i in LSTMKERN_IMPLS for i in group)
                log(f"{tag} timing FAILED: {type(err).__name__}: {err}\n{traceback.format_exc()}")
                timings = {}
            for impl, timing in timings.items():
                prepared = group[impl]
                peak_mb = measure_peak_mb(prepared.call, prepared.grad_to_none, prepared.io_bytes, device)
                rec = case_record(cfg, impl, mode, ctx, ceilings, prepared, errors[impl], timing, peak_mb)
                if impl == "lstmkern-triton":
                    rec["step_graphs"] = step_graphs_delta(graphs_before)
                    log(f"{tag} {rec['impl']}: per-step loops {rec['step_graphs']} (step_graph: eager / captured / "
                        f"replayed)")
                if mode == "fwdbwd" and not args.no_split:
                    try:
                        rec["split"] = profile_split(prepared.call, prepared.grad_to_none, device)
                    except Exception as err:  # the split is a diagnosis: losing it must not lose the timing
                        log(f"{tag} {rec['impl']}: time split failed: {type(err).__name__}: {err}")
                cases.append(rec)
                failed |= rec["correct"] is False
                err_txt = "" if rec["max_rel_err"] is None else f", max_rel_err {rec['max_rel_err']:.1e}" + (
                    "" if rec["correct"] else " NOT CORRECT")
                if rec["nonfinite"]:
                    err_txt = ", NON-FINITE results: NOT CORRECT"
                rate = (f", {rec['tflops']:.3g} TFLOP/s, {100 * rec['frac_of_floor']:.1f}% of floor"
                        if rec["tflops"] is not None else "")
                flag = " UNSTABLE" if rec["unstable"] else (" (re-measured)" if rec["remeasured"] else "")
                log(f"{tag} {rec['impl']}: {rec['ms']:.3f} ms ({rec['ms_p20']:.3f}-{rec['ms_p80']:.3f}, spread "
                    f"{100 * rec['spread']:.0f}%{flag}){rate}{err_txt}")
        del group
        gc.collect()
        if on_gpu:
            torch.cuda.empty_cache()
        save()
    # Report in config order, then mode, then implementation order.
    config_rank = {c.name: k for k, c in enumerate(configs)}
    impl_rank = {impl_label(i, device): k for k, i in enumerate(IMPL_NAMES)}
    cases.sort(key=lambda c: (config_rank[c["config"]], MODES.index(c["mode"]), impl_rank[c["impl"]]))
    if facts is not None:
        facts["loadavg_end"] = _loadavg()
    result["complete"] = True
    save()

    print()
    print(f"## lstmkern kernel benchmark — {device_name}, {_dtype_name(dtype)}, torch {torch.__version__}, "
          f"triton {triton_version}, commit {result['commit'][:12]}")
    print()
    if ceilings is not None:
        print(f"Ceilings measured in this run: matmul {ceilings['matmul_tflops']:.2f} TFLOP/s, "
              f"copy {ceilings['copy_gbps']:.1f} GB/s. Speed-up columns: baseline ms / lstmkern ms.")
    else:
        print(f"CPU: {facts['cpu_model']}, {facts['torch_threads']} torch threads of {facts['cpu_count']} cores, "
              f"load average {facts['loadavg']} at the start and {facts['loadavg_end']} at the end; lstmkern cpu "
              f"cell kernels: {facts['lstmkern_cpu_cell_isa']}. {max(3, ctx.cpu_reps)} interleaved repetitions. "
              f"Speed-up columns: baseline ms / lstmkern ms (? = from an unstable row).")
    print()
    print(markdown_table(cases, device) if cases else "(no case ran)")
    split = split_table(cases)
    if split:
        print()
        print("Where a training call's time goes (extra profiled calls after the timing, per call; "
              + ("kernel time on the GPU" if on_gpu else "self CPU time with profiler overhead: read as proportions;"
                 " the C++ cpu backend's ops do their BLAS calls inside and show as one recurrent block") + "):")
        print()
        print(split)
    unstable = [c for c in cases if c["unstable"]]
    if unstable:
        print()
        print(f"Unstable (spread above {100 * UNSTABLE_SPREAD:.0f}% after one re-measurement; the machine was busy): "
              + ", ".join(f"{c['config']} {c['mode']} {c['impl']}" for c in unstable))
    if skipped:
        print()
        print("Skipped:")
        for s in skipped:
            print(f"- {s['config']} {s['mode']} {s['impl']}: {s['reason']}")
    for note in notes:
        print()
        print("Note: " + note)
    if not args.no_plot:
        for path in plot_sweeps(cases, impl_label("cudnn", device), out_path.with_suffix("")):
            print(f"plot: {path}")
    print()
    print(f"json: {out_path}")
    if failed:
        log("FAILED: an lstmkern implementation crashed or was not correct (see above)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
