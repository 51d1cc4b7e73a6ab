// Persistent F-LSTM forward on a Hopper thread-block cluster: the variant for layers whose W1_h (R x H) and W2
// (4H x R) do not fit one CTA's shared memory (e.g. the flstm-infer shape H = 1024, R = 256 in bf16: 2.5 MiB of
// weights against 227 KiB per CTA).
//
// Shape legend: T time steps, B batch, I input features, H hidden units, R rank, BT batch tile (16 rows for WMMA,
// kFlstmBatchTile = 8 for the float32 FMA path), C cluster size (2, 4, 8 or 16), Hs = H / C hidden units owned by one
// CTA, Rs = R / C columns of z one CTA reduces.
//
// gates_t = P_t + W2 (W1_h h_{t-1}), P_t = W2 W1_x x_t + b precomputed by the launcher (time-parallel GEMMs).
//
// Projected mode (`projected`, a projected G-LSTM / LSTMP with G = `groups` groups; see projected_fwd_layout in
// persistent_layout.h): gates_t = P_t + W_hh (W_hr m_{t-1}) is the same form with W1_h := W_hr (P x H, I = 0), R := P,
// W2 := W_hh and the cell's m = o * tanh(c) (rounded) in the h slice, so the exchanged z IS the layer's output h_t
// (P wide). Differences: (1) z of step 0 is h0, loaded whole by every CTA, and each later exchange produces the
// previous step's output, which the CTA reducing a column also writes to global memory; one more exchange after the
// last step produces output row T-1; (2) a CTA's Hs units lie in one group g (C is a multiple of G), whose gate rows
// read only z's columns [g Pg, (g+1) Pg), so W2 stays Pg x 4Hs per CTA; (3) P_t is (T, B, G, 4Hg). The order of
// phases within an exchange and the double buffering are those of the F-LSTM, so the hazard argument below holds
// for the projected mode too (its extra, last exchange uses the buffer step T would publish).
//
// Decomposition. Grid (C * ceil(B / BT)), cluster dims (C, 1, 1): one cluster per batch tile. CTA rank r owns hidden
// units [r Hs, (r+1) Hs) and keeps resident for all T steps the columns of W1_h of its units (R x Hs, stored
// transposed) and the rows of W2 of its units' four gates (4Hs x R, stored transposed). Per step t each CTA
//   1. forms its partial z_r = h_{t-1}[:, own units] W1_h[:, own units]^T (BT x R, float32) from its own slice of
//      h_{t-1}, which it computed itself in step t-1 (so h never crosses the cluster), into partial[t % 2];
//      cluster barrier 1;
//   2. reduce-scatter + all-gather of z: CTA r sums columns [r Rs, (r+1) Rs) of the C partials, reading them through
//      DSMEM in rank order 0, 1, ..., C-1, rounds the sums to the element type (the reference's z = h @ W1_h^T is a
//      matmul in x's dtype, i.e. float32 accumulation rounded once to x's dtype; Triton's step kernel rounds it the
//      same way before the W2 product) and stores them into the z tile of every CTA of the cluster; cluster
//      barrier 2. Every column of z is summed by exactly one CTA, so every CTA holds bitwise the same z, and its
//      value does not depend on timing;
//   3. gates for its own units = z W2[own rows]^T (WMMA m16n16k16 with float32 accumulators for fp16/bf16, float32 FMA
//      for fp32), plus P_t (float32), then the cell for its Hs units with c in float32 shared memory; h_t is rounded
//      to the element type (exactly like the reference), written to global memory and kept in the CTA's h slice for
//      step t+1.
// Per step only z crosses the cluster: each CTA reads BT x R float32 partial values (16 KiB at BT = 16, R = 256;
// 15/16 of it remote at C = 16) and pushes BT x R element values (8 KiB), as 16-byte loads and 8-byte (fp16/bf16) or
// 16-byte (fp32) stores of four adjacent columns where Rs is a multiple of 4. Batch tiles are independent: no grid
// sync.
//
// Why two cluster barriers per step: the all-reduce of z is a chain of two dependent exchanges (partials -> column
// sums -> every CTA), and each needs its producers' stores to be visible before its consumers read. The one-barrier
// alternative (every CTA sums all C partials of all R columns itself) moves C times the bytes per step (256 KiB per
// CTA at C = 16), far more than a cluster barrier costs. Nothing of step t+1 can start before z_t is complete
// (h_t depends on it), so there is no independent work to overlap with either barrier.
//
// Hazard argument. Buffers in every CTA: partial[0], partial[1] (float32, double-buffered by step parity), the z tile
// (one buffer), the CTA's own h slice, c and the weights (local only). Step t publishes partial[t % 2]; the gate tile
// of step t lives in the other half, partial[(t + 1) % 2], which no peer reads during step t.
//   * RAW, partials (written by CTA q in phase 1 of step t, read by CTA p in phase 2): q's stores precede q's arrive
//     on barrier 1 of step t (barrier.cluster.arrive has release semantics), p's reads follow p's wait on it (acquire).
//   * RAW, z (pushed by CTA q in phase 2, read by CTA p's gate product in phase 3): q's stores precede q's arrive on
//     barrier 2 of step t, p's reads follow p's wait on it. This is barrier 2's only job.
//   * WAR, partial[t % 2]: peers last read it in phase 2 of step t-2, before they arrive on barrier 2 of step t-2;
//     its owner rewrites it (as the gate tile in phase 3 of step t-1, then as partial in step t) only after waiting
//     on barrier 1 of step t-1. Equivalently for the gate tile of step t, partial[(t + 1) % 2]: its last remote reads
//     (phase 2 of step t-1) precede barrier 1 of step t. It never aliases the partial buffer peers read in step t.
//   * WAR, z: CTA p reads its z tile in phase 3 of step t, before it arrives on barrier 1 of step t+1; peers push the
//     next z into it in phase 2 of step t+1, after waiting on that barrier.
//   So barrier 1 covers every write-after-read across the cluster and barrier 2 only orders the z pushes before their
//   use; the double buffer is what keeps the two roles apart (barrier 2 could become point-to-point signalling
//   without revisiting the WAR argument), and carving the gate tile from the idle half costs no extra bytes.
//   * Within a CTA: phase 1 reads the h slice written by the previous step's cell, phase 3 writes the gate tile the
//     cell then reads, and the next phase 1 overwrites that same buffer (the gate tile of step t is partial[(t+1) % 2]):
//     each pair is separated by a __syncthreads or a cluster barrier, which every thread of the CTA passes. The cell
//     state element (b, j) is read and written by the same thread every step.
//   * Lifetime: a CTA must not receive DSMEM stores or reads before it has zeroed its buffers and loaded its h slice,
//     nor exit while peers may still access its shared memory. The first DSMEM access of the kernel comes after
//     barrier 1 of step 0, which every CTA reaches only after its prologue; the last comes before barrier 2 of step
//     T-1, after which every CTA only touches its own shared memory and global memory. No extra barrier is needed.
//
// The body is compiled for sm_90 and newer only (clusters and DSMEM); the build also embeds compute_80 PTX, where the
// kernel traps. The torch op (cuda_ops.cpp) refuses devices other than 9.x and lstmkern.backends.cuda never picks the
// kernel there.
#include <cooperative_groups.h>
#include <mma.h>

#include "cluster_exchange.cuh"
#include "persistent_common.cuh"
#include "persistent_kernels.h"
#include "tile_products.cuh"

namespace lstmkern {
namespace {

// kProjected: the projected mode (a template parameter, so the F-LSTM's instantiation compiles exactly as without it).
template <ElementKind kKind, bool kProjected>
__global__ void __launch_bounds__(kThreadsPerBlock)
flstm_cluster_fwd_kernel(const float* __restrict__ proj, const typename ElementOf<kKind>::type* __restrict__ h0,
                         const float* __restrict__ c0, const typename ElementOf<kKind>::type* __restrict__ weight_1,
                         const typename ElementOf<kKind>::type* __restrict__ weight_2,
                         typename ElementOf<kKind>::type* __restrict__ output, float* __restrict__ cell, int T, int B,
                         int I, int H, int R, int cluster_size, int groups) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  constexpr bool projected = kProjected;
  if constexpr (!kProjected) groups = 1;  // the F-LSTM: one group, so its group arithmetic folds away
  using Element = typename ElementOf<kKind>::type;
  constexpr bool kWmma = uses_wmma(kKind);
  constexpr int kBatchTile = flstm_cluster_batch_tile(kKind);
  // Cell items per thread whose P_t is loaded into registers at the start of the step, so the global-memory latency
  // overlaps the partial product and the z exchange (the headline shape, BT = 16 and Hs = 64, has exactly 4 per
  // thread; larger slices load the rest in the cell loop).
  constexpr int kProjPrefetchItems = 4;
  // z columns one exchange item reduces: one 16-byte partial load per peer and one 8-byte (fp16/bf16) or 16-byte
  // (fp32) store per peer, a quarter of the DSMEM requests of one column per item.
  constexpr int kZVector = 4;

  const cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const FlstmClusterFwdLayout layout = flstm_cluster_fwd_layout(H, R, cluster_size, kKind, groups);
  const int Hs = static_cast<int>(layout.units_per_cta);
  const int unit_start = rank * Hs;  // first hidden unit this CTA owns
  const int Rs = R / cluster_size;   // columns of z this CTA reduces (C divides 16 and R is a multiple of 16)
  const int z_col_start = rank * Rs;
  // The CTA's group (projected G-LSTM; the F-LSTM has one group of H units): its Hs units lie in group `group`, whose
  // gate rows read only columns [group Rg, (group + 1) Rg) of z, and whose P_t columns of gate q start at
  // group 4Hg + q Hg (the (T, B, G, 4Hg) layout of the input projection; (T, B, 4H) for G = 1).
  const int hg = H / groups;
  const int group = unit_start / hg;
  const int rg = R / groups;
  const int w1h_ld = static_cast<int>(layout.w1h_ld);
  const int w2_ld = static_cast<int>(layout.w2_ld);
  const int h_ld = static_cast<int>(layout.h_ld);
  const int partial_ld = static_cast<int>(layout.partial_ld);
  const int gates_ld = static_cast<int>(layout.gates_ld);
  const int z_ld = static_cast<int>(layout.z_ld);

  unsigned char* const smem = dynamic_smem();
  Element* w1h = reinterpret_cast<Element*>(smem + layout.w1h_offset);     // (Hs x w1h_ld)
  Element* w2 = reinterpret_cast<Element*>(smem + layout.w2_offset);       // (Rg x w2_ld)
  Element* h_own = reinterpret_cast<Element*>(smem + layout.h_offset);     // (BT x h_ld): own slice of h_{t-1} (m)
  // Two named pointers rather than an array: a runtime-indexed pointer array would live in a local-memory stack frame.
  float* const partial_even = reinterpret_cast<float*>(smem + layout.partial_offset[0]);
  float* const partial_odd = reinterpret_cast<float*>(smem + layout.partial_offset[1]);
  Element* z_tile = reinterpret_cast<Element*>(smem + layout.z_offset);    // (BT x z_ld): reduced, rounded z
  const Element* z_group = z_tile + group * rg;                            // the columns the gate product reads
  float* c_tile = reinterpret_cast<float*>(smem + layout.c_offset);        // (BT x Hs)

  const int batch_start = static_cast<int>(blockIdx.x / cluster_size) * kBatchTile;
  const int batch_rows = min(kBatchTile, B - batch_start);
  const int64_t four_h = 4 * static_cast<int64_t>(H);
  const int four_hs = 4 * Hs;
  const int cell_items = batch_rows * Hs;  // (batch row, owned unit) pairs of the cell phase, round-robin over threads
  const int64_t proj_col_start = static_cast<int64_t>(group) * 4 * hg + (unit_start - group * hg);

  // Prologue: padding rows of h and z must read as 0 for the whole sequence (the MMAs multiply all BT rows).
  zero_shared(smem, layout.total_bytes);
  __syncthreads();

  load_flstm_unit_weights(weight_1, weight_2, I, H, R, unit_start, Hs, w1h, w1h_ld, w2, w2_ld, groups);
  // The own slices of c0 and of h0 (the partial product of step 0 needs only the own units of h0); in the projected
  // mode h0 (B, P) is the z of step 0 itself, loaded whole by every CTA (no exchange before the first gate product).
  for (int idx = threadIdx.x; idx < cell_items; idx += blockDim.x) {
    const int b = idx / Hs;
    const int j = idx - b * Hs;
    const int64_t state_idx = static_cast<int64_t>(batch_start + b) * H + unit_start + j;
    if (!projected) h_own[b * h_ld + j] = h0[state_idx];
    c_tile[b * Hs + j] = c0[state_idx];
  }
  if (projected) {
    for (int idx = threadIdx.x; idx < batch_rows * R; idx += blockDim.x) {
      const int b = idx / R;
      const int q = idx - b * R;
      z_tile[b * z_ld + q] = h0[static_cast<int64_t>(batch_start + b) * R + q];
    }
  }
  __syncthreads();

  // Phases 1 and 2 of a step (see the header): the partial z of the own slice h_own, cluster barrier 1, the reduction
  // of the CTA's Rs columns and their broadcast into every CTA's z tile, cluster barrier 2. In the projected mode the
  // reduced z is the layer's output h_t, which the CTA also writes (its Rs columns) to `output_rows` (P wide).
  const auto exchange_z = [&](float* partial, Element* output_rows) {
    if constexpr (kWmma) {
      wmma_product(h_own, h_ld, w1h, w1h_ld, partial, partial_ld, R / kWmmaTile, Hs / kWmmaTile);
    } else {
      fma_product<kBatchTile>(h_own, h_ld, w1h, w1h_ld, partial, partial_ld, R, Hs);
    }
    cluster.sync();  // barrier 1: every CTA's partial is visible (and every WAR of the step is ordered)
    // Four adjacent columns per item where Rs allows it (the headline shape: Rs = 16), one otherwise.
    if (Rs % kZVector == 0) {
      reduce_and_broadcast_z<kZVector>(cluster, rank, cluster_size, partial, partial_ld, z_tile, z_ld, batch_rows,
                                       z_col_start, Rs, output_rows, R);
    } else {
      reduce_and_broadcast_z<1>(cluster, rank, cluster_size, partial, partial_ld, z_tile, z_ld, batch_rows,
                                z_col_start, Rs, output_rows, R);
    }
    cluster.sync();  // barrier 2: the whole z is in every CTA
  };

  for (int t = 0; t < T; ++t) {
    const bool odd_step = (t & 1) != 0;
    float* partial = odd_step ? partial_odd : partial_even;  // published to the peers this step
    float* gates = odd_step ? partial_even : partial_odd;    // the idle half: nobody else reads it during step t
    // P_t of cell item (b, j) for gate q: proj_t + b * 4H + q * Hg + j.
    const float* proj_t = proj + (static_cast<int64_t>(t) * B + batch_start) * four_h + proj_col_start;

    float proj_regs[kProjPrefetchItems][4];
    prefetch_projection(proj_t, four_h, hg, Hs, cell_items, proj_regs);

    // 1-2. z of this step from h_{t-1} (F-LSTM) or from m_{t-1} (projected: that z is h_{t-1}, output row t-1; at
    // t = 0 it is h0, already in the z tile).
    if (!projected) {
      exchange_z(partial, nullptr);
    } else if (t > 0) {
      exchange_z(partial, output + (static_cast<int64_t>(t - 1) * B + batch_start) * R);
    }

    // 3. gates for the own units = z[:, group columns] W2[own rows]^T (BT x 4Hs), then the cell.
    if constexpr (kWmma) {
      wmma_product(z_group, z_ld, w2, w2_ld, gates, gates_ld, four_hs / kWmmaTile, rg / kWmmaTile);
    } else {
      fma_product<kBatchTile>(z_group, z_ld, w2, w2_ld, gates, gates_ld, four_hs, rg);
    }
    __syncthreads();

    const auto cell_step = [&](int idx, float proj_i, float proj_f, float proj_g, float proj_o) {
      const int b = idx / Hs;
      const int j = idx - b * Hs;
      const float* gates_row = gates + b * gates_ld;
      float c = c_tile[b * Hs + j];
      const float h = lstm_cell_forward(pre_activation<Element>(proj_i, gates_row[j]),
                                        pre_activation<Element>(proj_f, gates_row[Hs + j]),
                                        pre_activation<Element>(proj_g, gates_row[2 * Hs + j]),
                                        pre_activation<Element>(proj_o, gates_row[3 * Hs + j]), c);
      const Element h_rounded = from_float<Element>(h);
      const int64_t state_idx = (static_cast<int64_t>(t) * B + batch_start + b) * H + unit_start + j;
      c_tile[b * Hs + j] = c;
      cell[state_idx] = c;
      if (!projected) output[state_idx] = h_rounded;  // projected: the output is z of the next exchange
      h_own[b * h_ld + j] = h_rounded;  // the next step multiplies the rounded h (or m), like the reference
    };
    for_each_cell_item(proj_t, four_h, hg, Hs, cell_items, proj_regs, cell_step);
    // The next step's partial product reads h_own and overwrites this step's gate tile.
    __syncthreads();
  }
  // Projected: one more exchange turns m_{T-1} into the last output row h_{T-1}. Its partial buffer is the one the
  // step after T-1 would publish (parity T), so the hazard argument of the header holds unchanged.
  if (projected && T > 0) {
    exchange_z((T & 1) != 0 ? partial_odd : partial_even, output + (static_cast<int64_t>(T - 1) * B + batch_start) * R);
  }
#else
  // Compiled for an architecture without clusters (the embedded compute_80 PTX): never launched there (the launcher
  // checks the compute capability); trap rather than return garbage if it ever is.
  __trap();
#endif
}

// The shape rule of the cluster forward: the F-LSTM's (groups = 1, not projected), or the projected mode's.
inline bool cluster_fwd_shape_ok(int H, int R, int groups, bool projected, int cluster_size) {
  return projected ? projected_cluster_shape_ok(H, R, groups, cluster_size)
                   : groups == 1 && flstm_cluster_shape_ok(H, R, cluster_size);
}

// The cluster launch of the forward kernel for (H, R, groups, B, C): a grid of C * ceil(B / BT) CTAs in clusters of C
// (for C = 16 ClusterLaunch allows the non-portable size; that needs a GPC with 16 free SMs).
template <ElementKind kKind, bool kProjected>
cudaError_t prepare_cluster_launch(int H, int R, int groups, int B, int cluster_size, cudaStream_t stream,
                                   ClusterLaunch& launch) {
  const int64_t smem_bytes = flstm_cluster_fwd_layout(H, R, cluster_size, kKind, groups).total_bytes;
  return launch.prepare(flstm_cluster_fwd_kernel<kKind, kProjected>, smem_bytes, flstm_cluster_batch_tile(kKind), B,
                        1, cluster_size, stream);
}

template <ElementKind kKind, bool kProjected>
cudaError_t max_active_clusters(int H, int R, int groups, int cluster_size, int* count) {
  *count = 0;
  if (!cluster_fwd_shape_ok(H, R, groups, kProjected, cluster_size)) return cudaErrorInvalidValue;
  ClusterLaunch launch;
  const cudaError_t err = prepare_cluster_launch<kKind, kProjected>(H, R, groups, 1, cluster_size, nullptr, launch);
  if (err != cudaSuccess) return err;
  return launch.max_active_clusters(flstm_cluster_fwd_kernel<kKind, kProjected>, count);
}

template <ElementKind kKind, bool kProjected>
cudaError_t launch_cluster_fwd(const FlstmFwdArgs& args, int cluster_size, cudaStream_t stream) {
  using Element = typename ElementOf<kKind>::type;
  if (!cluster_fwd_shape_ok(args.H, args.R, args.groups, kProjected, cluster_size)) return cudaErrorInvalidValue;
  ClusterLaunch launch;
  const cudaError_t err =
      prepare_cluster_launch<kKind, kProjected>(args.H, args.R, args.groups, args.B, cluster_size, stream, launch);
  if (err != cudaSuccess) return err;
  return launch.launch(flstm_cluster_fwd_kernel<kKind, kProjected>, args.proj, static_cast<const Element*>(args.h0),
                       args.c0, static_cast<const Element*>(args.weight_1),
                       static_cast<const Element*>(args.weight_2), static_cast<Element*>(args.output), args.cell,
                       args.T, args.B, args.I, args.H, args.R, cluster_size, args.groups);
}

}  // namespace

cudaError_t launch_flstm_cluster_fwd(ElementKind kind, const FlstmFwdArgs& args, int cluster_size,
                                     cudaStream_t stream) {
  return dispatch_element_kind(kind, [&](auto element) {
    constexpr ElementKind kKind = decltype(element)::value;
    return args.projected ? launch_cluster_fwd<kKind, true>(args, cluster_size, stream)
                          : launch_cluster_fwd<kKind, false>(args, cluster_size, stream);
  });
}

cudaError_t flstm_cluster_max_active_clusters(ElementKind kind, int H, int R, int cluster_size, int* count) {
  return dispatch_element_kind(kind, [&](auto element) {
    return max_active_clusters<decltype(element)::value, false>(H, R, 1, cluster_size, count);
  });
}

cudaError_t projected_cluster_max_active_clusters(ElementKind kind, int H, int P, int G, int cluster_size,
                                                  int* count) {
  return dispatch_element_kind(kind, [&](auto element) {
    return max_active_clusters<decltype(element)::value, true>(H, P, G, cluster_size, count);
  });
}

}  // namespace lstmkern
