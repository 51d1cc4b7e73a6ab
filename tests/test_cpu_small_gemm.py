"""The small-M GEMM of the cpu backend's per-step products (csrc/cpu_small_gemm.*): the kernel alone against float64
on shapes that hit every edge of its blocking, and whole G-LSTM / F-LSTM layers through the backend with each kernel
(and the BLAS path) on 1 and 2 threads against the float64 reference.

Blocking (csrc/cpu_small_gemm_avx512.cpp, _avx2.cpp): row chunks of MR = 6 rows, panels of NR = 64 / 16 floats (32 / 8
doubles) built from vectors of VW = 16 / 8 floats (8 / 4 doubles), K-blocks of KC = 256. The shapes below have M = 1,
M not a multiple of MR, N not a multiple of NR nor of VW, K not a multiple of KC (and K < KC, K = 0).

Shape legend: M rows (the batch), N columns, K inner dimension; T steps, B batch, I inputs, H hidden units, G groups,
R rank."""
import pytest
import torch

import lstmkern
from lstmkern.backends import cpu

from helpers import rel_err

F32, F64 = torch.float32, torch.float64
EPS32 = torch.finfo(F32).eps
ISAS = ("avx512", "avx2")
# (M, N, K)
GEMM_SHAPES = [(1, 1, 1), (1, 97, 300), (7, 50, 257), (13, 130, 513), (16, 128, 1024), (17, 33, 5), (6, 64, 256),
               (5, 3, 0)]


def _ops():
    assert cpu.unsupported("glstm", torch.device("cpu"), F32, None) is None  # loads lstmkern._C
    return torch.ops.lstmkern_cpu


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags as Linux reports them (the cpuid bits the extension's __builtin_cpu_supports reads), or
    None off Linux."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return None


def _cpu_has(isa: str) -> bool:
    flags = _cpu_flags()
    if flags is None:  # torch's own detection (which ATEN_CPU_CAPABILITY can lower, hence not the first choice)
        capability = torch.backends.cpu.get_cpu_capability()
        return capability == "AVX512" if isa == "avx512" else capability in ("AVX2", "AVX512")
    return "avx512f" in flags if isa == "avx512" else {"avx2", "fma"} <= flags


@pytest.fixture
def use_isa(request):
    """Runs the test with the small-GEMM kernels named by the parameter ("none": the BLAS path), then restores."""
    isa = request.param
    if isa != "none" and not _cpu_has(isa):
        pytest.skip(f"this CPU has no {isa}")
    ops = _ops()
    previous = ops.set_small_gemm_isa(isa)
    try:
        yield isa
    finally:
        ops.set_small_gemm_isa(previous)


def test_the_widest_kernel_runs_by_default():
    isa = _ops().small_gemm_isa()
    expected = "avx512" if _cpu_has("avx512") else "avx2" if _cpu_has("avx2") else "none"
    assert isa == expected
    assert _ops().small_gemm_max_rows() >= 16  # the batch of the issue-14 benchmark takes the kernel


def test_bad_isa_name_is_refused():
    with pytest.raises(RuntimeError, match="isa must be"):
        _ops().set_small_gemm_isa("avx9")


@pytest.mark.parametrize("use_isa", ISAS, indirect=True)
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("M,N,K", GEMM_SHAPES)
@pytest.mark.parametrize("trans_w", [True, False])
def test_kernel_matches_float64(use_isa, dtype, M, N, K, trans_w):
    """c_out = a op(w) + beta c for beta = 0 (c poisoned with NaN: never read), 1 and -0.5."""
    g = torch.Generator().manual_seed(M * 1000 + N * 10 + K)
    a = torch.randn(M, K, generator=g, dtype=F64).to(dtype)
    w = torch.randn((N, K) if trans_w else (K, N), generator=g, dtype=F64).to(dtype)
    c = torch.randn(M, N, generator=g, dtype=F64).to(dtype)
    op_w = w.T if trans_w else w
    for beta in (0.0, 1.0, -0.5):
        c_in = torch.full_like(c, float("nan")) if beta == 0.0 else c
        got = _ops().small_gemm(a, w, trans_w, beta, c_in)
        want = a.double() @ op_w.double() + (beta * c.double() if beta != 0.0 else 0.0)
        assert got.dtype == dtype and got.shape == (M, N)
        if dtype == F64:
            assert rel_err(got, want) < 1e-13, f"beta={beta}: {rel_err(got, want):.2e}"
        else:  # held to 4x torch's own float32 product error (at least 4 ulp of 1)
            own = (a @ op_w + (beta * c if beta != 0.0 else 0.0)) if K > 0 else beta * c
            bound = 4 * max(rel_err(own, want), EPS32)
            assert rel_err(got, want) <= bound, f"beta={beta}: {rel_err(got, want):.2e} > {bound:.2e}"


# Layers whose per-step products reach the kernel with M = B = 7 (not a multiple of MR) or 1, task column counts that
# are not multiples of NR (G = 1, H = 400, B = 7 splits each step into chunks of 208 and 192 units on 2 threads) and
# K = 400 / 1600 / 300 / 384 (not multiples of KC). (T, B, I, H, G) and (T, B, I, H, R).
GLSTM_SHAPES = [(3, 7, 24, 400, 1), (4, 1, 5, 9, 3), (2, 7, 30, 300, 3)]
FLSTM_SHAPES = [(3, 7, 24, 512, 384), (4, 1, 5, 9, 4)]


def _layer_grads(op, shape, dtype, backend, seed=0):
    """output, h_n, c_n and the gradients of every input of one layer through the public API."""
    g = torch.Generator().manual_seed(seed)
    T, B, I, H, p = shape

    def rnd(*size, scale=1.0):
        return (torch.randn(*size, generator=g, dtype=F64) * scale).to(dtype).requires_grad_(True)
    # Weights scaled by 1 / sqrt(fan-in) (as nn.LSTM initialises them): pre-activations of order 1, so float64 rounding
    # in the long sums is not amplified by saturated gates and one bound fits every size.
    if op == "glstm":
        ig = I // p if I % p == 0 else I
        weights = [rnd(p, 4 * H // p, ig, scale=ig ** -0.5), rnd(p, 4 * H // p, H // p, scale=(H // p) ** -0.5),
                   rnd(p, 4 * H // p)]
        forward = lstmkern.glstm_forward
    else:
        weights = [rnd(p, I + H, scale=(I + H) ** -0.5), rnd(4 * H, p, scale=p ** -0.5), rnd(4 * H)]
        forward = lstmkern.flstm_forward
    x, h0, c0 = rnd(T, B, I), rnd(B, H, scale=0.5), rnd(B, H)
    inputs = [x, h0, c0, *weights]
    out, (h_n, c_n) = forward(x, (h0, c0), *weights, backend=backend)
    grads = torch.autograd.grad((out, c_n), inputs, (torch.randn(out.shape, generator=g, dtype=F64).to(dtype),
                                                     torch.randn(c_n.shape, generator=g, dtype=F64).to(dtype)))
    return [out, h_n, c_n, *grads]


@pytest.mark.parametrize("use_isa", ISAS + ("none",), indirect=True)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("op,shape", [("glstm", s) for s in GLSTM_SHAPES] + [("flstm", s) for s in FLSTM_SHAPES])
def test_layers_through_the_kernel_match_the_float64_reference(use_isa, threads, op, shape):
    want = _layer_grads(op, shape, F64, "reference")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = _layer_grads(op, shape, F64, "cpu")
    finally:
        torch.set_num_threads(previous)
    names = ("output", "h_n", "c_n", "dx", "dh0", "dc0", "dweight_a", "dweight_b", "dbias")
    for name, a, e in zip(names, got, want):
        assert rel_err(a, e) < 1e-13, f"{name}: relative error {rel_err(a, e):.2e}"


@pytest.mark.parametrize("use_isa", ISAS[:1], indirect=True)
@pytest.mark.parametrize("max_rows", [6, 7])
def test_batches_on_both_sides_of_the_crossover_match_the_float64_reference(use_isa, max_rows):
    """B = 7 takes the BLAS path with the crossover at 6 rows, the kernel at 7."""
    ops = _ops()
    shape = (3, 7, 24, 400, 1)
    want = _layer_grads("glstm", shape, F64, "reference")
    previous = ops.set_small_gemm_max_rows(max_rows)
    try:
        got = _layer_grads("glstm", shape, F64, "cpu")
    finally:
        ops.set_small_gemm_max_rows(previous)
    for a, e in zip(got, want):
        assert rel_err(a, e) < 1e-13
