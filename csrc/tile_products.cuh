// Device pieces shared by the multi-CTA kernels (csrc/glstm_cluster.cu, csrc/flstm_cluster.cu, csrc/flstm_grid.cu,
// csrc/flstm_cluster_bwd.cu, csrc/flstm_grid_bwd.cu):
// the recurrent products of one CTA, spread over its warps (WMMA) or threads (float32 FMA), the loads of an F-LSTM
// CTA's resident weights, and the prefetch of the input projection for the cell phase. Included only by csrc/*.cu.
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

// The body of both loaders below: kTransposed stores W1_h and W2 transposed (the forward's B operands), else as
// stored (the backward's). The global reads are the same either way: consecutive threads read consecutive k of a W1
// row and consecutive q of a W2 row (coalesced); `groups` selects the projected mode's gate rows (see below).
template <bool kTransposed, typename Element>
__device__ __forceinline__ void load_unit_weights(const Element* __restrict__ weight_1,
                                                  const Element* __restrict__ weight_2, int I, int H, int R,
                                                  int unit_start, int Hs, Element* w1h, int64_t w1h_ld, Element* w2,
                                                  int64_t w2_ld, int groups) {
  const int64_t w1_ld = static_cast<int64_t>(I) + H;
  for (int idx = threadIdx.x; idx < R * Hs; idx += blockDim.x) {
    const int q = idx / Hs;
    const int k = idx - q * Hs;
    const int64_t dst = kTransposed ? static_cast<int64_t>(k) * w1h_ld + q : static_cast<int64_t>(q) * w1h_ld + k;
    w1h[dst] = weight_1[q * w1_ld + I + unit_start + k];
  }
  const int four_hs = 4 * Hs;
  const int hg = H / groups;               // units per group (H for the F-LSTM)
  const int group = unit_start / hg;       // the CTA's group (0 for the F-LSTM)
  const int w2_cols = R / groups;          // columns of W2: Pg (R for the F-LSTM)
  const int64_t row_start = static_cast<int64_t>(group) * 4 * hg + (unit_start - group * hg);
  for (int idx = threadIdx.x; idx < four_hs * w2_cols; idx += blockDim.x) {
    const int n = idx / w2_cols;  // CTA-local gate row (column when transposed) gate * Hs + j
    const int q = idx - n * w2_cols;
    const int gate = n / Hs;
    const int64_t row = row_start + static_cast<int64_t>(gate) * hg + (n - gate * Hs);
    const int64_t dst = kTransposed ? static_cast<int64_t>(q) * w2_ld + n : static_cast<int64_t>(n) * w2_ld + q;
    w2[dst] = weight_2[row * w2_cols + q];
  }
}

// The resident weights of an F-LSTM CTA that owns hidden units [unit_start, unit_start + Hs):
//   W1_h columns: W1[q][I + unit_start + k] -> w1h[k][q] (Hs x w1h_ld), consecutive threads read consecutive k of one
//   row of W1, so the global loads coalesce (the transposing shared-memory stores are a one-off);
//   W2 rows of the units' gates: W2[gate H + unit_start + j][q] -> w2[q][gate Hs + j] (R x w2_ld), coalesced along q.
// weight_1 (R, I + H) and weight_2 (4H, R) row-major in global memory.
// Projected G-LSTM mode (see projected_fwd_layout in persistent_layout.h): weight_1 is W_hr (P, H) with I = 0 and
// R = P, weight_2 is W_hh (G, 4Hg, Pg) = (G 4Hg, Pg) row-major with `groups` = G; the CTA's units lie in one group
// g = unit_start / Hg, whose rows are g 4Hg + gate Hg + (unit_start - g Hg) + j, and W2 has Pg = R / G columns, so
// w2 is (Pg x w2_ld). groups = 1 is the F-LSTM layout above.
template <typename Element>
__device__ __forceinline__ void load_flstm_unit_weights(const Element* __restrict__ weight_1,
                                                        const Element* __restrict__ weight_2, int I, int H, int R,
                                                        int unit_start, int Hs, Element* w1h, int64_t w1h_ld,
                                                        Element* w2, int64_t w2_ld, int groups = 1) {
  load_unit_weights<true>(weight_1, weight_2, I, H, R, unit_start, Hs, w1h, w1h_ld, w2, w2_ld, groups);
}

// The resident weights of an F-LSTM backward CTA (csrc/flstm_cluster_bwd.cu, csrc/flstm_grid_bwd.cu) that owns hidden
// units [unit_start, unit_start + Hs), both as stored:
//   W2 rows of the units' gates: W2[gate H + unit_start + j][q] -> w2[gate Hs + j][q] (4Hs x w2_ld);
//   W1_h columns: W1[q][I + unit_start + k] -> w1h[q][k] (R x w1h_ld).
// Consecutive threads read and write consecutive q (W2) or k (W1_h): coalesced on both sides.
// weight_1 (R, I + H) and weight_2 (4H, R) row-major in global memory.
// Projected G-LSTM mode (`groups` = G, as in load_flstm_unit_weights): weight_1 is W_hr (P, H) with I = 0 and R = P,
// weight_2 is W_hh (G, 4Hg, Pg); the CTA's units lie in group g = unit_start / Hg, its gate rows are
// g 4Hg + gate Hg + (unit_start - g Hg) + j and have Pg = R / G columns, so w2 is (4Hs x Pg) in w2_ld.
template <typename Element>
__device__ __forceinline__ void load_flstm_unit_weights_as_stored(const Element* __restrict__ weight_1,
                                                                  const Element* __restrict__ weight_2, int I, int H,
                                                                  int R, int unit_start, int Hs, Element* w2,
                                                                  int64_t w2_ld, Element* w1h, int64_t w1h_ld,
                                                                  int groups = 1) {
  load_unit_weights<false>(weight_1, weight_2, I, H, R, unit_start, Hs, w1h, w1h_ld, w2, w2_ld, groups);
}

// The four gates' input projection of cell item idx = (batch row b, owned unit j), b = idx / units: row b of P_t
// starts row_stride floats after proj_t (which points at the CTA's first unit of gate i) and gate q is q gate_stride
// further.
__device__ __forceinline__ void load_projection(const float* proj_t, int64_t row_stride, int64_t gate_stride,
                                                int units, int idx, float (&values)[4]) {
  const int b = idx / units;
  const float* proj_row = proj_t + b * row_stride + (idx - b * units);
#pragma unroll
  for (int gate = 0; gate < 4; ++gate) values[gate] = proj_row[gate * gate_stride];
}

// Issues the P_t loads of this thread's first kItems cell items (threadIdx.x + item * kThreadsPerBlock) before the
// recurrent product, so their global-memory latency overlaps it instead of stalling the cell; items past
// cell_items are 0 and never used.
template <int kItems>
__device__ __forceinline__ void prefetch_projection(const float* proj_t, int64_t row_stride, int64_t gate_stride,
                                                    int units, int cell_items, float (&values)[kItems][4]) {
#pragma unroll
  for (int item = 0; item < kItems; ++item) {
    const int idx = static_cast<int>(threadIdx.x) + item * kThreadsPerBlock;
#pragma unroll
    for (int gate = 0; gate < 4; ++gate) values[item][gate] = 0.0f;
    if (idx < cell_items) load_projection(proj_t, row_stride, gate_stride, units, idx, values[item]);
  }
}

// Runs cell_step(idx, pre_i, pre_f, pre_g, pre_o) (the four P_t values of cell item idx) for every cell item of this
// thread, idx = threadIdx.x + k * kThreadsPerBlock < cell_items: the first kItems with the values prefetch_projection
// loaded before the recurrent product, the rest loading theirs now.
template <int kItems, typename CellStep>
__device__ __forceinline__ void for_each_cell_item(const float* proj_t, int64_t row_stride, int64_t gate_stride,
                                                   int units, int cell_items, const float (&prefetched)[kItems][4],
                                                   CellStep&& cell_step) {
#pragma unroll
  for (int item = 0; item < kItems; ++item) {
    const int idx = static_cast<int>(threadIdx.x) + item * kThreadsPerBlock;
    if (idx < cell_items) {
      cell_step(idx, prefetched[item][0], prefetched[item][1], prefetched[item][2], prefetched[item][3]);
    }
  }
  for (int idx = static_cast<int>(threadIdx.x) + kItems * kThreadsPerBlock; idx < cell_items; idx += kThreadsPerBlock) {
    float values[4];
    load_projection(proj_t, row_stride, gate_stride, units, idx, values);
    cell_step(idx, values[0], values[1], values[2], values[3]);
  }
}

}  // namespace lstmkern
