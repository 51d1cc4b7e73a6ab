// AVX2 + FMA vector policies (8 floats / 4 doubles per register) shared by the CPU backend's AVX2 translation units:
// the cell kernels (cpu_cell_avx2.cpp, which adds exp and tanh) and the small-M GEMM (cpu_small_gemm_avx2.cpp).
// Include it only after `#pragma GCC target("avx2,fma")` and <immintrin.h>, inside the including file's
// x86-64/GCC guard: the functions are compiled for AVX2 and must never run on a CPU without it (callers ask the CPU
// first). Everything here has internal linkage, so each including file gets its own copy.
#pragma once

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

// load(p, n): lanes >= n read as 0 and memory past n untouched; store(p, v, n): lanes >= n not written.
struct Avx2Float {
  using V = __m256;
  static constexpr int kWidth = 8;
  LSTMKERN_AVX2 static V zero() { return _mm256_setzero_ps(); }
  LSTMKERN_AVX2 static V load(const float* p) { return _mm256_loadu_ps(p); }
  LSTMKERN_AVX2 static V load(const float* p, int n) {
    return n == kWidth ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lanes32(n));
  }
  LSTMKERN_AVX2 static void store(float* p, V v, int n) {
    if (n == kWidth) _mm256_storeu_ps(p, v);
    else _mm256_maskstore_ps(p, lanes32(n), v);
  }
  LSTMKERN_AVX2 static V splat(float v) { return _mm256_set1_ps(v); }
  LSTMKERN_AVX2 static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  LSTMKERN_AVX2 static V add(V a, V b) { return _mm256_add_ps(a, b); }
  LSTMKERN_AVX2 static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  LSTMKERN_AVX2 static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  LSTMKERN_AVX2 static V div(V a, V b) { return _mm256_div_ps(a, b); }
  LSTMKERN_AVX2 static V neg(V a) { return _mm256_xor_ps(a, _mm256_set1_ps(-0.0f)); }
};

struct Avx2Double {
  using V = __m256d;
  static constexpr int kWidth = 4;
  LSTMKERN_AVX2 static V zero() { return _mm256_setzero_pd(); }
  LSTMKERN_AVX2 static V load(const double* p) { return _mm256_loadu_pd(p); }
  LSTMKERN_AVX2 static V load(const double* p, int n) {
    return n == kWidth ? _mm256_loadu_pd(p) : _mm256_maskload_pd(p, lanes64(n));
  }
  LSTMKERN_AVX2 static void store(double* p, V v, int n) {
    if (n == kWidth) _mm256_storeu_pd(p, v);
    else _mm256_maskstore_pd(p, lanes64(n), v);
  }
  LSTMKERN_AVX2 static V splat(double v) { return _mm256_set1_pd(v); }
  LSTMKERN_AVX2 static V fmadd(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  LSTMKERN_AVX2 static V add(V a, V b) { return _mm256_add_pd(a, b); }
  LSTMKERN_AVX2 static V sub(V a, V b) { return _mm256_sub_pd(a, b); }
  LSTMKERN_AVX2 static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
  LSTMKERN_AVX2 static V div(V a, V b) { return _mm256_div_pd(a, b); }
  LSTMKERN_AVX2 static V neg(V a) { return _mm256_xor_pd(a, _mm256_set1_pd(-0.0)); }
};

}  // namespace
}  // namespace lstmkern::cpu
