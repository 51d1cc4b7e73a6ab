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

#include "cpu_avx2_vec.h"
#include "cpu_cell_kernels.h"

extern "C" {
__m256 Sleef_expf8_u10(__m256) __attribute__((weak));
__m256 Sleef_tanhf8_u10(__m256) __attribute__((weak));
__m256d Sleef_expd4_u10(__m256d) __attribute__((weak));
__m256d Sleef_tanhd4_u10(__m256d) __attribute__((weak));
}

namespace lstmkern::cpu {
namespace {

// The shared AVX2 policies plus exp and tanh from SLEEF.
struct Avx2FloatCell : Avx2Float {
  LSTMKERN_AVX2 static V exp(V a) { return Sleef_expf8_u10(a); }
  LSTMKERN_AVX2 static V tanh(V a) { return Sleef_tanhf8_u10(a); }
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
