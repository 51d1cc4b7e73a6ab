// Host entry points of the persistent LSTM kernels (csrc/glstm_persistent.cu, csrc/glstm_cluster.cu,
// csrc/flstm_persistent.cu, csrc/flstm_cluster.cu, csrc/flstm_cluster_bwd.cu, csrc/flstm_grid.cu,
// csrc/flstm_grid_bwd.cu).
//
// The kernels' translation units include no torch headers (they compile in seconds and tests/test_cuda_build.py can
// compile them standalone for the ptxas resource report); the torch-facing launchers in cuda_ops.cpp prepare the
// tensors, call these functions and check the launch with C10_CUDA_KERNEL_LAUNCH_CHECK.
//
// Every function makes sure the kernel's dynamic shared memory limit is raised (cudaFuncSetAttribute, once per device
// and kernel: LaunchCache in persistent_common.cuh, safe from several host threads) and launches it on `stream` with
// cudaLaunchKernelEx. It returns the error of cudaFuncSetAttribute (and launches nothing when that failed) or of the
// launch call. Element pointers are `void*` of the type named by `kind` (float, __half or __nv_bfloat16; at::Half /
// at::BFloat16 share those layouts). All tensors are contiguous; shapes as commented. Alignment: every pointer must be
// aligned to its element type (torch guarantees that), and FlstmFwdArgs::h0 of the grid forward to 16 bytes (it is
// read with 16-byte loads; the launcher in cuda_ops.cpp copies a misaligned h0, launch_flstm_grid_fwd refuses one).
#pragma once

#include <cuda_runtime_api.h>

#include "persistent_layout.h"

namespace lstmkern {

struct GlstmFwdArgs {
  const float* proj;       // (T, B, G, 4Hg) float32: x W_ih^T + bias for every step
  const void* h0;          // (B, H) element
  const float* c0;         // (B, H) float32
  const void* weight_hh;   // (G, 4Hg, Hg) element
  void* output;            // (T, B, H) element, written
  float* cell;             // (T, B, H) float32, written
  int T, B, G, Hg;
};

struct GlstmBwdArgs {
  const float* pre_gates;    // (T, B, G, 4Hg) float32 pre-activation gates recomputed by the launcher
  const void* grad_output;   // (T, B, H) element
  const float* grad_cell;    // (T, B, H) float32 or nullptr
  const float* c0;           // (B, H) float32
  const float* cell;         // (T, B, H) float32 (the forward's cell sequence)
  const void* weight_hh;     // (G, 4Hg, Hg) element
  float* dgates;             // (T, B, G, 4Hg) float32, written: gradient of the pre-activation gates
  float* dh0;                // (B, H) float32, written
  float* dc0;                // (B, H) float32, written
  int T, B, G, Hg;
};

// The projected mode (projected = true; single-CTA, cluster and grid forwards) runs a projected G-LSTM (LSTMP) with
// `groups` = G groups on the same kernels (see projected_fwd_layout in persistent_layout.h): proj is (T, B, G, 4Hg),
// h0 (B, P), weight_1 W_hr (P, H) with I = 0 and R = P, weight_2 W_hh (G, 4Hg, Pg), output (T, B, P).
struct FlstmFwdArgs {
  const float* proj;       // (T, B, 4H) float32: W2 W1_x x_t + bias
  const void* h0;          // (B, H) element
  const float* c0;         // (B, H) float32
  const void* weight_1;    // (R, I + H) element; the kernel reads the recurrent columns I..I+H-1
  const void* weight_2;    // (4H, R) element
  void* output;            // (T, B, H) element, written
  float* cell;             // (T, B, H) float32, written
  int T, B, I, H, R;
  int groups = 1;          // G of a projected G-LSTM; 1 for the F-LSTM
  bool projected = false;
};

// The projected mode of the backward kernels (projected = true; single-CTA, cluster and grid) runs the backward of a
// projected G-LSTM with `groups` = G groups (see projected_bwd_cluster_size in persistent_layout.h): pre_gates and
// dgates are (T, B, G, 4Hg), grad_output (T, B, P), weight_1 W_hr (P, H) with I = 0 and R = P, weight_2 W_hh
// (G, 4Hg, Pg), dh0 (B, P); the kernels also write dz (T, B, P) float32: the total gradient reaching each output row
// h_t (grad_output[t] plus the recurrent part), from which the launcher forms dW_hr.
struct FlstmBwdArgs {
  const float* pre_gates;    // (T, B, 4H) float32
  const void* grad_output;   // (T, B, H) element
  const float* grad_cell;    // (T, B, H) float32 or nullptr
  const float* c0;           // (B, H) float32
  const float* cell;         // (T, B, H) float32
  const void* weight_1;      // (R, I + H) element
  const void* weight_2;      // (4H, R) element
  float* dgates;             // (T, B, 4H) float32, written
  float* dh0;                // (B, H) float32, written
  float* dc0;                // (B, H) float32, written
  int T, B, I, H, R;
  int groups = 1;            // G of a projected G-LSTM; 1 for the F-LSTM
  bool projected = false;
};

cudaError_t launch_glstm_persistent_fwd(ElementKind kind, const GlstmFwdArgs& args, cudaStream_t stream);
cudaError_t launch_glstm_persistent_bwd(ElementKind kind, const GlstmBwdArgs& args, cudaStream_t stream);
// The thread-block-cluster G-LSTM forward (csrc/glstm_cluster.cu): same arguments and results as the single-CTA
// forward, each group spread over a cluster of `cluster_size` CTAs. Needs compute capability 9.x (the caller checks)
// and glstm_cluster_shape_ok(Hg, cluster_size) (cudaErrorInvalidValue otherwise); returns cudaErrorInvalidClusterSize
// when no cluster of that size with glstm_cluster_fwd_layout's shared memory can be resident, and otherwise the
// error of cudaLaunchKernelEx itself.
cudaError_t launch_glstm_cluster_fwd(ElementKind kind, const GlstmFwdArgs& args, int cluster_size,
                                     cudaStream_t stream);
// The thread-block-cluster G-LSTM backward (csrc/glstm_cluster.cu): same arguments, results and conditions as the
// single-CTA backward and the cluster forward above.
cudaError_t launch_glstm_cluster_bwd(ElementKind kind, const GlstmBwdArgs& args, int cluster_size,
                                     cudaStream_t stream);
// How many clusters of the cluster G-LSTM forward with `cluster_size` CTAs (and its shared memory for Hg) the current
// device can hold at once (cudaOccupancyMaxActiveClusters); 0 means it cannot be launched there. Launches nothing.
cudaError_t glstm_cluster_max_active_clusters(ElementKind kind, int Hg, int cluster_size, int* count);
cudaError_t launch_flstm_persistent_fwd(ElementKind kind, const FlstmFwdArgs& args, cudaStream_t stream);
// The single-CTA F-LSTM backward; in the projected mode `dz` (T, B, P) float32 is written too (the F-LSTM launcher
// forms its dz from dgates itself and passes nullptr).
cudaError_t launch_flstm_persistent_bwd(ElementKind kind, const FlstmBwdArgs& args, cudaStream_t stream,
                                        float* dz = nullptr);
// The thread-block-cluster F-LSTM forward (csrc/flstm_cluster.cu): same arguments and results as the single-CTA
// forward, each batch tile spread over a cluster of `cluster_size` CTAs (2, 4, 8, or 16 with the non-portable cluster
// size allowed). Needs compute capability 9.x (the caller checks) and flstm_cluster_shape_ok(H, R, cluster_size)
// (cudaErrorInvalidValue otherwise); returns cudaErrorInvalidClusterSize when no cluster of that size with
// flstm_cluster_fwd_layout's shared memory can be resident, and otherwise the error of cudaLaunchKernelEx itself.
cudaError_t launch_flstm_cluster_fwd(ElementKind kind, const FlstmFwdArgs& args, int cluster_size,
                                     cudaStream_t stream);
// How many clusters of the cluster F-LSTM forward with `cluster_size` CTAs (and its shared memory for (H, R)) the
// current device can hold at once (cudaOccupancyMaxActiveClusters); 0 means it cannot be launched there (e.g. no GPC
// with 16 free SMs for C = 16). Launches nothing.
cudaError_t flstm_cluster_max_active_clusters(ElementKind kind, int H, int R, int cluster_size, int* count);
// The thread-block-cluster F-LSTM backward (csrc/flstm_cluster_bwd.cu): same arguments and results as the
// single-CTA backward, plus `dz` (T, B, R) float32, written: dz_t = dgates_t W2, from which the caller forms dW1 and
// dx.
// Each batch tile runs on a cluster of `cluster_size` CTAs (2, 4, 8, or 16 with the non-portable cluster size
// allowed). Needs compute capability 9.x (the caller checks) and flstm_cluster_shape_ok(H, R, cluster_size)
// (cudaErrorInvalidValue otherwise); returns cudaErrorInvalidClusterSize when no cluster of that size with
// flstm_cluster_bwd_layout's shared memory can be resident, and otherwise the error of cudaLaunchKernelEx itself.
// In the projected mode (args.projected; projected_cluster_shape_ok(H, R = P, G, cluster_size)) dz is the total
// gradient reaching each output row (T, B, P), and dh0 (B, P).
cudaError_t launch_flstm_cluster_bwd(ElementKind kind, const FlstmBwdArgs& args, int cluster_size, float* dz,
                                     cudaStream_t stream);
// How many clusters of the cluster F-LSTM backward with `cluster_size` CTAs the current device can hold at once.
cudaError_t flstm_cluster_bwd_max_active_clusters(ElementKind kind, int H, int R, int cluster_size, int* count);
// The same for the cluster backward in the projected mode (H cell units, P projection size, G groups).
cudaError_t projected_cluster_bwd_max_active_clusters(ElementKind kind, int H, int P, int G, int cluster_size,
                                                      int* count);
// The same for the cluster forward in the projected mode (H cell units, P projection size, G groups).
cudaError_t projected_cluster_max_active_clusters(ElementKind kind, int H, int P, int G, int cluster_size,
                                                  int* count);
// The grid-cooperative F-LSTM forward (csrc/flstm_grid.cu): same arguments and results as the single-CTA forward, the
// whole batch on `ctas` co-resident CTAs (H / ctas hidden units each) with z exchanged through the global workspace:
// `partials` (ctas, Bp, R) float32 and `z` (Bp, R) element type, Bp = B rounded up to flstm_cluster_batch_tile(kind),
// neither needs initialising. Needs compute capability >= 8.0 (the caller checks) and
// flstm_grid_shape_ok(H, R, ctas) and args.h0 aligned to kFlstmGridH0Alignment bytes (cudaErrorInvalidValue
// otherwise); returns cudaErrorCooperativeLaunchTooLarge when
// the ctas CTAs with flstm_grid_fwd_layout's shared memory cannot all be resident on the current device, and
// otherwise the error of cudaLaunchKernelEx itself.
// Alignment in bytes the grid forward needs of FlstmFwdArgs::h0: it stages h0 into shared memory with 16-byte loads,
// like every later h_{t-1} (which it reads from its own 256-byte aligned output).
constexpr int kFlstmGridH0Alignment = 16;
// In the projected mode (args.projected; projected_grid_shape_ok(H, R = P, G, ctas)) `z` is unused (the kernel's z
// is its output) and `m_workspace` (B, H) element type holds the cell's m_t between the cell and the exchange.
cudaError_t launch_flstm_grid_fwd(ElementKind kind, const FlstmFwdArgs& args, int ctas, float* partials, void* z,
                                  cudaStream_t stream, void* m_workspace = nullptr);
// How many CTAs of the grid F-LSTM forward (its shared memory for (H, R, ctas)) the current device can hold at once.
cudaError_t flstm_grid_max_resident_ctas(ElementKind kind, int H, int R, int ctas, int* count);
// The same for the grid forward in the projected mode (H cell units, P projection size, G groups).
cudaError_t projected_grid_max_resident_ctas(ElementKind kind, int H, int P, int G, int ctas, int* count);
// The grid-cooperative F-LSTM backward (csrc/flstm_grid_bwd.cu): same arguments and results as the cluster backward
// (dz (T, B, R) float32, written), the whole batch on `ctas` co-resident CTAs (H / ctas hidden units each) with dz
// exchanged through the global workspace: `partials` (ctas, Bp, R) float32 and `dz_rounded` (Bp, R) element type,
// Bp = B rounded up to flstm_cluster_batch_tile(kind); neither needs initialising, nor does args.dc0 (the kernel keeps
// the running dc there). Needs compute capability >= 8.0 (the caller checks) and flstm_grid_shape_ok(H, R, ctas)
// (cudaErrorInvalidValue otherwise); returns cudaErrorCooperativeLaunchTooLarge when the ctas CTAs with
// flstm_grid_bwd_layout's shared memory cannot all be resident, and otherwise the error of cudaLaunchKernelEx itself.
// In the projected mode (args.projected; projected_grid_shape_ok(H, R = P, G, ctas)) dz and dh0 as for the cluster
// backward; the workspace has the same shapes with R = P.
cudaError_t launch_flstm_grid_bwd(ElementKind kind, const FlstmBwdArgs& args, int ctas, float* dz, float* partials,
                                  void* dz_rounded, cudaStream_t stream);
// How many CTAs of the grid F-LSTM backward (its shared memory for (H, R, ctas)) the current device can hold at once.
cudaError_t flstm_grid_bwd_max_resident_ctas(ElementKind kind, int H, int R, int ctas, int* count);
// The same for the grid backward in the projected mode (H cell units, P projection size, G groups).
cudaError_t projected_grid_bwd_max_resident_ctas(ElementKind kind, int H, int P, int G, int ctas, int* count);

}  // namespace lstmkern
