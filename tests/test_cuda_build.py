"""Build checks of the native extension (CPU only, run in CI): the extension is built and registers its ops, the
Python shared-memory rule matches the C++ layouts the kernels carve, the persistent kernels compile without register
spills or stack frames (ptxas -v resource report), and, with LSTMKERN_TEST_CMAKE=1, the CMake build works.

Shape legend: Hg hidden units per group (G-LSTM), C thread-block-cluster size (cluster G-LSTM and F-LSTM kernels), H
hidden units and R rank (F-LSTM), N CTA count of the grid-cooperative F-LSTM forward.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lstmkern.backends import cuda as cuda_backend

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
KERNEL_SOURCES = ("glstm_persistent.cu", "glstm_cluster.cu", "flstm_persistent.cu", "flstm_cluster.cu",
                  "flstm_cluster_bwd.cu", "flstm_grid.cu", "flstm_grid_bwd.cu")
# One kernel template per (op, direction, variant), each instantiated for float32, float16 and bfloat16.
EXPECTED_KERNELS = {name: 3 for name in ("glstm_persistent_fwd_kernel", "glstm_persistent_bwd_kernel",
                                         "glstm_cluster_fwd_kernel", "glstm_cluster_bwd_kernel",
                                         "flstm_persistent_fwd_kernel",
                                         "flstm_persistent_bwd_kernel", "flstm_cluster_fwd_kernel",
                                         "flstm_cluster_bwd_kernel", "flstm_grid_fwd_kernel",
                                         "flstm_grid_bwd_kernel")}
# The cluster and grid F-LSTM forwards and all three F-LSTM backwards are also instantiated in their projected mode
# (LSTMP layers; a template parameter, so the F-LSTM's own instantiation is compiled as without it).
EXPECTED_KERNELS.update({name: 6 for name in ("flstm_cluster_fwd_kernel", "flstm_grid_fwd_kernel",
                                              "flstm_persistent_bwd_kernel", "flstm_cluster_bwd_kernel",
                                              "flstm_grid_bwd_kernel")})
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _nvcc() -> str | None:
    from torch.utils.cpp_extension import CUDA_HOME
    if CUDA_HOME is not None and (Path(CUDA_HOME) / "bin" / "nvcc").exists():
        return str(Path(CUDA_HOME) / "bin" / "nvcc")
    return shutil.which("nvcc")


def _expect_cuda_build() -> bool:
    """setup.py builds the CUDA extension exactly when nvcc is found, torch has CUDA and LSTMKERN_SKIP_CUDA is unset."""
    skip = os.environ.get("LSTMKERN_SKIP_CUDA", "").strip().lower() in ("1", "true", "yes", "on")
    return _nvcc() is not None and torch.version.cuda is not None and not skip


@pytest.fixture
def ops():
    """torch.ops.lstmkern_cuda with lstmkern._C loaded (it registers the query ops); skips where it is not built, so
    the Python-only checks can run on a source checkout and `-k` selections do not depend on test order."""
    pytest.importorskip("lstmkern._C", reason="the extension lstmkern._C is not built here")
    return torch.ops.lstmkern_cuda


def test_extension_is_built_and_registers_ops():
    import lstmkern._C as ext

    assert ext.built_with_cuda == int(_expect_cuda_build())
    for name in ("glstm_persistent_fwd", "glstm_persistent_bwd", "flstm_persistent_fwd", "flstm_persistent_bwd",
                 "glstm_persistent_smem_bytes", "flstm_persistent_smem_bytes", "glstm_cluster_smem_bytes",
                 "glstm_cluster_bwd_smem_bytes", "glstm_forward_cluster_size", "flstm_cluster_smem_bytes",
                 "flstm_forward_cluster_size", "flstm_grid_smem_bytes", "flstm_forward_grid_ctas"):
        assert hasattr(torch.ops.lstmkern_cuda, name), name
    for name in ("device_smem_optin", "flstm_cluster_max_active_clusters",
                 "flstm_grid_max_resident_ctas"):  # device queries: CUDA builds only
        assert hasattr(torch.ops.lstmkern_cuda, name) == bool(ext.built_with_cuda), name
    for name in ("glstm_persistent_fwd", "glstm_persistent_bwd", "flstm_persistent_fwd", "flstm_persistent_bwd"):
        has_cuda_kernel = torch._C._dispatch_has_kernel_for_dispatch_key(f"lstmkern_cuda::{name}", "CUDA")
        assert has_cuda_kernel == bool(ext.built_with_cuda), name


@pytest.mark.parametrize("dtype", DTYPES)
def test_python_smem_formulas_match_the_kernel_layouts(dtype, ops):
    sizes = list(range(1, 40)) + [63, 64, 65, 111, 112, 113, 114, 115, 127, 128, 129, 144, 145, 160, 255, 256, 1000]
    for hg in sizes:
        assert cuda_backend.glstm_smem_bytes(hg, dtype) == ops.glstm_persistent_smem_bytes(hg, dtype), hg
    for h in (1, 3, 5, 16, 37, 64, 128, 255, 256, 512):
        for r in (1, 2, 7, 16, 33, 64, 70, 71, 128):
            assert cuda_backend.flstm_smem_bytes(h, r, dtype) == ops.flstm_persistent_smem_bytes(h, r, dtype), (h, r)


@pytest.mark.parametrize("dtype", DTYPES)
def test_python_cluster_smem_formula_matches_the_kernel_layout(dtype, ops):
    pairs = ((cuda_backend.glstm_cluster_smem_bytes, ops.glstm_cluster_smem_bytes),
             (cuda_backend.glstm_cluster_bwd_smem_bytes, ops.glstm_cluster_bwd_smem_bytes))
    for python_formula, query in pairs:
        for C in (2, 4, 8):
            for hg in range(16 * C, 16 * C * 40 + 1, 16 * C):
                assert python_formula(hg, C, dtype) == query(hg, C, dtype), (python_formula.__name__, hg, C)
        for hg, C in ((16, 2), (48, 2), (96, 4), (256, 16), (256, 1), (256, 3), (0, 2), (-32, 2)):
            with pytest.raises(ValueError, match="cluster"):
                query(hg, C, dtype)
            with pytest.raises(ValueError, match="cluster"):
                python_formula(hg, C, dtype)


A100_SMEM_OPTIN = 167936
A100_SMEM_OPTIN_BYTES = 166912  # cudaDevAttrMaxSharedMemoryPerBlockOptin on an A100 (163 KiB)
H100_SMS, A100_SMS = 132, 108


@pytest.mark.parametrize("dtype", DTYPES)
def test_python_cluster_rule_matches_the_extension_choice(dtype, ops):
    """glstm_cluster_size (Python rule) and glstm_fwd_cluster_size (what the op's automatic mode launches) agree."""
    query = ops.glstm_forward_cluster_size
    sizes = [1, 16, 64, 114, 115, 128, 144, 145, 160, 192, 255, 256, 320, 384, 512, 768, 1024]
    for hg in sizes:
        for smem in (48 * 1024, 100 * 1024, A100_SMEM_OPTIN, 232448):
            for cc in ((8, 0), (8, 9), (9, 0), (10, 0)):
                assert cuda_backend.glstm_cluster_size(hg, dtype, smem, cc) == query(hg, dtype, smem, cc[0]), (
                    hg, smem, cc)


@pytest.mark.parametrize("dtype", DTYPES)
def test_python_flstm_cluster_smem_formula_matches_the_kernel_layout(dtype, ops):
    for C in (2, 4, 8, 16):
        for h in range(16 * C, 16 * C * 12 + 1, 16 * C):
            for r in (16, 32, 48, 64, 80, 128, 256, 512):
                assert cuda_backend.flstm_cluster_smem_bytes(h, r, C, dtype) == ops.flstm_cluster_smem_bytes(
                    h, r, C, dtype), (h, r, C)
    # C = 32 is beyond sm_90's cluster limit; H not a multiple of 16 C; R not a multiple of 16; empty sizes.
    for h, r, C in ((1024, 256, 32), (1024, 256, 1), (1024, 256, 3), (48, 16, 2), (1024, 72, 16), (1024, 0, 2),
                    (0, 16, 2), (-32, 16, 2)):
        with pytest.raises(ValueError, match="cluster"):
            ops.flstm_cluster_smem_bytes(h, r, C, dtype)
        with pytest.raises(ValueError, match="cluster"):
            cuda_backend.flstm_cluster_smem_bytes(h, r, C, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_python_flstm_cluster_rule_matches_the_extension_choice(dtype, ops):
    """flstm_cluster_size (Python rule) and flstm_fwd_cluster_size (what the op's automatic mode launches) agree."""
    query = ops.flstm_forward_cluster_size
    for h in (1, 16, 64, 256, 320, 512, 768, 1024, 2048):
        for r in (1, 16, 35, 64, 128, 256, 512):
            for smem in (48 * 1024, A100_SMEM_OPTIN, 232448):
                for cc in ((8, 0), (9, 0), (10, 0)):
                    assert cuda_backend.flstm_cluster_size(h, r, dtype, smem, cc) == query(h, r, dtype, smem,
                                                                                            cc[0]), (h, r, smem, cc)


@pytest.mark.parametrize("dtype", DTYPES)
def test_python_flstm_cluster_bwd_formula_and_rule_match_the_kernel_layout(dtype, ops):
    """flstm_cluster_bwd_smem_bytes / flstm_bwd_cluster_size (Python) and flstm_cluster_bwd_layout /
    flstm_bwd_cluster_size (what the backward op carves and picks) agree."""
    for C in (2, 4, 8, 16):
        for h in range(16 * C, 16 * C * 12 + 1, 16 * C):
            for r in (16, 32, 48, 64, 80, 128, 256, 512):
                assert cuda_backend.flstm_cluster_bwd_smem_bytes(h, r, C, dtype) == ops.flstm_cluster_bwd_smem_bytes(
                    h, r, C, dtype), (h, r, C)
    for h, r, C in ((1024, 256, 32), (1024, 256, 1), (48, 16, 2), (1024, 72, 16), (0, 16, 2)):
        with pytest.raises(ValueError, match="cluster"):
            ops.flstm_cluster_bwd_smem_bytes(h, r, C, dtype)
        with pytest.raises(ValueError, match="cluster"):
            cuda_backend.flstm_cluster_bwd_smem_bytes(h, r, C, dtype)
    for h in (1, 16, 64, 256, 320, 512, 768, 1024, 2048):
        for r in (1, 16, 35, 64, 128, 256, 512):
            for smem in (48 * 1024, A100_SMEM_OPTIN, 232448):
                for cc in ((8, 0), (9, 0), (10, 0)):
                    expected = ops.flstm_backward_cluster_size(h, r, dtype, smem, cc[0])
                    assert cuda_backend.flstm_bwd_cluster_size(h, r, dtype, smem, cc) == expected, (h, r, smem, cc)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_cluster_forward_shape_has_a_cluster_backward(dtype):
    """Wherever the cluster F-LSTM forward runs (an H100's shared memory), the cluster backward fits with no more CTAs,
    so "auto" never falls back to Triton's per-step backward for those shapes."""
    for H in range(16, 4097, 16):
        for R in range(16, 1025, 16):
            C = cuda_backend.flstm_cluster_size(H, R, dtype, H100_SMEM_OPTIN, (9, 0))
            if C > 1:
                assert 1 < cuda_backend.flstm_bwd_cluster_size(H, R, dtype, H100_SMEM_OPTIN, (9, 0)) <= C, (H, R, C)


@pytest.mark.parametrize("dtype", DTYPES)
def test_python_flstm_grid_smem_formula_matches_the_kernel_layout(dtype, ops):
    for N in (1, 2, 3, 4, 6, 8, 16, 32, 48, 64, 128):
        for h in range(16 * N, 16 * N * 6 + 1, 16 * N):
            for r in (16, 32, 48, 256, 512):
                assert cuda_backend.flstm_grid_smem_bytes(h, r, N, dtype) == ops.flstm_grid_smem_bytes(
                    h, r, N, dtype), (h, r, N)
    # H not a multiple of 16 N (N = 48: Hs = 42.67), R not a multiple of 16, empty sizes, N < 1.
    for h, r, N in ((2048, 512, 48), (1024, 72, 16), (48, 16, 2), (1024, 0, 2), (0, 16, 2), (1024, 256, 0),
                    (-32, 16, 2)):
        with pytest.raises(ValueError, match="grid"):
            ops.flstm_grid_smem_bytes(h, r, N, dtype)
        with pytest.raises(ValueError, match="grid"):
            cuda_backend.flstm_grid_smem_bytes(h, r, N, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_python_flstm_grid_rule_matches_the_extension_choice(dtype, ops):
    """flstm_grid_ctas (Python rule) and flstm_fwd_grid_ctas (what the op's automatic mode launches) agree."""
    query = ops.flstm_forward_grid_ctas
    for h in (1, 16, 48, 256, 384, 1024, 2048, 4096):
        for r in (1, 16, 35, 256, 512):
            for smem in (48 * 1024, A100_SMEM_OPTIN, A100_SMEM_OPTIN_BYTES, 232448):
                for sm_count in (0, 1, 16, 48, 108, 132):
                    assert cuda_backend.flstm_grid_ctas(h, r, dtype, smem, sm_count) == query(h, r, dtype, smem,
                                                                                               sm_count), (
                        h, r, smem, sm_count)


@pytest.mark.parametrize("dtype", DTYPES)
def test_python_flstm_grid_bwd_formula_and_rule_match_the_kernel_layout(dtype, ops):
    """flstm_grid_bwd_smem_bytes / flstm_bwd_grid_ctas (Python) and flstm_grid_bwd_layout / flstm_bwd_grid_ctas (what
    the backward op carves and its automatic mode launches) agree."""
    for N in (1, 2, 3, 4, 6, 8, 16, 32, 48, 64, 128):
        for h in range(16 * N, 16 * N * 6 + 1, 16 * N):
            for r in (16, 32, 48, 256, 512):
                assert cuda_backend.flstm_grid_bwd_smem_bytes(h, r, N, dtype) == ops.flstm_grid_bwd_smem_bytes(
                    h, r, N, dtype), (h, r, N)
    for h, r, N in ((2048, 512, 48), (1024, 72, 16), (48, 16, 2), (1024, 0, 2), (0, 16, 2), (1024, 256, 0)):
        with pytest.raises(ValueError, match="grid"):
            ops.flstm_grid_bwd_smem_bytes(h, r, N, dtype)
        with pytest.raises(ValueError, match="grid"):
            cuda_backend.flstm_grid_bwd_smem_bytes(h, r, N, dtype)
    for h in (1, 16, 48, 256, 384, 1024, 2048, 4096):
        for r in (1, 16, 35, 256, 512):
            for smem in (48 * 1024, A100_SMEM_OPTIN, A100_SMEM_OPTIN_BYTES, 232448):
                for sm_count in (0, 1, 16, 48, 108, 132):
                    assert cuda_backend.flstm_bwd_grid_ctas(h, r, dtype, smem, sm_count) == (
                        ops.flstm_backward_grid_ctas(h, r, dtype, smem, sm_count)), (h, r, smem, sm_count)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_grid_forward_shape_has_a_persistent_backward(dtype):
    """Wherever the grid F-LSTM forward runs (no single CTA or cluster fits; an H100's or an A100's shared memory and SM
    count), a persistent backward fits too, the grid backward with no more CTAs where no cluster backward does, so
    "auto" never falls back to Triton's per-step backward for those shapes."""
    for smem, cc, sm_count in ((H100_SMEM_OPTIN, (9, 0), H100_SMS), (A100_SMEM_OPTIN_BYTES, (8, 0), A100_SMS)):
        for H in range(16, 4097, 16):
            for R in range(16, 1025, 16):
                if cuda_backend.flstm_cluster_size(H, R, dtype, smem, cc) > 0:
                    continue
                N = cuda_backend.flstm_grid_ctas(H, R, dtype, smem, sm_count)
                if N > 0 and cuda_backend.flstm_bwd_cluster_size(H, R, dtype, smem, cc) == 0:
                    assert 0 < cuda_backend.flstm_bwd_grid_ctas(H, R, dtype, smem, sm_count) <= N, (H, R, N)


def test_smem_query_rejects_float64_and_empty_sizes(ops):
    with pytest.raises(ValueError, match="dtype"):
        ops.glstm_persistent_smem_bytes(8, torch.float64)
    with pytest.raises(ValueError, match="hidden_per_group"):
        ops.glstm_persistent_smem_bytes(0, torch.float32)
    with pytest.raises(ValueError, match="rank"):
        ops.flstm_persistent_smem_bytes(8, 0, torch.float32)
    with pytest.raises(ValueError, match="dtype"):
        cuda_backend.glstm_smem_bytes(8, torch.float64)


H100_SMEM_OPTIN = 232448  # bytes (227 KiB), cudaDevAttrMaxSharedMemoryPerBlockOptin on sm_90


def test_persistent_rule():
    rule = cuda_backend.persistent_rule
    assert rule(64, 1, torch.bfloat16, H100_SMEM_OPTIN, (9, 0)) is None
    assert rule(144, 4096, torch.float16, H100_SMEM_OPTIN, (8, 0)) is None  # the largest fp16 group that fits
    assert "shared memory" in rule(145, 1, torch.float16, H100_SMEM_OPTIN, (9, 0))
    assert rule(114, 3, torch.float32, H100_SMEM_OPTIN, (9, 0)) is None
    assert "Hg=115" in rule(115, 3, torch.float32, H100_SMEM_OPTIN, (9, 0))
    assert "float64" in rule(8, 1, torch.float64, H100_SMEM_OPTIN, (9, 0))
    assert "int8" in rule(8, 1, torch.int8, H100_SMEM_OPTIN, (9, 0))
    assert "compute capability" in rule(8, 1, torch.float32, H100_SMEM_OPTIN, (7, 5))
    assert "shared memory" in rule(64, 1, torch.float32, 48 * 1024, (8, 6))
    assert "grid" in rule(4, 1, torch.float32, H100_SMEM_OPTIN, (9, 0), groups=65536)
    # Beyond one CTA: the thread-block-cluster forward on 9.x (H = 1024, G = 4 and H = 2048, G = 8 give Hg = 256).
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        assert rule(256, 16, dtype, H100_SMEM_OPTIN, (9, 0), groups=4) is None
        assert "compute capability 9.x" in rule(256, 16, dtype, A100_SMEM_OPTIN, (8, 0), groups=4)
    assert rule(160, 19, torch.float32, H100_SMEM_OPTIN, (9, 0)) is None    # fp32 C = 2, 227840 B per CTA
    assert "multiple of 16 C" in rule(145, 1, torch.float16, H100_SMEM_OPTIN, (9, 0))
    assert "C=8: 2183168" in rule(1024, 1, torch.float32, H100_SMEM_OPTIN, (9, 0))
    assert rule(1024, 1, torch.bfloat16, H100_SMEM_OPTIN, (9, 0)) is not None   # Hg = 1024 in bf16: 546 KB per CTA
    choose = cuda_backend.glstm_cluster_size
    assert choose(64, torch.bfloat16, H100_SMEM_OPTIN, (9, 0)) == 1          # fits one CTA: single-CTA kernels
    assert choose(256, torch.bfloat16, H100_SMEM_OPTIN, (9, 0)) == 4         # C = 2 would need 324352 B per CTA
    assert cuda_backend.glstm_cluster_smem_bytes(256, 2, torch.bfloat16) == 324352
    assert cuda_backend.glstm_cluster_smem_bytes(256, 4, torch.bfloat16) == 172800
    assert cuda_backend.glstm_cluster_smem_bytes(256, 8, torch.bfloat16) == 97024
    assert choose(256, torch.float32, H100_SMEM_OPTIN, (9, 0)) == 8
    assert choose(160, torch.bfloat16, H100_SMEM_OPTIN, (9, 0)) == 2
    assert choose(256, torch.bfloat16, H100_SMEM_OPTIN, (8, 0)) == 0
    assert choose(256, torch.bfloat16, H100_SMEM_OPTIN, (10, 0)) == 0         # the cluster code is built for sm_90a
    assert "32-bit" in rule(64, 2**16, torch.float32, H100_SMEM_OPTIN, (9, 0), groups=8, T=2**10)
    frule = cuda_backend.flstm_persistent_rule
    assert frule(256, 70, 8, torch.bfloat16, H100_SMEM_OPTIN, (9, 0)) is None
    assert "R a multiple of 16" in frule(256, 71, 8, torch.bfloat16, H100_SMEM_OPTIN, (9, 0))
    assert "float64" in frule(8, 2, 1, torch.float64, H100_SMEM_OPTIN, (9, 0))
    # Beyond one CTA: the thread-block-cluster F-LSTM forward on 9.x. flstm-infer (H = 1024, R = 256, B = 16) in
    # bf16/fp16 needs C = 16 (C = 8 would need 420864 B per CTA, W2's rows alone 266240 B).
    fchoose = cuda_backend.flstm_cluster_size
    for dtype in (torch.bfloat16, torch.float16):
        assert fchoose(1024, 256, dtype, H100_SMEM_OPTIN, (9, 0)) == 16
        assert cuda_backend.flstm_cluster_smem_bytes(1024, 256, 16, dtype) == 217088
        assert cuda_backend.flstm_cluster_smem_bytes(1024, 256, 8, dtype) == 420864
        assert frule(1024, 256, 16, dtype, H100_SMEM_OPTIN, (9, 0)) is None
        assert "compute capability 9.x" in frule(1024, 256, 16, dtype, A100_SMEM_OPTIN, (8, 0))
        assert "compute capability 9.x" in frule(1024, 256, 16, dtype, H100_SMEM_OPTIN, (8, 9))
        assert fchoose(1024, 256, dtype, H100_SMEM_OPTIN, (8, 0)) == 0
        assert fchoose(1024, 256, dtype, H100_SMEM_OPTIN, (10, 0)) == 0   # the cluster code is built for sm_90a
    assert fchoose(256, 64, torch.bfloat16, H100_SMEM_OPTIN, (9, 0)) == 1      # fits one CTA: single-CTA kernels
    assert fchoose(512, 128, torch.bfloat16, H100_SMEM_OPTIN, (9, 0)) == 8      # C = 4: 250880 B per CTA
    # fp32 at the headline shape would need C = 32 (356352 B per CTA at C = 16): unsupported, "auto" takes Triton.
    assert "C=16: 356352" in frule(1024, 256, 16, torch.float32, H100_SMEM_OPTIN, (9, 0))
    assert "multiple of 16 C" in frule(1000, 256, 16, torch.bfloat16, H100_SMEM_OPTIN, (9, 0))
    # Beyond any cluster: the grid-cooperative forward (needs the SM count; without it, it is not considered).
    # flstm-train (H = 2048, R = 512, B = 64, T = 256) in bf16/fp16 on an H100: N = 64 CTAs of 198912 B (N = 32
    # would need 270336 B for W2's rows alone); in fp32 N = 128.
    grid = cuda_backend.flstm_grid_ctas
    for dtype in (torch.bfloat16, torch.float16):
        assert fchoose(2048, 512, dtype, H100_SMEM_OPTIN, (9, 0)) == 0            # no cluster fits
        assert grid(2048, 512, dtype, H100_SMEM_OPTIN, H100_SMS) == 64
        assert cuda_backend.flstm_grid_smem_bytes(2048, 512, 64, dtype) == 198912
        assert cuda_backend.flstm_grid_smem_bytes(2048, 512, 32, dtype) > H100_SMEM_OPTIN
        assert frule(2048, 512, 64, dtype, H100_SMEM_OPTIN, (9, 0), T=256, sm_count=H100_SMS) is None
        assert "not considered" in frule(2048, 512, 64, dtype, H100_SMEM_OPTIN, (9, 0), T=256)
        # flstm-infer (H = 1024, R = 256) on an A100: no clusters on 8.0, the grid forward with N = 32.
        assert grid(1024, 256, dtype, A100_SMEM_OPTIN_BYTES, A100_SMS) == 32
        assert frule(1024, 256, 16, dtype, A100_SMEM_OPTIN_BYTES, (8, 0), sm_count=A100_SMS) is None
        # On an H100 the cluster forward still comes first for flstm-infer.
        assert fchoose(1024, 256, dtype, H100_SMEM_OPTIN, (9, 0)) == 16
    assert grid(2048, 512, torch.float32, H100_SMEM_OPTIN, H100_SMS) == 128
    assert frule(1024, 256, 16, torch.float32, H100_SMEM_OPTIN, (9, 0), sm_count=H100_SMS) is None  # N = 32
    # Too few SMs for the smallest fitting N, or H with no accepted N: unsupported, with the reason.
    reason = frule(2048, 512, 64, torch.bfloat16, H100_SMEM_OPTIN, (9, 0), sm_count=48)
    assert "grid-cooperative forward does not fit either on up to 48 SMs (N=32: 372480" in reason
    assert grid(2048, 512, torch.bfloat16, H100_SMEM_OPTIN, 63) == 0
    assert "grid-cooperative forward needs R a multiple of 16" in frule(2048, 500, 1, torch.bfloat16,
                                                                         H100_SMEM_OPTIN, (9, 0), sm_count=132)
    assert "compute capability" in frule(2048, 512, 64, torch.bfloat16, H100_SMEM_OPTIN, (7, 5), sm_count=132)


def test_unsupported_on_cpu_and_for_float64():
    sizes = (5, 2, 6, 9, 3, 0)
    assert cuda_backend.unsupported("glstm", torch.device("cpu"), torch.float32, sizes) == (
        "backend 'cuda' needs CUDA tensors, got device cpu")
    assert cuda_backend.unsupported("flstm", torch.device("cpu"), torch.bfloat16, (5, 2, 6, 9, 1, 4)) == (
        "backend 'cuda' needs CUDA tensors, got device cpu")
    assert "float64" in cuda_backend.unsupported("glstm", torch.device("cuda"), torch.float64, sizes)
    with pytest.raises(ValueError, match="op"):
        cuda_backend.unsupported("gru", torch.device("cpu"), torch.float32, sizes)


def _simulate_gpu(monkeypatch, smem_bytes: int, cc: tuple[int, int], max_active_clusters: int = 1,
                  sm_count: int = H100_SMS, max_resident_ctas: int | None = None,
                  max_active_bwd_clusters: int | None = None, max_resident_bwd_ctas: int | None = None) -> None:
    """Make the cuda backend believe it runs on a GPU with these limits (the rule's wiring, checked without one);
    max_resident_ctas: what the grid forward's co-residency query answers (default: one CTA per SM);
    max_active_bwd_clusters: the cluster F-LSTM and projected backwards' residency (default: max_active_clusters);
    max_resident_bwd_ctas: the grid F-LSTM and projected backwards' co-residency (default: max_resident_ctas)."""
    resident = sm_count if max_resident_ctas is None else max_resident_ctas
    bwd_active = max_active_clusters if max_active_bwd_clusters is None else max_active_bwd_clusters
    monkeypatch.setattr(cuda_backend, "_flstm_cluster_bwd_max_active", lambda *args: bwd_active)
    monkeypatch.setattr(cuda_backend, "_flstm_grid_max_resident", lambda *args: resident)
    bwd_resident = resident if max_resident_bwd_ctas is None else max_resident_bwd_ctas
    monkeypatch.setattr(cuda_backend, "_flstm_grid_bwd_max_resident", lambda *args: bwd_resident)
    monkeypatch.setattr(cuda_backend, "_projected_cluster_bwd_max_active", lambda *args: bwd_active)
    monkeypatch.setattr(cuda_backend, "_projected_grid_bwd_max_resident", lambda *args: bwd_resident)
    monkeypatch.setattr(cuda_backend, "_extension_problem", lambda: None)
    monkeypatch.setattr(cuda_backend, "_device_limits", lambda index: (smem_bytes, cc, sm_count))
    monkeypatch.setattr(cuda_backend, "_flstm_cluster_max_active", lambda *args: max_active_clusters)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_unsupported_takes_the_cluster_rule_on_a_simulated_h100(monkeypatch):
    _simulate_gpu(monkeypatch, H100_SMEM_OPTIN, (9, 0))
    cuda = torch.device("cuda", 0)
    for H, G in ((1024, 4), (2048, 8)):  # Hg = 256: cluster forward, cluster backward
        assert cuda_backend.unsupported("glstm", cuda, torch.bfloat16, (512, 16, H, H, G, 0)) is None
    assert "multiple of 16 C" in cuda_backend.unsupported("glstm", cuda, torch.bfloat16, (8, 2, 145, 145, 1, 0))
    # The backward of a cluster layer is the cluster backward: the Triton backend is not needed for it.
    from lstmkern.backends import triton as triton_backend
    monkeypatch.setattr(triton_backend, "unsupported", lambda *args: "no Triton today")
    assert cuda_backend.unsupported("glstm", cuda, torch.bfloat16, (512, 16, 1024, 1024, 4, 0)) is None
    assert cuda_backend.unsupported("glstm", cuda, torch.bfloat16, (8, 2, 64, 64, 1, 0)) is None  # single CTA
    _simulate_gpu(monkeypatch, A100_SMEM_OPTIN, (8, 0))
    assert "compute capability 9.x" in cuda_backend.unsupported("glstm", cuda, torch.bfloat16,
                                                                (512, 16, 1024, 1024, 4, 0))


def test_unsupported_takes_the_flstm_cluster_rule_on_a_simulated_h100(monkeypatch):
    _simulate_gpu(monkeypatch, H100_SMEM_OPTIN, (9, 0))
    cuda = torch.device("cuda", 0)
    flstm_infer = (512, 16, 1024, 1024, 1, 256)  # (T, B, I, H, G, R): cluster forward with C = 16, Triton backward
    for dtype in (torch.bfloat16, torch.float16):
        assert cuda_backend.unsupported("flstm", cuda, dtype, flstm_infer) is None
    # fp32 would need C = 32: the grid-cooperative forward (N = 32) takes it, given enough SMs.
    assert cuda_backend.unsupported("flstm", cuda, torch.float32, flstm_infer) is None
    _simulate_gpu(monkeypatch, H100_SMEM_OPTIN, (9, 0), sm_count=16)
    reason = cuda_backend.unsupported("flstm", cuda, torch.float32, flstm_infer)
    assert "C=16: 356352" in reason and "grid-cooperative forward does not fit either on up to 16 SMs" in reason
    _simulate_gpu(monkeypatch, H100_SMEM_OPTIN, (9, 0))
    assert "R a multiple of 16" in cuda_backend.unsupported("flstm", cuda, torch.bfloat16, (8, 2, 8, 1024, 1, 250))
    assert cuda_backend.unsupported("flstm", cuda, torch.bfloat16, (8, 2, 8, 64, 1, 16)) is None  # single CTA
    # A GPU that cannot make a cluster of 16 resident falls back (the launch would fail).
    _simulate_gpu(monkeypatch, H100_SMEM_OPTIN, (9, 0), max_active_clusters=0)
    assert "cannot make resident" in cuda_backend.unsupported("flstm", cuda, torch.bfloat16, flstm_infer)
    _simulate_gpu(monkeypatch, H100_SMEM_OPTIN, (9, 0))
    # The backward of the cluster forward runs on the cluster backward (C = 16 for flstm-infer), so Triton is not
    # needed; only where that backward cannot be resident must the Triton backward take over.
    from lstmkern.backends import triton as triton_backend
    monkeypatch.setattr(triton_backend, "unsupported", lambda *args: "no Triton today")
    assert cuda_backend.flstm_bwd_cluster_size(1024, 256, torch.bfloat16, H100_SMEM_OPTIN, (9, 0)) == 16
    assert cuda_backend.unsupported("flstm", cuda, torch.bfloat16, flstm_infer) is None
    # Where the cluster backward cannot be resident the grid backward takes it (N = 16 for flstm-infer in bf16), and
    # only where neither can be resident must the Triton backward take over.
    _simulate_gpu(monkeypatch, H100_SMEM_OPTIN, (9, 0), max_active_bwd_clusters=0)
    assert cuda_backend.unsupported("flstm", cuda, torch.bfloat16, flstm_infer) is None
    ctas = cuda_backend.flstm_bwd_grid_ctas(1024, 256, torch.bfloat16, H100_SMEM_OPTIN, H100_SMS)
    assert ctas > 0 and cuda_backend._flstm_backward_kernel(0, 1024, 256, torch.bfloat16, H100_SMEM_OPTIN, (9, 0),
                                                            H100_SMS) == (0, ctas)
    _simulate_gpu(monkeypatch, H100_SMEM_OPTIN, (9, 0), max_active_bwd_clusters=0, max_resident_bwd_ctas=ctas - 1)
    reason = cuda_backend.unsupported("flstm", cuda, torch.bfloat16, flstm_infer)
    assert "Triton" in reason and "no Triton today" in reason
    _simulate_gpu(monkeypatch, H100_SMEM_OPTIN, (9, 0), max_active_bwd_clusters=0)
    assert cuda_backend.unsupported("flstm", cuda, torch.bfloat16, (8, 2, 8, 64, 1, 16)) is None
    # flstm-train: the grid forward and the grid backward (N = 64), no Triton needed; where the grid backward's 64 CTAs
    # cannot all be resident, Triton's backward would have to take over.
    assert cuda_backend.unsupported("flstm", cuda, torch.bfloat16, (256, 64, 2048, 2048, 1, 512)) is None
    _simulate_gpu(monkeypatch, H100_SMEM_OPTIN, (9, 0), max_resident_bwd_ctas=63)
    reason = cuda_backend.unsupported("flstm", cuda, torch.bfloat16, (256, 64, 2048, 2048, 1, 512))
    assert "grid-cooperative forward (N=64 CTAs)" in reason and "no Triton today" in reason
    monkeypatch.undo()
    # Without clusters (A100): the grid-cooperative forward, N = 32 for flstm-infer.
    _simulate_gpu(monkeypatch, A100_SMEM_OPTIN_BYTES, (8, 0), sm_count=A100_SMS)
    assert cuda_backend.unsupported("flstm", cuda, torch.bfloat16, flstm_infer) is None
    _simulate_gpu(monkeypatch, A100_SMEM_OPTIN_BYTES, (8, 0), sm_count=16)
    assert "compute capability 9.x" in cuda_backend.unsupported("flstm", cuda, torch.bfloat16, flstm_infer)


def test_unsupported_takes_the_flstm_grid_rule_on_a_simulated_h100(monkeypatch):
    """flstm-train (T = 256, B = 64, I = H = 2048, R = 512) in bf16 fits no cluster: the grid-cooperative forward."""
    _simulate_gpu(monkeypatch, H100_SMEM_OPTIN, (9, 0))
    cuda = torch.device("cuda", 0)
    flstm_train = (256, 64, 2048, 2048, 1, 512)
    for dtype in DTYPES:
        assert cuda_backend.unsupported("flstm", cuda, dtype, flstm_train) is None
    _simulate_gpu(monkeypatch, H100_SMEM_OPTIN, (9, 0), sm_count=48)
    assert "on up to 48 SMs" in cuda_backend.unsupported("flstm", cuda, torch.bfloat16, flstm_train)
    # A device that cannot hold all 64 CTAs at once (e.g. SMs taken by another context) falls back: the cooperative
    # launch would be refused.
    _simulate_gpu(monkeypatch, H100_SMEM_OPTIN, (9, 0), max_resident_ctas=63)
    assert "holds only 63" in cuda_backend.unsupported("flstm", cuda, torch.bfloat16, flstm_train)


class _RecordingOps:
    """Stands in for torch.ops.lstmkern_cuda: records which op glstm_bwd / flstm_bwd called."""

    def __init__(self):
        self.calls = []

    def glstm_persistent_bwd(self, *args, cluster_size=0, weight_hr=None, grid_ctas=0):
        self.calls.append("glstm_persistent_bwd" if weight_hr is None else
                          ("glstm_persistent_bwd", "projected", cluster_size, grid_ctas))
        return ("persistent",) * 7  # the op's seven results (dweight_hr empty without a projection)

    def flstm_persistent_bwd(self, *args, cluster_size=0, grid_ctas=0):
        self.calls.append(("flstm_persistent_bwd", cluster_size) if grid_ctas == 0 else
                          ("flstm_persistent_bwd", "grid", grid_ctas))
        return "persistent"


def test_glstm_bwd_rule_runs_triton_where_only_the_cluster_forward_fits(monkeypatch):
    """glstm_bwd: the persistent backward op where the single-CTA kernels fit, else Triton's backward (here under the
    Triton interpreter on CPU tensors, with a simulated device whose shared memory is too small for Hg = 16)."""
    from lstmkern.backends import triton as triton_backend
    from lstmkern.reference import glstm_reference

    if triton_backend.unsupported("glstm", torch.device("cpu"), torch.float32, (3, 2, 4, 32, 2, 0)) is not None:
        pytest.skip("the Triton interpreter is not active (TRITON_INTERPRET=1 before triton is imported)")
    recording = _RecordingOps()
    monkeypatch.setattr(cuda_backend, "_ops", lambda: recording)
    torch.manual_seed(0)
    T, B, G, Hg, Ig = 3, 2, 2, 16, 2
    x = torch.randn(T, B, G * Ig)
    h0, c0 = torch.randn(B, G * Hg), torch.randn(B, G * Hg)
    w_ih, w_hh, bias = torch.randn(G, 4 * Hg, Ig), torch.randn(G, 4 * Hg, Hg) * 0.25, torch.randn(G, 4 * Hg)
    output, cell = glstm_reference(x, h0, c0, w_ih, w_hh, bias)
    args = (torch.randn(T, B, G * Hg), None, x, h0, c0, w_ih, w_hh, bias, output, cell)

    _simulate_gpu(monkeypatch, cuda_backend.glstm_smem_bytes(Hg, torch.float32), (9, 0))
    assert cuda_backend.glstm_bwd(*args) == ("persistent",) * 6 and recording.calls == ["glstm_persistent_bwd"]

    _simulate_gpu(monkeypatch, cuda_backend.glstm_smem_bytes(Hg, torch.float32) - 1, (9, 0))
    delegated = cuda_backend.glstm_bwd(*args)
    assert recording.calls == ["glstm_persistent_bwd"]  # not called again
    for got, expected in zip(delegated, triton_backend.glstm_bwd(*args)):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_glstm_bwd_runs_the_projected_backward_wherever_one_fits(monkeypatch):
    """glstm_bwd with weight_hr: the projected backward op on one CTA where it fits, else on the cluster (compute
    capability 9.x), else on the grid, each only where resident; Triton's backward otherwise (under the Triton
    interpreter on CPU tensors, with simulated devices whose shared memory is too small for one CTA at H = P = 32,
    G = 2)."""
    from lstmkern.backends import triton as triton_backend
    from lstmkern.reference import glstm_reference

    if triton_backend.unsupported("glstm", torch.device("cpu"), torch.float32, (2, 2, 4, 32, 2, 0, 32)) is not None:
        pytest.skip("the Triton interpreter is not active (TRITON_INTERPRET=1 before triton is imported)")
    recording = _RecordingOps()
    monkeypatch.setattr(cuda_backend, "_ops", lambda: recording)
    torch.manual_seed(0)
    T, B, I, H, P, G = 2, 2, 4, 32, 32, 2
    x = torch.randn(T, B, I)
    h0, c0 = torch.randn(B, P), torch.randn(B, H)
    w_ih, w_hh = torch.randn(G, 4 * H // G, I // G) * 0.5, torch.randn(G, 4 * H // G, P // G) * 0.25
    bias, w_hr = torch.randn(G, 4 * H // G), torch.randn(P, H) * 0.25
    output, cell = glstm_reference(x, h0, c0, w_ih, w_hh, bias, w_hr)
    args = (torch.randn(T, B, P), None, x, h0, c0, w_ih, w_hh, bias, output, cell, w_hr)

    single = cuda_backend.projected_smem_bytes(H, P, G, torch.float32)
    _simulate_gpu(monkeypatch, single, (9, 0))
    assert cuda_backend.glstm_bwd(*args) == ("persistent",) * 7
    _simulate_gpu(monkeypatch, single - 1, (9, 0))  # C = 2 CTAs of 16 units, one per group
    assert cuda_backend.projected_cluster_bwd_smem_bytes(H, P, G, 2, torch.float32) < single - 1
    cuda_backend.glstm_bwd(*args)
    _simulate_gpu(monkeypatch, single - 1, (8, 0))  # no clusters: the grid backward, N = 2 (a multiple of G)
    assert cuda_backend.projected_bwd_grid_ctas(H, P, G, torch.float32, single - 1, H100_SMS) == 2
    cuda_backend.glstm_bwd(*args)
    assert recording.calls == [("glstm_persistent_bwd", "projected", 1, 0), ("glstm_persistent_bwd", "projected", 2, 0),
                               ("glstm_persistent_bwd", "projected", 0, 2)]
    # A cluster that cannot be resident: the grid backward takes it where its N CTAs are.
    _simulate_gpu(monkeypatch, single - 1, (9, 0), max_active_bwd_clusters=0)
    cuda_backend.glstm_bwd(*args)
    assert recording.calls[-1] == ("glstm_persistent_bwd", "projected", 0, 2)
    for device in ({"cc": (8, 0), "max_resident_bwd_ctas": 1},
                   {"cc": (9, 0), "max_active_bwd_clusters": 0, "max_resident_bwd_ctas": 1}):
        _simulate_gpu(monkeypatch, single - 1, **device)
        delegated = cuda_backend.glstm_bwd(*args)
        assert len(recording.calls) == 4  # not called again
        for got, expected in zip(delegated, triton_backend.glstm_bwd(*args), strict=True):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_projected_forward_shape_has_a_persistent_backward(dtype):
    """Wherever the projected forward runs persistent (one CTA, a cluster or the grid; an H100's or an A100's shared
    memory and SM count), a persistent projected backward fits too, so "auto" never falls back to Triton's per-step
    backward for those shapes."""
    for smem, cc, sm_count in ((H100_SMEM_OPTIN, (9, 0), H100_SMS), (A100_SMEM_OPTIN_BYTES, (8, 0), A100_SMS)):
        for G in (1, 2, 4):
            for H in range(64, 4097, 64):
                for P in range(16 * G, min(H, 1024) + 1, 16 * G):
                    forward = (cuda_backend.projected_cluster_size(H, P, G, dtype, smem, cc) > 0
                               or cuda_backend.projected_grid_ctas(H, P, G, dtype, smem, sm_count) > 0)
                    if forward:
                        assert (cuda_backend.projected_bwd_cluster_size(H, P, G, dtype, smem, cc) > 0
                                or cuda_backend.projected_bwd_grid_ctas(H, P, G, dtype, smem, sm_count) > 0), (
                            H, P, G, smem)


def test_flstm_bwd_rule_runs_a_persistent_backward_wherever_one_fits(monkeypatch):
    """flstm_bwd: the single-CTA backward where it fits, else the cluster backward (compute capability 9.x, resident),
    else the grid backward (resident), else Triton's backward (under the Triton interpreter on CPU tensors, with
    simulated devices whose shared memory is too small for one CTA at H = 32, R = 16)."""
    from lstmkern.backends import triton as triton_backend
    from lstmkern.reference import flstm_reference

    if triton_backend.unsupported("flstm", torch.device("cpu"), torch.float32, (3, 2, 4, 32, 1, 16)) is not None:
        pytest.skip("the Triton interpreter is not active (TRITON_INTERPRET=1 before triton is imported)")
    recording = _RecordingOps()
    monkeypatch.setattr(cuda_backend, "_ops", lambda: recording)
    torch.manual_seed(0)
    T, B, I, H, R = 3, 2, 4, 32, 16
    x = torch.randn(T, B, I)
    h0, c0 = torch.randn(B, H), torch.randn(B, H)
    w1, w2, bias = torch.randn(R, I + H) * 0.25, torch.randn(4 * H, R) * 0.25, torch.randn(4 * H)
    output, cell = flstm_reference(x, h0, c0, w1, w2, bias)
    args = (torch.randn(T, B, H), None, x, h0, c0, w1, w2, bias, output, cell)

    single = cuda_backend.flstm_smem_bytes(H, R, torch.float32)
    _simulate_gpu(monkeypatch, single, (9, 0))
    assert cuda_backend.flstm_bwd(*args) == "persistent" and recording.calls == [("flstm_persistent_bwd", 1)]

    _simulate_gpu(monkeypatch, single - 1, (9, 0))  # C = 2 CTAs of 16 units
    assert cuda_backend.flstm_cluster_bwd_smem_bytes(H, R, 2, torch.float32) < single - 1
    assert cuda_backend.flstm_bwd(*args) == "persistent" and recording.calls[-1] == ("flstm_persistent_bwd", 2)

    _simulate_gpu(monkeypatch, single - 1, (8, 0))  # no clusters: the grid backward, N = 1 (its share is smaller)
    assert cuda_backend.flstm_bwd_grid_ctas(H, R, torch.float32, single - 1, H100_SMS) == 1
    assert cuda_backend.flstm_bwd(*args) == "persistent" and recording.calls[-1] == ("flstm_persistent_bwd", "grid", 1)

    # A cluster backward that is not resident: the grid backward takes it where its CTAs are.
    _simulate_gpu(monkeypatch, single - 1, (9, 0), max_active_bwd_clusters=0)
    assert cuda_backend.flstm_bwd(*args) == "persistent" and recording.calls[-1] == ("flstm_persistent_bwd", "grid", 1)
    # No clusters and the grid backward's CTAs not all resident; neither a cluster nor the grid resident.
    for device in ({"cc": (8, 0), "max_resident_bwd_ctas": 0},
                   {"cc": (9, 0), "max_active_bwd_clusters": 0, "max_resident_bwd_ctas": 0}):
        _simulate_gpu(monkeypatch, single - 1, **device)
        delegated = cuda_backend.flstm_bwd(*args)
        assert len(recording.calls) == 4  # not called again
        for got, expected in zip(delegated, triton_backend.flstm_bwd(*args)):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_flstm_bwd_runs_the_grid_backward_for_flstm_train(monkeypatch, dtype):
    """flstm-train (H = 2048, R = 512) fits no single CTA and no cluster of an H100, so its forward runs on the grid
    (N = 64 in fp16/bf16, 128 in fp32): "auto"'s backward is the grid backward on as many CTAs, not Triton's per-step
    backward; likewise flstm-infer (H = 1024, R = 256) on an A100, which has no clusters (N = 32, or 64 in fp32)."""
    recording = _RecordingOps()
    monkeypatch.setattr(cuda_backend, "_ops", lambda: recording)
    from lstmkern.backends import triton as triton_backend
    monkeypatch.setattr(triton_backend, "flstm_bwd", lambda *args: pytest.fail("Triton's backward was called"))
    x = torch.empty(1, 1, 1, dtype=dtype)
    wide = dtype == torch.float32  # fp32 weights take twice the CTAs
    h100, a100 = (H100_SMEM_OPTIN, (9, 0), H100_SMS), (A100_SMEM_OPTIN_BYTES, (8, 0), A100_SMS)
    for (H, R), (smem, cc, sm_count), N in (((2048, 512), h100, 128 if wide else 64),
                                            ((1024, 256), a100, 64 if wide else 32)):
        _simulate_gpu(monkeypatch, smem, cc, sm_count=sm_count)
        assert cuda_backend.flstm_cluster_size(H, R, dtype, smem, cc) == 0
        assert cuda_backend.flstm_grid_ctas(H, R, dtype, smem, sm_count) == N
        weight_2 = torch.empty(4 * H, R, dtype=dtype)
        assert cuda_backend.flstm_bwd(None, None, x, None, None, None, weight_2, None, None, None) == "persistent"
        assert recording.calls[-1] == ("flstm_persistent_bwd", "grid", N)


def _ptxas_report(nvcc: str, source: Path, tmp_path: Path) -> str:
    """nvcc -cubin of one kernel file with the build's flags and one SASS arch; returns the ptxas -v report."""
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

    flags = [line.strip() for line in (CSRC / "nvcc_flags.txt").read_text().splitlines()]
    flags = [f for f in flags if f and not f.startswith("#")]
    cmd = [nvcc, *COMMON_NVCC_FLAGS, *flags, "-gencode=arch=compute_90a,code=sm_90a", "-cubin", "-I", str(CSRC),
           "-o", str(tmp_path / (source.stem + ".cubin")), str(source)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def _parse_ptxas(report: str) -> dict[str, tuple[int, int, int, int]]:
    """mangled kernel name -> (stack frame bytes, spill store bytes, spill load bytes, registers)."""
    resources = {}
    current = None
    for line in report.splitlines():
        if m := re.search(r"Function properties for (\S+)", line):
            current = m.group(1)
        elif current and (m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                                         line)):
            resources[current] = tuple(int(v) for v in m.groups())
        elif current and current in resources and (m := re.search(r"Used (\d+) registers", line)):
            resources[current] += (int(m.group(1)),)
            current = None
    return resources


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not found (set CUDA_HOME): cannot compile the kernels")
def test_persistent_kernels_have_no_spills_or_stack_frames(tmp_path):
    found = {name: 0 for name in EXPECTED_KERNELS}
    for source in KERNEL_SOURCES:
        resources = _parse_ptxas(_ptxas_report(_nvcc(), CSRC / source, tmp_path))
        for mangled, (stack, spill_stores, spill_loads, *registers) in resources.items():
            assert (stack, spill_stores, spill_loads) == (0, 0, 0), f"{mangled}: stack frame {stack} B, spill stores " \
                f"{spill_stores} B, spill loads {spill_loads} B"
            assert len(registers) == 1 and registers[0] <= 255, (mangled, registers)
            for name in found:
                if name in mangled:
                    found[name] += 1
    assert found == EXPECTED_KERNELS  # the report covered every kernel (the parse is not vacuous)


def _cuda_toolkit_root(nvcc: str, tmp_path: Path) -> Path:
    """The toolkit nvcc belongs to, as nvcc itself reports it (its TOP variable): right even when the nvcc on PATH is a
    wrapper script outside the toolkit (where <nvcc>/../.. would be wrong)."""
    source = tmp_path / "empty.cu"
    source.write_text("")
    proc = subprocess.run([nvcc, "--dryrun", "-c", str(source), "-o", str(tmp_path / "empty.o")], capture_output=True,
                          text=True)
    top = re.search(r"^#\$ TOP=(.+)$", proc.stdout + proc.stderr, re.M)
    assert top is not None, proc.stdout + proc.stderr
    return Path(top.group(1).strip()).resolve()


def _cmake_prerequisites() -> str | None:
    if os.environ.get("LSTMKERN_TEST_CMAKE") != "1":
        return "set LSTMKERN_TEST_CMAKE=1 to configure and build with CMake (takes minutes)"
    if shutil.which("cmake") is None or _nvcc() is None or torch.version.cuda is None:
        return "needs cmake, nvcc and a CUDA build of torch"
    return None


@pytest.mark.skipif(_cmake_prerequisites() is not None, reason=str(_cmake_prerequisites()))
def test_cmake_configures_builds_and_registers_ops(tmp_path):
    build = tmp_path / "build"
    env = dict(os.environ, CUDA_HOME=str(_cuda_toolkit_root(_nvcc(), tmp_path)))
    configure = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), f"-DPython3_EXECUTABLE={sys.executable}"],
                               capture_output=True, text=True, env=env)
    assert configure.returncode == 0, configure.stdout + configure.stderr
    jobs = os.environ.get("MAX_JOBS", "2")
    compiled = subprocess.run(["cmake", "--build", str(build), "-j", jobs], capture_output=True, text=True, env=env)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    libraries = list(build.glob("_C*.so"))
    assert len(libraries) == 1, list(build.iterdir())
    # Load it in a fresh interpreter (lstmkern._C would register the same op library a second time).
    probe = ("import sys, torch; torch.ops.load_library(sys.argv[1]); "
             "assert torch._C._dispatch_has_kernel_for_dispatch_key('lstmkern_cuda::glstm_persistent_fwd', 'CUDA'); "
             "print(torch.ops.lstmkern_cuda.glstm_persistent_smem_bytes(64, torch.float32))")
    loaded = subprocess.run([sys.executable, "-c", probe, str(libraries[0])], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    assert int(loaded.stdout.strip()) == cuda_backend.glstm_smem_bytes(64, torch.float32)
