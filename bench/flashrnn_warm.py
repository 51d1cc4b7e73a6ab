"""Warm FlashRNN's JIT build for the glstm-flashrnn benchmark and check that it computes lstmkern's G-LSTM layer.

FlashRNN (an optional benchmark anchor, not a dependency) compiles its CUDA kernels on first use for each (batch size,
hidden size, heads, dtype) into torch's extension cache (~/.cache/torch_extensions), so a benchmark process that comes
after this one only loads them. bench/gpu.sh runs this in its own stage with its own time limit before the benchmark
(call 2), so the compile neither eats the benchmark's budget nor goes unreported.

It runs the glstm-flashrnn config's B, H and G (bench.bench_kernels.GPU_CONFIGS) in the benchmark's dtype at a short
T, forward and backward, through the same layout conversion as the benchmark (flashrnn_layout, flashrnn_input), with
the backends the benchmark tries in its order ("cuda_fused", then "cuda"), and compares h with lstmkern.reference in
float64: the relative error must stay under the benchmark's tolerance for the dtype (REL_TOL).

Usage (GPU machine, FlashRNN importable, in the repository root):
    python -m bench.flashrnn_warm [--dtype bfloat16] [--steps 16]
The last line is "flashrnn_warm: OK backend=... rel_err=... seconds=..." or "flashrnn_warm: FAILED ..." (exit 1).
Shape legend: T time steps, B batch, I input features, H hidden units, G groups, Hg = H / G.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from bench.bench_kernels import GPU_CONFIGS, REL_TOL, flashrnn_input, flashrnn_layout
from lstmkern.reference import glstm_reference

BACKENDS = ("cuda_fused", "cuda")  # bench_kernels.build_flashrnn's order


def check_backend(flashrnn, backend: str, T: int, dtype: torch.dtype) -> float:
    """Forward + backward of FlashRNN's ``backend`` at glstm-flashrnn's B, H, G; relative error of h against the
    float64 reference."""
    cfg = GPU_CONFIGS["glstm-flashrnn"]
    B, I, H, G = cfg.B, cfg.I, cfg.H, cfg.G
    Hg, Ig = H // G, I // G
    device = torch.device("cuda")

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, device=device, dtype=torch.float64) * scale

    x, h0, c0 = randn(T, B, I), randn(B, H, scale=0.5), randn(B, H, scale=0.5)
    weight_ih, weight_hh = randn(G, 4 * Hg, Ig, scale=Ig**-0.5), randn(G, 4 * Hg, Hg, scale=Hg**-0.5)
    bias = randn(G, 4 * Hg, scale=0.1)
    low = [t.to(dtype) for t in (x, h0, c0, weight_ih, weight_hh, bias)]
    R, b, states = flashrnn_layout(low[4], low[5], low[1], low[2], G)
    R.requires_grad_(True)
    wx = flashrnn_input(low[0], low[3], G).requires_grad_(True)
    out, _ = flashrnn(wx, R, b, states=states, function="lstm", backend=backend,
                      dtype=str(dtype).removeprefix("torch."))
    h = out[0]  # (B, T, heads, Hg)
    h.backward(torch.randn_like(h))
    torch.cuda.synchronize()
    if R.grad is None or not torch.isfinite(R.grad).all():
        raise RuntimeError("the backward gave no finite gradient of R")
    got = h.detach().permute(1, 0, 2, 3).reshape(T, B, H).double()
    expected, _ = glstm_reference(*(t.double() for t in low))
    return ((got - expected).abs().max() / expected.abs().max()).item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--steps", type=int, default=16, help="time steps T of the check (the build does not "
                        "depend on T)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("flashrnn_warm: FAILED no CUDA GPU")
        return 1
    try:
        from flashrnn import flashrnn
    except Exception as err:  # noqa: BLE001 - reported, the benchmark then skips FlashRNN
        print(f"flashrnn_warm: FAILED flashrnn not importable: {type(err).__name__}: {err}")
        return 1
    dtype = getattr(torch, args.dtype)
    tolerance = REL_TOL[args.dtype]
    torch.manual_seed(0)
    errors = []
    for backend in BACKENDS:
        start = time.monotonic()
        try:
            rel_err = check_backend(flashrnn, backend, args.steps, dtype)
        except Exception as err:  # noqa: BLE001 - compile or launch failure: the benchmark tries the next backend
            first_line = str(err).splitlines()[0] if str(err) else ""
            errors.append(f"{backend}: {type(err).__name__}: {first_line} ({time.monotonic() - start:.0f} s)")
            print(f"flashrnn_warm: backend {backend} failed: {errors[-1]}", flush=True)
            continue
        seconds = time.monotonic() - start
        if not rel_err <= tolerance:
            print(f"flashrnn_warm: FAILED backend={backend} rel_err={rel_err:.2e} > {tolerance:.0e} "
                  f"(the layout conversion or FlashRNN is wrong)")
            return 1
        print(f"flashrnn_warm: OK backend={backend} rel_err={rel_err:.2e} seconds={seconds:.0f}"
              + (f" (after: {'; '.join(errors)})" if errors else ""))
        return 0
    print("flashrnn_warm: FAILED " + "; ".join(errors))
    return 1


if __name__ == "__main__":
    sys.exit(main())
