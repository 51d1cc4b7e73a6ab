// Tile products shared by the F-LSTM cluster and grid kernels (csrc/flstm_cluster.cu, csrc/flstm_grid.cu): the
// recurrent products of one CTA, spread over its warps (WMMA) or threads (float32 FMA). Included only by csrc/*.cu.
#pragma once

#include <mma.h>

#include <cstdint>

#include "persistent_common.cuh"

namespace lstmkern {

// out (16 x 16 n_tiles, float32, ld_out; shared or global memory) = a (16 x 16 k_tiles, row-major, lda) b (16 k_tiles x
// 16 n_tiles, row-major, ldb), fp16/bf16 operands in shared memory with float32 accumulation. Each warp takes its
// n-tiles two at a time (n_tile and n_tile + warps): one A fragment load feeds two MMAs, and the two independent
// accumulator chains hide each other's latency (the scheme of the cluster kernels).
template <typename Element>
__device__ __forceinline__ void wmma_product(const Element* __restrict__ a, int lda, const Element* __restrict__ b,
                                             int ldb, float* out, int ld_out, int n_tiles, int k_tiles) {
  namespace wmma = nvcuda::wmma;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int num_warps = static_cast<int>(blockDim.x) / 32;
  for (int n_tile = warp; n_tile < n_tiles; n_tile += 2 * num_warps) {
    const int n_tile_2 = n_tile + num_warps;
    const bool has_second = n_tile_2 < n_tiles;  // warp-uniform
    wmma::fragment<wmma::accumulator, kWmmaTile, kWmmaTile, kWmmaTile, float> acc, acc_2;
    wmma::fill_fragment(acc, 0.0f);
    wmma::fill_fragment(acc_2, 0.0f);
    for (int k_tile = 0; k_tile < k_tiles; ++k_tile) {
      wmma::fragment<wmma::matrix_a, kWmmaTile, kWmmaTile, kWmmaTile, Element, wmma::row_major> a_frag;
      wmma::fragment<wmma::matrix_b, kWmmaTile, kWmmaTile, kWmmaTile, Element, wmma::row_major> b_frag, b_frag_2;
      const Element* b_row = b + static_cast<int64_t>(k_tile) * kWmmaTile * ldb;
      wmma::load_matrix_sync(a_frag, a + k_tile * kWmmaTile, static_cast<unsigned>(lda));
      wmma::load_matrix_sync(b_frag, b_row + n_tile * kWmmaTile, static_cast<unsigned>(ldb));
      if (has_second) wmma::load_matrix_sync(b_frag_2, b_row + n_tile_2 * kWmmaTile, static_cast<unsigned>(ldb));
      wmma::mma_sync(acc, a_frag, b_frag, acc);
      if (has_second) wmma::mma_sync(acc_2, a_frag, b_frag_2, acc_2);
    }
    wmma::store_matrix_sync(out + n_tile * kWmmaTile, acc, static_cast<unsigned>(ld_out), wmma::mem_row_major);
    if (has_second) {
      wmma::store_matrix_sync(out + n_tile_2 * kWmmaTile, acc_2, static_cast<unsigned>(ld_out), wmma::mem_row_major);
    }
  }
}

// out (kRows x n_cols, ld_out; shared or global memory) = a (kRows x k_count, lda) b (k_count x n_cols, ldb), all
// float32 in shared memory: one thread per output column with one register accumulator per row; b[k][n] is contiguous
// across the warp, a[row][k] a broadcast, and the stores of a warp are contiguous.
template <int kRows>
__device__ __forceinline__ void fma_product(const float* __restrict__ a, int lda, const float* __restrict__ b, int ldb,
                                            float* out, int ld_out, int n_cols, int k_count) {
  for (int n = threadIdx.x; n < n_cols; n += blockDim.x) {
    float acc[kRows];
#pragma unroll
    for (int row = 0; row < kRows; ++row) acc[row] = 0.0f;
    for (int k = 0; k < k_count; ++k) {
      const float w = b[static_cast<int64_t>(k) * ldb + n];
#pragma unroll
      for (int row = 0; row < kRows; ++row) acc[row] = fmaf(a[row * lda + k], w, acc[row]);
    }
#pragma unroll
    for (int row = 0; row < kRows; ++row) out[static_cast<int64_t>(row) * ld_out + n] = acc[row];
  }
}

}  // namespace lstmkern
