// The CPU backend's cell kernels for AVX2 + FMA CPUs: 8 floats / 4 doubles per register. float32 exp and tanh are
// inlined here (exp_f32, tanh_f32: at most 1.3 ulp from the exact values, 2x and 3.4x the speed of SLEEF's u10
// versions, which are calls through libtorch's PLT and were 14% of a small layer's forward); float64 takes them from
// SLEEF (the vector math library libtorch carries and exports; declared weak here, so a libtorch without them makes
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

#include "cpu_avx2_vec.h"
#include "cpu_cell_kernels.h"

extern "C" {
__m256d Sleef_expd4_u10(__m256d) __attribute__((weak));
__m256d Sleef_tanhd4_u10(__m256d) __attribute__((weak));
}

namespace lstmkern::cpu {
namespace {

// exp(x) = 2^n exp(r), n = round(x / ln2), r = x - n ln2 with ln2 in two parts (Cody and Waite: the high part has few
// bits, so n * high is exact and |r| <= ln2/2 keeps its accuracy); exp(r) = 1 + r + r^2 Q(r), Q of degree 4 fitted for
// least relative error on [-ln2/2, ln2/2] (3e-9); 2^n is built in the exponent bits, so x is clamped to
// [-87.3, 88.3], where n + 127 stays a normal exponent. Below, the result is ~1e-38 instead of a denormal or 0 (a
// sigmoid reads 1 either way); above, +inf (exact from 88.72 on; between, the true value is finite, but what the cell
// makes of it, 1 / (1 + e) or 2 / (e + 1), is then 0 where it would be a denormal: no denormals reach the state). The
// clamps take x as the second operand of min/max, which returns it when it is NaN: NaN propagates.
LSTMKERN_AVX2 __m256 exp_f32(__m256 x) {
  const __m256 overflow = _mm256_cmp_ps(x, _mm256_set1_ps(88.3f), _CMP_GT_OQ);
  x = _mm256_min_ps(_mm256_set1_ps(88.3f), _mm256_max_ps(_mm256_set1_ps(-87.3f), x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);  // ln2 = 0.693359375 - 2.12194440e-4
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 q = _mm256_set1_ps(1.3814604577885477e-3f);
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(8.368710719895282e-3f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(4.1668387547667475e-2f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(0.16666520680363878f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(0.49999993450770197f));
  const __m256 exp_r = _mm256_fmadd_ps(q, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i two_n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_blendv_ps(_mm256_mul_ps(exp_r, _mm256_castsi256_ps(two_n)),
                          _mm256_set1_ps(__builtin_huge_valf()), overflow);
}

// tanh(x) = sign(x) tanh(|x|): for |x| < 0.625, a + a^3 P(a^2) with P of degree 4 fitted for least relative error on
// [0, 0.625] (4e-9); above, 1 - 2 / (exp(2a) + 1), whose cancellation costs at most a factor 0.8 there. Both are
// computed and blended. NaN propagates through either branch.
LSTMKERN_AVX2 __m256 tanh_f32(__m256 x) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  const __m256 a = _mm256_andnot_ps(sign_bit, x);
  const __m256 a2 = _mm256_mul_ps(a, a);
  __m256 p = _mm256_set1_ps(-5.7049516017894045e-3f);
  p = _mm256_fmadd_ps(p, a2, _mm256_set1_ps(2.0639052538415276e-2f));
  p = _mm256_fmadd_ps(p, a2, _mm256_set1_ps(-5.37397032045395e-2f));
  p = _mm256_fmadd_ps(p, a2, _mm256_set1_ps(0.13331442034349245f));
  p = _mm256_fmadd_ps(p, a2, _mm256_set1_ps(-0.3333328193468123f));
  const __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(a, a2), p, a);
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 large =
      _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(exp_f32(_mm256_add_ps(a, a)), one)));
  const __m256 magnitude = _mm256_blendv_ps(large, small, _mm256_cmp_ps(a, _mm256_set1_ps(0.625f), _CMP_LT_OQ));
  return _mm256_or_ps(magnitude, _mm256_and_ps(x, sign_bit));
}

// The shared AVX2 policies plus exp and tanh.
struct Avx2FloatCell : Avx2Float {
  LSTMKERN_AVX2 static V exp(V a) { return exp_f32(a); }
  LSTMKERN_AVX2 static V tanh(V a) { return tanh_f32(a); }
};

struct Avx2DoubleCell : Avx2Double {
  LSTMKERN_AVX2 static V exp(V a) { return Sleef_expd4_u10(a); }
  LSTMKERN_AVX2 static V tanh(V a) { return Sleef_tanhd4_u10(a); }
};

void forward_f32(const CellForward<float>& a) {
  cell_impl::cell_forward<float, Avx2FloatCell>(a);
}
void forward_f64(const CellForward<double>& a) {
  cell_impl::cell_forward<double, Avx2DoubleCell>(a);
}
void backward_f32(const CellBackward<float>& a) {
  cell_impl::cell_backward<float, Avx2FloatCell>(a);
}
void backward_f64(const CellBackward<double>& a) {
  cell_impl::cell_backward<double, Avx2DoubleCell>(a);
}

}  // namespace

const CellKernels* cell_kernels_avx2() {
  if (Sleef_expd4_u10 == nullptr || Sleef_tanhd4_u10 == nullptr) return nullptr;
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
