// The small-M GEMM kernel (see cpu_small_gemm.h for the packed layout), written once over a small SIMD policy and
// instantiated per instruction set by cpu_small_gemm_avx512.cpp and cpu_small_gemm_avx2.cpp, which include this
// header after their target pragma. Only intrinsics and this file's own code run under that pragma: no standard
// library function is instantiated here, so no out-of-line copy compiled for a wider ISA can be shared (as a COMDAT)
// with the baseline code of other files.
//
// Blocking, outermost first: panels of NR = NV * VW columns; K-blocks of KC rows (a panel's K-block, KC * NR
// elements, stays in L1 / L2 while the row chunks reuse it); row chunks of MR rows. The tile kernel keeps MR x NV vector
// accumulators in registers and per k loads NV vectors of W and broadcasts MR elements of A (straight from A's rows),
// so W is streamed from memory once per call and A (M x K, small) is re-read from cache.
//
// A policy S provides: type V, constexpr int kWidth, V zero(), V load(const T*) (whole vector), V load(const T*,
// int n) (lanes >= n read as 0, memory past n untouched), store(T*, V, int n) (lanes >= n not written),
// V splat(T), V fmadd(V a, V b, V c) = a * b + c.
#pragma once

#include <cstdint>

#include "cpu_small_gemm.h"

namespace lstmkern::cpu::small_gemm_impl {

template <typename T>
using TileFn = void (*)(int64_t kc, const T* a, int64_t lda, const T* w, int64_t width, T* c, int64_t ldc,
                        int last_lanes, T beta);

// C (MR x NV vectors, the last one `last_lanes` wide) = A (MR x kc) W (kc x NV*VW, row stride `width`) + beta * C.
template <typename T, typename S, int MR, int NV>
void tile(int64_t kc, const T* a, int64_t lda, const T* w, int64_t width, T* c, int64_t ldc, int last_lanes,
          T beta) {
  using V = typename S::V;
  V acc[MR][NV];
#pragma GCC unroll 32
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) acc[r][j] = S::zero();
  for (int64_t k = 0; k < kc; ++k) {
    V wv[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) wv[j] = S::load(w + j * S::kWidth);
#pragma GCC unroll 32
    for (int r = 0; r < MR; ++r) {
      const V ar = S::splat(a[r * lda + k]);
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[r][j] = S::fmadd(ar, wv[j], acc[r][j]);
    }
    w += width;
  }
  const V vbeta = S::splat(beta);
#pragma GCC unroll 32
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      T* cp = c + r * ldc + j * S::kWidth;
      const int n = j == NV - 1 ? last_lanes : S::kWidth;
      V v = acc[r][j];
      if (beta != T(0)) v = S::fmadd(vbeta, S::load(cp, n), v);
      S::store(cp, v, n);
    }
}

// tiles[mr - 1][nv - 1] = tile<mr, nv>: the row and column remainders run the narrower tiles, not a masked full one.
template <typename T, typename S, int MR, int NV>
struct TileTable {
  TileFn<T> tiles[MR][NV];

  template <int R, int J>
  constexpr void fill_row() {
    if constexpr (J > 0) {
      fill_row<R, J - 1>();
      tiles[R - 1][J - 1] = &tile<T, S, R, J>;
    }
  }
  template <int R>
  constexpr void fill() {
    if constexpr (R > 0) {
      fill<R - 1>();
      fill_row<R, NV>();
    }
  }
  constexpr TileTable() : tiles() { fill<MR>(); }
};

template <typename T, typename S, int MR, int NV>
inline constexpr TileTable<T, S, MR, NV> kTiles{};

// C (M x N) = A (M x K) op(W) + beta * C (see SmallGemmArgs), with KC the K-block.
template <typename T, typename S, int MR, int NV, int KC>
void multiply(const SmallGemmArgs<T>& g) {
  constexpr int64_t VW = S::kWidth, NR = NV * VW;
  const auto& table = kTiles<T, S, MR, NV>.tiles;
  for (int64_t p0 = 0; p0 < g.N; p0 += NR) {
    const int64_t cols = g.N - p0 < NR ? g.N - p0 : NR;
    const int64_t nv = (cols + VW - 1) / VW;
    const int64_t width = nv * VW;  // this panel's width: NR, or the last panel's columns rounded up to VW
    const int last_lanes = static_cast<int>(cols - (nv - 1) * VW);
    const T* panel = g.packed + p0 * g.K;
    int64_t k0 = 0;
    do {  // at least once: K == 0 still sets C = beta * C
      const int64_t kc = g.K - k0 < KC ? g.K - k0 : KC;
      const T beta = k0 == 0 ? g.beta : T(1);  // later K-blocks accumulate onto the earlier ones
      for (int64_t r0 = 0; r0 < g.M; r0 += MR) {
        const int64_t mr = g.M - r0 < MR ? g.M - r0 : MR;
        table[mr - 1][nv - 1](kc, g.a + r0 * g.lda + k0, g.lda, panel + k0 * width, width, g.c + r0 * g.ldc + p0,
                              g.ldc, last_lanes, beta);
      }
      k0 += kc;
    } while (k0 < g.K);
  }
}

}  // namespace lstmkern::cpu::small_gemm_impl
