// Persistent F-LSTM backward on the whole grid (cooperative launch): the backward of csrc/flstm_grid.cu's forward, for
// layers whose W1_h (R x H) and W2 (4H x R) exceed the shared memory of any thread-block cluster (e.g. flstm-train,
// H = 2048, R = 512 in bf16), and for the cluster shapes on GPUs without clusters (compute capability 8.x). One launch
// walks the reversed sequence with each CTA's share of the weights resident.
//
// Shape legend: T time steps, B batch, I input features, H hidden units, R rank, BT batch tile (16 rows for WMMA,
// kFlstmBatchTile = 8 for the float32 FMA path), Bp = ceil(B / BT) BT, N the number of CTAs (the whole grid),
// Hs = H / N hidden units owned by one CTA, Rs = ceil(R / N) columns of dz one CTA reduces.
//
// Recurrence: that of csrc/flstm_cluster_bwd.cu (lstmkern/reference.py, flstm_reference_backward): for t = T-1 down
// to 0, dh_t = grad_output[t] + dh_rec_t, (dgates_t, dc_{t-1}) = cell backward, dz_t = dgates_t W2,
// dh_rec_{t-1} = dz_t W1_h, with dh_rec_{T-1} = 0, dc_{T-1} = grad_cell[T-1] (or 0), dh0 = dh_rec_{-1},
// dc0 = dc_{-1}. The launcher recomputes the pre-activations before the kernel and forms the weight gradients and dx
// after it from the dgates_t and dz_t this kernel writes (float32), as for the cluster backward.
//
// Decomposition: the cluster backward's algorithm (csrc/flstm_cluster_bwd.cu) with the grid as the group of CTAs and
// the grid forward's exchange through global memory (csrc/grid_exchange.cuh) in place of DSMEM. Grid (N), all N CTAs
// co-resident (the launcher checks). CTA r owns hidden units [r Hs, (r+1) Hs) for the whole batch and keeps resident
// the rows of W2 of its units' four gates (4Hs x R) and the columns of W1_h of its units (R x Hs), both as stored.
// Step t (t = T-1 down to 0) is:
//   A. grid barrier A(t): every CTA's partial dz_t is in the workspace `partials` (written at the end of step t+1, or
//      by the prologue for t = T-1);
//   B. reduce-scatter: CTA r sums its columns of the N partials for all B rows in rank order (reduce_partials, the
//      grid forward's reduction of z), stores the float32 sums to dz_t (global output) and the sums rounded to the
//      element type to the workspace `dz_rounded` (Bp x R); grid barrier B(t) (the all-gather: every CTA then reads
//      the whole dz_t);
//   C. for each batch tile: stage the tile of dz_t into shared memory; dh_rec_{t-1} of the own units =
//      dz_t W1_h[:, own] (BT x Hs, float32; WMMA m16n16k16 with float32 accumulators for fp16/bf16, float32 FMA for
//      fp32); then, for t > 0, the cell backward of step t-1 for the tile (its dgates_{t-1} to global memory, float32,
//      and to the shared dgates tile, rounded for fp16/bf16) and the tile's partial dz_{t-1} = dgates_own W2[own rows]
//      (BT x R, float32), stored straight from the accumulators into partials[r]; for t = 0 the dh tile is dh0.
// The prologue runs the cell backward of step T-1 (dh_rec = 0) and its partial dz for every batch tile. So the cell
// backward of a step follows the dh product of the next one in the same tile loop: the recurrent dh never leaves
// shared memory and each step crosses the grid exactly once each way (partials, then dz). The running dc of the own
// units lives in the dc0 output (B x H float32), read and written only by this CTA, which holds dc_{-1} at the end.
// Every column of dz is summed by one CTA in a fixed order, so every CTA multiplies bitwise the same dz; with N equal
// to a cluster size C the products, their k order and the reduction order are the cluster backward's, so both
// backwards give bitwise the same results (tests/test_emu_flstm_grid_bwd.py).
//
// Precision: as the cluster backward (the header of csrc/flstm_cluster_bwd.cu): the recurrent products take dgates and
// dz rounded to fp16/bf16 as tensor-core operands with float32 accumulation; the dgates and dz written to global
// memory are float32; the fp32 kernel computes everything in float32.
//
// Hazard argument. Cross-CTA data lives only in the global workspace: partials (written by its owner rank in phase C
// of step t+1 or the prologue, read by every CTA in phase B of step t) and dz_rounded (written column-slice-wise in
// phase B of step t, read by every CTA in phase C of step t). cooperative_groups::this_grid().sync() orders all memory
// accesses of every thread of the grid before it before all accesses after it; workspace reads use ld.global.cg.
//   * RAW, partials: phase C of step t+1 (or the prologue) -> barrier A(t) -> phase B of step t.
//   * RAW, dz_rounded: phase B of step t -> barrier B(t) -> phase C of step t.
//   * WAR, partials: phase B of step t reads them before B(t); phase C of step t rewrites them (as the partials of
//     step t-1) after B(t).
//   * WAR, dz_rounded: phase C of step t reads it before A(t-1); phase B of step t-1 rewrites it after A(t-1).
//   So one copy of each suffices, as in the forward.
//   * dc through dc0, dgates through dgates: each element is written and read by the CTA that owns its unit, between
//     __syncthreads or grid barriers (dc: the cell of step t-1 reads what the cell of step t wrote, a grid barrier
//     apart; dgates is only written).
//   * Within a CTA, per batch tile: staging writes the dz tile, __syncthreads, the dh product reads it and writes the
//     dh tile, __syncthreads, the cell reads the dh tile and writes the dgates tile, __syncthreads, the partial
//     product reads the dgates tile. The next tile's staging overwrites the dz tile (last read before the second
//     barrier of this tile), its dh product the dh tile (last read before the third) and its cell the dgates tile
//     only after passing its own first two barriers, which every thread reaches only after this tile's partial
//     product: no fourth barrier is needed. The prologue's tiles run cell and partial product only, so there a
//     barrier after each tile orders its partial product's reads of the dgates tile before the next tile's cell.
//     The grid barrier after the tile loop contains a block barrier.
//   * Padding rows (b >= B in the last batch tile): the staging zero-fills them in the dz tile, and the cell writes
//     zeros there in the dgates tile, so the MMAs never read stale values; their product rows (dh, partial dz) are
//     never read (phase B reduces rows b < B only).
//   * Lifetime: the workspace outlives every CTA; nothing crosses CTAs before barrier A(T-1).
//
// Projected mode (`kProjected`, the backward of a projected G-LSTM, csrc/flstm_grid.cu's projected forward in
// reverse; the same shift as in csrc/flstm_cluster_bwd.cu's projected mode): W1_h := W_hr (P x H, I = 0), R := P,
// W2 := W_hh (G, 4Hg, Pg), pre_gates / dgates (T, B, G, 4Hg), grad_output (T, B, P). The prologue writes dz_{T-1} =
// grad_output[T-1] (the CTA's columns) and, per batch tile, forms dm_{T-1}[:, own] = grad_output[T-1] W_hr[:, own]
// before the cell of step T-1 (whose dh is dm); the partial of phase C covers only the CTA's group's Rg = P / G
// columns of its partials slice (N a multiple of G), phase B sums each column over its group's N / G ranks only in
// rank order (GroupRanksPlusAddend) and adds grad_output[t-1]: that is dz_{t-1} (float32 to dz, rounded to
// dz_rounded), whose dh product in phase C is dm_{t-1}. Phase B of step 0 yields dh0 = dgates_0 W_hh (P wide, to dh0,
// nothing added) and the kernel ends after barrier B(0). The barriers and buffers are the F-LSTM's, so the hazard
// argument above holds (columns of a partials slice outside the rank's group are never written nor read; the
// prologue's tiles end with a block barrier each, like the F-LSTM's), with one addition: the projected layout keeps
// the dz and dgates tiles in one buffer (flstm_grid_bwd_layout), which a tile's cell may overwrite because its dm
// product, the dz tile's last reader, precedes the cell's barrier, and which the next tile's staging overwrites only
// after a barrier at the end of the tile that follows the partial product, the dgates tile's last reader.
//
// Grid synchronisation needs sm_60+, WMMA on bf16 sm_80+: the body compiles for every architecture the build targets
// (sm_90a and the embedded compute_80 PTX); the launcher refuses compute capability below 8.0.
#include <cooperative_groups.h>
#include <mma.h>

#include <type_traits>

#include "grid_exchange.cuh"
#include "persistent_common.cuh"
#include "persistent_kernels.h"
#include "tile_products.cuh"

namespace lstmkern {
namespace {

// grad_cell, dgates, dz, dh0, dc0, partials and dz_rounded: dc0, partials and dz_rounded are written by the kernel and
// read back by it (by the same or other CTAs): no __restrict__ on them, so no load of them can take the read-only path.
// kProjected: the projected mode (a template parameter, so the F-LSTM's instantiation compiles as without it; see the
// header).
template <ElementKind kKind, bool kProjected>
__global__ void __launch_bounds__(kThreadsPerBlock)
flstm_grid_bwd_kernel(const float* __restrict__ pre_gates,
                      const typename ElementOf<kKind>::type* __restrict__ grad_output,
                      const float* __restrict__ grad_cell, const float* __restrict__ c0, const float* __restrict__ cell,
                      const typename ElementOf<kKind>::type* __restrict__ weight_1,
                      const typename ElementOf<kKind>::type* __restrict__ weight_2, float* __restrict__ dgates,
                      float* __restrict__ dz, float* __restrict__ dh0, float* dc0, float* partials,
                      typename ElementOf<kKind>::type* dz_rounded, int T, int B, int I, int H, int R, int groups) {
  namespace cg = cooperative_groups;
  if constexpr (!kProjected) groups = 1;  // the F-LSTM: one group, so its group arithmetic folds away
  using Element = typename ElementOf<kKind>::type;
  constexpr bool kWmma = uses_wmma(kKind);
  constexpr int kBatchTile = flstm_cluster_batch_tile(kKind);
  constexpr int kDzVector = 4;  // dz columns per reduction item, as the forward's z

  cg::grid_group grid = cg::this_grid();
  const int ctas = static_cast<int>(gridDim.x);
  const int rank = static_cast<int>(blockIdx.x);
  const FlstmGridBwdLayout layout = flstm_grid_bwd_layout(H, R, ctas, kKind, groups, kProjected);
  const int Hs = static_cast<int>(layout.units_per_cta);
  const int unit_start = rank * Hs;  // first hidden unit this CTA owns
  // The CTA's group (projected mode; the F-LSTM has one group of H units), as in csrc/flstm_cluster_bwd.cu.
  const int hg = H / groups;
  const int group = unit_start / hg;
  const int rg = R / groups;
  const int64_t gate_col_start = kProjected ? static_cast<int64_t>(group) * 4 * hg + (unit_start - group * hg)
                                            : unit_start;
  const int Rs = (R + ctas - 1) / ctas;
  const int dz_col_start = min(R, rank * Rs);
  const int dz_col_count = min(R, dz_col_start + Rs) - dz_col_start;  // 0 for the last ranks where N > R / Rs
  const int w2_ld = static_cast<int>(layout.w2_ld);
  const int w1h_ld = static_cast<int>(layout.w1h_ld);
  const int dgates_ld = static_cast<int>(layout.dgates_ld);
  const int dz_ld = static_cast<int>(layout.dz_ld);
  const int dh_ld = static_cast<int>(layout.dh_ld);
  const int num_tiles = (B + kBatchTile - 1) / kBatchTile;
  const int64_t batch_pad = static_cast<int64_t>(num_tiles) * kBatchTile;
  const int64_t rank_stride = batch_pad * R;  // floats between two ranks' partials
  float* const own_partial = partials + rank * rank_stride;

  unsigned char* const smem = dynamic_smem();
  Element* w2 = reinterpret_cast<Element*>(smem + layout.w2_offset);              // (4Hs x w2_ld)
  Element* w1h = reinterpret_cast<Element*>(smem + layout.w1h_offset);            // (R x w1h_ld)
  Element* dgates_tile = reinterpret_cast<Element*>(smem + layout.dgates_offset);  // (BT x dgates_ld)
  Element* dz_tile = reinterpret_cast<Element*>(smem + layout.dz_offset);          // (BT x dz_ld)
  float* dh_tile = reinterpret_cast<float*>(smem + layout.dh_offset);              // (BT x dh_ld)

  const int64_t four_h = 4 * static_cast<int64_t>(H);
  const int64_t step_states = static_cast<int64_t>(B) * H;  // one time step of (T, B, H)
  const int four_hs = 4 * Hs;

  // Prologue: zero the whole layout once (the padding columns of every tile stay defined; the padding rows of the dz
  // and dgates tiles are rewritten with zeros every tile), then the resident weights.
  zero_shared(smem, layout.total_bytes);
  __syncthreads();
  load_flstm_unit_weights_as_stored(weight_1, weight_2, I, H, R, unit_start, Hs, w2, w2_ld, w1h, w1h_ld, groups);
  __syncthreads();

  // The cell backward of step t for the batch tile starting at row batch_start (dh_rec_t of the own units in the dh
  // tile, or 0 for t = T-1; projected: dm_t, always), then the tile's partial dz_t into partials[rank] (projected: the
  // group's Rg columns only, the recurrent part of dz_{t-1}). Cell items (b, j) round-robin over the threads; padding
  // rows (b >= batch_rows) get zero dgates.
  const auto cell_and_partial = [&](int t, int batch_start) {
    const int batch_rows = min(kBatchTile, B - batch_start);
    const bool has_recurrent = t + 1 < T;
    for (int idx = threadIdx.x; idx < kBatchTile * Hs; idx += blockDim.x) {
      const int b = idx / Hs;
      const int j = idx - b * Hs;
      Element* dgates_row = dgates_tile + b * dgates_ld;
      if (b >= batch_rows) {
#pragma unroll
        for (int gate = 0; gate < 4; ++gate) dgates_row[gate * Hs + j] = from_float<Element>(0.0f);
        continue;
      }
      const int64_t row = static_cast<int64_t>(t) * B + batch_start + b;
      const int64_t state_idx = row * H + unit_start + j;
      const int64_t own_idx = static_cast<int64_t>(batch_start + b) * H + unit_start + j;  // in (B, H)
      const float* pre = pre_gates + row * four_h + gate_col_start + j;
      const float c_prev = t > 0 ? cell[state_idx - step_states] : c0[own_idx];
      // Projected: grad_output (P wide) entered at dz; the dh tile holds dm_t.
      const float dh = kProjected ? dh_tile[b * dh_ld + j]
                                  : (has_recurrent ? dh_tile[b * dh_ld + j] : 0.0f) + to_float(grad_output[state_idx]);
      const float dc = (has_recurrent ? __ldcg(dc0 + own_idx) : 0.0f) +
                       (grad_cell != nullptr ? grad_cell[state_idx] : 0.0f);
      const CellGrad grad = lstm_cell_backward(pre[0], pre[hg], pre[2 * static_cast<int64_t>(hg)],
                                               pre[3 * static_cast<int64_t>(hg)], c_prev, cell[state_idx], dh, dc);
      float* dgates_out = dgates + row * four_h + gate_col_start + j;
      dgates_out[0] = grad.d_i;
      dgates_out[hg] = grad.d_f;
      dgates_out[2 * static_cast<int64_t>(hg)] = grad.d_g;
      dgates_out[3 * static_cast<int64_t>(hg)] = grad.d_o;
      dgates_row[j] = from_float<Element>(grad.d_i);
      dgates_row[Hs + j] = from_float<Element>(grad.d_f);
      dgates_row[2 * Hs + j] = from_float<Element>(grad.d_g);
      dgates_row[3 * Hs + j] = from_float<Element>(grad.d_o);
      dc0[own_idx] = grad.dc_prev;
    }
    __syncthreads();
    float* out = own_partial + static_cast<int64_t>(batch_start) * R + (kProjected ? group * rg : 0);
    if constexpr (kWmma) {
      wmma_product(dgates_tile, dgates_ld, w2, w2_ld, out, R, rg / kWmmaTile, four_hs / kWmmaTile);
    } else {
      fma_product<kBatchTile>(dgates_tile, dgates_ld, w2, w2_ld, out, R, rg, four_hs);
    }
  };
  // The recurrent dh (projected: dm) of the own units for the batch tile in the dz tile: dz W1_h[:, own].
  const auto dh_product = [&]() {
    if constexpr (kWmma) {
      wmma_product(dz_tile, dz_ld, w1h, w1h_ld, dh_tile, dh_ld, Hs / kWmmaTile, R / kWmmaTile);
    } else {
      fma_product<kBatchTile>(dz_tile, dz_ld, w1h, w1h_ld, dh_tile, dh_ld, Hs, R);
    }
  };

  if constexpr (kProjected) {
    // dz_{T-1} = grad_output[T-1]: the CTA's columns to dz, and per batch tile dm_{T-1} = dz_{T-1} W_hr[:, own] from
    // the tile of grad_output (loaded element-wise: grad_output needs no 16-byte alignment), before the cell.
    const Element* grad_last = grad_output + static_cast<int64_t>(T - 1) * B * R;
    float* dz_last = dz + static_cast<int64_t>(T - 1) * B * R;
    for (int idx = threadIdx.x; idx < B * dz_col_count; idx += blockDim.x) {
      const int b = idx / dz_col_count;
      const int64_t at = static_cast<int64_t>(b) * R + dz_col_start + (idx - b * dz_col_count);
      dz_last[at] = to_float(grad_last[at]);
    }
    for (int tile = 0; tile < num_tiles; ++tile) {
      const int batch_start = tile * kBatchTile;
      const int batch_rows = min(kBatchTile, B - batch_start);
      for (int idx = threadIdx.x; idx < kBatchTile * R; idx += blockDim.x) {
        const int b = idx / R;
        const int q = idx - b * R;
        dz_tile[b * dz_ld + q] =
            b < batch_rows ? grad_last[static_cast<int64_t>(batch_start + b) * R + q] : from_float<Element>(0.0f);
      }
      __syncthreads();
      dh_product();
      __syncthreads();
      cell_and_partial(T - 1, batch_start);
      __syncthreads();  // the next tile's staging and cell rewrite the tiles this tile's products read
    }
  } else {
    for (int tile = 0; tile < num_tiles; ++tile) {
      cell_and_partial(T - 1, tile * kBatchTile);
      __syncthreads();  // the next tile's cell rewrites the dgates tile this tile's partial product reads
    }
  }

  for (int t = T - 1; t >= 0; --t) {
    grid.sync();  // barrier A: every partial dz_t is visible (and every read of the previous dz_rounded is done)

    // B. Reduce this CTA's columns of dz_t over the N partials in rank order: float32 sums to dz_t, rounded ones to
    // dz_rounded. Projected: the sums are the recurrent part of dz_{t-1}: a column sums its group's ranks only,
    // grad_output[t-1] is added and the totals go to dz_{t-1}; at t = 0 they are dh0.
    float* const dz_rows = !kProjected ? dz + static_cast<int64_t>(t) * B * R
                           : t > 0     ? dz + static_cast<int64_t>(t - 1) * B * R
                                       : dh0;
    const auto store_sums = [dz_rows, R](int b, int q, const auto& sums, const auto& /*rounded*/) {
      *reinterpret_cast<std::decay_t<decltype(sums)>*>(dz_rows + static_cast<int64_t>(b) * R + q) = sums;
    };
    const auto reduce = [&](const auto& ranks) {
      if (dz_col_count % kDzVector == 0) {
        reduce_partials<kDzVector>(partials, rank_stride, ctas, R, dz_rounded, B, dz_col_start, dz_col_count,
                                   store_sums, ranks);
      } else {
        reduce_partials<1>(partials, rank_stride, ctas, R, dz_rounded, B, dz_col_start, dz_col_count, store_sums,
                           ranks);
      }
    };
    if (dz_col_count > 0) {
      if constexpr (kProjected) {
        const Element* grad_rows = t > 0 ? grad_output + static_cast<int64_t>(t - 1) * B * R : nullptr;
        reduce(GroupRanksPlusAddend<Element>{rg, ctas / groups, grad_rows, R});
      } else {
        reduce(AllRanks{});
      }
    }
    grid.sync();  // barrier B: the whole dz_t is visible (and every read of the partials is done)
    if (kProjected && t == 0) break;  // step 0's reduction gave dh0: nothing is left to multiply

    // C. Per batch tile: dh_rec_{t-1} = dz_t W1_h[:, own], then the cell backward and partial dz of step t-1.
    for (int tile = 0; tile < num_tiles; ++tile) {
      const int batch_start = tile * kBatchTile;
      const int batch_rows = min(kBatchTile, B - batch_start);
      stage_tile(dz_rounded + static_cast<int64_t>(batch_start) * R, R, batch_rows, R, dz_tile, dz_ld, kBatchTile);
      __syncthreads();
      dh_product();
      __syncthreads();
      if (t > 0) {
        cell_and_partial(t - 1, batch_start);
      } else {
        for (int idx = threadIdx.x; idx < batch_rows * Hs; idx += blockDim.x) {
          const int b = idx / Hs;
          const int j = idx - b * Hs;
          dh0[static_cast<int64_t>(batch_start + b) * H + unit_start + j] = dh_tile[b * dh_ld + j];
        }
      }
      // No barrier here for the F-LSTM: see the hazard argument (the next tile's staging and products overwrite only
      // buffers whose last reads precede the barriers above). The projected layout shares the dz and dgates tiles,
      // so there the next tile's staging must wait for this tile's partial product.
      if constexpr (kProjected) __syncthreads();
    }
  }
}

// The shape rule of the grid backward: the F-LSTM's (groups = 1, not projected), or the projected mode's.
inline bool grid_bwd_shape_ok(int H, int R, int groups, bool projected, int ctas) {
  return projected ? projected_grid_shape_ok(H, R, groups, ctas) : groups == 1 && flstm_grid_shape_ok(H, R, ctas);
}

template <ElementKind kKind, bool kProjected>
cudaError_t prepare_grid_launch(int H, int R, int groups, int ctas, cudaStream_t stream, CooperativeLaunch& launch) {
  const int64_t smem_bytes = flstm_grid_bwd_layout(H, R, ctas, kKind, groups, kProjected).total_bytes;
  return launch.prepare(flstm_grid_bwd_kernel<kKind, kProjected>, smem_bytes, ctas, stream);
}

template <ElementKind kKind, bool kProjected>
cudaError_t max_resident_ctas(int H, int R, int groups, int ctas, int* count) {
  *count = 0;
  if (!grid_bwd_shape_ok(H, R, groups, kProjected, ctas)) return cudaErrorInvalidValue;
  CooperativeLaunch launch;
  const cudaError_t err = prepare_grid_launch<kKind, kProjected>(H, R, groups, ctas, nullptr, launch);
  if (err != cudaSuccess) return err;
  return launch.max_resident_ctas(flstm_grid_bwd_kernel<kKind, kProjected>, count);
}

template <ElementKind kKind, bool kProjected>
cudaError_t launch_grid_bwd(const FlstmBwdArgs& args, int ctas, float* dz, float* partials, void* dz_rounded,
                            cudaStream_t stream) {
  using Element = typename ElementOf<kKind>::type;
  if (!grid_bwd_shape_ok(args.H, args.R, args.groups, kProjected, ctas)) return cudaErrorInvalidValue;
  CooperativeLaunch launch;
  const cudaError_t err = prepare_grid_launch<kKind, kProjected>(args.H, args.R, args.groups, ctas, stream, launch);
  if (err != cudaSuccess) return err;
  return launch.launch(flstm_grid_bwd_kernel<kKind, kProjected>, args.pre_gates,
                       static_cast<const Element*>(args.grad_output), args.grad_cell, args.c0, args.cell,
                       static_cast<const Element*>(args.weight_1), static_cast<const Element*>(args.weight_2),
                       args.dgates, dz, args.dh0, args.dc0, partials, static_cast<Element*>(dz_rounded), args.T,
                       args.B, args.I, args.H, args.R, args.groups);
}

}  // namespace

cudaError_t launch_flstm_grid_bwd(ElementKind kind, const FlstmBwdArgs& args, int ctas, float* dz, float* partials,
                                  void* dz_rounded, cudaStream_t stream) {
  return dispatch_element_kind(kind, [&](auto element) {
    constexpr ElementKind kKind = decltype(element)::value;
    return args.projected ? launch_grid_bwd<kKind, true>(args, ctas, dz, partials, dz_rounded, stream)
                          : launch_grid_bwd<kKind, false>(args, ctas, dz, partials, dz_rounded, stream);
  });
}

cudaError_t flstm_grid_bwd_max_resident_ctas(ElementKind kind, int H, int R, int ctas, int* count) {
  return dispatch_element_kind(kind, [&](auto element) {
    return max_resident_ctas<decltype(element)::value, false>(H, R, 1, ctas, count);
  });
}

cudaError_t projected_grid_bwd_max_resident_ctas(ElementKind kind, int H, int P, int G, int ctas, int* count) {
  return dispatch_element_kind(kind, [&](auto element) {
    return max_resident_ctas<decltype(element)::value, true>(H, P, G, ctas, count);
  });
}

}  // namespace lstmkern
