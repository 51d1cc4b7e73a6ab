// The CPU backend's cell kernels for AVX2 + FMA CPUs: 8 floats / 4 doubles per register, exp and tanh from SLEEF (the
// vector math library libtorch carries and exports; declared weak here, so a libtorch without them makes
// cell_kernels_avx2() return nullptr instead of failing to load). Used only where the CPU reports AVX2 and FMA
// (cpu_lstm.cpp checks at run time); the rest of the extension keeps the baseline flags, so the same build runs on any
// x86-64 CPU. The whole file is compiled for AVX2 by a target pragma that precedes its few includes (the cell
// templates must be instantiated with AVX2 enabled); only GCC on x86-64 honours it, elsewhere cell_kernels_avx2()
// is nullptr and the default kernels run.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx2,fma")
// Returning __m256 by value is fine within this file; GCC's note that the ABI differs from non-AVX callers would be
// an error under -Werror.
#pragma GCC diagnostic ignored "-Wpsabi"
#include <immintrin.h>

#include "cpu_cell_kernels.h"

#define LSTMKERN_AVX2 __attribute__((always_inline)) inline

extern "C" {
__m256 Sleef_expf8_u10(__m256) __attribute__((weak));
__m256 Sleef_tanhf8_u10(__m256) __attribute__((weak));
__m256d Sleef_expd4_u10(__m256d) __attribute__((weak));
__m256d Sleef_tanhd4_u10(__m256d) __attribute__((weak));
}

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
  LSTMKERN_AVX2 static V load(const float* p, int n) {
    return n == kWidth ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lanes32(n));
  }
  LSTMKERN_AVX2 static void store(float* p, V v, int n) {
    if (n == kWidth) _mm256_storeu_ps(p, v);
    else _mm256_maskstore_ps(p, lanes32(n), v);
  }
  LSTMKERN_AVX2 static V splat(float v) { return _mm256_set1_ps(v); }
  LSTMKERN_AVX2 static V add(V a, V b) { return _mm256_add_ps(a, b); }
  LSTMKERN_AVX2 static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  LSTMKERN_AVX2 static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  LSTMKERN_AVX2 static V div(V a, V b) { return _mm256_div_ps(a, b); }
  LSTMKERN_AVX2 static V neg(V a) { return _mm256_xor_ps(a, _mm256_set1_ps(-0.0f)); }
  LSTMKERN_AVX2 static V exp(V a) { return Sleef_expf8_u10(a); }
  LSTMKERN_AVX2 static V tanh(V a) { return Sleef_tanhf8_u10(a); }
};

struct Avx2Double {
  using V = __m256d;
  static constexpr int kWidth = 4;
  LSTMKERN_AVX2 static V load(const double* p, int n) {
    return n == kWidth ? _mm256_loadu_pd(p) : _mm256_maskload_pd(p, lanes64(n));
  }
  LSTMKERN_AVX2 static void store(double* p, V v, int n) {
    if (n == kWidth) _mm256_storeu_pd(p, v);
    else _mm256_maskstore_pd(p, lanes64(n), v);
  }
  LSTMKERN_AVX2 static V splat(double v) { return _mm256_set1_pd(v); }
  LSTMKERN_AVX2 static V add(V a, V b) { return _mm256_add_pd(a, b); }
  LSTMKERN_AVX2 static V sub(V a, V b) { return _mm256_sub_pd(a, b); }
  LSTMKERN_AVX2 static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
  LSTMKERN_AVX2 static V div(V a, V b) { return _mm256_div_pd(a, b); }
  LSTMKERN_AVX2 static V neg(V a) { return _mm256_xor_pd(a, _mm256_set1_pd(-0.0)); }
  LSTMKERN_AVX2 static V exp(V a) { return Sleef_expd4_u10(a); }
  LSTMKERN_AVX2 static V tanh(V a) { return Sleef_tanhd4_u10(a); }
};

void forward_f32(const CellForward<float>& a) {
  cell_impl::cell_forward<float, Avx2Float>(a);
}
void forward_f64(const CellForward<double>& a) {
  cell_impl::cell_forward<double, Avx2Double>(a);
}
void backward_f32(const CellBackward<float>& a) {
  cell_impl::cell_backward<float, Avx2Float>(a);
}
void backward_f64(const CellBackward<double>& a) {
  cell_impl::cell_backward<double, Avx2Double>(a);
}

}  // namespace

const CellKernels* cell_kernels_avx2() {
  if (Sleef_expf8_u10 == nullptr || Sleef_tanhf8_u10 == nullptr || Sleef_expd4_u10 == nullptr ||
      Sleef_tanhd4_u10 == nullptr)
    return nullptr;
  static const CellKernels table{"avx2", &forward_f32, &forward_f64, &backward_f32, &backward_f64};
  return &table;
}

}  // namespace lstmkern::cpu
#else
#include "cpu_lstm.h"

namespace lstmkern::cpu {
const CellKernels* cell_kernels_avx2() { return nullptr; }
}  // namespace lstmkern::cpu
#endif
