// The small-M GEMM kernel for AVX-512F CPUs: 16 floats / 8 doubles per register, 32 registers. Compiled for AVX-512F
// by a target pragma ahead of its includes (only GCC on x86-64 honours it; elsewhere small_gemm_kernels_avx512() is
// nullptr); cpu_small_gemm.cpp calls it only where the CPU reports AVX-512F, so the rest of the extension keeps the
// baseline flags and the same build runs on any x86-64 CPU.
//
// Tile: MR = 6 rows x NV = 4 vectors (NR = 64 floats / 32 doubles): 24 accumulators + 4 weight vectors + 1 broadcast
// of the 32 registers; per k, 24 FMAs against 4 weight loads and 6 broadcasts. KC = 256: a panel's K-block (64 KiB of
// float32) stays in L2 while the row chunks reuse it. Chosen on AMD EPYC (Zen 4), one thread, M = 16, K = 1024, 32
// products of N = 128 per step (a G = 1, H = 1024 step), CPU time per step, medians of 7: 6x4 1.51-1.63 ms, 8x3
// 1.56-1.82 ms, 4x6 1.78 ms, 5x5 1.79 ms, 12x2 2.27 ms, 16x1 3.1-3.3 ms; KC 256 / 512 / 1024 within noise (+-5%);
// MKL's packed sgemm 3.4-3.5 ms.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx512f,avx2,fma")
// Returning __m512 by value is fine within this file; GCC's note that the ABI differs from non-AVX-512 callers would
// be an error under -Werror.
#pragma GCC diagnostic ignored "-Wpsabi"
#include <immintrin.h>

#include "cpu_small_gemm_kernel.h"

#ifndef LSTMKERN_SMALL_GEMM_AVX512_TILE
#define LSTMKERN_SMALL_GEMM_AVX512_TILE 6, 4, 256
#endif

#define LSTMKERN_AVX512 __attribute__((always_inline)) inline

namespace lstmkern::cpu {
namespace {

struct Avx512Float {
  using V = __m512;
  static constexpr int kWidth = 16;
  LSTMKERN_AVX512 static V zero() { return _mm512_setzero_ps(); }
  LSTMKERN_AVX512 static V load(const float* p) { return _mm512_loadu_ps(p); }
  LSTMKERN_AVX512 static V load(const float* p, int n) {
    return n == kWidth ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p);
  }
  LSTMKERN_AVX512 static void store(float* p, V v, int n) {
    if (n == kWidth) _mm512_storeu_ps(p, v);
    else _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1u), v);
  }
  LSTMKERN_AVX512 static V splat(float v) { return _mm512_set1_ps(v); }
  LSTMKERN_AVX512 static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
};

struct Avx512Double {
  using V = __m512d;
  static constexpr int kWidth = 8;
  LSTMKERN_AVX512 static V zero() { return _mm512_setzero_pd(); }
  LSTMKERN_AVX512 static V load(const double* p) { return _mm512_loadu_pd(p); }
  LSTMKERN_AVX512 static V load(const double* p, int n) {
    return n == kWidth ? _mm512_loadu_pd(p) : _mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << n) - 1u), p);
  }
  LSTMKERN_AVX512 static void store(double* p, V v, int n) {
    if (n == kWidth) _mm512_storeu_pd(p, v);
    else _mm512_mask_storeu_pd(p, static_cast<__mmask8>((1u << n) - 1u), v);
  }
  LSTMKERN_AVX512 static V splat(double v) { return _mm512_set1_pd(v); }
  LSTMKERN_AVX512 static V fmadd(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
};

template <typename T, typename S, int MR, int NV, int KC>
constexpr SmallGemmKernel<T> kernel() {
  return {NV * S::kWidth, S::kWidth, &small_gemm_impl::multiply<T, S, MR, NV, KC>};
}

}  // namespace

const SmallGemmKernels* small_gemm_kernels_avx512() {
  static constexpr SmallGemmKernels table{"avx512", kernel<float, Avx512Float, LSTMKERN_SMALL_GEMM_AVX512_TILE>(),
                                          kernel<double, Avx512Double, LSTMKERN_SMALL_GEMM_AVX512_TILE>()};
  return &table;
}

}  // namespace lstmkern::cpu
#else
#include "cpu_small_gemm.h"

namespace lstmkern::cpu {
const SmallGemmKernels* small_gemm_kernels_avx512() { return nullptr; }
}  // namespace lstmkern::cpu
#endif
