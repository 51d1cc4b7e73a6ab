// The small-M GEMM kernel for AVX2 + FMA CPUs: 8 floats / 4 doubles per register, 16 registers. Compiled for AVX2 by
// a target pragma ahead of its includes (only GCC on x86-64 honours it; elsewhere small_gemm_kernels_avx2() is
// nullptr); cpu_small_gemm.cpp calls it only where the CPU reports AVX2 and FMA.
//
// Tile: MR = 6 rows x NV = 2 vectors (NR = 16 floats / 8 doubles): 12 accumulators + 2 weight vectors + 1 broadcast of
// the 16 registers (the classic AVX2 6 x 16 shape); KC = 256.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx2,fma")
// Returning __m256 by value is fine within this file; GCC's note that the ABI differs from non-AVX callers would be
// an error under -Werror.
#pragma GCC diagnostic ignored "-Wpsabi"
#include <immintrin.h>

#include "cpu_small_gemm_kernel.h"

#ifndef LSTMKERN_SMALL_GEMM_AVX2_TILE
#define LSTMKERN_SMALL_GEMM_AVX2_TILE 6, 2, 256
#endif

#define LSTMKERN_AVX2 __attribute__((always_inline)) inline

namespace lstmkern::cpu {
namespace {

// Lane masks for partial loads and stores: the first n lanes set.
LSTMKERN_AVX2 __m256i lanes32(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
LSTMKERN_AVX2 __m256i lanes64(int n) {
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}

struct Avx2Float {
  using V = __m256;
  static constexpr int kWidth = 8;
  LSTMKERN_AVX2 static V zero() { return _mm256_setzero_ps(); }
  LSTMKERN_AVX2 static V load(const float* p) { return _mm256_loadu_ps(p); }
  LSTMKERN_AVX2 static V load_part(const float* p, int n) {
    return n == kWidth ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lanes32(n));
  }
  LSTMKERN_AVX2 static void store_part(float* p, V v, int n) {
    if (n == kWidth) _mm256_storeu_ps(p, v);
    else _mm256_maskstore_ps(p, lanes32(n), v);
  }
  LSTMKERN_AVX2 static V splat(float v) { return _mm256_set1_ps(v); }
  LSTMKERN_AVX2 static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
};

struct Avx2Double {
  using V = __m256d;
  static constexpr int kWidth = 4;
  LSTMKERN_AVX2 static V zero() { return _mm256_setzero_pd(); }
  LSTMKERN_AVX2 static V load(const double* p) { return _mm256_loadu_pd(p); }
  LSTMKERN_AVX2 static V load_part(const double* p, int n) {
    return n == kWidth ? _mm256_loadu_pd(p) : _mm256_maskload_pd(p, lanes64(n));
  }
  LSTMKERN_AVX2 static void store_part(double* p, V v, int n) {
    if (n == kWidth) _mm256_storeu_pd(p, v);
    else _mm256_maskstore_pd(p, lanes64(n), v);
  }
  LSTMKERN_AVX2 static V splat(double v) { return _mm256_set1_pd(v); }
  LSTMKERN_AVX2 static V fmadd(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
};

template <typename T, typename S, int MR, int NV, int KC>
constexpr SmallGemmKernel<T> kernel() {
  return {NV * S::kWidth, S::kWidth, &small_gemm_impl::multiply<T, S, MR, NV, KC>};
}

}  // namespace

const SmallGemmKernels* small_gemm_kernels_avx2() {
  static constexpr SmallGemmKernels table{"avx2", kernel<float, Avx2Float, LSTMKERN_SMALL_GEMM_AVX2_TILE>(),
                                          kernel<double, Avx2Double, LSTMKERN_SMALL_GEMM_AVX2_TILE>()};
  return &table;
}

}  // namespace lstmkern::cpu
#else
#include "cpu_small_gemm.h"

namespace lstmkern::cpu {
const SmallGemmKernels* small_gemm_kernels_avx2() { return nullptr; }
}  // namespace lstmkern::cpu
#endif
