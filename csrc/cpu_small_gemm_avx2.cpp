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

#include "cpu_avx2_vec.h"
#include "cpu_small_gemm_kernel.h"

#ifndef LSTMKERN_SMALL_GEMM_AVX2_TILE
#define LSTMKERN_SMALL_GEMM_AVX2_TILE 6, 2, 256
#endif

namespace lstmkern::cpu {
namespace {

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
