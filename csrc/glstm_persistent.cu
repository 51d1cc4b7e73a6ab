// Persistent G-LSTM kernels: one launch walks the whole sequence.
//
// Shape legend: T time steps, B batch, G groups, Hg hidden units per group, H = G * Hg, BT batch tile.
//
// Forward: CTA (batch tile, g) loads W_hh[g] into shared memory once and keeps it for all T steps. Each step it
// multiplies its tile of h_{t-1}[g] (BT x Hg, in shared memory) by W_hh[g]^T (WMMA m16n16k16 with float32
// accumulators for fp16/bf16; float32 FMA for fp32), adds the precomputed input projection P_t (float32, from one
// batched GEMM in the launcher) and runs the cell with c in float32 shared memory. h_t is rounded to the element
// type before it is stored and before the next step multiplies it, exactly like the reference. Groups and batch
// tiles are independent, so two __syncthreads per step are the only synchronisation (no grid sync).
//
// Backward: same CTA decomposition, reverse time, with the backward's own batch tile (glstm_bwd_batch_tile: 16 rows
// for WMMA, 8 for the float32 FMA path). The launcher recomputes every step's pre-activation gates in one
// time-parallel GEMM; per step the kernel forms dgates (cell backward, float32; written to global memory in float32)
// and dh_{t-1} = dgates W_hh[g] with W_hh[g] resident in shared memory as stored (the row-major B operand): for
// fp16/bf16 on tensor cores (wmma_product, csrc/tile_products.cuh: m16n16k16, float32 accumulators) with dgates
// rounded to the element type as the A operand only, for fp32 on float32 FMA (fma_product). Weight gradients and dx
// are time-parallel GEMMs in the launcher from the float32 dgates. Two __syncthreads per step order the cell phase
// (reads dh, writes the dgates tile) and the product (reads the dgates tile, writes dh).
//
// Precision of the backward: the fp16/bf16 recurrent product rounds dgates to the element type where the reference
// keeps them in float32 (as csrc/flstm_cluster_bwd.cu does, and cuDNN); tests/test_emu.py holds all three dtypes to
// the tolerance rule of tests/kernel_checks.py against the float64 reference. In fp16 the rounded operand takes
// fp16's range (gradients below 2^-14 lose bits; loss scaling keeps training gradients above that).
#include <mma.h>

#include <type_traits>

#include "persistent_common.cuh"
#include "persistent_kernels.h"
#include "tile_products.cuh"

namespace lstmkern {
namespace {

template <ElementKind kKind>
__global__ void __launch_bounds__(kThreadsPerBlock)
glstm_persistent_fwd_kernel(const float* __restrict__ proj, const typename ElementOf<kKind>::type* __restrict__ h0,
                            const float* __restrict__ c0,
                            const typename ElementOf<kKind>::type* __restrict__ weight_hh,
                            typename ElementOf<kKind>::type* __restrict__ output, float* __restrict__ cell, int T,
                            int B, int G, int Hg) {
  using Element = typename ElementOf<kKind>::type;
  constexpr bool kWmma = uses_wmma(kKind);
  constexpr int kBatchTile = glstm_fwd_batch_tile(kKind);
  // h tile: the WMMA A operand in the element type, or float32 for the FMA loop.
  using HTile = std::conditional_t<kWmma, Element, float>;

  const GlstmFwdLayout layout = glstm_fwd_layout(Hg, kKind);
  unsigned char* const smem = dynamic_smem();
  Element* w_t = reinterpret_cast<Element*>(smem + layout.w_offset);
  HTile* h_tile = reinterpret_cast<HTile*>(smem + layout.h_offset);
  float* gates = reinterpret_cast<float*>(smem + layout.gates_offset);
  float* c_tile = reinterpret_cast<float*>(smem + layout.c_offset);

  const int group = blockIdx.y;
  const int batch_start = blockIdx.x * kBatchTile;
  const int batch_rows = min(kBatchTile, B - batch_start);
  const int64_t H = static_cast<int64_t>(G) * Hg;
  const int four_hg = 4 * Hg;

  zero_shared(smem, layout.total_bytes);
  __syncthreads();

  // W_hh[g] (4Hg x Hg, row-major) -> w_t[k][r], read in global order so the loads coalesce.
  const Element* weight = weight_hh + static_cast<int64_t>(group) * four_hg * Hg;
  for (int idx = threadIdx.x; idx < four_hg * Hg; idx += blockDim.x) {
    const int row = idx / Hg;
    const int col = idx - row * Hg;
    w_t[static_cast<int64_t>(col) * layout.w_ld + row] = weight[idx];
  }
  for (int idx = threadIdx.x; idx < batch_rows * Hg; idx += blockDim.x) {
    const int b = idx / Hg;
    const int j = idx - b * Hg;
    const int64_t state_idx = (batch_start + b) * H + static_cast<int64_t>(group) * Hg + j;
    if constexpr (kWmma) {
      h_tile[b * layout.h_ld + j] = h0[state_idx];
    } else {
      h_tile[b * layout.h_ld + j] = to_float(h0[state_idx]);
    }
    c_tile[b * Hg + j] = c0[state_idx];
  }
  __syncthreads();

  for (int t = 0; t < T; ++t) {
    // gates = h_{t-1} W_hh[g]^T for the tile (rows >= batch_rows are zero and ignored).
    if constexpr (kWmma) {
      namespace wmma = nvcuda::wmma;
      const int warp = threadIdx.x / 32;
      const int num_warps = blockDim.x / 32;
      const int n_tiles = static_cast<int>(round_up(four_hg, kWmmaTile)) / kWmmaTile;
      const int k_tiles = static_cast<int>(layout.w_rows) / kWmmaTile;
      for (int n_tile = warp; n_tile < n_tiles; n_tile += num_warps) {
        wmma::fragment<wmma::accumulator, kWmmaTile, kWmmaTile, kWmmaTile, float> acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int k_tile = 0; k_tile < k_tiles; ++k_tile) {
          wmma::fragment<wmma::matrix_a, kWmmaTile, kWmmaTile, kWmmaTile, Element, wmma::row_major> a_frag;
          wmma::fragment<wmma::matrix_b, kWmmaTile, kWmmaTile, kWmmaTile, Element, wmma::row_major> b_frag;
          wmma::load_matrix_sync(a_frag, h_tile + k_tile * kWmmaTile, static_cast<unsigned>(layout.h_ld));
          wmma::load_matrix_sync(b_frag, w_t + static_cast<int64_t>(k_tile) * kWmmaTile * layout.w_ld +
                                             n_tile * kWmmaTile,
                                 static_cast<unsigned>(layout.w_ld));
          wmma::mma_sync(acc, a_frag, b_frag, acc);
        }
        wmma::store_matrix_sync(gates + n_tile * kWmmaTile, acc, static_cast<unsigned>(layout.gates_ld),
                                wmma::mem_row_major);
      }
    } else {
      // One thread per gate row r, one register accumulator per batch row; w_t[k][r] is contiguous across the
      // warp and h_tile[b][k] is a broadcast.
      for (int r = threadIdx.x; r < four_hg; r += blockDim.x) {
        float acc[kBatchTile];
#pragma unroll
        for (int b = 0; b < kBatchTile; ++b) acc[b] = 0.0f;
        for (int k = 0; k < Hg; ++k) {
          const float w = to_float(w_t[static_cast<int64_t>(k) * layout.w_ld + r]);
#pragma unroll
          for (int b = 0; b < kBatchTile; ++b) acc[b] = fmaf(h_tile[b * layout.h_ld + k], w, acc[b]);
        }
#pragma unroll
        for (int b = 0; b < kBatchTile; ++b) gates[b * layout.gates_ld + r] = acc[b];
      }
    }
    __syncthreads();

    // Cell: one thread per (batch row, hidden unit) of the tile.
    for (int idx = threadIdx.x; idx < batch_rows * Hg; idx += blockDim.x) {
      const int b = idx / Hg;
      const int j = idx - b * Hg;
      const int64_t row = static_cast<int64_t>(t) * B + batch_start + b;
      const float* proj_row = proj + (row * G + group) * four_hg;
      const float* gates_row = gates + b * layout.gates_ld;
      float c = c_tile[b * Hg + j];
      const float h = lstm_cell_forward(pre_activation<Element>(proj_row[j], gates_row[j]),
                                        pre_activation<Element>(proj_row[Hg + j], gates_row[Hg + j]),
                                        pre_activation<Element>(proj_row[2 * Hg + j], gates_row[2 * Hg + j]),
                                        pre_activation<Element>(proj_row[3 * Hg + j], gates_row[3 * Hg + j]), c);
      const Element h_rounded = from_float<Element>(h);
      const int64_t state_idx = row * H + static_cast<int64_t>(group) * Hg + j;
      c_tile[b * Hg + j] = c;
      cell[state_idx] = c;
      output[state_idx] = h_rounded;
      if constexpr (kWmma) {
        h_tile[b * layout.h_ld + j] = h_rounded;
      } else {
        h_tile[b * layout.h_ld + j] = to_float(h_rounded);
      }
    }
    __syncthreads();
  }
}

template <ElementKind kKind>
__global__ void __launch_bounds__(kThreadsPerBlock)
glstm_persistent_bwd_kernel(const float* __restrict__ pre_gates,
                            const typename ElementOf<kKind>::type* __restrict__ grad_output,
                            const float* __restrict__ grad_cell, const float* __restrict__ c0,
                            const float* __restrict__ cell,
                            const typename ElementOf<kKind>::type* __restrict__ weight_hh,
                            float* __restrict__ dgates, float* __restrict__ dh0, float* __restrict__ dc0, int T,
                            int B, int G, int Hg) {
  using Element = typename ElementOf<kKind>::type;
  constexpr bool kWmma = uses_wmma(kKind);
  constexpr int kBatchTile = glstm_bwd_batch_tile(kKind);

  const GlstmBwdLayout layout = glstm_bwd_layout(Hg, kKind);
  const int w_ld = static_cast<int>(layout.w_ld);
  const int dgates_ld = static_cast<int>(layout.dgates_ld);
  const int dh_ld = static_cast<int>(layout.dh_ld);
  unsigned char* const smem = dynamic_smem();
  Element* w = reinterpret_cast<Element*>(smem + layout.w_offset);                 // (w_rows x w_ld)
  Element* dgates_tile = reinterpret_cast<Element*>(smem + layout.dgates_offset);  // (BT x dgates_ld)
  float* dh_tile = reinterpret_cast<float*>(smem + layout.dh_offset);              // (BT x dh_ld)
  float* dc_tile = reinterpret_cast<float*>(smem + layout.dc_offset);              // (BT x Hg)

  const int group = blockIdx.y;
  const int batch_start = blockIdx.x * kBatchTile;
  const int batch_rows = min(kBatchTile, B - batch_start);
  const int64_t H = static_cast<int64_t>(G) * Hg;
  const int four_hg = 4 * Hg;

  // dh, dc start at 0; the WMMA padding of w and of the dgates tile, and dgates rows >= batch_rows, stay 0.
  zero_shared(smem, layout.total_bytes);
  __syncthreads();
  // W_hh[g] (4Hg x Hg) -> w[r][k], consecutive threads on consecutive k: coalesced on both sides.
  const Element* weight = weight_hh + static_cast<int64_t>(group) * four_hg * Hg;
  for (int idx = threadIdx.x; idx < four_hg * Hg; idx += blockDim.x) {
    const int r = idx / Hg;
    const int k = idx - r * Hg;
    w[static_cast<int64_t>(r) * w_ld + k] = weight[idx];
  }
  __syncthreads();

  for (int t = T - 1; t >= 0; --t) {
    // Cell backward: one thread per (batch row, hidden unit); the same thread owns dc_tile[b][j] every step.
    for (int idx = threadIdx.x; idx < batch_rows * Hg; idx += blockDim.x) {
      const int b = idx / Hg;
      const int j = idx - b * Hg;
      const int64_t row = static_cast<int64_t>(t) * B + batch_start + b;
      const int64_t state_idx = row * H + static_cast<int64_t>(group) * Hg + j;
      const float dh = dh_tile[b * dh_ld + j] + to_float(grad_output[state_idx]);
      // grad_cell is read-only for the whole launch: loaded through the read-only data cache (with a plain load, ptxas
      // of CUDA 13.0 spilled 8 bytes in the fp16 instantiation; test_cuda_build rejects spills).
      const float dc = dc_tile[b * Hg + j] + (grad_cell != nullptr ? __ldg(grad_cell + state_idx) : 0.0f);
      const float c_prev = t > 0 ? cell[state_idx - B * H] : c0[(batch_start + b) * H + group * Hg + j];
      const int64_t gates_offset = (row * G + group) * four_hg;
      const float* pre = pre_gates + gates_offset;
      const CellGrad grad =
          lstm_cell_backward(pre[j], pre[Hg + j], pre[2 * Hg + j], pre[3 * Hg + j], c_prev, cell[state_idx], dh, dc);
      float* dgates_out = dgates + gates_offset;
      dgates_out[j] = grad.d_i;
      dgates_out[Hg + j] = grad.d_f;
      dgates_out[2 * Hg + j] = grad.d_g;
      dgates_out[3 * Hg + j] = grad.d_o;
      // The product's A operand: rounded to fp16/bf16 for the tensor cores (float32 stays float32).
      Element* dgates_row = dgates_tile + b * dgates_ld;
      dgates_row[j] = from_float<Element>(grad.d_i);
      dgates_row[Hg + j] = from_float<Element>(grad.d_f);
      dgates_row[2 * Hg + j] = from_float<Element>(grad.d_g);
      dgates_row[3 * Hg + j] = from_float<Element>(grad.d_o);
      dc_tile[b * Hg + j] = grad.dc_prev;
    }
    __syncthreads();

    // dh_{t-1} = dgates W_hh[g] (BT x Hg; rows >= batch_rows are 0 and never read, and so are the WMMA padding
    // columns of dh).
    if constexpr (kWmma) {
      const int n_tiles = static_cast<int>(round_up(Hg, kWmmaTile)) / kWmmaTile;  // dh columns, padded
      const int k_tiles = static_cast<int>(layout.w_rows) / kWmmaTile;              // the 4Hg gate rows, padded
      wmma_product(dgates_tile, dgates_ld, w, w_ld, dh_tile, dh_ld, n_tiles, k_tiles);
    } else {
      fma_product<kBatchTile>(dgates_tile, dgates_ld, w, w_ld, dh_tile, dh_ld, Hg, four_hg);
    }
    __syncthreads();
  }

  for (int idx = threadIdx.x; idx < batch_rows * Hg; idx += blockDim.x) {
    const int b = idx / Hg;
    const int j = idx - b * Hg;
    const int64_t state_idx = (batch_start + b) * H + static_cast<int64_t>(group) * Hg + j;
    dh0[state_idx] = dh_tile[b * dh_ld + j];
    dc0[state_idx] = dc_tile[b * Hg + j];
  }
}

template <ElementKind kKind>
cudaError_t launch_fwd(const GlstmFwdArgs& args, cudaStream_t stream) {
  using Element = typename ElementOf<kKind>::type;
  const int64_t smem_bytes = glstm_fwd_layout(args.Hg, kKind).total_bytes;
  const dim3 grid((args.B + glstm_fwd_batch_tile(kKind) - 1) / glstm_fwd_batch_tile(kKind), args.G);
  return launch_plain(glstm_persistent_fwd_kernel<kKind>, grid, smem_bytes, stream,
      args.proj, static_cast<const Element*>(args.h0), args.c0, static_cast<const Element*>(args.weight_hh),
      static_cast<Element*>(args.output), args.cell, args.T, args.B, args.G, args.Hg);
}

template <ElementKind kKind>
cudaError_t launch_bwd(const GlstmBwdArgs& args, cudaStream_t stream) {
  using Element = typename ElementOf<kKind>::type;
  const int64_t smem_bytes = glstm_bwd_layout(args.Hg, kKind).total_bytes;
  const dim3 grid((args.B + glstm_bwd_batch_tile(kKind) - 1) / glstm_bwd_batch_tile(kKind), args.G);
  return launch_plain(glstm_persistent_bwd_kernel<kKind>, grid, smem_bytes, stream,
      args.pre_gates, static_cast<const Element*>(args.grad_output), args.grad_cell, args.c0, args.cell,
      static_cast<const Element*>(args.weight_hh), args.dgates, args.dh0, args.dc0, args.T, args.B, args.G, args.Hg);
}

}  // namespace

cudaError_t launch_glstm_persistent_fwd(ElementKind kind, const GlstmFwdArgs& args, cudaStream_t stream) {
  return dispatch_element_kind(
      kind, [&](auto element) { return launch_fwd<decltype(element)::value>(args, stream); });
}

cudaError_t launch_glstm_persistent_bwd(ElementKind kind, const GlstmBwdArgs& args, cudaStream_t stream) {
  return dispatch_element_kind(
      kind, [&](auto element) { return launch_bwd<decltype(element)::value>(args, stream); });
}

}  // namespace lstmkern
