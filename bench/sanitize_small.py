"""Exercise every persistent kernel (G-LSTM and F-LSTM, forward and backward, fp32/fp16/bf16, with and without bias
and grad_cell) at small awkward sizes, for NVIDIA compute-sanitizer on a GPU:

    for tool in memcheck racecheck initcheck synccheck; do
        PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool $tool --kernel-name kns=lstmkern \
            --error-exitcode 1 python bench/sanitize_small.py || echo "$tool FAILED"
    done

(bench/gpu.sh's memcheck and racecheck stages run exactly that: only lstmkern's kernels instrumented, PyTorch's
caching allocator off so an out-of-bounds access into a pooled block is seen.)

Sizes cross the batch tiles (8 rows FMA, 16 rows WMMA) and leave partial WMMA tiles (Hg not a multiple of 16).
On compute capability 9.x it also runs the thread-block-cluster G-LSTM forward and backward (csrc/glstm_cluster.cu)
with 2, 4 and 8 CTAs per group, forced at small Hg through the ops' cluster_size argument (the automatic choice only
takes them for groups too large for one CTA, which would make the sanitizer runs slow), so their DSMEM accesses and
cluster barriers run under the sanitizer tools too; likewise the thread-block-cluster F-LSTM forward and backward
(csrc/flstm_cluster.cu, csrc/flstm_cluster_bwd.cu) with 2, 4, 8 and 16 CTAs per batch tile (16 is the non-portable
size; skipped with a note where the GPU cannot make such a cluster resident).
On compute capability 8.0 and newer it also runs the grid-cooperative F-LSTM forward (csrc/flstm_grid.cu) forced
through the op's grid_ctas argument with 1 to 6 CTAs (its global-memory z exchange and grid barriers, the masked z
columns where R is not a multiple of N, and the zero-filled padding rows of the last batch tile).
Projected G-LSTM layers (LSTMP) run forward and backward on the F-LSTM kernels' projected mode, forced alike on one
CTA, a cluster (9.x) and the grid (1 to 3 CTAs, G = 1 and 3), so the projected backwards' group-restricted dz exchange
and prologue run under the tools too.
Last, every kernel family on inputs that start one element into their storage (contiguous, element-aligned only).
Also checks the results against the float64 reference loosely, so a silent wrong answer fails too.
Shape legend: T time steps, B batch, I input features, H hidden units, G groups, Hg = H / G, Ig = I / G, R rank,
C cluster size, N CTA count of the grid F-LSTM forward.
"""
from __future__ import annotations

import time

import torch

import lstmkern._C  # noqa: F401  (registers torch.ops.lstmkern_cuda)
from lstmkern.backends import cuda as cuda_backend
from lstmkern.reference import flstm_reference, glstm_reference

GLSTM_SIZES = [(1, 1, 1, 1, 1), (3, 17, 3, 5, 2), (4, 9, 2, 16, 3)]  # (T, B, G, Hg, Ig)
FLSTM_SIZES = [(1, 1, 1, 1, 1), (3, 9, 4, 7, 3)]  # (T, B, I, H, R)
# (C, T, B, G, Hg, Ig): Hs = Hg / C = 16 or 32, B crossing the batch tiles, T = 1 (no DSMEM push at all) included.
GLSTM_CLUSTER_SIZES = [(2, 3, 17, 2, 32, 2), (4, 2, 9, 1, 64, 3), (8, 2, 3, 1, 128, 1), (2, 1, 2, 1, 64, 1)]
# (C, T, B, I, H, R): Hs = H / C = 16 or 32, Rs = R / C down to 1 column, B crossing the batch tiles, T = 1 (a single
# exchange, then exit) included.
FLSTM_CLUSTER_SIZES = [(2, 3, 17, 3, 64, 32), (4, 2, 9, 2, 128, 16), (8, 1, 3, 1, 128, 16), (16, 2, 2, 4, 256, 32),
                       (16, 1, 1, 1, 256, 16)]
# (N, T, B, I, H, R): Hs = H / N = 16 or 32; Rs = ceil(R / N) = 6 with the last CTA reducing 2 columns (N = 6), one
# column per item (Rs = 3) and 4 (vector path); B crossing the batch tiles; T = 1 and a grid of one CTA included.
FLSTM_GRID_SIZES = [(2, 3, 17, 3, 64, 32), (6, 2, 9, 2, 192, 32), (4, 1, 1, 1, 64, 16), (1, 2, 3, 2, 32, 16),
                    (3, 2, 19, 1, 96, 16)]
# (kernel, T, B, I, H, P, G): the projected forward and backward forced on one CTA (G = 3, B crossing the 8-row tile),
# clusters of 2 (G = 1, B crossing the 16-row tile) and 4 (G = 2, T = 1), grids of 1 and 3 CTAs (G = 3: one CTA per
# group; G = 1 with Rs = 11, one dz column per item).
PROJECTED_SIZES = [({"cluster_size": 1}, 3, 17, 6, 12, 6, 3), ({"cluster_size": 2}, 2, 17, 3, 64, 32, 1),
                   ({"cluster_size": 4}, 1, 3, 4, 128, 32, 2), ({"grid_ctas": 1}, 2, 3, 2, 16, 16, 1),
                   ({"grid_ctas": 3}, 2, 19, 3, 96, 48, 3), ({"grid_ctas": 3}, 2, 9, 4, 48, 32, 1)]
TOLERANCE = {torch.float32: 1e-4, torch.float16: 5e-2, torch.bfloat16: 2e-1}


def _rand(*shape, dtype):
    return (torch.randn(*shape, device="cuda", dtype=torch.float64) * 0.5).to(dtype)


def run(kind: str, sizes: tuple[int, ...], dtype: torch.dtype, with_bias: bool, with_grad_cell: bool) -> None:
    if kind == "glstm":
        T, B, G, Hg, Ig = sizes
        H, I = G * Hg, G * Ig
        w_a, w_b = _rand(G, 4 * Hg, Ig, dtype=dtype), _rand(G, 4 * Hg, Hg, dtype=dtype)
        bias = _rand(G, 4 * Hg, dtype=dtype) if with_bias else None
        fwd, bwd, ref = cuda_backend.glstm_fwd, cuda_backend.glstm_bwd, glstm_reference
    else:
        T, B, I, H, R = sizes
        w_a, w_b = _rand(R, I + H, dtype=dtype), _rand(4 * H, R, dtype=dtype)
        bias = _rand(4 * H, dtype=dtype) if with_bias else None
        fwd, bwd, ref = cuda_backend.flstm_fwd, cuda_backend.flstm_bwd, flstm_reference
    x, h0, c0 = _rand(T, B, I, dtype=dtype), _rand(B, H, dtype=dtype), _rand(B, H, dtype=dtype)
    output, cell = fwd(x, h0, c0, w_a, w_b, bias)
    grad_cell = torch.randn(T, B, H, device="cuda") if with_grad_cell else None
    grads = bwd(torch.randn(T, B, H, device="cuda").to(dtype), grad_cell, x, h0, c0, w_a, w_b, bias, output, cell)
    torch.cuda.synchronize()
    expected, _ = ref(*(None if t is None else t.double() for t in (x, h0, c0, w_a, w_b, bias)))
    error = (output.double() - expected).abs().max().item()
    assert error <= TOLERANCE[dtype], f"{kind} {sizes} {dtype}: output error {error:.3e}"
    assert all(torch.isfinite(g).all() for g in grads), f"{kind} {sizes} {dtype}: non-finite gradient"


def run_cluster(sizes: tuple[int, ...], dtype: torch.dtype, with_bias: bool) -> None:
    C, T, B, G, Hg, Ig = sizes
    H, I = G * Hg, G * Ig
    w_ih, w_hh = _rand(G, 4 * Hg, Ig, dtype=dtype), _rand(G, 4 * Hg, Hg, dtype=dtype) * Hg**-0.5
    bias = _rand(G, 4 * Hg, dtype=dtype) if with_bias else None
    x, h0, c0 = _rand(T, B, I, dtype=dtype), _rand(B, H, dtype=dtype), _rand(B, H, dtype=dtype)
    ops = torch.ops.lstmkern_cuda
    output, cell = ops.glstm_persistent_fwd(x, h0, c0, w_ih, w_hh, bias, cluster_size=C)
    grads = ops.glstm_persistent_bwd(torch.randn(T, B, H, device="cuda").to(dtype), torch.randn(T, B, H, device="cuda"),
                                     x, h0, c0, w_ih, w_hh, bias, output, cell, cluster_size=C)
    torch.cuda.synchronize()
    expected, expected_cell = glstm_reference(*(None if t is None else t.double() for t in (x, h0, c0, w_ih, w_hh,
                                                                                              bias)))
    error = max((output.double() - expected).abs().max().item(), (cell.double() - expected_cell).abs().max().item())
    assert error <= TOLERANCE[dtype], f"glstm cluster {sizes} {dtype}: output/cell error {error:.3e}"
    assert all(torch.isfinite(g).all() for g in grads), f"glstm cluster {sizes} {dtype}: non-finite gradient"


def run_flstm_cluster(sizes: tuple[int, ...], dtype: torch.dtype, with_bias: bool) -> bool:
    """One forced cluster F-LSTM forward and backward (csrc/flstm_cluster.cu, csrc/flstm_cluster_bwd.cu); False (and a
    note) where a cluster of 16 cannot be resident on this GPU."""
    C, T, B, I, H, R = sizes
    w1, w2 = _rand(R, I + H, dtype=dtype) * (I + H) ** -0.5, _rand(4 * H, R, dtype=dtype) * R**-0.5
    bias = _rand(4 * H, dtype=dtype) if with_bias else None
    x, h0, c0 = _rand(T, B, I, dtype=dtype), _rand(B, H, dtype=dtype), _rand(B, H, dtype=dtype)
    ops = torch.ops.lstmkern_cuda
    try:
        output, cell = ops.flstm_persistent_fwd(x, h0, c0, w1, w2, bias, cluster_size=C)
        grads = ops.flstm_persistent_bwd(torch.randn(T, B, H, device="cuda").to(dtype),
                                         torch.randn(T, B, H, device="cuda"), x, h0, c0, w1, w2, bias, output, cell,
                                         cluster_size=C)
    except RuntimeError as err:
        if C > 8 and "cannot be resident" in str(err):
            print(f"sanitize_small: flstm cluster {sizes} skipped: {err}")
            return False
        raise
    torch.cuda.synchronize()
    expected, expected_cell = flstm_reference(*(None if t is None else t.double() for t in (x, h0, c0, w1, w2, bias)))
    error = max((output.double() - expected).abs().max().item(), (cell.double() - expected_cell).abs().max().item())
    assert error <= TOLERANCE[dtype], f"flstm cluster {sizes} {dtype}: output/cell error {error:.3e}"
    assert all(torch.isfinite(g).all() for g in grads), f"flstm cluster {sizes} {dtype}: non-finite gradient"
    return True


def run_flstm_grid(sizes: tuple[int, ...], dtype: torch.dtype, with_bias: bool) -> None:
    """One forced grid-cooperative F-LSTM forward against the float64 reference, and the grid backward on it
    (csrc/flstm_grid.cu, csrc/flstm_grid_bwd.cu)."""
    N, T, B, I, H, R = sizes
    w1, w2 = _rand(R, I + H, dtype=dtype) * (I + H) ** -0.5, _rand(4 * H, R, dtype=dtype) * R**-0.5
    bias = _rand(4 * H, dtype=dtype) if with_bias else None
    x, h0, c0 = _rand(T, B, I, dtype=dtype), _rand(B, H, dtype=dtype), _rand(B, H, dtype=dtype)
    output, cell = torch.ops.lstmkern_cuda.flstm_persistent_fwd(x, h0, c0, w1, w2, bias, grid_ctas=N)
    grads = torch.ops.lstmkern_cuda.flstm_persistent_bwd(torch.randn(T, B, H, device="cuda").to(dtype),
                                                         torch.randn(T, B, H, device="cuda"), x, h0, c0, w1, w2, bias,
                                                         output, cell, grid_ctas=N)
    torch.cuda.synchronize()
    expected, expected_cell = flstm_reference(*(None if t is None else t.double() for t in (x, h0, c0, w1, w2, bias)))
    error = max((output.double() - expected).abs().max().item(), (cell.double() - expected_cell).abs().max().item())
    assert error <= TOLERANCE[dtype], f"flstm grid {sizes} {dtype}: output/cell error {error:.3e}"
    assert all(torch.isfinite(g).all() for g in grads), f"flstm grid {sizes} {dtype}: non-finite gradient"


def run_projected(sizes: tuple, dtype: torch.dtype, with_bias: bool, with_grad_cell: bool) -> None:
    """One projected G-LSTM layer with its forward and backward forced on the same kernel (csrc/flstm_persistent.cu,
    csrc/flstm_cluster.cu + flstm_cluster_bwd.cu, csrc/flstm_grid.cu + flstm_grid_bwd.cu in their projected mode)."""
    kernel, T, B, I, H, P, G = sizes
    Hg, Pg, Ig = H // G, P // G, I // G
    w_ih, w_hh = _rand(G, 4 * Hg, Ig, dtype=dtype) * Ig**-0.5, _rand(G, 4 * Hg, Pg, dtype=dtype) * Pg**-0.5
    w_hr = _rand(P, H, dtype=dtype) * H**-0.5
    bias = _rand(G, 4 * Hg, dtype=dtype) if with_bias else None
    x, h0, c0 = _rand(T, B, I, dtype=dtype), _rand(B, P, dtype=dtype), _rand(B, H, dtype=dtype)
    ops = torch.ops.lstmkern_cuda
    output, cell = ops.glstm_persistent_fwd(x, h0, c0, w_ih, w_hh, bias, weight_hr=w_hr, **kernel)
    grad_cell = torch.randn(T, B, H, device="cuda") if with_grad_cell else None
    grads = ops.glstm_persistent_bwd(torch.randn(T, B, P, device="cuda").to(dtype), grad_cell, x, h0, c0, w_ih, w_hh,
                                     bias, output, cell, weight_hr=w_hr, **kernel)
    torch.cuda.synchronize()
    expected, _ = glstm_reference(*(None if t is None else t.double() for t in (x, h0, c0, w_ih, w_hh, bias, w_hr)))
    error = (output.double() - expected).abs().max().item()
    assert error <= TOLERANCE[dtype], f"projected {sizes} {dtype}: output error {error:.3e}"
    assert len(grads) == 7 and grads[6].shape == w_hr.shape, f"projected {sizes} {dtype}: no dweight_hr"
    assert all(torch.isfinite(g).all() for g in grads), f"projected {sizes} {dtype}: non-finite gradient"


def _element_aligned(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of t that starts one element into its storage (aligned to its element size only)."""
    copy = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)[1:].view(t.shape)
    return copy.copy_(t)


def run_misaligned(dtype: torch.dtype) -> None:
    """Every kernel family on inputs that start one element into their storage: under memcheck a kernel that assumed
    more than element alignment of a user pointer shows as a misaligned access (the grid forward's h0 is copied by
    its launcher, see csrc/cuda_ops.cpp aligned_or_copy)."""
    ops = torch.ops.lstmkern_cuda
    T, B, G, Hg, Ig = 2, 5, 2, 32, 3
    glstm = [_rand(T, B, G * Ig, dtype=dtype), _rand(B, G * Hg, dtype=dtype), _rand(B, G * Hg, dtype=dtype),
             _rand(G, 4 * Hg, Ig, dtype=dtype), _rand(G, 4 * Hg, Hg, dtype=dtype) * Hg**-0.5,
             _rand(G, 4 * Hg, dtype=dtype)]
    output, cell = ops.glstm_persistent_fwd(*map(_element_aligned, glstm), cluster_size=1)
    ops.glstm_persistent_bwd(_element_aligned(torch.randn_like(output)), None, *map(_element_aligned, glstm),
                             _element_aligned(output), _element_aligned(cell), cluster_size=1)
    T, B, I, H, R = 2, 5, 3, 64, 32
    flstm = [_rand(T, B, I, dtype=dtype), _rand(B, H, dtype=dtype), _rand(B, H, dtype=dtype),
             _rand(R, I + H, dtype=dtype) * (I + H) ** -0.5, _rand(4 * H, R, dtype=dtype) * R**-0.5,
             _rand(4 * H, dtype=dtype)]
    for forced in ({"cluster_size": 1}, {"grid_ctas": 2}):
        output, cell = ops.flstm_persistent_fwd(*map(_element_aligned, flstm), **forced)
        ops.flstm_persistent_bwd(_element_aligned(torch.randn_like(output)), None, *map(_element_aligned, flstm),
                                 _element_aligned(output), _element_aligned(cell), **forced)
    torch.cuda.synchronize()
    expected, _ = flstm_reference(*(t.double() for t in flstm))
    error = (output.double() - expected).abs().max().item()
    assert error <= TOLERANCE[dtype], f"flstm grid, element-aligned inputs, {dtype}: output error {error:.3e}"


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    start = time.monotonic()

    def progress(what: str) -> None:  # a sanitizer run killed at its time limit still shows how far it got
        print(f"sanitize_small: {what} done ({time.monotonic() - start:.0f} s)", flush=True)

    count = 0
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for with_bias, with_grad_cell in ((True, True), (False, False)):
            for sizes in GLSTM_SIZES:
                run("glstm", sizes, dtype, with_bias, with_grad_cell)
                count += 1
            for sizes in FLSTM_SIZES:
                run("flstm", sizes, dtype, with_bias, with_grad_cell)
                count += 1
    progress(f"{count} single-CTA forward+backward runs")
    cluster_count = 0
    flstm_cluster_count = 0
    if torch.cuda.get_device_capability()[0] == 9:
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for with_bias in (True, False):
                for sizes in GLSTM_CLUSTER_SIZES:
                    run_cluster(sizes, dtype, with_bias)
                    cluster_count += 1
                for sizes in FLSTM_CLUSTER_SIZES:
                    flstm_cluster_count += int(run_flstm_cluster(sizes, dtype, with_bias))
    else:
        print("sanitize_small: not compute capability 9.x, the cluster G-LSTM and F-LSTM kernels are not exercised")
    progress(f"{cluster_count} cluster G-LSTM and {flstm_cluster_count} cluster F-LSTM forward+backward runs")
    grid_count = 0
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for with_bias in (True, False):
            for sizes in FLSTM_GRID_SIZES:
                run_flstm_grid(sizes, dtype, with_bias)
                grid_count += 1
    progress(f"{grid_count} grid F-LSTM runs")
    projected_count = 0
    clusters = torch.cuda.get_device_capability()[0] == 9
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for with_bias, with_grad_cell in ((True, True), (False, False)):
            for sizes in PROJECTED_SIZES:
                if sizes[0].get("cluster_size", 1) > 1 and not clusters:
                    continue
                run_projected(sizes, dtype, with_bias, with_grad_cell)
                projected_count += 1
    progress(f"{projected_count} projected forward+backward runs")
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        run_misaligned(dtype)
    progress("element-aligned inputs")
    print(f"sanitize_small: {count} forward+backward runs, {cluster_count} cluster G-LSTM forward+backward runs, "
          f"{flstm_cluster_count} cluster F-LSTM forward+backward runs, {grid_count} grid F-LSTM forward runs and "
          f"{projected_count} projected forward+backward runs OK")


if __name__ == "__main__":
    main()
