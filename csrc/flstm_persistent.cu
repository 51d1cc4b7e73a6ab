// Persistent F-LSTM kernels, "whole layer fits one CTA" variant: one launch walks the whole sequence.
//
// Shape legend: T time steps, B batch, I input features, H hidden units, R rank, BT batch tile.
//
// gates_t = P_t + W2 (W1_h h_{t-1}), P_t = W2 W1_x x_t + b precomputed by the launcher (two time-parallel GEMMs).
// Forward: each CTA owns a batch tile and keeps all of W1_h (R x H) and W2 (4H x R) in shared memory for the whole
// sequence; per step z = W1_h h_{t-1} (R per row), then gates = W2 z, then the cell (c in float32 shared memory).
// Batch tiles are independent, so block barriers are the only synchronisation. Projected mode (`projected`, a
// projected G-LSTM / LSTMP with G = `groups` groups, see projected_fwd_layout in persistent_layout.h): W1_h := W_hr
// (P x H), R := P, W2 := W_hh (block-diagonal over the groups); per step gates = W2 z (z = h_{t-1}, starting from h0),
// the cell gives m, and z = h_t = m W_hr^T rounded to the element type is both the output and the next step's z. Forwards whose weights do not fit one
// CTA's opt-in shared memory run on several CTAs that reduce z between them: a thread-block cluster
// (csrc/flstm_cluster.cu, compute capability 9.x) or the whole grid (csrc/flstm_grid.cu); cuda_ops.cpp picks the kernel.
// Backward: reverse time with the same residency; dgates from the cell backward, dz = dgates W2, dh = dz W1_h (all
// float32 FMA); weight gradients and dx are time-parallel GEMMs in the launcher. Its projected mode (the projected
// G-LSTM's backward; see the kernel) adds grad_output at the P-wide dz instead of at dh. Where it does not fit, the
// cluster (csrc/flstm_cluster_bwd.cu) or grid (csrc/flstm_grid_bwd.cu) backward runs, else Triton's.
//
// All matrix products here are float32 FMA loops: one thread per output column with one register accumulator per
// batch row, the weight operand stored so that a warp's threads read consecutive addresses and the activation
// operand read as a shared-memory broadcast.
#include "persistent_common.cuh"
#include "persistent_kernels.h"

namespace lstmkern {
namespace {

constexpr int kBatchTile = kFlstmBatchTile;

// out[b][n] = sum_k in[b][k] * weight[k * n_cols + n] for all kBatchTile rows of `in` (K columns) and n < n_cols,
// rounded to OutputElement (and stored as float32): the forward's z = h W1_h^T is rounded to the element type like the
// reference's matmul in x's dtype; the backward's products stay float32.
// Block-diagonal form (the projected G-LSTM's gate product, `groups` > 1): output column n belongs to group
// n / (n_cols / groups) and reads only that group's K / groups columns of `in`; weight is (K / groups x n_cols).
template <typename OutputElement, typename Weight>
__device__ __forceinline__ void tile_matmul(const float* __restrict__ in, int K, const Weight* __restrict__ weight,
                                            int n_cols, float* __restrict__ out, int groups = 1) {
  const int k_per_group = K / groups;
  const int n_per_group = n_cols / groups;
  for (int n = threadIdx.x; n < n_cols; n += blockDim.x) {
    const float* in_group = in + (n / n_per_group) * k_per_group;
    float acc[kBatchTile];
#pragma unroll
    for (int b = 0; b < kBatchTile; ++b) acc[b] = 0.0f;
    for (int k = 0; k < k_per_group; ++k) {
      const float w = to_float(weight[static_cast<int64_t>(k) * n_cols + n]);
#pragma unroll
      for (int b = 0; b < kBatchTile; ++b) acc[b] = fmaf(in_group[b * K + k], w, acc[b]);
    }
#pragma unroll
    for (int b = 0; b < kBatchTile; ++b) out[b * n_cols + n] = to_float(from_float<OutputElement>(acc[b]));
  }
}

template <ElementKind kKind>
__global__ void __launch_bounds__(kThreadsPerBlock)
flstm_persistent_fwd_kernel(const float* __restrict__ proj, const typename ElementOf<kKind>::type* __restrict__ h0,
                            const float* __restrict__ c0, const typename ElementOf<kKind>::type* __restrict__ weight_1,
                            const typename ElementOf<kKind>::type* __restrict__ weight_2,
                            typename ElementOf<kKind>::type* __restrict__ output, float* __restrict__ cell, int T,
                            int B, int I, int H, int R, int groups, bool projected) {
  using Element = typename ElementOf<kKind>::type;
  const FlstmFwdLayout layout = flstm_fwd_layout(H, R, kKind, groups);
  unsigned char* const smem = dynamic_smem();
  Element* w1h_t = reinterpret_cast<Element*>(smem + layout.w1h_offset);  // (H x R)
  Element* w2_t = reinterpret_cast<Element*>(smem + layout.w2_offset);    // (R / groups x 4H)
  float* h_tile = reinterpret_cast<float*>(smem + layout.h_offset);       // (BT x H): h_{t-1}, or m_{t-1} projected
  float* z_tile = reinterpret_cast<float*>(smem + layout.z_offset);       // (BT x R)
  float* gates = reinterpret_cast<float*>(smem + layout.gates_offset);    // (BT x 4H)
  float* c_tile = reinterpret_cast<float*>(smem + layout.c_offset);       // (BT x H)

  const int batch_start = blockIdx.x * kBatchTile;
  const int batch_rows = min(kBatchTile, B - batch_start);
  const int four_h = 4 * H;
  const int hg = H / groups;  // units per group: gate q of unit (g, j) is column g 4Hg + q Hg + j of W2, P_t, gates
  const int w2_cols = R / groups;
  const int64_t w1_ld = static_cast<int64_t>(I) + H;

  zero_shared(smem, layout.total_bytes);
  __syncthreads();
  // Global-order loops (coalesced reads), transposed shared-memory writes.
  for (int idx = threadIdx.x; idx < R * H; idx += blockDim.x) {
    const int q = idx / H;
    const int k = idx - q * H;
    w1h_t[static_cast<int64_t>(k) * R + q] = weight_1[q * w1_ld + I + k];
  }
  for (int idx = threadIdx.x; idx < four_h * w2_cols; idx += blockDim.x) {
    const int r = idx / w2_cols;
    const int q = idx - r * w2_cols;
    w2_t[static_cast<int64_t>(q) * four_h + r] = weight_2[idx];
  }
  for (int idx = threadIdx.x; idx < batch_rows * H; idx += blockDim.x) {
    const int b = idx / H;
    const int j = idx - b * H;
    const int64_t state_idx = static_cast<int64_t>(batch_start + b) * H + j;
    if (!projected) h_tile[b * H + j] = to_float(h0[state_idx]);
    c_tile[b * H + j] = c0[state_idx];
  }
  if (projected) {  // h0 (B, P) is the z of step 0
    for (int idx = threadIdx.x; idx < batch_rows * R; idx += blockDim.x) {
      z_tile[idx] = to_float(h0[static_cast<int64_t>(batch_start) * R + idx]);
    }
  }
  __syncthreads();

  for (int t = 0; t < T; ++t) {
    if (!projected) {
      tile_matmul<Element>(h_tile, H, w1h_t, R, z_tile);  // z = h_{t-1} W1_h^T, rounded to the element type
      __syncthreads();
    }
    tile_matmul<float>(z_tile, R, w2_t, four_h, gates, groups);  // gates = z W2^T (rounded in the cell)
    __syncthreads();
    for (int idx = threadIdx.x; idx < batch_rows * H; idx += blockDim.x) {
      const int b = idx / H;
      const int j = idx - b * H;
      const int group = j / hg;
      const int gate_col = group * 4 * hg + (j - group * hg);  // column of gate i; gate q is q Hg further
      const int64_t row = static_cast<int64_t>(t) * B + batch_start + b;
      const float* proj_row = proj + row * four_h + gate_col;
      const float* gates_row = gates + b * four_h + gate_col;
      float c = c_tile[b * H + j];
      const float h = lstm_cell_forward(pre_activation<Element>(proj_row[0], gates_row[0]),
                                        pre_activation<Element>(proj_row[hg], gates_row[hg]),
                                        pre_activation<Element>(proj_row[2 * hg], gates_row[2 * hg]),
                                        pre_activation<Element>(proj_row[3 * hg], gates_row[3 * hg]), c);
      const Element h_rounded = from_float<Element>(h);
      const int64_t state_idx = row * H + j;
      c_tile[b * H + j] = c;
      cell[state_idx] = c;
      if (!projected) output[state_idx] = h_rounded;
      h_tile[b * H + j] = to_float(h_rounded);  // the next product multiplies the rounded h (or m), like the reference
    }
    __syncthreads();
    if (projected) {
      // h_t = m_t W_hr^T rounded to the element type (the reference's projection in x's dtype): the layer's output
      // and the next step's z.
      tile_matmul<Element>(h_tile, H, w1h_t, R, z_tile);
      __syncthreads();
      Element* output_t = output + (static_cast<int64_t>(t) * B + batch_start) * R;
      for (int idx = threadIdx.x; idx < batch_rows * R; idx += blockDim.x) {
        output_t[idx] = from_float<Element>(z_tile[idx]);  // exact: z_tile holds element-type values
      }
    }
  }
}

// kProjected: the projected mode (a template parameter, so the F-LSTM's instantiation compiles as without it). There
// W1_h := W_hr (P x H, I = 0), R := P, W2 := W_hh held as (4Hg x P) (flstm_bwd_layout with `groups`), grad_output,
// dz and dh0 are P wide, pre_gates and dgates (T, B, G, 4Hg); per step t
//   dz_t = grad_output[t] + dz_rec_t  (P wide, the total gradient reaching h_t = W_hr m_t; dz_rec_{T-1} = 0),
//   dm_t = dz_t W_hr (H wide, the F-LSTM's dh product), then the cell backward with dh := dm_t,
//   dz_rec_{t-1} = dgates_t W_hh (block-diagonal: column p of group g = p / Pg reads that group's 4Hg dgates columns),
// and dz_t is written (float32, (T, B, P)) for the launcher's dW_hr; after step 0 the dz tile holds dh0 = dz_rec_{-1}.
template <ElementKind kKind, bool kProjected>
__global__ void __launch_bounds__(kThreadsPerBlock)
flstm_persistent_bwd_kernel(const float* __restrict__ pre_gates,
                            const typename ElementOf<kKind>::type* __restrict__ grad_output,
                            const float* __restrict__ grad_cell, const float* __restrict__ c0,
                            const float* __restrict__ cell, const typename ElementOf<kKind>::type* __restrict__ weight_1,
                            const typename ElementOf<kKind>::type* __restrict__ weight_2, float* __restrict__ dgates,
                            float* __restrict__ dz, float* __restrict__ dh0, float* __restrict__ dc0, int T, int B,
                            int I, int H, int R, int groups) {
  using Element = typename ElementOf<kKind>::type;
  if constexpr (!kProjected) groups = 1;  // the F-LSTM: one group
  const FlstmBwdLayout layout = flstm_bwd_layout(H, R, kKind, groups);
  unsigned char* const smem = dynamic_smem();
  Element* w2 = reinterpret_cast<Element*>(smem + layout.w2_offset);               // (4H x R), projected (4Hg x P)
  Element* w1h = reinterpret_cast<Element*>(smem + layout.w1h_offset);             // (R x H)
  float* dgates_tile = reinterpret_cast<float*>(smem + layout.dgates_offset);      // (BT x 4H)
  float* dz_tile = reinterpret_cast<float*>(smem + layout.dz_offset);              // (BT x R)
  float* dh_tile = reinterpret_cast<float*>(smem + layout.dh_offset);              // (BT x H): dh, projected dm
  float* dc_tile = reinterpret_cast<float*>(smem + layout.dc_offset);              // (BT x H)

  const int batch_start = blockIdx.x * kBatchTile;
  const int batch_rows = min(kBatchTile, B - batch_start);
  const int four_h = 4 * H;
  // Units per group: gate q of unit (g, j) is column g 4Hg + q Hg + j of pre_gates, dgates.
  const int hg = kProjected ? H / groups : H;
  const int64_t w1_ld = static_cast<int64_t>(I) + H;
  const int64_t state_stride = static_cast<int64_t>(B) * H;  // one time step of (T, B, H)

  zero_shared(smem, layout.total_bytes);  // dh, dc (and the projected mode's dz_rec) start at 0; rows >= batch_rows
                                          // stay 0
  __syncthreads();
  if constexpr (kProjected) {
    // W_hh (G, 4Hg, Pg) in global order -> w2[k * P + g Pg + q] (the (K / groups x n_cols) operand of tile_matmul).
    const int pg = R / groups;
    const int four_hg = 4 * hg;
    for (int idx = threadIdx.x; idx < four_h * pg; idx += blockDim.x) {
      const int group = idx / (four_hg * pg);
      const int rest = idx - group * four_hg * pg;
      const int k = rest / pg;
      const int q = rest - k * pg;
      w2[static_cast<int64_t>(k) * R + group * pg + q] = weight_2[idx];
    }
  } else {
    for (int idx = threadIdx.x; idx < four_h * R; idx += blockDim.x) w2[idx] = weight_2[idx];
  }
  for (int idx = threadIdx.x; idx < R * H; idx += blockDim.x) {
    const int q = idx / H;
    const int k = idx - q * H;
    w1h[idx] = weight_1[q * w1_ld + I + k];
  }
  __syncthreads();

  for (int t = T - 1; t >= 0; --t) {
    if constexpr (kProjected) {
      // dz_t = grad_output[t] + dz_rec_t (each element read and written by one thread), written out for dW_hr.
      const int64_t dz_row = (static_cast<int64_t>(t) * B + batch_start) * R;
      for (int idx = threadIdx.x; idx < batch_rows * R; idx += blockDim.x) {
        const float total = dz_tile[idx] + to_float(grad_output[dz_row + idx]);
        dz_tile[idx] = total;
        dz[dz_row + idx] = total;
      }
      __syncthreads();
      tile_matmul<float>(dz_tile, R, w1h, H, dh_tile);  // dm_t = dz_t W_hr
      __syncthreads();
    }
    for (int idx = threadIdx.x; idx < batch_rows * H; idx += blockDim.x) {
      const int b = idx / H;
      const int j = idx - b * H;
      // Column of gate i of unit j; gate q is q Hg further (Hg = H for the F-LSTM).
      const int gate_col = kProjected ? j / hg * 4 * hg + j % hg : j;
      const int64_t row = static_cast<int64_t>(t) * B + batch_start + b;
      const int64_t state_idx = row * H + j;
      float dh = dh_tile[b * H + j];  // projected: dm_t; grad_output entered at dz
      if constexpr (!kProjected) dh += to_float(grad_output[state_idx]);
      const float dc = dc_tile[b * H + j] + (grad_cell != nullptr ? grad_cell[state_idx] : 0.0f);
      const float c_prev =
          t > 0 ? cell[state_idx - state_stride] : c0[static_cast<int64_t>(batch_start + b) * H + j];
      const float* pre = pre_gates + row * four_h;
      const CellGrad grad = lstm_cell_backward(pre[gate_col], pre[hg + gate_col], pre[2 * hg + gate_col],
                                               pre[3 * hg + gate_col], c_prev, cell[state_idx], dh, dc);
      float* dgates_out = dgates + row * four_h;
      dgates_out[gate_col] = grad.d_i;
      dgates_out[hg + gate_col] = grad.d_f;
      dgates_out[2 * hg + gate_col] = grad.d_g;
      dgates_out[3 * hg + gate_col] = grad.d_o;
      float* dgates_row = dgates_tile + b * four_h;
      dgates_row[gate_col] = grad.d_i;
      dgates_row[hg + gate_col] = grad.d_f;
      dgates_row[2 * hg + gate_col] = grad.d_g;
      dgates_row[3 * hg + gate_col] = grad.d_o;
      dc_tile[b * H + j] = grad.dc_prev;
    }
    __syncthreads();
    if constexpr (kProjected) {
      tile_matmul<float>(dgates_tile, four_h, w2, R, dz_tile, groups);  // dz_rec_{t-1} = dgates_t W_hh
    } else {
      tile_matmul<float>(dgates_tile, four_h, w2, R, dz_tile);  // dz = dgates W2
      __syncthreads();
      tile_matmul<float>(dz_tile, R, w1h, H, dh_tile);  // dh_{t-1} = dz W1_h
    }
    __syncthreads();
  }

  if constexpr (kProjected) {  // dh0 (B, P) = dz_rec_{-1}
    for (int idx = threadIdx.x; idx < batch_rows * R; idx += blockDim.x) {
      dh0[static_cast<int64_t>(batch_start) * R + idx] = dz_tile[idx];
    }
  }
  for (int idx = threadIdx.x; idx < batch_rows * H; idx += blockDim.x) {
    const int b = idx / H;
    const int j = idx - b * H;
    const int64_t state_idx = static_cast<int64_t>(batch_start + b) * H + j;
    if (!kProjected) dh0[state_idx] = dh_tile[b * H + j];
    dc0[state_idx] = dc_tile[b * H + j];
  }
}

template <ElementKind kKind>
cudaError_t launch_fwd(const FlstmFwdArgs& args, cudaStream_t stream) {
  using Element = typename ElementOf<kKind>::type;
  if (args.projected ? !projected_shape_ok(args.H, args.R, args.groups) : args.groups != 1) {
    return cudaErrorInvalidValue;
  }
  const int64_t smem_bytes = flstm_fwd_layout(args.H, args.R, kKind, args.groups).total_bytes;
  const dim3 grid((args.B + kBatchTile - 1) / kBatchTile);
  return launch_plain(flstm_persistent_fwd_kernel<kKind>, grid, smem_bytes, stream,
      args.proj, static_cast<const Element*>(args.h0), args.c0, static_cast<const Element*>(args.weight_1),
      static_cast<const Element*>(args.weight_2), static_cast<Element*>(args.output), args.cell, args.T, args.B,
      args.I, args.H, args.R, args.groups, args.projected);
}

template <ElementKind kKind, bool kProjected>
cudaError_t launch_bwd(const FlstmBwdArgs& args, float* dz, cudaStream_t stream) {
  using Element = typename ElementOf<kKind>::type;
  if (kProjected ? !projected_shape_ok(args.H, args.R, args.groups) || dz == nullptr : args.groups != 1) {
    return cudaErrorInvalidValue;
  }
  const int64_t smem_bytes = flstm_bwd_layout(args.H, args.R, kKind, args.groups).total_bytes;
  const dim3 grid((args.B + kBatchTile - 1) / kBatchTile);
  return launch_plain(flstm_persistent_bwd_kernel<kKind, kProjected>, grid, smem_bytes, stream,
      args.pre_gates, static_cast<const Element*>(args.grad_output), args.grad_cell, args.c0, args.cell,
      static_cast<const Element*>(args.weight_1), static_cast<const Element*>(args.weight_2), args.dgates, dz,
      args.dh0, args.dc0, args.T, args.B, args.I, args.H, args.R, args.groups);
}

}  // namespace

cudaError_t launch_flstm_persistent_fwd(ElementKind kind, const FlstmFwdArgs& args, cudaStream_t stream) {
  return dispatch_element_kind(
      kind, [&](auto element) { return launch_fwd<decltype(element)::value>(args, stream); });
}

cudaError_t launch_flstm_persistent_bwd(ElementKind kind, const FlstmBwdArgs& args, cudaStream_t stream, float* dz) {
  return dispatch_element_kind(kind, [&](auto element) {
    constexpr ElementKind kKind = decltype(element)::value;
    return args.projected ? launch_bwd<kKind, true>(args, dz, stream) : launch_bwd<kKind, false>(args, dz, stream);
  });
}

}  // namespace lstmkern
