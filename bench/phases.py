"""Where the time of a training call goes: forward, recurrent backward, and the backward's time-parallel GEMMs.

Issue 12 asks the first GPU run to show, for every training config, how a forward + backward call splits into
  * fwd            everything the forward runs (input projection and the recurrence),
  * bwd_recurrent  the backward's reverse-time recurrence (persistent kernel or per-step kernels) and its pointwise
                   work,
  * bwd_gemm       the backward's time-parallel matrix products: gate recompute, dx and the weight gradients.
:func:`profile_split` runs a prepared call a few times under ``torch.profiler`` and attributes each piece of work to
one of those. On a GPU the pieces are kernels (their measured device time), attributed through the CPU operation
that launched them: work under an autograd-engine node is backward, the rest forward; a kernel whose name says matrix
product (cuBLAS/CUTLASS names, Triton's ``_grouped_gemm_kernel`` and ``*_projection_kernel``) is ``bwd_gemm``. On a CPU
the pieces are the self times of the profiled operations (``aten::mm`` and friends are ``bwd_gemm``); an operation that
does its own BLAS calls inside (the C++ ``cpu`` backend's ops) shows as one block of ``bwd_recurrent``, which the
report says. Device time that no launching operation claims is reported as ``unattributed`` rather than guessed.

The profiled calls are extra calls after the timing, so profiler overhead never touches the timed medians; on a CPU
the profiler inflates per-operation costs, so read the CPU split as proportions.
"""
from __future__ import annotations

import re
from typing import Callable

import torch
from torch import Tensor

PHASES = ("fwd", "bwd_recurrent", "bwd_gemm")
# Kernel names of time-parallel matrix products: cuBLAS (sm90_xmma_gemm_*, *_s16816gemm_*, gemv*, ...), CUTLASS,
# cuDNN's GEMM-based weight-gradient kernels, Triton's grouped GEMM and input-projection kernels.
GEMM_KERNEL = re.compile(r"gemm|gemv|matmul|cutlass|xmma|wgmma|_projection_kernel", re.IGNORECASE)
# CPU operations that are one matrix product each.
CPU_GEMM_OPS = frozenset({"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear",
                          "aten::einsum", "aten::addbmm"})
# The autograd engine runs every backward node inside a range with this prefix.
BACKWARD_RANGE = "autograd::engine::evaluate_function"


def _in_backward(event) -> bool:
    while event is not None:
        if event.name.startswith(BACKWARD_RANGE):
            return True
        event = event.cpu_parent
    return False


def _phase(backward: bool, gemm: bool) -> str:
    if not backward:
        return "fwd"
    return "bwd_gemm" if gemm else "bwd_recurrent"


def attribute(events, on_gpu: bool) -> dict[str, float]:
    """Microseconds per phase of a list of profiler FunctionEvents (``prof.events()``); on a GPU also "unattributed"
    (device time of kernels no launching operation claims)."""
    totals = dict.fromkeys((*PHASES, "unattributed") if on_gpu else PHASES, 0.0)
    device_total = 0.0
    for event in events:
        is_cpu_event = event.device_type == torch.autograd.DeviceType.CPU
        if on_gpu:
            if not is_cpu_event:  # a kernel's own record: its duration counts toward the device total
                device_total += event.device_time_total
                continue
            backward = _in_backward(event)
            for kernel in event.kernels:
                totals[_phase(backward, bool(GEMM_KERNEL.search(kernel.name)))] += kernel.duration
        elif is_cpu_event:
            totals[_phase(_in_backward(event), event.name in CPU_GEMM_OPS)] += event.self_cpu_time_total
    if on_gpu:
        totals["unattributed"] = max(0.0, device_total - sum(totals[p] for p in PHASES))
    return totals


def profile_split(call: Callable[[], None], grad_to_none: list[Tensor], device: torch.device,
                  calls: int = 2) -> dict:
    """Run ``call`` (one forward + backward) ``calls`` times under torch.profiler; per-call milliseconds of each phase.

    Returns {"fwd_ms", "bwd_recurrent_ms", "bwd_gemm_ms", "unattributed_ms" (None on CPU), "calls", "source"}.

    Example::

        split = profile_split(prepared.call, prepared.grad_to_none, torch.device("cuda"))
        split["bwd_recurrent_ms"] / split["fwd_ms"]
    """
    from torch.profiler import ProfilerActivity, profile

    on_gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    if on_gpu:
        torch.cuda.synchronize(device)
    with profile(activities=activities) as prof:
        for _ in range(calls):
            for t in grad_to_none:
                t.grad = None
            call()
        if on_gpu:
            torch.cuda.synchronize(device)
    totals = attribute(prof.events(), on_gpu)
    split = {f"{name}_ms": us / 1e3 / calls for name, us in totals.items()}
    split.setdefault("unattributed_ms", None)
    split["calls"] = calls
    split["source"] = ("torch.profiler kernel time (CUDA), attributed through the launching operation" if on_gpu
                       else "torch.profiler self CPU time of each operation (profiler overhead included)")
    return split


def split_table(cases: list[dict]) -> str:
    """Markdown table of the split of every case that has one; bwd/fwd is the issue's "backward within 2.5x of the
    forward" measure (recurrent backward plus GEMMs over forward)."""
    rows = [c for c in cases if c.get("split")]
    if not rows:
        return ""
    lines = ["| config | impl | fwd ms | bwd recurrent ms | bwd GEMMs ms | unattributed ms | bwd / fwd |",
             "|---|---|---|---|---|---|---|"]
    for c in rows:
        s = c["split"]
        bwd = s["bwd_recurrent_ms"] + s["bwd_gemm_ms"]
        ratio = f"{bwd / s['fwd_ms']:.2f}" if s["fwd_ms"] > 0 else "—"
        unattributed = "—" if s["unattributed_ms"] is None else f"{s['unattributed_ms']:.3f}"
        lines.append(f"| {c['config']} | {c['impl']} | {s['fwd_ms']:.3f} | {s['bwd_recurrent_ms']:.3f} | "
                     f"{s['bwd_gemm_ms']:.3f} | {unattributed} | {ratio} |")
    return "\n".join(lines)
