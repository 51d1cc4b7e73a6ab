// Persistent F-LSTM forward on the whole grid (cooperative launch): the variant for layers whose W1_h (R x H) and W2
// (4H x R) exceed the shared memory of any thread-block cluster, e.g. the flstm-train shape H = 2048, R = 512 in bf16
// (10 MiB of resident weights, about 48 or more SMs' shared memory), and for the cluster shapes on GPUs without
// clusters (compute capability 8.x, e.g. H = 1024, R = 256 in bf16 on an A100).
//
// Shape legend: T time steps, B batch, I input features, H hidden units, R rank, BT batch tile (16 rows for WMMA,
// kFlstmBatchTile = 8 for the float32 FMA path), Bp = ceil(B / BT) BT, N the number of CTAs (the whole grid),
// Hs = H / N hidden units owned by one CTA, Rs = ceil(R / N) columns of z one CTA reduces.
//
// gates_t = P_t + W2 (W1_h h_{t-1}), P_t = W2 W1_x x_t + b precomputed by the launcher (time-parallel GEMMs).
//
// Decomposition: the per-step algorithm of csrc/flstm_cluster.cu with the grid as the group of CTAs and global memory
// (L2) instead of DSMEM. Grid (N), all N CTAs co-resident (the launcher checks, N <= SM count). CTA r owns hidden units
// [r Hs, (r+1) Hs) for the whole batch and keeps resident for all T steps the columns of W1_h of its units (R x Hs,
// stored transposed) and the rows of W2 of its units' four gates (4Hs x R, stored transposed). Per step t:
//   1. for each batch tile: stage the tile's slice of h_{t-1} of the own units into shared memory and form the
//      partial z_r = h_{t-1}[:, own units] W1_h[:, own units]^T (BT x R, float32), stored straight from the
//      accumulators into the global workspace partials[r] (N x Bp x R float32); grid barrier A;
//   2. reduce-scatter: CTA r sums columns [r Rs, min(R, (r+1) Rs)) of the N partials for all B rows, in rank order
//      0, 1, ..., N-1 (the order is fixed, so the result does not depend on timing), rounds the sums to the element
//      type exactly where the reference rounds z (z = h @ W1_h^T is a matmul in x's dtype: float32 accumulation
//      rounded once), and stores them into the global z (Bp x R, element type); grid barrier B (the all-gather: every
//      CTA then reads the whole z);
//   3. for each batch tile: stage the tile of z into shared memory, gates for the own units = z W2[own rows]^T (WMMA
//      m16n16k16 with float32 accumulators for fp16/bf16, float32 FMA for fp32), plus P_t, then the cell of the own
//      units; h_t (rounded to the element type like the reference) and c_t (float32) go to output[t] and cell[t].
// Every column of z is summed by exactly one CTA, so every CTA multiplies bitwise the same z. Where R is not a multiple
// of N the last CTAs reduce fewer (or no) columns; four adjacent columns per item (16-byte partial loads) where the
// CTA's column count is a multiple of 4 (then so is its first column, R being a multiple of 16), one otherwise.
//
// Projected mode (`projected`, a projected G-LSTM / LSTMP with G = `groups` groups; see projected_fwd_layout in
// persistent_layout.h, and the cluster forward's header for the mapping W1_h := W_hr, R := P, W2 := W_hh): the z of
// step t is h_{t-1} itself (h0, or output row t-1), so each step runs phase 3 first (the gate product reads the
// group's P / G columns of z; the cell writes m_t, rounded, to the launcher's m workspace (B x H) instead of the
// output), then phases 1 and 2 on m_t, whose reduction is written straight into output row t (P wide). The barriers and
// the hazard argument below are unchanged: output row t is written before B(t) and read after it; the m workspace is
// written and read by the same CTA (its own units), separated by __syncthreads.
//
// Why the shared memory does not depend on B: the CTA loops over the batch tiles inside each phase, so it holds one
// tile of h, z and gates at a time; h_{t-1} and c_{t-1} of its own units are read back from output[t-1] and
// cell[t-1] (h0 and c0 at t = 0), which this same CTA wrote in step t-1 (L2 hits; 2 x B x Hs x (2 + 4) bytes per
// step), and the partial z goes straight from the accumulators to global memory. For flstm-train bf16 on an H100:
// N = 64, Hs = 32, 198912 bytes per CTA (W1_h 33280, W2 139264, h 1280, z 16640, gates 8448), whatever B is.
//
// Why two grid barriers per step: as in the cluster forward, the all-reduce of z is a chain of two dependent
// exchanges (partials -> column sums -> every CTA), and each needs its producers' stores visible before its consumers
// read. The one-barrier alternative (every CTA sums all N partials of all R columns) reads N times the bytes per step
// (8 MiB per CTA for flstm-train at B = 64), far more than a grid barrier costs. Nothing of step t+1 can start before
// z_t is complete (h_t depends on it).
//
// Hazard argument. Cross-CTA data lives only in the global workspace: partials (written by its owner rank in phase 1,
// read by every CTA in phase 2) and z (written column-slice-wise in phase 2, read by every CTA in phase 3).
// cooperative_groups::this_grid().sync() orders all memory accesses of every thread of the grid before it before all
// accesses after it (a block barrier, then one thread per CTA issues a gpu-scope fence around the arrive / wait on the
// grid counter, then a block barrier again). Reads of the workspace use ld.global.cg (L2, never a possibly stale L1
// line) and nothing the kernel writes is read through the read-only (non-coherent) path.
//   * RAW, partials: phase 1 of step t (before barrier A(t)) -> phase 2 of step t (after A(t)).
//   * RAW, z: phase 2 of step t (before barrier B(t)) -> phase 3 of step t (after B(t)).
//   * WAR, partials: phase 2 of step t reads them before B(t); phase 1 of step t+1 rewrites them after B(t).
//   * WAR, z: phase 3 of step t reads it before A(t+1); phase 2 of step t+1 rewrites it after A(t+1).
//   So each workspace buffer needs one copy: every write-after-read is separated by the barrier of the other kind,
//   and a second (step-parity) copy of either would not let any barrier go (B(t) is the RAW barrier of z, A(t+1) that
//   of the partials). Double buffering would pay off only with point-to-point readiness flags replacing the barriers.
//   * h_{t-1} and c_{t-1} through output / cell: written in phase 3 of step t-1 and read in phases 1 and 3 of step t
//     by the same CTA (the CTA owns the same units every step), separated by __syncthreads and both grid barriers.
//   * Within a CTA, per batch tile: the staged h tile is read by the partial product and overwritten by the next
//     tile's staging; the staged z tile and the gate tile likewise; each pair is separated by a __syncthreads.
//   * Padding rows (b >= B in the last batch tile): the staging writes zeros there, so the MMAs never read stale or
//     uninitialised values; phase 2 and the cell never touch those rows (their partial rows are written but unread,
//     the z rows are never written and never read: the staging zero-fills instead of loading them).
//   * Lifetime: unlike DSMEM, the workspace outlives every CTA; nothing crosses CTAs before barrier A(0).
//
// Grid synchronisation needs sm_60+, WMMA on bf16 sm_80+: the body compiles for every architecture the build targets
// (sm_90a and the embedded compute_80 PTX); the launcher refuses compute capability below 8.0.
#include <cooperative_groups.h>
#include <mma.h>

#include "grid_exchange.cuh"
#include "persistent_common.cuh"
#include "persistent_kernels.h"
#include "tile_products.cuh"

namespace lstmkern {
namespace {

// output, cell, partials and z are written by the kernel and read back by it (by the same or by other CTAs): no
// __restrict__ on them, so no load of them can take the read-only path.
// kProjected: the projected mode (a template parameter, so the F-LSTM's instantiation compiles exactly as without it).
template <ElementKind kKind, bool kProjected>
__global__ void __launch_bounds__(kThreadsPerBlock)
flstm_grid_fwd_kernel(const float* __restrict__ proj, const typename ElementOf<kKind>::type* __restrict__ h0,
                      const float* __restrict__ c0, const typename ElementOf<kKind>::type* __restrict__ weight_1,
                      const typename ElementOf<kKind>::type* __restrict__ weight_2,
                      typename ElementOf<kKind>::type* output, float* cell, float* partials,
                      typename ElementOf<kKind>::type* z, typename ElementOf<kKind>::type* m_workspace, int T, int B,
                      int I, int H, int R, int groups) {
  namespace cg = cooperative_groups;
  constexpr bool projected = kProjected;
  if constexpr (!kProjected) groups = 1;  // the F-LSTM: one group, so its group arithmetic folds away
  using Element = typename ElementOf<kKind>::type;
  constexpr bool kWmma = uses_wmma(kKind);
  constexpr int kBatchTile = flstm_cluster_batch_tile(kKind);
  // Cell items per thread whose P_t and c_{t-1} are loaded into registers before the tile's z staging and gate
  // product, so the global-memory latency overlaps them (flstm-train bf16: BT x Hs = 512 items, 2 per thread).
  constexpr int kPrefetchItems = 4;
  constexpr int kZVector = 4;

  cg::grid_group grid = cg::this_grid();
  const int ctas = static_cast<int>(gridDim.x);
  const int rank = static_cast<int>(blockIdx.x);
  const FlstmGridFwdLayout layout = flstm_grid_fwd_layout(H, R, ctas, kKind, groups);
  const int Hs = static_cast<int>(layout.units_per_cta);
  const int unit_start = rank * Hs;  // first hidden unit this CTA owns
  // The CTA's group (projected G-LSTM; one group of H units for the F-LSTM): its gate rows read only z's columns
  // [group Rg, (group + 1) Rg), and gate q of its units starts at column group 4Hg + q Hg of P_t.
  const int hg = H / groups;
  const int group = unit_start / hg;
  const int rg = R / groups;
  const int64_t proj_col_start = static_cast<int64_t>(group) * 4 * hg + (unit_start - group * hg);
  const int Rs = (R + ctas - 1) / ctas;
  const int z_col_start = min(R, rank * Rs);
  const int z_col_count = min(R, z_col_start + Rs) - z_col_start;  // 0 for the last ranks where N > R / Rs
  const int w1h_ld = static_cast<int>(layout.w1h_ld);
  const int w2_ld = static_cast<int>(layout.w2_ld);
  const int h_ld = static_cast<int>(layout.h_ld);
  const int z_ld = static_cast<int>(layout.z_ld);
  const int gates_ld = static_cast<int>(layout.gates_ld);
  const int num_tiles = (B + kBatchTile - 1) / kBatchTile;
  const int64_t batch_pad = static_cast<int64_t>(num_tiles) * kBatchTile;
  const int64_t rank_stride = batch_pad * R;  // floats between two ranks' partials
  float* const own_partial = partials + rank * rank_stride;

  unsigned char* const smem = dynamic_smem();
  Element* w1h = reinterpret_cast<Element*>(smem + layout.w1h_offset);  // (Hs x w1h_ld)
  Element* w2 = reinterpret_cast<Element*>(smem + layout.w2_offset);    // (Rg x w2_ld)
  Element* h_tile = reinterpret_cast<Element*>(smem + layout.h_offset); // (BT x h_ld): a batch tile of own h_{t-1}
  Element* z_tile = reinterpret_cast<Element*>(smem + layout.z_offset); // (BT x z_ld): a batch tile of z
  float* gates = reinterpret_cast<float*>(smem + layout.gates_offset);  // (BT x gates_ld)

  const int64_t four_h = 4 * static_cast<int64_t>(H);
  const int four_hs = 4 * Hs;

  // Prologue: zero the whole layout once, so the row padding of every tile is defined (no fragment reads it, but it
  // keeps initcheck quiet should a future tiling do so); the staged tiles zero-fill their own padding rows.
  zero_shared(smem, layout.total_bytes);
  __syncthreads();
  load_flstm_unit_weights(weight_1, weight_2, I, H, R, unit_start, Hs, w1h, w1h_ld, w2, w2_ld, groups);
  __syncthreads();

  // Phases 1 and 2 (see the header): the partial z of the own units of `h_source` (B x H, of which this CTA reads
  // only the units it wrote itself) into partials[rank], barrier A, the reduction of the CTA's columns into
  // `z_target` (B x R), barrier B.
  const auto exchange_z = [&](const Element* h_source, Element* z_target) {
    for (int tile = 0; tile < num_tiles; ++tile) {
      const int batch_start = tile * kBatchTile;
      stage_tile(h_source + static_cast<int64_t>(batch_start) * H + unit_start, H, B - batch_start, Hs, h_tile, h_ld,
                 kBatchTile);
      __syncthreads();
      float* out = own_partial + static_cast<int64_t>(batch_start) * R;
      if constexpr (kWmma) {
        wmma_product(h_tile, h_ld, w1h, w1h_ld, out, R, R / kWmmaTile, Hs / kWmmaTile);
      } else {
        fma_product<kBatchTile>(h_tile, h_ld, w1h, w1h_ld, out, R, R, Hs);
      }
      __syncthreads();  // the next tile's staging overwrites h_tile
    }
    grid.sync();  // barrier A: every partial of the step is visible (and every read of the previous z is done)

    // Reduce this CTA's columns over the N partials in rank order, round to the element type, publish.
    if (z_col_count > 0) {
      if (z_col_count % kZVector == 0) {
        reduce_partials<kZVector>(partials, rank_stride, ctas, R, z_target, B, z_col_start, z_col_count);
      } else {
        reduce_partials<1>(partials, rank_stride, ctas, R, z_target, B, z_col_start, z_col_count);
      }
    }
    grid.sync();  // barrier B: the whole z is visible (and every read of the partials is done)
  };

  for (int t = 0; t < T; ++t) {
    // h_{t-1} and c_{t-1} (B x H): the kernel's own outputs of step t-1, of which this CTA reads only what it wrote.
    const Element* h_prev = t == 0 ? h0 : output + static_cast<int64_t>(t - 1) * B * H;
    const float* c_prev = t == 0 ? c0 : cell + static_cast<int64_t>(t - 1) * B * H;
    // The z the gate product reads and where the cell's rounded output goes: the F-LSTM forms z_t from h_{t-1} first
    // and writes h_t to output[t]; the projected mode's z_t is h_{t-1} itself (h0, or the output row the previous
    // step's exchange wrote), and its cell writes m_t to the workspace, from which the exchange after the cell forms
    // h_t = W_hr m_t straight into output[t] (P wide).
    const Element* z_step = z;
    Element* cell_out = output + static_cast<int64_t>(t) * B * H;
    if (projected) {
      z_step = t == 0 ? h0 : output + static_cast<int64_t>(t - 1) * B * R;
      cell_out = m_workspace;
    } else {
      exchange_z(h_prev, z);  // 1-2.
    }

    // 3. gates for the own units = z W2[own rows]^T + P_t, then the cell, one batch tile at a time.
    for (int tile = 0; tile < num_tiles; ++tile) {
      const int batch_start = tile * kBatchTile;
      const int batch_rows = min(kBatchTile, B - batch_start);
      const int cell_items = batch_rows * Hs;
      // P_t of cell item (b, j) for gate g: proj_t[b * 4H + g * Hg + j]; c_{t-1}: c_tile[b * H + j].
      const float* proj_t = proj + (static_cast<int64_t>(t) * B + batch_start) * four_h + proj_col_start;
      const float* c_tile = c_prev + static_cast<int64_t>(batch_start) * H + unit_start;
      const int64_t state_base = (static_cast<int64_t>(t) * B + batch_start) * H + unit_start;
      const int64_t out_base = static_cast<int64_t>(batch_start) * H + unit_start;  // within cell_out

      float prefetched[kPrefetchItems][5];
#pragma unroll
      for (int item = 0; item < kPrefetchItems; ++item) {
        const int idx = threadIdx.x + item * kThreadsPerBlock;
#pragma unroll
        for (int v = 0; v < 5; ++v) prefetched[item][v] = 0.0f;
        if (idx < cell_items) {
          const int b = idx / Hs;
          const int j = idx - b * Hs;
          const float* proj_row = proj_t + b * four_h + j;
#pragma unroll
          for (int gate = 0; gate < 4; ++gate) prefetched[item][gate] = proj_row[gate * static_cast<int64_t>(hg)];
          prefetched[item][4] = __ldcg(c_tile + static_cast<int64_t>(b) * H + j);
        }
      }

      stage_tile(z_step + static_cast<int64_t>(batch_start) * R, R, batch_rows, R, z_tile, z_ld, kBatchTile);
      __syncthreads();
      if constexpr (kWmma) {
        wmma_product(z_tile + group * rg, z_ld, w2, w2_ld, gates, gates_ld, four_hs / kWmmaTile, rg / kWmmaTile);
      } else {
        fma_product<kBatchTile>(z_tile + group * rg, z_ld, w2, w2_ld, gates, gates_ld, four_hs, rg);
      }
      __syncthreads();

      const auto cell_step = [&](int idx, float proj_i, float proj_f, float proj_g, float proj_o, float c) {
        const int b = idx / Hs;
        const int j = idx - b * Hs;
        const float* gates_row = gates + b * gates_ld;
        const float h = lstm_cell_forward(pre_activation<Element>(proj_i, gates_row[j]),
                                          pre_activation<Element>(proj_f, gates_row[Hs + j]),
                                          pre_activation<Element>(proj_g, gates_row[2 * Hs + j]),
                                          pre_activation<Element>(proj_o, gates_row[3 * Hs + j]), c);
        const int64_t state_idx = state_base + static_cast<int64_t>(b) * H + j;
        cell[state_idx] = c;
        // The next product multiplies the rounded h (or m), like the reference.
        cell_out[out_base + static_cast<int64_t>(b) * H + j] = from_float<Element>(h);
      };
#pragma unroll
      for (int item = 0; item < kPrefetchItems; ++item) {
        const int idx = threadIdx.x + item * kThreadsPerBlock;
        if (idx < cell_items) {
          cell_step(idx, prefetched[item][0], prefetched[item][1], prefetched[item][2], prefetched[item][3],
                    prefetched[item][4]);
        }
      }
      for (int idx = threadIdx.x + kPrefetchItems * kThreadsPerBlock; idx < cell_items; idx += kThreadsPerBlock) {
        const int b = idx / Hs;
        const int j = idx - b * Hs;
        const float* proj_row = proj_t + b * four_h + j;
        cell_step(idx, proj_row[0], proj_row[hg], proj_row[2 * static_cast<int64_t>(hg)],
                  proj_row[3 * static_cast<int64_t>(hg)], __ldcg(c_tile + static_cast<int64_t>(b) * H + j));
      }
      // The next tile's staging and gate product overwrite z_tile and gates; the next step's phase 1 (or the
      // projected mode's exchange below) reads the rows just written.
      __syncthreads();
    }
    if (projected) exchange_z(m_workspace, output + static_cast<int64_t>(t) * B * R);  // h_t = W_hr m_t
  }
}

template <ElementKind kKind, bool kProjected>
cudaError_t prepare_grid_launch(int H, int R, int groups, int ctas, cudaStream_t stream, CooperativeLaunch& launch) {
  const int64_t smem_bytes = flstm_grid_fwd_layout(H, R, ctas, kKind, groups).total_bytes;
  return launch.prepare(flstm_grid_fwd_kernel<kKind, kProjected>, smem_bytes, ctas, stream);
}

// The shape rule of the grid forward: the F-LSTM's (groups = 1, not projected), or the projected mode's.
inline bool grid_fwd_shape_ok(int H, int R, int groups, bool projected, int ctas) {
  return projected ? projected_grid_shape_ok(H, R, groups, ctas) : groups == 1 && flstm_grid_shape_ok(H, R, ctas);
}

template <ElementKind kKind, bool kProjected>
cudaError_t max_resident_ctas(int H, int R, int groups, int ctas, int* count) {
  *count = 0;
  if (!grid_fwd_shape_ok(H, R, groups, kProjected, ctas)) return cudaErrorInvalidValue;
  CooperativeLaunch launch;
  const cudaError_t err = prepare_grid_launch<kKind, kProjected>(H, R, groups, ctas, nullptr, launch);
  if (err != cudaSuccess) return err;
  return launch.max_resident_ctas(flstm_grid_fwd_kernel<kKind, kProjected>, count);
}

template <ElementKind kKind, bool kProjected>
cudaError_t launch_grid_fwd(const FlstmFwdArgs& args, int ctas, float* partials, void* z, void* m_workspace,
                           cudaStream_t stream) {
  using Element = typename ElementOf<kKind>::type;
  if (!grid_fwd_shape_ok(args.H, args.R, args.groups, kProjected, ctas)) return cudaErrorInvalidValue;
  if (kProjected ? m_workspace == nullptr : z == nullptr) return cudaErrorInvalidValue;
  // stage_tile reads h0 with 16-byte loads: a misaligned h0 would fault (the torch launcher copies such an h0 first).
  if (reinterpret_cast<uintptr_t>(args.h0) % kFlstmGridH0Alignment != 0) return cudaErrorInvalidValue;
  CooperativeLaunch launch;
  const cudaError_t err = prepare_grid_launch<kKind, kProjected>(args.H, args.R, args.groups, ctas, stream, launch);
  if (err != cudaSuccess) return err;
  return launch.launch(flstm_grid_fwd_kernel<kKind, kProjected>, args.proj, static_cast<const Element*>(args.h0),
                       args.c0, static_cast<const Element*>(args.weight_1),
                       static_cast<const Element*>(args.weight_2), static_cast<Element*>(args.output), args.cell,
                       partials, static_cast<Element*>(z), static_cast<Element*>(m_workspace), args.T, args.B, args.I,
                       args.H, args.R, args.groups);
}

}  // namespace

cudaError_t launch_flstm_grid_fwd(ElementKind kind, const FlstmFwdArgs& args, int ctas, float* partials, void* z,
                                  cudaStream_t stream, void* m_workspace) {
  return dispatch_element_kind(kind, [&](auto element) {
    constexpr ElementKind kKind = decltype(element)::value;
    return args.projected ? launch_grid_fwd<kKind, true>(args, ctas, partials, z, m_workspace, stream)
                          : launch_grid_fwd<kKind, false>(args, ctas, partials, z, m_workspace, stream);
  });
}

cudaError_t flstm_grid_max_resident_ctas(ElementKind kind, int H, int R, int ctas, int* count) {
  return dispatch_element_kind(kind, [&](auto element) {
    return max_resident_ctas<decltype(element)::value, false>(H, R, 1, ctas, count);
  });
}

cudaError_t projected_grid_max_resident_ctas(ElementKind kind, int H, int P, int G, int ctas, int* count) {
  return dispatch_element_kind(kind, [&](auto element) {
    return max_resident_ctas<decltype(element)::value, true>(H, P, G, ctas, count);
  });
}

}  // namespace lstmkern
