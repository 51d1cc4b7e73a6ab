// The all-reduce of a float32 partial product across the CTAs of a cooperative grid, through global memory (L2),
// shared by the grid F-LSTM forward (csrc/flstm_grid.cu: the partial z = h_own W1_h[:, own]^T) and backward
// (csrc/flstm_grid_bwd.cu: the partial dz = dgates_own W2[own rows]): the grid counterpart of
// csrc/cluster_exchange.cuh. Included only by csrc/*.cu.
//
// Shape legend: B batch, R the width of the reduced rows (the F-LSTM rank), N the number of CTAs (the whole grid),
// Bp = B rounded up to the batch tile.
//
// Every CTA stores its (Bp x R) float32 partial into its slice of a global `partials` workspace (N x Bp x R); after a
// grid barrier, CTA r sums a slice of columns of the N partials for all B rows in rank order 0, 1, ..., N-1 (the order
// is fixed, so the result does not depend on timing) and stores the sums, rounded to the element type, into the
// global reduced rows (Bp x R); after a second grid barrier every CTA stages from them the batch tile it multiplies
// (stage_tile). The caller places the two barriers; the hazard argument is the kernels' own (csrc/flstm_grid.cu).
// Workspace reads use ld.global.cg (L2, never a possibly stale L1 line).
#pragma once

#include <cstdint>

#include "cluster_exchange.cuh"  // Pack, DiscardColumnSums
#include "persistent_common.cuh"

namespace lstmkern {

// Copies `tile_rows` rows of `cols` elements (cols * sizeof(Element) a multiple of 16, both row starts 16-byte
// aligned) from global `source` (leading dimension source_ld) into the shared tile (tile_ld), as 16-byte L2 loads;
// rows >= rows_valid are zero-filled instead (padding rows of the last batch tile: the MMAs multiply all rows).
template <typename Element>
__device__ __forceinline__ void stage_tile(const Element* source, int64_t source_ld, int rows_valid, int cols,
                                           Element* tile, int tile_ld, int tile_rows) {
  constexpr int kChunk = static_cast<int>(sizeof(int4) / sizeof(Element));
  const int chunks_per_row = cols / kChunk;
  for (int idx = threadIdx.x; idx < tile_rows * chunks_per_row; idx += blockDim.x) {
    const int row = idx / chunks_per_row;
    const int col = (idx - row * chunks_per_row) * kChunk;
    int4 value = make_int4(0, 0, 0, 0);
    if (row < rows_valid) value = __ldcg(reinterpret_cast<const int4*>(source + row * source_ld + col));
    *reinterpret_cast<int4*>(tile + row * tile_ld + col) = value;
  }
}

// kVector partial values from global memory through L2 (ld.global.cg: coherent across the grid after a grid barrier).
template <int kVector>
__device__ __forceinline__ void load_partial(const float* source, float (&values)[kVector]) {
  if constexpr (kVector == 4) {
    const float4 v = __ldcg(reinterpret_cast<const float4*>(source));
    values[0] = v.x;
    values[1] = v.y;
    values[2] = v.z;
    values[3] = v.w;
  } else {
    static_assert(kVector == 1, "partials are reduced one or four columns at a time");
    values[0] = __ldcg(source);
  }
}

// For rows b < B and the CTA's columns q in [col_start, col_start + col_count): reduced[b][q] = sum over ranks
// 0, 1, ..., N-1 of partials[rank][b][q] (rank `rank_stride` floats apart, rows R floats apart), rounded to the
// element type. kVector adjacent columns per item (col_count a multiple of kVector). The loads of kRankChunk ranks are
// issued before their adds, so their latencies overlap; the adds run in rank order, so the result does not depend on
// timing. column_sums(b, q, sums, rounded) also receives the sums of columns q .. q + kVector - 1 of row b, float32 and
// rounded (Pack<float, kVector>, Pack<Element, kVector>), so a kernel can store the float32 sums too: exactly one CTA
// of the grid sees each column.
// `ranks` (AllRanks, or GroupRanksPlusAddend for the projected backward; csrc/cluster_exchange.cuh) may narrow the
// ranks a column sums and add to its sums before they are rounded.
template <int kVector, typename Element, typename ColumnSums = DiscardColumnSums, typename Ranks = AllRanks>
__device__ __forceinline__ void reduce_partials(const float* partials, int64_t rank_stride, int ctas, int R,
                                                Element* reduced, int B, int col_start, int col_count,
                                                const ColumnSums& column_sums = ColumnSums{},
                                                const Ranks& ranks = Ranks{}) {
  constexpr int kRankChunk = 8;
  using ReducedVector = Pack<Element, kVector>;
  const int vectors_per_row = col_count / kVector;
  const int rank_count = ranks.rank_count(ctas);
  for (int idx = threadIdx.x; idx < B * vectors_per_row; idx += blockDim.x) {
    const int b = idx / vectors_per_row;
    const int q = col_start + (idx - b * vectors_per_row) * kVector;
    const float* source = partials + ranks.first_rank(q) * rank_stride + static_cast<int64_t>(b) * R + q;
    Pack<float, kVector> sums;
#pragma unroll
    for (int v = 0; v < kVector; ++v) sums.values[v] = 0.0f;
    for (int rank_0 = 0; rank_0 < rank_count; rank_0 += kRankChunk) {
      float parts[kRankChunk][kVector];
#pragma unroll
      for (int k = 0; k < kRankChunk; ++k) {
        if (rank_0 + k < rank_count) load_partial<kVector>(source + (rank_0 + k) * rank_stride, parts[k]);
      }
#pragma unroll
      for (int k = 0; k < kRankChunk; ++k) {
        if (rank_0 + k < rank_count) {
#pragma unroll
          for (int v = 0; v < kVector; ++v) sums.values[v] += parts[k][v];
        }
      }
    }
    ranks.add_to_sums(b, q, sums);
    ReducedVector rounded;
#pragma unroll
    for (int v = 0; v < kVector; ++v) rounded.values[v] = from_float<Element>(sums.values[v]);
    column_sums(b, q, sums, rounded);
    *reinterpret_cast<ReducedVector*>(reduced + static_cast<int64_t>(b) * R + q) = rounded;
  }
}

}  // namespace lstmkern
