// The all-reduce of a (BT x R) float32 partial product across the CTAs of a thread-block cluster, shared by the
// cluster F-LSTM forward (csrc/flstm_cluster.cu: the partial z = h_own W1_h[:, own]^T) and backward
// (csrc/flstm_cluster_bwd.cu: the partial dz = dgates_own W2[own rows]). Included only by csrc/*.cu.
//
// Shape legend: BT batch tile, R the width of the reduced tile (the F-LSTM rank), C cluster size, Rs = R / C columns
// one CTA reduces.
//
// The exchange is a reduce-scatter followed by an all-gather, between two cluster barriers the caller places: after
// every CTA has written its partial (barrier 1), CTA r sums columns [r Rs, (r+1) Rs) of the C partials, reading them
// through DSMEM in rank order 0, 1, ..., C-1, rounds the sums to the tile's element type and stores them into the
// same columns of the reduced tile of every CTA; after barrier 2 every CTA holds the whole reduced tile, bitwise the
// same in all of them, and its value does not depend on timing (every column is summed by one CTA, in a fixed order).
// The hazard argument for the buffers (double-buffered partials, one reduced tile) is the kernels' own: see the header
// of csrc/flstm_cluster.cu.
#pragma once

#include <type_traits>

#include "persistent_common.cuh"

namespace lstmkern {

// kCount values of T as one aligned vector, so a copy is one vector load or store (16 bytes for four floats).
template <typename T, int kCount>
struct alignas(sizeof(T) * kCount) Pack {
  T values[kCount];
};

// The default sink of reduce_and_broadcast_z: the sums are only needed rounded, in the reduced tile of every CTA.
struct DiscardColumnSums {
  template <int kVector, typename Element>
  __device__ __forceinline__ void operator()(int /*row*/, int /*column*/, const Pack<float, kVector>& /*sums*/,
                                             const Pack<Element, kVector>& /*rounded*/) const {}
};

// Which ranks' partials the sum of a column adds, and what joins the sums before they are rounded. AllRanks: every
// rank, nothing else (the F-LSTM's z and dz, the projected forward's z).
struct AllRanks {
  __device__ __forceinline__ int first_rank(int /*column*/) const { return 0; }
  __device__ __forceinline__ int rank_count(int ranks) const { return ranks; }
  template <int kVector>
  __device__ __forceinline__ void add_to_sums(int /*row*/, int /*column*/, Pack<float, kVector>& /*sums*/) const {}
};

// The projected backward's dz (csrc/flstm_cluster_bwd.cu, csrc/flstm_grid_bwd.cu in their projected mode): a CTA's
// partial dgates W_hh covers only its group's columns, so column q (group q / columns_per_group) sums the partials of
// that group's ranks_per_group consecutive ranks only, in rank order; then grad_output[t] of the step the sum belongs
// to is added (`addend` rows addend_ld elements apart; nullptr: nothing, the dh0 of the last exchange), as the
// reference adds it to the recurrent gradient. A kVector of columns never straddles two groups (columns_per_group is
// a multiple of 16, kVector divides 4).
template <typename Element>
struct GroupRanksPlusAddend {
  int columns_per_group, ranks_per_group;
  const Element* addend;
  int64_t addend_ld;
  __device__ __forceinline__ int first_rank(int column) const {
    return column / columns_per_group * ranks_per_group;
  }
  __device__ __forceinline__ int rank_count(int /*ranks*/) const { return ranks_per_group; }
  template <int kVector>
  __device__ __forceinline__ void add_to_sums(int row, int column, Pack<float, kVector>& sums) const {
    if (addend == nullptr) return;
#pragma unroll
    for (int v = 0; v < kVector; ++v) sums.values[v] += to_float(addend[row * addend_ld + column + v]);
  }
};

// For rows b < batch_rows and the CTA's columns q in [z_col_start, z_col_start + Rs): z[b][q] = sum over ranks
// 0, 1, ..., C-1 of partial_rank[b][q] (read through DSMEM), rounded to the element type and stored into z[b][q] of
// every CTA of the cluster (`ranks` may narrow the ranks of a column and add to its sums, see GroupRanksPlusAddend).
// kVector adjacent columns per item (Rs must be a multiple of kVector). All C loads of an item are issued before the
// first add, so their latencies overlap; the order of the sum is fixed, so the result does
// not depend on timing. column_sums(b, q, sums, rounded) also receives the sums of columns q .. q + kVector - 1 of
// row b, float32 and rounded (Pack<float, kVector>, Pack<Element, kVector>), so a kernel can store them to global
// memory: exactly one CTA of the cluster sees each column.
// `Cluster` is cooperative_groups::cluster_group (a template parameter because that type only exists when compiling
// for sm_90 and newer).
// (Ranks must be a class: the overload below, whose last two arguments are a pointer and a leading dimension, must
// not match this one.)
template <int kVector, typename Cluster, typename Element, typename ColumnSums = DiscardColumnSums,
          typename Ranks = AllRanks, typename = std::enable_if_t<std::is_class_v<Ranks>>>
__device__ __forceinline__ void reduce_and_broadcast_z(const Cluster& cluster, int rank, int cluster_size,
                                                       const float* partial, int partial_ld, Element* z_tile, int z_ld,
                                                       int batch_rows, int z_col_start, int Rs,
                                                       const ColumnSums& column_sums = ColumnSums{},
                                                       const Ranks& ranks = Ranks{}) {
  using PartialVector = Pack<float, kVector>;
  using ZVector = Pack<Element, kVector>;
  const int vectors_per_row = Rs / kVector;
  const int rank_count = ranks.rank_count(cluster_size);
  for (int idx = threadIdx.x; idx < batch_rows * vectors_per_row; idx += blockDim.x) {
    const int b = idx / vectors_per_row;
    const int q = z_col_start + (idx - b * vectors_per_row) * kVector;
    const int first_rank = ranks.first_rank(q);
    const PartialVector* source = reinterpret_cast<const PartialVector*>(partial + b * partial_ld + q);
    PartialVector parts[kFlstmClusterMaxSize];
#pragma unroll
    for (int peer = 0; peer < kFlstmClusterMaxSize; ++peer) {
      if (peer < rank_count) {
        parts[peer] = *cluster.map_shared_rank(source, static_cast<unsigned>(first_rank + peer));
      }
    }
    PartialVector sums;
#pragma unroll
    for (int v = 0; v < kVector; ++v) {
      float sum = parts[0].values[v];
#pragma unroll
      for (int peer = 1; peer < kFlstmClusterMaxSize; ++peer) {
        if (peer < rank_count) sum += parts[peer].values[v];
      }
      sums.values[v] = sum;
    }
    ranks.add_to_sums(b, q, sums);
    ZVector z_values;
#pragma unroll
    for (int v = 0; v < kVector; ++v) z_values.values[v] = from_float<Element>(sums.values[v]);
    column_sums(b, q, sums, z_values);
    ZVector* target = reinterpret_cast<ZVector*>(z_tile + b * z_ld + q);
    // Peers are visited starting at this rank so the C CTAs do not all store into the same CTA at once.
    for (int peer = 0; peer < cluster_size; ++peer) {
      const int peer_rank = (rank + peer) % cluster_size;
      *cluster.map_shared_rank(target, static_cast<unsigned>(peer_rank)) = z_values;
    }
  }
}

// reduce_and_broadcast_z that also stores the rounded sums into rows of global memory: z[b][q] to
// rounded_out[b * rounded_ld + q] (nothing where rounded_out is nullptr). Row starts and rounded_out must be aligned
// to kVector elements.
template <int kVector, typename Cluster, typename Element>
__device__ __forceinline__ void reduce_and_broadcast_z(const Cluster& cluster, int rank, int cluster_size,
                                                       const float* partial, int partial_ld, Element* z_tile, int z_ld,
                                                       int batch_rows, int z_col_start, int Rs, Element* rounded_out,
                                                       int64_t rounded_ld) {
  const auto store_rounded = [rounded_out, rounded_ld](int b, int q, const Pack<float, kVector>& /*sums*/,
                                                       const Pack<Element, kVector>& rounded) {
    if (rounded_out != nullptr) *reinterpret_cast<Pack<Element, kVector>*>(rounded_out + b * rounded_ld + q) = rounded;
  };
  reduce_and_broadcast_z<kVector>(cluster, rank, cluster_size, partial, partial_ld, z_tile, z_ld, batch_rows,
                                  z_col_start, Rs, store_rounded);
}

}  // namespace lstmkern
