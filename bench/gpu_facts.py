"""Occupancy facts the CUDA kernels' design depends on, read off the GPU; bench/gpu.sh prints them into its summary.

For each headline benchmark shape (bench.bench_kernels.GPU_CONFIGS) in the benchmark's dtype it prints the forward
kernel that lstmkern's "cuda" backend picks there and whether all the CTAs of one launch are resident at once:

* cluster G-LSTM forward, C CTAs per (group, batch tile): the layer launches G * ceil(B / 16) clusters and the device
  holds cudaOccupancyMaxActiveClusters of them at once. glstm-train (G = 8, B = 64, C = 4) needs 32 clusters of 4; if
  fewer are resident, the rest run as a second wave and the layer takes about twice as long.
* cluster F-LSTM forward, C CTAs per batch tile (C = 16 is the non-portable size: a GPC with 16 free SMs): ceil(B / 16)
  clusters.
* grid F-LSTM forward on N CTAs: a cooperative launch, so all N must be co-resident (else the launcher refuses and the
  backend falls back to Triton).
* single-CTA kernels: G * ceil(B / 16) CTAs against the SM count (more CTAs than resident ones is another wave).

Usage (on the GPU machine, after the build, in the repository root):  python -m bench.gpu_facts [--dtype bfloat16]
Shape legend: T time steps, B batch, I input features, H hidden units, G groups, Hg = H / G, R rank, C cluster size,
N CTA count of the grid F-LSTM forward.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Callable

import torch

from bench.bench_kernels import GPU_CONFIGS, BenchConfig
from lstmkern.backends import cuda as cuda_backend

# Batch rows per CTA of the fp16/bf16 forwards (WMMA tiles; glstm_fwd_batch_tile and flstm_cluster_batch_tile in
# csrc/persistent_layout.h). The facts are printed for those dtypes only: they are what the benchmark times.
BATCH_TILE = 16
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class DeviceLimits:
    name: str
    cc: tuple[int, int]
    sm_count: int
    smem_optin: int  # bytes of opt-in dynamic shared memory per block


@dataclass(frozen=True)
class ResidencyQueries:
    """The extension's occupancy queries for the current device (fakes in tests)."""
    glstm_clusters: Callable[[int, int, torch.dtype], int]       # (Hg, C, dtype) -> max active clusters
    flstm_clusters: Callable[[int, int, int, torch.dtype], int]  # (H, R, C, dtype) -> max active clusters
    grid_ctas: Callable[[int, int, int, torch.dtype], int]       # (H, R, N, dtype) -> max resident CTAs


def _waves(needed: int, resident: int) -> str:
    if resident <= 0:
        return "NOT RESIDENT: cannot launch"
    waves = math.ceil(needed / resident)
    return "one wave" if waves == 1 else f"{waves} WAVES: about {waves}x the time of one"


def layer_fact(cfg: BenchConfig, dtype: torch.dtype, limits: DeviceLimits, queries: ResidencyQueries) -> str:
    """One line: the forward kernel the automatic choice runs for ``cfg`` and whether one launch is co-resident."""
    tiles = math.ceil(cfg.B / BATCH_TILE)
    head = f"{cfg.name} ({cfg.op} H={cfg.H} {'G=' + str(cfg.G) if cfg.op == 'glstm' else 'R=' + str(cfg.R)} B={cfg.B})"
    if cfg.op == "glstm":
        hg = cfg.H // cfg.G
        C = cuda_backend.glstm_cluster_size(hg, dtype, limits.smem_optin, limits.cc)
        if C == 0:
            return f"{head}: no CUDA kernel fits (the backend runs Triton)"
        if C == 1:
            ctas = cfg.G * tiles
            return f"{head}: single-CTA forward, {ctas} CTAs on {limits.sm_count} SMs"
        needed = cfg.G * tiles
        active = queries.glstm_clusters(hg, C, dtype)
        return (f"{head}: cluster forward C={C}, needs {needed} clusters of {C}, {active} resident at once -> "
                f"{_waves(needed, active)}")
    C = cuda_backend.flstm_cluster_size(cfg.H, cfg.R, dtype, limits.smem_optin, limits.cc)
    if C == 1:
        return f"{head}: single-CTA forward, {tiles} CTAs on {limits.sm_count} SMs"
    if C > 1:
        active = queries.flstm_clusters(cfg.H, cfg.R, C, dtype)
        return (f"{head}: cluster forward C={C}, needs {tiles} clusters of {C}, {active} resident at once -> "
                f"{_waves(tiles, active)}")
    N = cuda_backend.flstm_grid_ctas(cfg.H, cfg.R, dtype, limits.smem_optin, limits.sm_count)
    if N == 0:
        return f"{head}: no CUDA kernel fits (the backend runs Triton)"
    resident = queries.grid_ctas(cfg.H, cfg.R, N, dtype)
    verdict = "all co-resident" if resident >= N else "NOT all co-resident: the backend falls back to Triton"
    return f"{head}: grid forward N={N} CTAs, {resident} resident at once -> {verdict}"


def device_facts(dtype: torch.dtype, limits: DeviceLimits, queries: ResidencyQueries) -> list[str]:
    lines = [f"GPU {limits.name}: compute capability {limits.cc[0]}.{limits.cc[1]}, {limits.sm_count} SMs, "
             f"{limits.smem_optin} bytes opt-in shared memory per block; forward kernels in {dtype}:"]
    lines += ["  " + layer_fact(cfg, dtype, limits, queries) for cfg in GPU_CONFIGS.values()]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_facts: no CUDA GPU")
        return 1
    import lstmkern._C  # noqa: F401  (registers torch.ops.lstmkern_cuda)

    ops = torch.ops.lstmkern_cuda
    device = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(device)
    limits = DeviceLimits(name=props.name, cc=(props.major, props.minor), sm_count=props.multi_processor_count,
                          smem_optin=int(ops.device_smem_optin(device)))
    queries = ResidencyQueries(
        glstm_clusters=lambda hg, C, dt: int(ops.glstm_cluster_max_active_clusters(device, hg, C, dt)),
        flstm_clusters=lambda H, R, C, dt: int(ops.flstm_cluster_max_active_clusters(device, H, R, C, dt)),
        grid_ctas=lambda H, R, N, dt: int(ops.flstm_grid_max_resident_ctas(device, H, R, N, dt)))
    for line in device_facts(DTYPES[args.dtype], limits, queries):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
