// The schemas of the kernel ops, one list for both libraries that register them: `lstmkern_cuda` (csrc/extension.cpp,
// the CUDA kernels) and `lstmkern_emu` (csrc/emu/module.cpp, the same launchers and kernel sources run by the CPU
// emulator). A kernel op added here exists in both with the identical schema (tests/test_emu.py compares them).
//
// Shapes: see lstmkern/reference.py. All tensors contiguous, on the kernels' device, of x's dtype except `cell` /
// `grad_cell` (float32, the state dtype). Outputs follow the backend contract in lstmkern/backends/__init__.py.
#pragma once

namespace lstmkern {

inline constexpr const char* kKernelOpSchemas[] = {
    // cluster_size: 0 = automatic (single CTA where the single-CTA forward and backward fit, else the smallest
    // thread-block cluster that fits on compute capability 9.x; see glstm_fwd_cluster_size in persistent_layout.h),
    // 1 = force the single-CTA kernel, 2 / 4 / 8 = force the cluster kernel with that many CTAs per group.
    // weight_hr (P, H): a projected layer (LSTMP; h0 (B, P), weight_hh (G, 4Hg, P / G), output (T, B, P)), run on the
    // F-LSTM forward kernels in their projected mode; cluster_size then counts CTAs per batch tile: 0 = automatic
    // (projected_fwd_cluster_size, else the grid forward on projected_fwd_grid_ctas CTAs), 1 = single CTA,
    // 2 / 4 / 8 / 16 = cluster (a multiple of G); grid_ctas = N >= 1 forces the grid forward (projected layers only,
    // cluster_size then 0). weight_ih may be (G, 4Hg, I) (dense input) with or without a projection.
    "glstm_persistent_fwd(Tensor x, Tensor h0, Tensor c0, Tensor weight_ih, Tensor weight_hh, Tensor? bias, "
    "int cluster_size=0, Tensor? weight_hr=None, int grid_ctas=0) -> (Tensor output, Tensor cell)",
    // cluster_size as for the forward (0: single CTA where its backward fits, else the smallest fitting cluster on
    // 9.x). weight_hr (P, H): the projected layer's backward on the F-LSTM backward kernels in their projected mode
    // (grad_output and dh0 P wide); cluster_size 0 = automatic (projected_bwd_cluster_size, else the grid backward on
    // projected_bwd_grid_ctas CTAs), 1 = single CTA, 2 / 4 / 8 / 16 = cluster (a multiple of G); grid_ctas = N >= 1
    // forces the grid backward (projected layers only). dweight_hr is (P, H) with weight_hr, an empty (0,) tensor
    // without.
    "glstm_persistent_bwd(Tensor grad_output, Tensor? grad_cell, Tensor x, Tensor h0, Tensor c0, "
    "Tensor weight_ih, Tensor weight_hh, Tensor? bias, Tensor output, Tensor cell, int cluster_size=0, "
    "Tensor? weight_hr=None, int grid_ctas=0) -> "
    "(Tensor dx, Tensor dh0, Tensor dc0, Tensor dweight_ih, Tensor dweight_hh, Tensor dbias, Tensor dweight_hr)",
    // cluster_size: 0 = automatic (single CTA where it fits, else the smallest thread-block cluster that fits on
    // compute capability 9.x; see flstm_fwd_cluster_size in persistent_layout.h), 1 = force the single-CTA kernel,
    // 2 / 4 / 8 / 16 = force the cluster kernel with that many CTAs per batch tile. Where neither the single CTA nor a
    // cluster fits, the automatic mode runs the grid-cooperative forward on the smallest fitting number of CTAs
    // N <= SM count (flstm_fwd_grid_ctas); grid_ctas = N >= 1 forces that kernel (cluster_size must then be 0).
    "flstm_persistent_fwd(Tensor x, Tensor h0, Tensor c0, Tensor weight_1, Tensor weight_2, Tensor? bias, "
    "int cluster_size=0, int grid_ctas=0) -> (Tensor output, Tensor cell)",
    // cluster_size: 0 = automatic (single CTA where its backward fits, else the smallest thread-block cluster whose
    // backward layout fits on compute capability 9.x; see flstm_bwd_cluster_size in persistent_layout.h), 1 = force the
    // single-CTA kernel, 2 / 4 / 8 / 16 = force the cluster backward with that many CTAs per batch tile. Where neither
    // fits, the automatic mode runs the grid-cooperative backward on the smallest fitting number of CTAs N <= SM count
    // (flstm_bwd_grid_ctas); grid_ctas = N >= 1 forces that kernel (cluster_size must then be 0).
    "flstm_persistent_bwd(Tensor grad_output, Tensor? grad_cell, Tensor x, Tensor h0, Tensor c0, "
    "Tensor weight_1, Tensor weight_2, Tensor? bias, Tensor output, Tensor cell, int cluster_size=0, "
    "int grid_ctas=0) -> (Tensor dx, Tensor dh0, Tensor dc0, Tensor dweight_1, Tensor dweight_2, Tensor dbias)",
};

}  // namespace lstmkern
