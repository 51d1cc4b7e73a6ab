// Persistent G-LSTM forward and backward on a Hopper thread-block cluster: the variant for groups whose W_hh[g] does
// not fit one CTA's shared memory (e.g. Hg = 256 in bf16: 4Hg x Hg x 2 B = 512 KiB against 227 KiB per CTA).
//
// Shape legend: T time steps, B batch, G groups, Hg hidden units per group, H = G * Hg, BT batch tile (16 rows for
// WMMA, 8 for the float32 FMA path, forward and backward), C cluster size (2, 4 or 8), Hs = Hg / C hidden units owned
// by one CTA.
//
// Decomposition. Grid (C * ceil(B / BT), G), cluster dims (C, 1, 1): one cluster per (batch tile, group g). CTA rank r
// of the cluster owns hidden units [r Hs, (r+1) Hs) of group g and keeps their four gate row blocks of W_hh[g]
// (4Hs x Hg, as the transposed WMMA B operand) in its shared memory for all T steps. Per step each CTA
//   1. multiplies the whole h_{t-1}[g] tile (BT x Hg, in its own shared memory) by its gate columns: WMMA m16n16k16
//      with float32 accumulators for fp16/bf16, float32 FMA for fp32 (same fragments and k order as
//      glstm_persistent.cu, so the recurrent products are bitwise those of the single-CTA kernel);
//   2. adds P_t (float32, precomputed by the launcher's batched GEMM) and runs the cell for its Hs units with c in
//      float32 shared memory; h_t is rounded to the element type (exactly like the reference) and written to global
//      memory and to the CTA's own columns of the *other* h buffer;
//   3. pushes that slice of h_t (16-byte vectors) into the same columns of the same buffer of the other C - 1 CTAs
//      through distributed shared memory (DSMEM), then waits at one cluster barrier.
// Groups and batch tiles are independent, so there is no grid-wide synchronisation.
//
// Hazard argument for the double-buffered h tile (h[0], h[1] in every CTA; step t reads h[t % 2], writes
// h[(t+1) % 2]):
//   * RAW (h_t written by CTA q, read by CTA p in step t+1): q's stores precede q's arrive on the cluster barrier at
//     the end of step t (barrier.cluster.arrive has release semantics), p's reads follow p's wait on that barrier
//     (acquire semantics), so p sees every slice of h_t.
//   * WAR (CTA q overwriting h[(t+1) % 2] of CTA p in step t while p might still read it): p last read that buffer as
//     h_{t-2} in step t-1, before p arrived at the barrier ending step t-1; q writes it only after waiting on that
//     same barrier. The buffer p reads in step t (h[t % 2]) is never written in step t. Hence one cluster barrier per
//     step suffices; with a single buffer a second barrier would be needed between the MMA and the writes.
//   * Within a CTA the gates tile is written by the MMA and read by the cell: one __syncthreads between the two; the
//     next step's MMA overwrites it only after the cluster barrier, which every thread of the CTA passes. The cell
//     state element (b, j) is read and written by the same thread every step. The push reads the CTA's own slice of
//     h_next only after a __syncthreads that follows the cell's writes.
//   * Lifetime: a CTA must not start receiving DSMEM stores before it has zeroed its buffers, nor exit while peers may
//     still write into it: one cluster barrier after the prologue, and the last step (whose h_T nobody reads) pushes
//     nothing, so every DSMEM store is followed by a barrier that the target CTA also takes before it exits.
//
// The backward (glstm_cluster_bwd_kernel below) uses the same decomposition; its hazard argument is next to it.
//
// The bodies are compiled for sm_90 and newer only (clusters and DSMEM); the build also embeds compute_80 PTX, where
// the kernels trap. The torch ops (cuda_ops.cpp) refuse devices other than 9.x and lstmkern.backends.cuda never picks
// the kernels there.
#include <cooperative_groups.h>
#include <mma.h>

#include <type_traits>

#include "persistent_common.cuh"
#include "persistent_kernels.h"
#include "tile_products.cuh"

namespace lstmkern {
namespace {

template <ElementKind kKind>
__global__ void __launch_bounds__(kThreadsPerBlock)
glstm_cluster_fwd_kernel(const float* __restrict__ proj, const typename ElementOf<kKind>::type* __restrict__ h0,
                         const float* __restrict__ c0, const typename ElementOf<kKind>::type* __restrict__ weight_hh,
                         typename ElementOf<kKind>::type* __restrict__ output, float* __restrict__ cell, int T, int B,
                         int G, int Hg, int cluster_size) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  using Element = typename ElementOf<kKind>::type;
  constexpr bool kWmma = uses_wmma(kKind);
  constexpr int kBatchTile = glstm_fwd_batch_tile(kKind);
  // h tile: the WMMA A operand in the element type, or float32 for the FMA loop (holding rounded values).
  using HTile = std::conditional_t<kWmma, Element, float>;
  constexpr int kHTilePerVector = static_cast<int>(sizeof(int4) / sizeof(HTile));
  // Cell items per thread whose P_t is loaded into registers before the recurrent product (see the step loop).
  constexpr int kProjPrefetchItems = 4;

  const cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const GlstmClusterFwdLayout layout = glstm_cluster_fwd_layout(Hg, cluster_size, kKind);
  const int Hs = static_cast<int>(layout.units_per_cta);
  const int unit_start = rank * Hs;  // first hidden unit of the group this CTA owns

  unsigned char* const smem = dynamic_smem();
  Element* w_t = reinterpret_cast<Element*>(smem + layout.w_offset);
  // Two named pointers rather than an array: a runtime-indexed pointer array would live in a local-memory stack frame.
  HTile* const h_even = reinterpret_cast<HTile*>(smem + layout.h_offset[0]);  // h_{t-1} of even steps t
  HTile* const h_odd = reinterpret_cast<HTile*>(smem + layout.h_offset[1]);   // h_{t-1} of odd steps t
  float* gates = reinterpret_cast<float*>(smem + layout.gates_offset);
  float* c_tile = reinterpret_cast<float*>(smem + layout.c_offset);

  const int group = blockIdx.y;
  const int batch_start = static_cast<int>(blockIdx.x / cluster_size) * kBatchTile;
  const int batch_rows = min(kBatchTile, B - batch_start);
  const int64_t H = static_cast<int64_t>(G) * Hg;
  const int four_hs = 4 * Hs;
  const int cell_items = batch_rows * Hs;  // (batch row, owned unit) pairs of the cell phase, round-robin over threads

  // Prologue: padding rows and columns must read as 0 for the whole sequence in both h buffers.
  zero_shared(smem, layout.total_bytes);
  __syncthreads();

  // The CTA's gate rows q Hg + unit_start + j of W_hh[g] (row-major, Hg columns) -> w_t[k][q Hs + j]; consecutive
  // threads read consecutive k of one row, so the global loads coalesce.
  const Element* weight = weight_hh + static_cast<int64_t>(group) * 4 * Hg * Hg;
  for (int idx = threadIdx.x; idx < four_hs * Hg; idx += blockDim.x) {
    const int n = idx / Hg;  // CTA-local gate column q * Hs + j
    const int k = idx - n * Hg;
    const int gate = n / Hs;
    const int64_t row = static_cast<int64_t>(gate) * Hg + unit_start + (n - gate * Hs);
    w_t[static_cast<int64_t>(k) * layout.w_ld + n] = weight[row * Hg + k];
  }
  // Every CTA reads all of h0[g] itself (no DSMEM needed) and the c0 of its own units.
  for (int idx = threadIdx.x; idx < batch_rows * Hg; idx += blockDim.x) {
    const int b = idx / Hg;
    const int k = idx - b * Hg;
    const Element value = h0[(batch_start + b) * H + static_cast<int64_t>(group) * Hg + k];
    if constexpr (kWmma) {
      h_even[b * layout.h_ld + k] = value;
    } else {
      h_even[b * layout.h_ld + k] = to_float(value);
    }
  }
  for (int idx = threadIdx.x; idx < batch_rows * Hs; idx += blockDim.x) {
    const int b = idx / Hs;
    const int j = idx - b * Hs;
    c_tile[b * Hs + j] = c0[(batch_start + b) * H + static_cast<int64_t>(group) * Hg + unit_start + j];
  }
  // Peers start pushing into this CTA's h[1] in step 0: they must wait until it is zeroed (and has started).
  cluster.sync();

  for (int t = 0; t < T; ++t) {
    const bool odd_step = (t & 1) != 0;
    const HTile* h_prev = odd_step ? h_odd : h_even;
    HTile* h_next = odd_step ? h_even : h_odd;
    // P_t of cell item idx (b, j) for gate q: proj_t + b * G * 4Hg + q * Hg + unit_start + j.
    const float* proj_t = proj + ((static_cast<int64_t>(t) * B + batch_start) * G + group) * 4 * Hg + unit_start;
    const int64_t proj_row_stride = static_cast<int64_t>(G) * 4 * Hg;

    // Issue the P_t loads of this thread's first kProjPrefetchItems cell items now, so their global-memory latency
    // overlaps the recurrent product instead of stalling the cell (the items of the headline shape, BT = 16 and
    // Hs = 64, are exactly 4 per thread; larger slices load the rest in the cell loop).
    float proj_regs[kProjPrefetchItems][4];
    prefetch_projection(proj_t, proj_row_stride, Hg, Hs, cell_items, proj_regs);

    // gates = h_{t-1} W_hh[g]^T for the CTA's 4Hs gate columns (rows >= batch_rows are zero and ignored). The tile
    // products keep the single-CTA kernel's fragments and k order, so the recurrent products are bitwise its own.
    if constexpr (kWmma) {
      wmma_product(h_prev, static_cast<int>(layout.h_ld), w_t, static_cast<int>(layout.w_ld), gates,
                   static_cast<int>(layout.gates_ld), four_hs / kWmmaTile, Hg / kWmmaTile);
    } else {
      fma_product<kBatchTile>(h_prev, static_cast<int>(layout.h_ld), w_t, static_cast<int>(layout.w_ld), gates,
                              static_cast<int>(layout.gates_ld), four_hs, Hg);
    }
    __syncthreads();

    // Cell: one thread per (batch row, owned unit); writes h_t to global memory and to this CTA's columns of h_next.
    const auto cell_step = [&](int idx, float proj_i, float proj_f, float proj_g, float proj_o) {
      const int b = idx / Hs;
      const int j = idx - b * Hs;
      const int unit = unit_start + j;
      const float* gates_row = gates + b * layout.gates_ld;
      float c = c_tile[b * Hs + j];
      const float h = lstm_cell_forward(pre_activation<Element>(proj_i, gates_row[j]),
                                        pre_activation<Element>(proj_f, gates_row[Hs + j]),
                                        pre_activation<Element>(proj_g, gates_row[2 * Hs + j]),
                                        pre_activation<Element>(proj_o, gates_row[3 * Hs + j]), c);
      const Element h_rounded = from_float<Element>(h);
      const int64_t state_idx = (static_cast<int64_t>(t) * B + batch_start + b) * H +
                                static_cast<int64_t>(group) * Hg + unit;
      c_tile[b * Hs + j] = c;
      cell[state_idx] = c;
      output[state_idx] = h_rounded;
      if constexpr (kWmma) {
        h_next[b * layout.h_ld + unit] = h_rounded;
      } else {
        h_next[b * layout.h_ld + unit] = to_float(h_rounded);
      }
    };
    for_each_cell_item(proj_t, proj_row_stride, Hg, Hs, cell_items, proj_regs, cell_step);
    if (t + 1 == T) break;  // h_T is not multiplied again: no push, no barrier (see the lifetime argument above)
    __syncthreads();

    // Push this CTA's slice of h_t (batch_rows x Hs, 16-byte vectors) into the same place of every peer's h_next.
    // Peers are visited starting after this rank so the C CTAs do not all store into the same CTA at once.
    const int vectors_per_row = Hs / kHTilePerVector;
    for (int idx = threadIdx.x; idx < batch_rows * vectors_per_row; idx += blockDim.x) {
      const int b = idx / vectors_per_row;
      const int v = idx - b * vectors_per_row;
      int4* local = reinterpret_cast<int4*>(h_next + b * layout.h_ld + unit_start) + v;
      const int4 value = *local;
      for (int peer = 1; peer < cluster_size; ++peer) {
        const int peer_rank = (rank + peer) % cluster_size;
        *cluster.map_shared_rank(local, static_cast<unsigned>(peer_rank)) = value;
      }
    }
    cluster.sync();
  }
#else
  // Compiled for an architecture without clusters (the embedded compute_80 PTX): never launched there (the launcher
  // checks the compute capability); trap rather than return garbage if it ever is.
  __trap();
#endif
}

// Backward, reverse time, same cluster decomposition (batch tile glstm_bwd_batch_tile): CTA rank r holds the gate
// rows of its Hs units of W_hh[g] (4Hs x Hg, as stored: the row-major B operand). Per step each CTA
//   1. sums dh_t for its own units from the C partial products of the previous iteration (DSMEM reads, ranks in
//      order 0..C-1, so the result does not depend on timing), adds the step's grad_output and runs the cell backward
//      for its Hs units (dgates to global memory in float32 and to its dgates tile in the element type: rounded for
//      fp16/bf16, the tensor cores' A operand, as in csrc/flstm_cluster_bwd.cu; dc kept in float32 shared memory);
//   2. computes its gate rows' contribution to dh_{t-1} for all Hg columns, partial = dgates_tile W_local (BT x Hg,
//      float32: WMMA m16n16k16 with float32 accumulators for fp16/bf16, wmma_product; float32 FMA for fp32,
//      fma_product), into its partial buffer, then waits at one cluster barrier.
// Padding rows (>= batch_rows) of the dgates tile are zero from the prologue and never written, so the product rows
// they give are zero and never read.
// Hazards of the double-buffered partial buffers (step t writes partial[t % 2]; peers read it in step t-1):
//   * RAW: written before the writer's arrive at the barrier ending step t, read after the readers' wait on it.
//   * WAR: partial[t % 2] is next written in step t-2, after the writer waits on the barrier ending step t-1, which
//     every reader reaches only after its step t-1 reads.
//   * Lifetime: peers read the CTA's partial buffers until after the loop (dh0), so a last cluster barrier keeps every
//     CTA resident until all reads are done.
template <ElementKind kKind>
__global__ void __launch_bounds__(kThreadsPerBlock)
glstm_cluster_bwd_kernel(const float* __restrict__ pre_gates,
                         const typename ElementOf<kKind>::type* __restrict__ grad_output,
                         const float* __restrict__ grad_cell, const float* __restrict__ c0,
                         const float* __restrict__ cell, const typename ElementOf<kKind>::type* __restrict__ weight_hh,
                         float* __restrict__ dgates, float* __restrict__ dh0, float* __restrict__ dc0, int T, int B,
                         int G, int Hg, int cluster_size) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  using Element = typename ElementOf<kKind>::type;
  constexpr bool kWmma = uses_wmma(kKind);
  constexpr int kBatchTile = glstm_bwd_batch_tile(kKind);

  const cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const GlstmClusterBwdLayout layout = glstm_cluster_bwd_layout(Hg, cluster_size, kKind);
  const int Hs = static_cast<int>(layout.units_per_cta);
  const int unit_start = rank * Hs;
  const int w_ld = static_cast<int>(layout.w_ld);
  const int dgates_ld = static_cast<int>(layout.dgates_ld);
  const int partial_ld = static_cast<int>(layout.partial_ld);

  unsigned char* const smem = dynamic_smem();
  Element* w = reinterpret_cast<Element*>(smem + layout.w_offset);                 // (4Hs x w_ld)
  Element* dgates_tile = reinterpret_cast<Element*>(smem + layout.dgates_offset);  // (BT x dgates_ld)
  float* const partial_even = reinterpret_cast<float*>(smem + layout.partial_offset[0]);  // written by even steps
  float* const partial_odd = reinterpret_cast<float*>(smem + layout.partial_offset[1]);   // written by odd steps
  float* dc_tile = reinterpret_cast<float*>(smem + layout.dc_offset);              // (BT x Hs)

  const int group = blockIdx.y;
  const int batch_start = static_cast<int>(blockIdx.x / cluster_size) * kBatchTile;
  const int batch_rows = min(kBatchTile, B - batch_start);
  const int64_t H = static_cast<int64_t>(G) * Hg;
  const int four_hs = 4 * Hs;

  // Sum over the cluster of the partials in `partial` (the same offset in every CTA) at (b, unit), ranks in order.
  const auto cluster_sum = [&](const float* partial, int b, int unit) {
    float sum = 0.0f;
    for (int peer = 0; peer < cluster_size; ++peer) {
      sum += *cluster.map_shared_rank(partial + b * partial_ld + unit, static_cast<unsigned>(peer));
    }
    return sum;
  };

  zero_shared(smem, layout.total_bytes);  // dc starts at 0; dgates rows >= batch_rows stay 0
  __syncthreads();
  // The CTA's gate rows q Hg + unit_start + j of W_hh[g] -> w[q Hs + j][k]: contiguous on both sides.
  const Element* weight = weight_hh + static_cast<int64_t>(group) * 4 * Hg * Hg;
  for (int idx = threadIdx.x; idx < four_hs * Hg; idx += blockDim.x) {
    const int n = idx / Hg;
    const int k = idx - n * Hg;
    const int gate = n / Hs;
    const int64_t row = static_cast<int64_t>(gate) * Hg + unit_start + (n - gate * Hs);
    w[static_cast<int64_t>(n) * w_ld + k] = weight[row * Hg + k];
  }
  // No barrier needed here: the step loop's __syncthreads orders these writes before the first product, and peers
  // touch this CTA's shared memory only after the first cluster barrier.

  for (int t = T - 1; t >= 0; --t) {
    const bool odd_step = (t & 1) != 0;
    float* partial_out = odd_step ? partial_odd : partial_even;      // this step's contribution to dh_{t-1}
    const float* partial_in = odd_step ? partial_even : partial_odd;  // step t+1's contributions to dh_t

    // Cell backward: one thread per (batch row, owned unit); the same thread owns dc_tile[b][j] every step.
    for (int idx = threadIdx.x; idx < batch_rows * Hs; idx += blockDim.x) {
      const int b = idx / Hs;
      const int j = idx - b * Hs;
      const int unit = unit_start + j;
      const int64_t row = static_cast<int64_t>(t) * B + batch_start + b;
      const int64_t state_idx = row * H + static_cast<int64_t>(group) * Hg + unit;
      const float dh_later = t + 1 < T ? cluster_sum(partial_in, b, unit) : 0.0f;
      const float dh = dh_later + to_float(grad_output[state_idx]);
      const float dc = dc_tile[b * Hs + j] + (grad_cell != nullptr ? grad_cell[state_idx] : 0.0f);
      const float c_prev = t > 0 ? cell[state_idx - static_cast<int64_t>(B) * H]
                                 : c0[(batch_start + b) * H + static_cast<int64_t>(group) * Hg + unit];
      const int64_t gates_offset = (row * G + group) * 4 * Hg;
      const float* pre = pre_gates + gates_offset;
      const CellGrad grad = lstm_cell_backward(pre[unit], pre[Hg + unit], pre[2 * Hg + unit], pre[3 * Hg + unit],
                                               c_prev, cell[state_idx], dh, dc);
      float* dgates_out = dgates + gates_offset;
      dgates_out[unit] = grad.d_i;
      dgates_out[Hg + unit] = grad.d_f;
      dgates_out[2 * Hg + unit] = grad.d_g;
      dgates_out[3 * Hg + unit] = grad.d_o;
      Element* dgates_row = dgates_tile + b * dgates_ld;  // rounded for the tensor cores (float32 stays float32)
      dgates_row[j] = from_float<Element>(grad.d_i);
      dgates_row[Hs + j] = from_float<Element>(grad.d_f);
      dgates_row[2 * Hs + j] = from_float<Element>(grad.d_g);
      dgates_row[3 * Hs + j] = from_float<Element>(grad.d_o);
      dc_tile[b * Hs + j] = grad.dc_prev;
    }
    __syncthreads();

    // partial[b][k] = sum over the CTA's gate rows n of dgates[b][n] W_hh[g][n][k] (BT x Hg).
    if constexpr (kWmma) {
      wmma_product(dgates_tile, dgates_ld, w, w_ld, partial_out, partial_ld, Hg / kWmmaTile, four_hs / kWmmaTile);
    } else {
      fma_product<kBatchTile>(dgates_tile, dgates_ld, w, w_ld, partial_out, partial_ld, Hg, four_hs);
    }
    cluster.sync();
  }

  // Step 0 wrote partial_even: its cluster sum is dh0.
  for (int idx = threadIdx.x; idx < batch_rows * Hs; idx += blockDim.x) {
    const int b = idx / Hs;
    const int j = idx - b * Hs;
    const int unit = unit_start + j;
    const int64_t state_idx = (batch_start + b) * H + static_cast<int64_t>(group) * Hg + unit;
    dh0[state_idx] = cluster_sum(partial_even, b, unit);
    dc0[state_idx] = dc_tile[b * Hs + j];
  }
  cluster.sync();  // peers may still be reading this CTA's partial_even
#else
  __trap();  // architectures without clusters: never launched (see the forward kernel)
#endif
}

// Shared by both launchers (grid (C * batch tiles, G), cluster dims (C, 1, 1); see ClusterLaunch).
template <typename Kernel, typename... Args>
cudaError_t launch_on_clusters(Kernel kernel, int64_t smem_bytes, int batch_tile, int B, int G, int cluster_size,
                               cudaStream_t stream, Args... args) {
  ClusterLaunch launch;
  const cudaError_t err = launch.prepare(kernel, smem_bytes, batch_tile, B, G, cluster_size, stream);
  if (err != cudaSuccess) return err;
  return launch.launch(kernel, args...);
}

template <ElementKind kKind>
cudaError_t max_active_clusters(int Hg, int cluster_size, int* count) {
  *count = 0;
  if (!glstm_cluster_shape_ok(Hg, cluster_size)) return cudaErrorInvalidValue;
  ClusterLaunch launch;
  const cudaError_t err = launch.prepare(glstm_cluster_fwd_kernel<kKind>,
                                         glstm_cluster_fwd_layout(Hg, cluster_size, kKind).total_bytes,
                                         glstm_fwd_batch_tile(kKind), 1, 1, cluster_size, nullptr);
  if (err != cudaSuccess) return err;
  return launch.max_active_clusters(glstm_cluster_fwd_kernel<kKind>, count);
}

template <ElementKind kKind>
cudaError_t launch_cluster_fwd(const GlstmFwdArgs& args, int cluster_size, cudaStream_t stream) {
  using Element = typename ElementOf<kKind>::type;
  if (!glstm_cluster_shape_ok(args.Hg, cluster_size)) return cudaErrorInvalidValue;
  return launch_on_clusters(glstm_cluster_fwd_kernel<kKind>,
                            glstm_cluster_fwd_layout(args.Hg, cluster_size, kKind).total_bytes,
                            glstm_fwd_batch_tile(kKind), args.B, args.G, cluster_size, stream, args.proj,
                            static_cast<const Element*>(args.h0), args.c0,
                            static_cast<const Element*>(args.weight_hh), static_cast<Element*>(args.output),
                            args.cell, args.T, args.B, args.G, args.Hg, cluster_size);
}

template <ElementKind kKind>
cudaError_t launch_cluster_bwd(const GlstmBwdArgs& args, int cluster_size, cudaStream_t stream) {
  using Element = typename ElementOf<kKind>::type;
  if (!glstm_cluster_shape_ok(args.Hg, cluster_size)) return cudaErrorInvalidValue;
  return launch_on_clusters(glstm_cluster_bwd_kernel<kKind>,
                            glstm_cluster_bwd_layout(args.Hg, cluster_size, kKind).total_bytes,
                            glstm_bwd_batch_tile(kKind),
                            args.B, args.G, cluster_size, stream, args.pre_gates,
                            static_cast<const Element*>(args.grad_output), args.grad_cell, args.c0, args.cell,
                            static_cast<const Element*>(args.weight_hh), args.dgates, args.dh0, args.dc0, args.T,
                            args.B, args.G, args.Hg, cluster_size);
}

}  // namespace

cudaError_t launch_glstm_cluster_fwd(ElementKind kind, const GlstmFwdArgs& args, int cluster_size,
                                     cudaStream_t stream) {
  return dispatch_element_kind(
      kind, [&](auto element) { return launch_cluster_fwd<decltype(element)::value>(args, cluster_size, stream); });
}

cudaError_t launch_glstm_cluster_bwd(ElementKind kind, const GlstmBwdArgs& args, int cluster_size,
                                     cudaStream_t stream) {
  return dispatch_element_kind(
      kind, [&](auto element) { return launch_cluster_bwd<decltype(element)::value>(args, cluster_size, stream); });
}

cudaError_t glstm_cluster_max_active_clusters(ElementKind kind, int Hg, int cluster_size, int* count) {
  return dispatch_element_kind(
      kind, [&](auto element) { return max_active_clusters<decltype(element)::value>(Hg, cluster_size, count); });
}

}  // namespace lstmkern
