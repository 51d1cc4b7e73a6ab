// CUDA implementations of the lstmkern_cuda ops (built only with CUDA): argument checks, the time-parallel GEMMs
// (input projection, gate recompute, weight gradients, dx; cuBLAS through ATen) and the launches of the persistent
// kernels of csrc/glstm_persistent.cu, csrc/glstm_cluster.cu, csrc/flstm_persistent.cu, csrc/flstm_cluster.cu,
// csrc/flstm_cluster_bwd.cu, csrc/flstm_grid.cu and csrc/flstm_grid_bwd.cu on the current stream (the grid F-LSTM
// kernels' global workspaces are allocated here).
//
// Shape legend: T time steps, B batch, I input features, H hidden units, G groups, Hg = H / G, Ig = I / G, R rank,
// C thread-block-cluster size of the cluster kernels, N CTA count of the grid F-LSTM forward.
// Numerics mirror lstmkern/reference.py: GEMMs with weights run in x's dtype and their results are converted to
// float32 before the bias is added; the recurrence, the cell state and all gradients before the final conversion
// are float32.
#include <ATen/ATen.h>
#if defined(LSTMKERN_EMU)
// The CPU emulator's build of these launchers (csrc/emu): CPU tensors, ATen's CPU GEMMs, the kernels run emulated.
#include "emu/c10_cuda_standins.h"
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <tuple>

#include "persistent_kernels.h"

namespace lstmkern {
namespace {

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
// The G-LSTM backward op's results: Grads and dweight_hr ((P, H) for a projected layer, an empty (0,) tensor else).
using GlstmGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The device the kernels run on: a CUDA GPU, or the CPU in the emulator's build (csrc/emu).
#if defined(LSTMKERN_EMU)
constexpr const char* kKernelDevice = "CPU (the emulator's device)";
bool on_kernel_device(const at::Tensor& tensor) { return tensor.is_cpu(); }
#else
constexpr const char* kKernelDevice = "CUDA";
bool on_kernel_device(const at::Tensor& tensor) { return tensor.is_cuda(); }
#endif

ElementKind element_kind_of(const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kFloat: return ElementKind::kFloat32;
    case at::kHalf: return ElementKind::kFloat16;
    case at::kBFloat16: return ElementKind::kBFloat16;
    default:
      TORCH_CHECK_TYPE(false, "x must be float32, float16 or bfloat16 for the persistent CUDA kernels, got ",
                       x.scalar_type());
  }
}

// The element kind of a query op's `dtype` (occupancy questions asked before any tensor exists).
ElementKind query_element_kind(at::ScalarType dtype) {
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16, "dtype must be float32, "
                   "float16 or bfloat16 for the persistent CUDA kernels, got ", dtype);
  return dtype == at::kFloat  ? ElementKind::kFloat32
         : dtype == at::kHalf ? ElementKind::kFloat16
                              : ElementKind::kBFloat16;
}

// `tensor` (named `name`) must be a contiguous CUDA tensor on x's device with the given dtype and shape.
void check_tensor(const at::Tensor& tensor, const char* name, const at::Tensor& x, at::ScalarType dtype,
                  at::IntArrayRef shape) {
  TORCH_CHECK_VALUE(on_kernel_device(tensor), name, " must be a ", kKernelDevice, " tensor, got device ",
                    tensor.device());
  TORCH_CHECK_VALUE(tensor.device() == x.device(), name, " must be on x's device ", x.device(), ", got ",
                    tensor.device());
  TORCH_CHECK_TYPE(tensor.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ", tensor.scalar_type());
  TORCH_CHECK_VALUE(tensor.sizes() == shape, name, " must have shape ", shape, ", got ", tensor.sizes());
  TORCH_CHECK_VALUE(tensor.is_contiguous(), name, " must be contiguous");
}

void check_x(const at::Tensor& x) {
  TORCH_CHECK_VALUE(on_kernel_device(x), "x must be a ", kKernelDevice, " tensor, got device ", x.device());
  TORCH_CHECK_VALUE(x.dim() == 3, "x must be (T, B, I), got shape ", x.sizes());
  TORCH_CHECK_VALUE(x.is_contiguous(), "x must be contiguous");
  element_kind_of(x);
}

// `tensor` itself where its data pointer is a multiple of `alignment` bytes, else a contiguous copy in a fresh
// allocation (CUDA allocations start 256-byte aligned, CPU ones 64). A contiguous tensor that views its storage at an
// offset (e.g. torch.empty(n + 1)[1:].view(B, H), or one row of a larger batch) is only element-aligned, and a kernel
// that reads it with vector loads would fault. Which pointers need more than element alignment: only h0 of the grid
// F-LSTM forward (kFlstmGridH0Alignment = 16 bytes); every other user tensor is read element by element, and the
// WMMA fragments and vector stores of the kernels touch only shared memory and buffers allocated here.
at::Tensor aligned_or_copy(const at::Tensor& tensor, int64_t alignment) {
  if (reinterpret_cast<uintptr_t>(tensor.const_data_ptr()) % static_cast<uintptr_t>(alignment) == 0) return tensor;
  return tensor.clone(at::MemoryFormat::Contiguous);
}

void check_fits_int32(int64_t value, const char* what) {
  TORCH_CHECK_VALUE(value <= std::numeric_limits<int>::max(), what, " = ", value, " exceeds the kernels' int32 range");
}

// The persistent kernels need compute capability >= 8.0 and `smem_bytes` of opt-in dynamic shared memory per block.
void check_device_fits(int device, int64_t smem_bytes, const char* what) {
  int major = 0;
  int smem_optin = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  TORCH_CHECK_VALUE(major >= 8, "the persistent kernels need compute capability >= 8.0, device ", device, " has ",
                    major, ".x");
  TORCH_CHECK_VALUE(smem_bytes <= smem_optin, what, " needs ", smem_bytes, " bytes of shared memory per block, device ",
                    device, " allows ", smem_optin, " (see lstmkern.backends.cuda.persistent_rule)");
}

int device_cc_major(int device) {
  int major = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  return major;
}

int64_t device_smem_optin(int64_t device) {
  int smem_optin = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                        static_cast<int>(device)));
  return smem_optin;
}

int64_t device_sm_count(int device) {
  int sm_count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  return sm_count;
}

// What code a kernel's occupancy query can expect on a device: the cluster kernels are built for sm_90a only, the
// grid-cooperative forwards for every compute capability >= 8.0.
enum class KernelArch { kSm90a, kSm80Plus };

// The common tail of the occupancy query ops below (each first validates its shape and dtype, which raise): 0 where
// the kernel cannot run on CUDA device `device` at all (its compute capability is not `arch`, or its `smem_bytes` per
// CTA exceed the opt-in limit, which cudaFuncSetAttribute would refuse), else what `occupancy(int* count)` (one of
// the launchers' cudaOccupancy queries) answers with `device` current.
template <typename Occupancy>
int64_t occupancy_or_zero(int64_t device, KernelArch arch, int64_t smem_bytes, Occupancy occupancy) {
  const int cc_major = device_cc_major(static_cast<int>(device));
  if (arch == KernelArch::kSm90a ? cc_major != 9 : cc_major < 8) return 0;
  if (smem_bytes > device_smem_optin(device)) return 0;
  const c10::cuda::CUDAGuard device_guard(static_cast<c10::DeviceIndex>(device));
  int count = 0;
  C10_CUDA_CHECK(occupancy(&count));
  return count;
}

int64_t flstm_cluster_max_active(int64_t device, int64_t hidden, int64_t rank, int64_t cluster_size,
                                  at::ScalarType dtype) {
  TORCH_CHECK_VALUE(flstm_cluster_shape_ok(hidden, rank, cluster_size), "the cluster F-LSTM forward takes "
                    "cluster_size 2, 4, 8 or 16, hidden a multiple of 16 * cluster_size and rank a multiple of 16, got "
                    "cluster_size = ", cluster_size, ", hidden = ", hidden, ", rank = ", rank);
  const ElementKind kind = query_element_kind(dtype);
  return occupancy_or_zero(device, KernelArch::kSm90a, flstm_cluster_smem_bytes(hidden, rank, cluster_size, kind),
                           [&](int* count) {
                             return flstm_cluster_max_active_clusters(kind, static_cast<int>(hidden),
                                                                      static_cast<int>(rank),
                                                                      static_cast<int>(cluster_size), count);
                           });
}

// The same for the cluster F-LSTM backward (its own shared memory for hidden, rank).
int64_t flstm_cluster_bwd_max_active(int64_t device, int64_t hidden, int64_t rank, int64_t cluster_size,
                                     at::ScalarType dtype) {
  TORCH_CHECK_VALUE(flstm_cluster_shape_ok(hidden, rank, cluster_size), "the cluster F-LSTM backward takes "
                    "cluster_size 2, 4, 8 or 16, hidden a multiple of 16 * cluster_size and rank a multiple of 16, got "
                    "cluster_size = ", cluster_size, ", hidden = ", hidden, ", rank = ", rank);
  const ElementKind kind = query_element_kind(dtype);
  return occupancy_or_zero(device, KernelArch::kSm90a, flstm_cluster_bwd_smem_bytes(hidden, rank, cluster_size, kind),
                           [&](int* count) {
                             return flstm_cluster_bwd_max_active_clusters(kind, static_cast<int>(hidden),
                                                                          static_cast<int>(rank),
                                                                          static_cast<int>(cluster_size), count);
                           });
}

int64_t projected_cluster_max_active(int64_t device, int64_t hidden, int64_t proj, int64_t groups,
                                     int64_t cluster_size, at::ScalarType dtype) {
  TORCH_CHECK_VALUE(projected_cluster_shape_ok(hidden, proj, groups, cluster_size), "the cluster projected forward "
                    "takes cluster_size 2, 4, 8 or 16 a multiple of groups, hidden a multiple of 16 * cluster_size and "
                    "proj / groups a multiple of 16, got cluster_size = ", cluster_size, ", hidden = ", hidden,
                    ", proj = ", proj, ", groups = ", groups);
  const ElementKind kind = query_element_kind(dtype);
  return occupancy_or_zero(device, KernelArch::kSm90a,
                           projected_cluster_smem_bytes(hidden, proj, groups, cluster_size, kind), [&](int* count) {
                             return projected_cluster_max_active_clusters(kind, static_cast<int>(hidden),
                                                                          static_cast<int>(proj),
                                                                          static_cast<int>(groups),
                                                                          static_cast<int>(cluster_size), count);
                           });
}

int64_t projected_grid_max_resident(int64_t device, int64_t hidden, int64_t proj, int64_t groups, int64_t grid_ctas,
                                    at::ScalarType dtype) {
  TORCH_CHECK_VALUE(projected_grid_shape_ok(hidden, proj, groups, grid_ctas), "the grid projected forward takes "
                    "grid_ctas >= 1 a multiple of groups, hidden a multiple of 16 * grid_ctas and proj / groups a "
                    "multiple of 16, got grid_ctas = ", grid_ctas, ", hidden = ", hidden, ", proj = ", proj,
                    ", groups = ", groups);
  const ElementKind kind = query_element_kind(dtype);
  return occupancy_or_zero(device, KernelArch::kSm80Plus,
                           projected_grid_smem_bytes(hidden, proj, groups, grid_ctas, kind), [&](int* count) {
                             return projected_grid_max_resident_ctas(kind, static_cast<int>(hidden),
                                                                     static_cast<int>(proj), static_cast<int>(groups),
                                                                     static_cast<int>(grid_ctas), count);
                           });
}

// The same for the projected backward (its own shared memory for hidden, proj, groups).
int64_t projected_cluster_bwd_max_active(int64_t device, int64_t hidden, int64_t proj, int64_t groups,
                                         int64_t cluster_size, at::ScalarType dtype) {
  TORCH_CHECK_VALUE(projected_cluster_shape_ok(hidden, proj, groups, cluster_size), "the cluster projected backward "
                    "takes cluster_size 2, 4, 8 or 16 a multiple of groups, hidden a multiple of 16 * cluster_size and "
                    "proj / groups a multiple of 16, got cluster_size = ", cluster_size, ", hidden = ", hidden,
                    ", proj = ", proj, ", groups = ", groups);
  const ElementKind kind = query_element_kind(dtype);
  return occupancy_or_zero(device, KernelArch::kSm90a,
                           projected_cluster_bwd_smem_bytes(hidden, proj, groups, cluster_size, kind),
                           [&](int* count) {
                             return projected_cluster_bwd_max_active_clusters(kind, static_cast<int>(hidden),
                                                                              static_cast<int>(proj),
                                                                              static_cast<int>(groups),
                                                                              static_cast<int>(cluster_size), count);
                           });
}

int64_t projected_grid_bwd_max_resident(int64_t device, int64_t hidden, int64_t proj, int64_t groups,
                                        int64_t grid_ctas, at::ScalarType dtype) {
  TORCH_CHECK_VALUE(projected_grid_shape_ok(hidden, proj, groups, grid_ctas), "the grid projected backward takes "
                    "grid_ctas >= 1 a multiple of groups, hidden a multiple of 16 * grid_ctas and proj / groups a "
                    "multiple of 16, got grid_ctas = ", grid_ctas, ", hidden = ", hidden, ", proj = ", proj,
                    ", groups = ", groups);
  const ElementKind kind = query_element_kind(dtype);
  return occupancy_or_zero(device, KernelArch::kSm80Plus,
                           projected_grid_bwd_smem_bytes(hidden, proj, groups, grid_ctas, kind), [&](int* count) {
                             return projected_grid_bwd_max_resident_ctas(kind, static_cast<int>(hidden),
                                                                         static_cast<int>(proj),
                                                                         static_cast<int>(groups),
                                                                         static_cast<int>(grid_ctas), count);
                           });
}

int64_t glstm_cluster_max_active(int64_t device, int64_t hidden_per_group, int64_t cluster_size, at::ScalarType dtype) {
  TORCH_CHECK_VALUE(glstm_cluster_shape_ok(hidden_per_group, cluster_size), "the cluster G-LSTM forward takes "
                    "cluster_size 2, 4 or 8 with hidden_per_group a multiple of 16 * cluster_size, got cluster_size = ",
                    cluster_size, ", hidden_per_group = ", hidden_per_group);
  const ElementKind kind = query_element_kind(dtype);
  return occupancy_or_zero(device, KernelArch::kSm90a, glstm_cluster_smem_bytes(hidden_per_group, cluster_size, kind),
                           [&](int* count) {
                             return glstm_cluster_max_active_clusters(kind, static_cast<int>(hidden_per_group),
                                                                      static_cast<int>(cluster_size), count);
                           });
}

int64_t flstm_grid_max_resident(int64_t device, int64_t hidden, int64_t rank, int64_t grid_ctas, at::ScalarType dtype) {
  TORCH_CHECK_VALUE(flstm_grid_shape_ok(hidden, rank, grid_ctas), "the grid F-LSTM forward takes grid_ctas >= 1, "
                    "hidden a multiple of 16 * grid_ctas and rank a multiple of 16, got grid_ctas = ", grid_ctas,
                    ", hidden = ", hidden, ", rank = ", rank);
  const ElementKind kind = query_element_kind(dtype);
  return occupancy_or_zero(device, KernelArch::kSm80Plus, flstm_grid_smem_bytes(hidden, rank, grid_ctas, kind),
                           [&](int* count) {
                             return flstm_grid_max_resident_ctas(kind, static_cast<int>(hidden),
                                                                 static_cast<int>(rank), static_cast<int>(grid_ctas),
                                                                 count);
                           });
}

// The same for the grid F-LSTM backward (its own shared memory for hidden, rank, grid_ctas).
int64_t flstm_grid_bwd_max_resident(int64_t device, int64_t hidden, int64_t rank, int64_t grid_ctas,
                                    at::ScalarType dtype) {
  TORCH_CHECK_VALUE(flstm_grid_shape_ok(hidden, rank, grid_ctas), "the grid F-LSTM backward takes grid_ctas >= 1, "
                    "hidden a multiple of 16 * grid_ctas and rank a multiple of 16, got grid_ctas = ", grid_ctas,
                    ", hidden = ", hidden, ", rank = ", rank);
  const ElementKind kind = query_element_kind(dtype);
  return occupancy_or_zero(device, KernelArch::kSm80Plus, flstm_grid_bwd_smem_bytes(hidden, rank, grid_ctas, kind),
                           [&](int* count) {
                             return flstm_grid_bwd_max_resident_ctas(kind, static_cast<int>(hidden),
                                                                     static_cast<int>(rank),
                                                                     static_cast<int>(grid_ctas), count);
                           });
}

// ---------------------------------------------------------------------------------------------------------------
// G-LSTM

// P = Pg G is the projection size of a projected layer (weight_hr given), H otherwise; the input is dense (weight_ih
// (G, 4Hg, I): every group reads all of x) when dense_input, grouped (G, 4Hg, Ig) otherwise (the same for G = 1).
struct GlstmDims {
  int64_t T, B, I, G, Hg, Ig, H, Pg, P;
  bool dense_input;
};

GlstmDims check_glstm(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_ih,
                      const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias,
                      const std::optional<at::Tensor>& weight_hr = std::nullopt) {
  check_x(x);
  GlstmDims d{};
  if (weight_hr.has_value()) {
    TORCH_CHECK_VALUE(weight_hh.dim() == 3 && weight_hh.size(1) % 4 == 0 && weight_hh.size(1) >= 4 &&
                      weight_hh.size(2) >= 1, "weight_hh must be (G, 4Hg, P / G) with Hg, P >= 1 (a projected "
                      "layer), got shape ", weight_hh.sizes());
    d.Hg = weight_hh.size(1) / 4;
  } else {
    TORCH_CHECK_VALUE(weight_hh.dim() == 3 && weight_hh.size(1) == 4 * weight_hh.size(2) && weight_hh.size(2) >= 1,
                      "weight_hh must be (G, 4Hg, Hg) with Hg >= 1, got shape ", weight_hh.sizes());
    d.Hg = weight_hh.size(2);
  }
  d.T = x.size(0);
  d.B = x.size(1);
  d.I = x.size(2);
  d.G = weight_hh.size(0);
  d.H = d.G * d.Hg;
  d.Pg = weight_hh.size(2);
  d.P = d.G * d.Pg;
  TORCH_CHECK_VALUE(d.G >= 1 && d.G <= 65535, "G = ", d.G, " must be in [1, 65535] (the grid's y limit)");
  d.dense_input = d.G > 1 && weight_ih.dim() == 3 && weight_ih.size(2) == d.I;
  TORCH_CHECK_VALUE(d.dense_input || d.I % d.G == 0, "x's feature size I = ", d.I, " must be divisible by G = ", d.G,
                    " (grouped input) or weight_ih must be (G, 4Hg, I) (dense input)");
  d.Ig = d.dense_input ? d.I : d.I / d.G;
  check_fits_int32(d.T * d.B * d.H, "T * B * H");
  check_fits_int32(d.T * d.B * d.P, "T * B * P");
  check_fits_int32(d.B * d.G * 4 * d.Hg, "B * G * 4Hg");
  const at::ScalarType dtype = x.scalar_type();
  check_tensor(weight_hh, "weight_hh", x, dtype, {d.G, 4 * d.Hg, d.Pg});
  check_tensor(weight_ih, "weight_ih", x, dtype, {d.G, 4 * d.Hg, d.Ig});
  if (weight_hr.has_value()) check_tensor(*weight_hr, "weight_hr", x, dtype, {d.P, d.H});
  check_tensor(h0, "h0", x, dtype, {d.B, d.P});
  check_tensor(c0, "c0", x, dtype, {d.B, d.H});
  if (bias.has_value()) check_tensor(*bias, "bias", x, dtype, {d.G, 4 * d.Hg});
  return d;
}

// P[t, b, g, :] = x_t[g-slice] W_ih[g]^T (grouped input: one batched GEMM over all T and groups) or x_t W_ih[g]^T
// (dense input: one GEMM with the G 4Hg rows of W_ih), in x's dtype, converted to float32, plus bias:
// (T, B, G, 4Hg) float32, contiguous.
at::Tensor glstm_input_projection(const at::Tensor& x, const at::Tensor& weight_ih,
                                  const std::optional<at::Tensor>& bias, const GlstmDims& d) {
  at::Tensor proj = at::empty({d.T, d.B, d.G, 4 * d.Hg}, x.options().dtype(at::kFloat));
  if (d.dense_input) {
    proj.view({d.T * d.B, d.G * 4 * d.Hg}).copy_(at::mm(x.view({d.T * d.B, d.I}),
                                                        weight_ih.view({d.G * 4 * d.Hg, d.I}).t()));
  } else {
    const at::Tensor x_grouped = x.view({d.T * d.B, d.G, d.Ig}).transpose(0, 1);  // (G, T*B, Ig)
    const at::Tensor product = at::bmm(x_grouped, weight_ih.transpose(1, 2));      // (G, T*B, 4Hg)
    proj.view({d.T * d.B, d.G, 4 * d.Hg}).copy_(product.transpose(0, 1));
  }
  if (bias.has_value()) proj.add_(bias->to(at::kFloat).view({1, 1, d.G, 4 * d.Hg}));
  return proj;
}

// Which G-LSTM forward kernel runs: 1 = single CTA per (group, batch tile), C in {2, 4, 8} = cluster of C CTAs.
// `requested` is the op's cluster_size argument: 0 picks glstm_fwd_cluster_size (what lstmkern.backends.cuda's rule
// assumes), 1 or C forces that kernel (tests and compute-sanitizer runs use it to reach the cluster kernel at small
// Hg). Raises ValueError naming the reason where the kernel cannot run on `device`.
int glstm_forward_cluster_size(int64_t requested, int64_t hg, ElementKind kind, at::ScalarType dtype, int device) {
  const int64_t smem_optin = device_smem_optin(device);
  const int cc_major = device_cc_major(device);
  int64_t cluster_size = requested;
  if (requested == 0) {
    cluster_size = glstm_fwd_cluster_size(hg, kind, smem_optin, cc_major);
    TORCH_CHECK_VALUE(cluster_size != 0, "the G-LSTM forward kernel with Hg = ", hg, " in ", dtype, " needs ",
                      glstm_fwd_layout(hg, kind).total_bytes, " bytes of shared memory per block on one CTA, device ",
                      device, " allows ", smem_optin, ", and no thread-block cluster applies (compute capability 9.x, "
                      "C in {2, 4, 8} with Hg a multiple of 16 C and the per-CTA share fitting; see "
                      "lstmkern.backends.cuda.persistent_rule)");
  } else {
    TORCH_CHECK_VALUE(requested == 1 || glstm_cluster_shape_ok(hg, requested), "cluster_size must be 0 (automatic), "
                      "1 (single CTA), or 2, 4 or 8 with Hg a multiple of 16 * cluster_size; got cluster_size = ",
                      requested, " for Hg = ", hg);
  }
  if (cluster_size == 1) {
    check_device_fits(device, glstm_fwd_layout(hg, kind).total_bytes, "the G-LSTM forward kernel");
  } else {
    TORCH_CHECK_VALUE(cc_major == 9, "the cluster G-LSTM forward kernel needs compute capability 9.x (thread-block "
                      "clusters; its code is built for sm_90a), device ", device, " has ", cc_major, ".x");
    check_device_fits(device, glstm_cluster_smem_bytes(hg, cluster_size, kind), "the cluster G-LSTM forward kernel");
  }
  return static_cast<int>(cluster_size);
}

// Which F-LSTM kernel runs, forward (also in the projected mode) or backward: cluster_size 1 = single CTA per batch
// tile, C in {2, 4, 8, 16} = cluster of C CTAs per batch tile, or grid_ctas N >= 1 = the grid-cooperative kernel on N
// CTAs (cluster_size is then 0).
struct FlstmPlan {
  int cluster_size;
  int grid_ctas;
};

// Which projected kernel runs (the F-LSTM kernels in their projected mode), forward or backward: cluster_size 1 =
// single CTA per batch tile, C in {2, 4, 8, 16} = cluster of C CTAs per batch tile, or grid_ctas N >= 1 = the
// grid-cooperative kernel on N CTAs (cluster_size is then 0). `requested_cluster` and `requested_grid` as in
// flstm_plan: both 0 pick projected_{fwd,bwd}_cluster_size and, where that finds nothing, projected_{fwd,bwd}_grid_ctas
// (what lstmkern.backends.cuda's rule assumes); a nonzero one forces that kernel. Raises ValueError naming the reason
// where the kernel cannot run on `device`.
FlstmPlan projected_plan(bool backward, int64_t requested_cluster, int64_t requested_grid, const GlstmDims& d,
                         ElementKind kind, at::ScalarType dtype, int device) {
  const int64_t smem_optin = device_smem_optin(device);
  const int cc_major = device_cc_major(device);
  const int64_t sm_count = device_sm_count(device);
  const char* direction = backward ? "backward" : "forward";
  const std::string single_kernel = std::string("the projected ") + direction + " kernel";
  const std::string cluster_kernel = std::string("the cluster projected ") + direction + " kernel";
  const std::string grid_kernel = std::string("the grid projected ") + direction + " kernel";
  const int64_t single_bytes = backward ? projected_bwd_smem_bytes(d.H, d.P, d.G, kind)
                                        : projected_smem_bytes(d.H, d.P, d.G, kind);
  auto cluster_bytes = [&](int64_t c) {
    return backward ? projected_cluster_bwd_smem_bytes(d.H, d.P, d.G, c, kind)
                    : projected_cluster_smem_bytes(d.H, d.P, d.G, c, kind);
  };
  auto grid_bytes = [&](int64_t n) {
    return backward ? projected_grid_bwd_smem_bytes(d.H, d.P, d.G, n, kind)
                    : projected_grid_smem_bytes(d.H, d.P, d.G, n, kind);
  };
  TORCH_CHECK_VALUE(requested_grid >= 0, "grid_ctas must be 0 (automatic) or the number of CTAs of the grid "
                    "projected ", direction, ", got grid_ctas = ", requested_grid);
  if (requested_grid > 0) {
    TORCH_CHECK_VALUE(requested_cluster == 0, "cluster_size and grid_ctas cannot both be forced, got cluster_size = ",
                      requested_cluster, ", grid_ctas = ", requested_grid);
    TORCH_CHECK_VALUE(projected_grid_shape_ok(d.H, d.P, d.G, requested_grid), "the grid projected ", direction,
                      " takes grid_ctas >= 1 a multiple of G with H a multiple of 16 * grid_ctas and P / G a multiple "
                      "of 16; got grid_ctas = ", requested_grid, " for H = ", d.H, ", P = ", d.P, ", G = ", d.G);
    TORCH_CHECK_VALUE(requested_grid <= sm_count, "the grid projected ", direction, " runs one CTA per SM, all "
                      "co-resident: grid_ctas = ", requested_grid, " exceeds the ", sm_count, " SMs of device ",
                      device);
    check_device_fits(device, grid_bytes(requested_grid), grid_kernel.c_str());
    return {0, static_cast<int>(requested_grid)};
  }
  int64_t cluster_size = requested_cluster;
  if (requested_cluster == 0) {
    cluster_size = backward ? projected_bwd_cluster_size(d.H, d.P, d.G, kind, smem_optin, cc_major)
                            : projected_fwd_cluster_size(d.H, d.P, d.G, kind, smem_optin, cc_major);
    if (cluster_size == 0) {
      const int ctas = backward ? projected_bwd_grid_ctas(d.H, d.P, d.G, kind, smem_optin, sm_count)
                                : projected_fwd_grid_ctas(d.H, d.P, d.G, kind, smem_optin, sm_count);
      TORCH_CHECK_VALUE(ctas != 0, single_kernel, " with H = ", d.H, ", P = ", d.P, ", G = ", d.G, " in ", dtype,
                        " needs ", single_bytes, " bytes of shared memory per block on one CTA, device ", device,
                        " allows ", smem_optin, ", no thread-block cluster applies (compute capability 9.x, C in "
                        "{2, 4, 8, 16} a multiple of G with H a multiple of 16 C, P / G a multiple of 16 and the "
                        "per-CTA share fitting), and neither does the grid ", direction, " (N <= ", sm_count,
                        " CTAs, a multiple of G, with H a multiple of 16 N); see lstmkern.backends.cuda.",
                        backward ? "projected_bwd_grid_ctas" : "projected_rule");
      check_device_fits(device, grid_bytes(ctas), grid_kernel.c_str());
      return {0, ctas};
    }
  } else {
    TORCH_CHECK_VALUE(requested_cluster == 1 || projected_cluster_shape_ok(d.H, d.P, d.G, requested_cluster),
                      "cluster_size must be 0 (automatic), 1 (single CTA), or 2, 4, 8 or 16 with H a multiple of 16 "
                      "* cluster_size, cluster_size a multiple of G and P / G a multiple of 16 (a projected layer); "
                      "got cluster_size = ", requested_cluster, " for H = ", d.H, ", P = ", d.P, ", G = ", d.G);
  }
  if (cluster_size == 1) {
    check_device_fits(device, single_bytes, single_kernel.c_str());
  } else {
    TORCH_CHECK_VALUE(cc_major == 9, cluster_kernel, " needs compute capability 9.x (thread-block clusters; its code "
                      "is built for sm_90a), device ", device, " has ", cc_major, ".x");
    check_device_fits(device, cluster_bytes(cluster_size), cluster_kernel.c_str());
  }
  return {static_cast<int>(cluster_size), 0};
}

// Launches the F-LSTM forward kernel `plan` chose (args.projected: in the projected mode, args.R = P) on the current
// stream. The grid forward's global workspace is allocated here (see csrc/flstm_grid.cu): the per-rank partial z,
// (N, Bp, R) float32 with Bp = B rounded up to the batch tile, and either the reduced z, (Bp, R) in x's dtype, or in
// the projected mode the cell's m_t, (B, H) in x's dtype (there z of a step is the previous output row and the exchange
// writes h_t = W_hr m_t straight into the output). Raises, naming the kernel and its shared memory, where the planned
// CTAs cannot all be resident.
void launch_flstm_forward_plan(ElementKind kind, const FlstmFwdArgs& args, const FlstmPlan& plan,
                               const at::Tensor& x) {
  const char* name = args.projected ? "projected" : "F-LSTM";
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (plan.grid_ctas > 0) {
    const int64_t batch_tile = flstm_cluster_batch_tile(kind);
    const int64_t batch_pad = (args.B + batch_tile - 1) / batch_tile * batch_tile;
    check_fits_int32(batch_pad * args.R, args.projected ? "ceil(B / BT) BT * P" : "ceil(B / BT) BT * R");
    at::Tensor partials = at::empty({plan.grid_ctas, batch_pad, args.R}, x.options().dtype(at::kFloat));
    at::Tensor z_or_m = args.projected ? at::empty({args.B, args.H}, x.options())
                                       : at::empty({batch_pad, args.R}, x.options());
    void* const z = args.projected ? nullptr : z_or_m.mutable_data_ptr();
    void* const m_workspace = args.projected ? z_or_m.mutable_data_ptr() : nullptr;
    const cudaError_t err = launch_flstm_grid_fwd(kind, args, plan.grid_ctas, partials.mutable_data_ptr<float>(), z,
                                                  stream, m_workspace);
    const int64_t smem_bytes = args.projected
                                   ? projected_grid_smem_bytes(args.H, args.R, args.groups, plan.grid_ctas, kind)
                                   : flstm_grid_smem_bytes(args.H, args.R, plan.grid_ctas, kind);
    TORCH_CHECK(err != cudaErrorCooperativeLaunchTooLarge, "the grid ", name, " forward with N = ", plan.grid_ctas,
                " CTAs of ", smem_bytes, " bytes of shared memory each cannot all be resident on device ",
                x.get_device(), " (cudaOccupancyMaxActiveBlocksPerMultiprocessor x SM count < N; another context may "
                "hold SMs); use the Triton backend");
    C10_CUDA_CHECK(err);
  } else if (plan.cluster_size == 1) {
    C10_CUDA_CHECK(launch_flstm_persistent_fwd(kind, args, stream));
  } else {
    const int cluster = plan.cluster_size;
    const cudaError_t err = launch_flstm_cluster_fwd(kind, args, cluster, stream);
    const int64_t smem_bytes = args.projected
                                   ? projected_cluster_smem_bytes(args.H, args.R, args.groups, cluster, kind)
                                   : flstm_cluster_smem_bytes(args.H, args.R, cluster, kind);
    TORCH_CHECK(err != cudaErrorInvalidClusterSize, "the cluster ", name, " forward with C = ", cluster, " CTAs of ",
                smem_bytes, " bytes of shared memory each cannot be resident on device ", x.get_device(),
                " (cudaOccupancyMaxActiveClusters returned 0; clusters of 16 need a GPC with 16 free SMs and the "
                "non-portable cluster size); force another cluster_size (a larger one needs less shared memory per "
                "CTA) or use the Triton backend");
    C10_CUDA_CHECK(err);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The projected G-LSTM forward (weight_hr (P, H)): gates_t = P_t + W_hh (W_hr m_{t-1}) on the F-LSTM forward kernels
// in their projected mode (W1_h := W_hr, R := P, W2 := W_hh; see projected_fwd_layout in persistent_layout.h), with
// P_t = x W_ih^T + b from glstm_input_projection. Returns (output (T, B, P) in x's dtype, cell (T, B, H) float32).
std::tuple<at::Tensor, at::Tensor> projected_fwd(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                                                 const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                                 const std::optional<at::Tensor>& bias, const at::Tensor& weight_hr,
                                                 int64_t cluster_size, int64_t grid_ctas, const GlstmDims& d) {
  at::Tensor output = at::empty({d.T, d.B, d.P}, x.options());
  at::Tensor cell = at::empty({d.T, d.B, d.H}, x.options().dtype(at::kFloat));
  if (d.T == 0 || d.B == 0) return {output, cell};

  const ElementKind kind = element_kind_of(x);
  const FlstmPlan plan =
      projected_plan(false, cluster_size, grid_ctas, d, kind, x.scalar_type(), x.get_device());
  const at::Tensor proj = glstm_input_projection(x, weight_ih, bias, d);
  const at::Tensor c0_state = c0.to(at::kFloat).contiguous();
  // The grid forward stages h0 (its z of step 0) with 16-byte loads (see aligned_or_copy).
  const at::Tensor h0_kernel = plan.grid_ctas > 0 ? aligned_or_copy(h0, kFlstmGridH0Alignment) : h0;

  FlstmFwdArgs args{};
  args.proj = proj.const_data_ptr<float>();
  args.h0 = h0_kernel.const_data_ptr();
  args.c0 = c0_state.const_data_ptr<float>();
  args.weight_1 = weight_hr.const_data_ptr();
  args.weight_2 = weight_hh.const_data_ptr();
  args.output = output.mutable_data_ptr();
  args.cell = cell.mutable_data_ptr<float>();
  args.T = static_cast<int>(d.T);
  args.B = static_cast<int>(d.B);
  args.I = 0;  // W_hr has no input columns
  args.H = static_cast<int>(d.H);
  args.R = static_cast<int>(d.P);
  args.groups = static_cast<int>(d.G);
  args.projected = true;
  launch_flstm_forward_plan(kind, args, plan, x);
  return {output, cell};
}

std::tuple<at::Tensor, at::Tensor> glstm_persistent_fwd(const at::Tensor& x, const at::Tensor& h0,
                                                        const at::Tensor& c0, const at::Tensor& weight_ih,
                                                        const at::Tensor& weight_hh,
                                                        const std::optional<at::Tensor>& bias, int64_t cluster_size,
                                                        const std::optional<at::Tensor>& weight_hr,
                                                        int64_t grid_ctas) {
  const GlstmDims d = check_glstm(x, h0, c0, weight_ih, weight_hh, bias, weight_hr);
  const c10::cuda::CUDAGuard device_guard(x.device());
  if (weight_hr.has_value()) {
    return projected_fwd(x, h0, c0, weight_ih, weight_hh, bias, *weight_hr, cluster_size, grid_ctas, d);
  }
  TORCH_CHECK_VALUE(grid_ctas == 0, "grid_ctas applies to projected layers (weight_hr) only, got grid_ctas = ",
                    grid_ctas);
  at::Tensor output = at::empty({d.T, d.B, d.H}, x.options());
  at::Tensor cell = at::empty({d.T, d.B, d.H}, x.options().dtype(at::kFloat));
  if (d.T == 0 || d.B == 0) return {output, cell};

  const ElementKind kind = element_kind_of(x);
  const int cluster = glstm_forward_cluster_size(cluster_size, d.Hg, kind, x.scalar_type(), x.get_device());
  const at::Tensor proj = glstm_input_projection(x, weight_ih, bias, d);
  const at::Tensor c0_state = c0.to(at::kFloat).contiguous();

  GlstmFwdArgs args{};
  args.proj = proj.const_data_ptr<float>();
  args.h0 = h0.const_data_ptr();
  args.c0 = c0_state.const_data_ptr<float>();
  args.weight_hh = weight_hh.const_data_ptr();
  args.output = output.mutable_data_ptr();
  args.cell = cell.mutable_data_ptr<float>();
  args.T = static_cast<int>(d.T);
  args.B = static_cast<int>(d.B);
  args.G = static_cast<int>(d.G);
  args.Hg = static_cast<int>(d.Hg);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (cluster == 1) {
    C10_CUDA_CHECK(launch_glstm_persistent_fwd(kind, args, stream));
  } else {
    C10_CUDA_CHECK(launch_glstm_cluster_fwd(kind, args, cluster, stream));
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {output, cell};
}

// h_{t-1} for every step: [h0, output[0], ..., output[T-2]], (T, B, H) in x's dtype.
at::Tensor previous_hidden(const at::Tensor& h0, const at::Tensor& output) {
  return at::cat({h0.unsqueeze(0), output.narrow(0, 0, output.size(0) - 1)}, 0);
}

// The backward's float32 gradients of the pre-activations (dgates; F-LSTM's dz too) as the operand of the
// time-parallel weight-gradient and dx GEMMs: rounded to x's dtype for fp16/bf16, as cuDNN keeps them, so those GEMMs
// run on tensor cores (float32 accumulation, one rounding of the result, which is returned in x's dtype anyway)
// instead of float32 GEMMs on FMA (~200 GFLOP for glstm-train). The recurrence itself keeps float32 dgates. The extra
// rounding stays within the kernels' error rule (tests/kernel_checks.py: 3x the reference's own error in that dtype,
// which computes these GEMMs in float32), checked by the emulated tests that run these launchers.
at::Tensor gradient_gemm_operand(const at::Tensor& grad, at::ScalarType dtype) {
  return dtype == at::kFloat ? grad : grad.to(dtype);
}

at::Tensor state_grad_or_null(const std::optional<at::Tensor>& grad_cell, const at::Tensor& x, int64_t T, int64_t B,
                              int64_t H) {
  if (!grad_cell.has_value()) return at::Tensor();
  TORCH_CHECK_VALUE(on_kernel_device(*grad_cell) && grad_cell->device() == x.device(),
                    "grad_cell must be on x's device ", x.device(), ", got ", grad_cell->device());
  TORCH_CHECK_VALUE(grad_cell->sizes() == at::IntArrayRef({T, B, H}), "grad_cell must have shape (T, B, H) = (", T,
                    ", ", B, ", ", H, "), got ", grad_cell->sizes());
  return grad_cell->to(at::kFloat).contiguous();
}

// The backward counterpart of glstm_forward_cluster_size: 0 picks glstm_bwd_cluster_size (single CTA where it fits,
// else the smallest fitting cluster on 9.x), 1 or C forces that kernel.
int glstm_backward_cluster_size(int64_t requested, int64_t hg, ElementKind kind, at::ScalarType dtype, int device) {
  const int64_t smem_optin = device_smem_optin(device);
  const int cc_major = device_cc_major(device);
  int64_t cluster_size = requested;
  if (requested == 0) {
    cluster_size = glstm_bwd_cluster_size(hg, kind, smem_optin, cc_major);
    TORCH_CHECK_VALUE(cluster_size != 0, "the G-LSTM backward kernel with Hg = ", hg, " in ", dtype, " needs ",
                      glstm_bwd_layout(hg, kind).total_bytes, " bytes of shared memory per block on one CTA, device ",
                      device, " allows ", smem_optin, ", and no thread-block cluster applies (compute capability 9.x, "
                      "C in {2, 4, 8} with Hg a multiple of 16 C and the per-CTA share fitting)");
  } else {
    TORCH_CHECK_VALUE(requested == 1 || glstm_cluster_shape_ok(hg, requested), "cluster_size must be 0 (automatic), "
                      "1 (single CTA), or 2, 4 or 8 with Hg a multiple of 16 * cluster_size; got cluster_size = ",
                      requested, " for Hg = ", hg);
  }
  if (cluster_size == 1) {
    check_device_fits(device, glstm_bwd_layout(hg, kind).total_bytes, "the G-LSTM backward kernel");
  } else {
    TORCH_CHECK_VALUE(cc_major == 9, "the cluster G-LSTM backward kernel needs compute capability 9.x (thread-block "
                      "clusters; its code is built for sm_90a), device ", device, " has ", cc_major, ".x");
    check_device_fits(device, glstm_cluster_bwd_smem_bytes(hg, cluster_size, kind),
                      "the cluster G-LSTM backward kernel");
  }
  return static_cast<int>(cluster_size);
}

// Every step's pre-activation gates recomputed time-parallel: P + h_{t-1} W_hh^T (grouped; the product in x's dtype,
// converted to float32), h_prev = [h0; output[:-1]] (T, B, P) with P = H without a projection. (T, B, G, 4Hg) float32.
at::Tensor glstm_pre_gates(const at::Tensor& x, const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                           const std::optional<at::Tensor>& bias, const at::Tensor& h_prev, const GlstmDims& d) {
  at::Tensor pre_gates = glstm_input_projection(x, weight_ih, bias, d);
  const at::Tensor recurrent =
      at::bmm(h_prev.view({d.T * d.B, d.G, d.Pg}).transpose(0, 1), weight_hh.transpose(1, 2));  // (G, T*B, 4Hg)
  pre_gates.view({d.T * d.B, d.G, 4 * d.Hg}).add_(recurrent.transpose(0, 1));
  return pre_gates;
}

// The time-parallel gradient GEMMs every G-LSTM backward shares, from the kernel's float32 dgates (T, B, G, 4Hg):
// (dx, dweight_ih, dweight_hh, dbias) in float32 (fp32) or x's dtype (fp16/bf16, see gradient_gemm_operand), not yet
// converted. dweight_hh[g] = sum_t dgates_t[g]^T h_prev[g cols]; grouped or dense input as in glstm_input_projection;
// dbias from the float32 dgates.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> glstm_gradient_gemms(const at::Tensor& dgates,
                                                                             const at::Tensor& x,
                                                                             const at::Tensor& weight_ih,
                                                                             const at::Tensor& h_prev,
                                                                             const GlstmDims& d) {
  const at::Tensor dgates_gemm = gradient_gemm_operand(dgates, x.scalar_type());
  const at::Tensor dg = dgates_gemm.view({d.T * d.B, d.G, 4 * d.Hg}).transpose(0, 1);  // (G, T*B, 4Hg)
  const at::Tensor dg_t = dg.transpose(1, 2);                                          // (G, 4Hg, T*B)
  const at::Tensor h_grouped = h_prev.view({d.T * d.B, d.G, d.Pg}).transpose(0, 1);
  const at::Tensor dweight_hh = at::bmm(dg_t, h_grouped);
  at::Tensor dweight_ih;
  at::Tensor dx;
  if (d.dense_input) {  // every group read all of x: one GEMM each over the G 4Hg gate columns
    const at::Tensor dg_all = dgates_gemm.view({d.T * d.B, d.G * 4 * d.Hg});
    dweight_ih = at::mm(dg_all.t(), x.view({d.T * d.B, d.I})).view({d.G, 4 * d.Hg, d.I});
    dx = at::mm(dg_all, weight_ih.view({d.G * 4 * d.Hg, d.I})).view({d.T, d.B, d.I});
  } else {
    const at::Tensor x_grouped = x.view({d.T * d.B, d.G, d.Ig}).transpose(0, 1);
    dweight_ih = at::bmm(dg_t, x_grouped);
    dx = at::bmm(dg, weight_ih).transpose(0, 1).reshape({d.T, d.B, d.I});
  }
  const at::Tensor dbias = dgates.view({d.T * d.B, d.G, 4 * d.Hg}).sum(0);  // from the float32 dgates
  return {dx, dweight_ih, dweight_hh, dbias};
}

// The projected G-LSTM backward (weight_hr (P, H)): the F-LSTM backward kernels in their projected mode (W1_h :=
// W_hr, R := P, W2 := W_hh; see projected_bwd_cluster_size in persistent_layout.h) on the recomputed pre-activations,
// which write dgates and dz_t (the total gradient reaching each output row h_t, P wide), then the time-parallel
// GEMMs: those of every G-LSTM backward and dW_hr = sum_t dz_t^T m_t, m_t = sigmoid(pre_o) tanh(c_t) recomputed and
// rounded to x's dtype where the reference rounds it (lstmkern/reference.py: the projection's operand).
GlstmGrads projected_bwd(const at::Tensor& grad_output, const at::Tensor& grad_cell, const at::Tensor& x,
                         const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_ih,
                         const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias,
                         const at::Tensor& weight_hr, const at::Tensor& output, const at::Tensor& cell,
                         int64_t cluster_size, int64_t grid_ctas, const GlstmDims& d) {
  const at::ScalarType dtype = x.scalar_type();
  if (d.T == 0 || d.B == 0) {
    return {at::zeros_like(x), at::zeros_like(h0), at::zeros_like(c0), at::zeros_like(weight_ih),
            at::zeros_like(weight_hh), at::zeros({d.G, 4 * d.Hg}, x.options()), at::zeros_like(weight_hr)};
  }
  const ElementKind kind = element_kind_of(x);
  const FlstmPlan plan = projected_plan(true, cluster_size, grid_ctas, d, kind, dtype, x.get_device());

  const at::Tensor h_prev = previous_hidden(h0, output);  // (T, B, P)
  const at::Tensor pre_gates = glstm_pre_gates(x, weight_ih, weight_hh, bias, h_prev, d);
  const at::Tensor c0_state = c0.to(at::kFloat).contiguous();

  at::Tensor dgates = at::empty({d.T, d.B, d.G, 4 * d.Hg}, x.options().dtype(at::kFloat));
  at::Tensor dz = at::empty({d.T * d.B, d.P}, x.options().dtype(at::kFloat));
  at::Tensor dh0 = at::empty({d.B, d.P}, x.options().dtype(at::kFloat));
  at::Tensor dc0 = at::empty({d.B, d.H}, x.options().dtype(at::kFloat));
  FlstmBwdArgs args{};
  args.pre_gates = pre_gates.const_data_ptr<float>();
  args.grad_output = grad_output.const_data_ptr();
  args.grad_cell = grad_cell.defined() ? grad_cell.const_data_ptr<float>() : nullptr;
  args.c0 = c0_state.const_data_ptr<float>();
  args.cell = cell.const_data_ptr<float>();
  args.weight_1 = weight_hr.const_data_ptr();
  args.weight_2 = weight_hh.const_data_ptr();
  args.dgates = dgates.mutable_data_ptr<float>();
  args.dh0 = dh0.mutable_data_ptr<float>();
  args.dc0 = dc0.mutable_data_ptr<float>();
  args.T = static_cast<int>(d.T);
  args.B = static_cast<int>(d.B);
  args.I = 0;  // W_hr has no input columns
  args.H = static_cast<int>(d.H);
  args.R = static_cast<int>(d.P);
  args.groups = static_cast<int>(d.G);
  args.projected = true;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (plan.grid_ctas > 0) {
    // The grid backward's global workspace, as the F-LSTM's (see csrc/flstm_grid_bwd.cu); dc0 needs no initialising.
    const int64_t batch_tile = flstm_cluster_batch_tile(kind);
    const int64_t batch_pad = (d.B + batch_tile - 1) / batch_tile * batch_tile;
    check_fits_int32(batch_pad * d.P, "ceil(B / BT) BT * P");
    at::Tensor partials = at::empty({plan.grid_ctas, batch_pad, d.P}, x.options().dtype(at::kFloat));
    at::Tensor dz_rounded = at::empty({batch_pad, d.P}, x.options());
    const cudaError_t err = launch_flstm_grid_bwd(kind, args, plan.grid_ctas, dz.mutable_data_ptr<float>(),
                                                  partials.mutable_data_ptr<float>(), dz_rounded.mutable_data_ptr(),
                                                  stream);
    TORCH_CHECK(err != cudaErrorCooperativeLaunchTooLarge, "the grid projected backward with N = ", plan.grid_ctas,
                " CTAs of ", projected_grid_bwd_smem_bytes(d.H, d.P, d.G, plan.grid_ctas, kind), " bytes of shared "
                "memory each cannot all be resident on device ", x.get_device(), " (cudaOccupancyMaxActiveBlocksPer"
                "Multiprocessor x SM count < N; another context may hold SMs); use the Triton backend");
    C10_CUDA_CHECK(err);
  } else if (plan.cluster_size == 1) {
    C10_CUDA_CHECK(launch_flstm_persistent_bwd(kind, args, stream, dz.mutable_data_ptr<float>()));
  } else {
    const int cluster = plan.cluster_size;
    const cudaError_t err = launch_flstm_cluster_bwd(kind, args, cluster, dz.mutable_data_ptr<float>(), stream);
    TORCH_CHECK(err != cudaErrorInvalidClusterSize, "the cluster projected backward with C = ", cluster, " CTAs of ",
                projected_cluster_bwd_smem_bytes(d.H, d.P, d.G, cluster, kind), " bytes of shared memory each cannot "
                "be resident on device ", x.get_device(), " (cudaOccupancyMaxActiveClusters returned 0); force a "
                "larger cluster_size or use the Triton backend");
    C10_CUDA_CHECK(err);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  const auto [dx, dweight_ih, dweight_hh, dbias] = glstm_gradient_gemms(dgates, x, weight_ih, h_prev, d);
  // m_t = o_t tanh(c_t) in float32 from the recomputed pre-activation of gate o, rounded to x's dtype (the operand
  // the forward's projection multiplied); dW_hr = dz^T m over all T * B rows.
  const at::Tensor pre_o = pre_gates.view({d.T * d.B, d.G, 4, d.Hg}).select(2, 3);
  const at::Tensor m = (at::sigmoid(pre_o) * at::tanh(cell.view({d.T * d.B, d.G, d.Hg}))).reshape({d.T * d.B, d.H});
  const at::Tensor dweight_hr = at::mm(gradient_gemm_operand(dz, dtype).t(), m.to(dtype));
  return {dx.to(dtype).contiguous(),         dh0.to(dtype),         dc0.to(dtype),
          dweight_ih.to(dtype).contiguous(), dweight_hh.to(dtype).contiguous(), dbias.to(dtype).contiguous(),
          dweight_hr.to(dtype).contiguous()};
}

GlstmGrads glstm_persistent_bwd(const at::Tensor& grad_output_in, const std::optional<at::Tensor>& grad_cell_in,
                                const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                                const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                const std::optional<at::Tensor>& bias, const at::Tensor& output,
                                const at::Tensor& cell, int64_t cluster_size,
                                const std::optional<at::Tensor>& weight_hr, int64_t grid_ctas) {
  const GlstmDims d = check_glstm(x, h0, c0, weight_ih, weight_hh, bias, weight_hr);
  const at::ScalarType dtype = x.scalar_type();
  TORCH_CHECK_VALUE(grad_output_in.sizes() == at::IntArrayRef({d.T, d.B, d.P}), "grad_output must have shape ",
                    at::IntArrayRef({d.T, d.B, d.P}), ", got ", grad_output_in.sizes());
  // Autograd may hand over expanded or strided gradients.
  const at::Tensor grad_output = grad_output_in.to(dtype).contiguous();
  check_tensor(grad_output, "grad_output", x, dtype, {d.T, d.B, d.P});
  check_tensor(output, "output", x, dtype, {d.T, d.B, d.P});
  check_tensor(cell, "cell", x, at::kFloat, {d.T, d.B, d.H});
  const c10::cuda::CUDAGuard device_guard(x.device());
  const at::Tensor grad_cell = state_grad_or_null(grad_cell_in, x, d.T, d.B, d.H);
  if (weight_hr.has_value()) {
    return projected_bwd(grad_output, grad_cell, x, h0, c0, weight_ih, weight_hh, bias, *weight_hr, output, cell,
                         cluster_size, grid_ctas, d);
  }
  TORCH_CHECK_VALUE(grid_ctas == 0, "grid_ctas applies to projected layers (weight_hr) only, got grid_ctas = ",
                    grid_ctas);
  const at::Tensor no_dweight_hr = at::empty({0}, x.options());
  if (d.T == 0 || d.B == 0) {
    return {at::zeros_like(x), at::zeros_like(h0), at::zeros_like(c0), at::zeros_like(weight_ih),
            at::zeros_like(weight_hh), at::zeros({d.G, 4 * d.Hg}, x.options()), no_dweight_hr};
  }
  const ElementKind kind = element_kind_of(x);
  const int cluster = glstm_backward_cluster_size(cluster_size, d.Hg, kind, dtype, x.get_device());

  const at::Tensor h_prev = previous_hidden(h0, output);
  const at::Tensor pre_gates = glstm_pre_gates(x, weight_ih, weight_hh, bias, h_prev, d);
  const at::Tensor c0_state = c0.to(at::kFloat).contiguous();

  at::Tensor dgates = at::empty({d.T, d.B, d.G, 4 * d.Hg}, x.options().dtype(at::kFloat));
  at::Tensor dh0 = at::empty({d.B, d.H}, x.options().dtype(at::kFloat));
  at::Tensor dc0 = at::empty({d.B, d.H}, x.options().dtype(at::kFloat));
  GlstmBwdArgs args{};
  args.pre_gates = pre_gates.const_data_ptr<float>();
  args.grad_output = grad_output.const_data_ptr();
  args.grad_cell = grad_cell.defined() ? grad_cell.const_data_ptr<float>() : nullptr;
  args.c0 = c0_state.const_data_ptr<float>();
  args.cell = cell.const_data_ptr<float>();
  args.weight_hh = weight_hh.const_data_ptr();
  args.dgates = dgates.mutable_data_ptr<float>();
  args.dh0 = dh0.mutable_data_ptr<float>();
  args.dc0 = dc0.mutable_data_ptr<float>();
  args.T = static_cast<int>(d.T);
  args.B = static_cast<int>(d.B);
  args.G = static_cast<int>(d.G);
  args.Hg = static_cast<int>(d.Hg);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (cluster == 1) {
    C10_CUDA_CHECK(launch_glstm_persistent_bwd(kind, args, stream));
  } else {
    C10_CUDA_CHECK(launch_glstm_cluster_bwd(kind, args, cluster, stream));
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // Weight gradients and dx: time-parallel GEMMs over all T * B rows at once, in x's dtype (see gradient_gemm_operand).
  const auto [dx, dweight_ih, dweight_hh, dbias] = glstm_gradient_gemms(dgates, x, weight_ih, h_prev, d);
  return {dx.to(dtype).contiguous(),         dh0.to(dtype),         dc0.to(dtype),
          dweight_ih.to(dtype).contiguous(), dweight_hh.to(dtype).contiguous(), dbias.to(dtype).contiguous(),
          no_dweight_hr};
}

// ---------------------------------------------------------------------------------------------------------------
// F-LSTM

struct FlstmDims {
  int64_t T, B, I, H, R;
};

FlstmDims check_flstm(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_1,
                      const at::Tensor& weight_2, const std::optional<at::Tensor>& bias) {
  check_x(x);
  TORCH_CHECK_VALUE(weight_2.dim() == 2 && weight_2.size(0) % 4 == 0 && weight_2.size(0) >= 4 && weight_2.size(1) >= 1,
                    "weight_2 must be (4H, R) with H, R >= 1, got shape ", weight_2.sizes());
  FlstmDims d{};
  d.T = x.size(0);
  d.B = x.size(1);
  d.I = x.size(2);
  d.H = weight_2.size(0) / 4;
  d.R = weight_2.size(1);
  check_fits_int32(d.T * d.B * 4 * d.H, "T * B * 4H");
  const at::ScalarType dtype = x.scalar_type();
  check_tensor(weight_2, "weight_2", x, dtype, {4 * d.H, d.R});
  check_tensor(weight_1, "weight_1", x, dtype, {d.R, d.I + d.H});
  check_tensor(h0, "h0", x, dtype, {d.B, d.H});
  check_tensor(c0, "c0", x, dtype, {d.B, d.H});
  if (bias.has_value()) check_tensor(*bias, "bias", x, dtype, {4 * d.H});
  return d;
}

// Which F-LSTM kernel runs, forward or backward (FlstmPlan, defined with the projected forward above).
// `requested_cluster` and `requested_grid` are the op's cluster_size and grid_ctas arguments: both 0 pick
// flstm_{fwd,bwd}_cluster_size (the single CTA where it fits, else the smallest fitting cluster on 9.x) and, where that
// finds nothing, flstm_{fwd,bwd}_grid_ctas (what lstmkern.backends.cuda's rule assumes); cluster_size 1 or C forces
// that kernel, grid_ctas N the grid kernel on N CTAs (tests and compute-sanitizer runs use both to reach the multi-CTA
// kernels at small shapes). Raises ValueError naming the reason where the kernel cannot run on `device`.
FlstmPlan flstm_plan(bool backward, int64_t requested_cluster, int64_t requested_grid, int64_t h, int64_t r,
                     ElementKind kind, at::ScalarType dtype, int device) {
  const int64_t smem_optin = device_smem_optin(device);
  const int cc_major = device_cc_major(device);
  const int64_t sm_count = device_sm_count(device);
  const char* direction = backward ? "backward" : "forward";
  const std::string single_kernel = std::string("the F-LSTM ") + direction + " kernel";
  const std::string cluster_kernel = std::string("the cluster F-LSTM ") + direction + " kernel";
  const std::string grid_kernel = std::string("the grid F-LSTM ") + direction + " kernel";
  const int64_t single_bytes =
      backward ? flstm_bwd_layout(h, r, kind).total_bytes : flstm_fwd_layout(h, r, kind).total_bytes;
  auto cluster_bytes = [&](int64_t c) {
    return backward ? flstm_cluster_bwd_smem_bytes(h, r, c, kind) : flstm_cluster_smem_bytes(h, r, c, kind);
  };
  auto grid_bytes = [&](int64_t n) {
    return backward ? flstm_grid_bwd_smem_bytes(h, r, n, kind) : flstm_grid_smem_bytes(h, r, n, kind);
  };
  TORCH_CHECK_VALUE(requested_grid >= 0, "grid_ctas must be 0 (automatic) or the number of CTAs of the grid F-LSTM ",
                    direction, ", got grid_ctas = ", requested_grid);
  if (requested_grid > 0) {
    TORCH_CHECK_VALUE(requested_cluster == 0, "cluster_size and grid_ctas cannot both be forced, got cluster_size = ",
                      requested_cluster, ", grid_ctas = ", requested_grid);
    TORCH_CHECK_VALUE(flstm_grid_shape_ok(h, r, requested_grid), "the grid F-LSTM ", direction, " takes grid_ctas >= 1 "
                      "with H a multiple of 16 * grid_ctas and R a multiple of 16; got grid_ctas = ", requested_grid,
                      " for H = ", h, ", R = ", r);
    TORCH_CHECK_VALUE(requested_grid <= sm_count, "the grid F-LSTM ", direction, " runs one CTA per SM, all "
                      "co-resident: grid_ctas = ", requested_grid, " exceeds the ", sm_count, " SMs of device ",
                      device);
    check_device_fits(device, grid_bytes(requested_grid), grid_kernel.c_str());
    return {0, static_cast<int>(requested_grid)};
  }
  int64_t cluster_size = requested_cluster;
  if (requested_cluster == 0) {
    cluster_size = backward ? flstm_bwd_cluster_size(h, r, kind, smem_optin, cc_major)
                            : flstm_fwd_cluster_size(h, r, kind, smem_optin, cc_major);
    if (cluster_size == 0) {
      const int ctas = backward ? flstm_bwd_grid_ctas(h, r, kind, smem_optin, sm_count)
                                : flstm_fwd_grid_ctas(h, r, kind, smem_optin, sm_count);
      TORCH_CHECK_VALUE(ctas != 0, single_kernel, " with H = ", h, ", R = ", r, " in ", dtype, " needs ", single_bytes,
                        " bytes of shared memory per block on one CTA, device ", device, " allows ", smem_optin,
                        ", no thread-block cluster applies (compute capability 9.x, C in {2, 4, 8, 16} with H a "
                        "multiple of 16 C, R a multiple of 16 and the per-CTA share fitting), and neither does the "
                        "grid ", direction, " (N <= ", sm_count, " CTAs with H a multiple of 16 N, R a multiple of 16 "
                        "and the per-CTA share fitting); see lstmkern.backends.cuda.",
                        backward ? "flstm_bwd_grid_ctas" : "flstm_persistent_rule");
      check_device_fits(device, grid_bytes(ctas), grid_kernel.c_str());
      return {0, ctas};
    }
  } else {
    TORCH_CHECK_VALUE(requested_cluster == 1 || flstm_cluster_shape_ok(h, r, requested_cluster), "cluster_size must "
                      "be 0 (automatic), 1 (single CTA), or 2, 4, 8 or 16 with H a multiple of 16 * cluster_size and R "
                      "a multiple of 16; got cluster_size = ", requested_cluster, " for H = ", h, ", R = ", r);
  }
  if (cluster_size == 1) {
    check_device_fits(device, single_bytes, single_kernel.c_str());
  } else {
    TORCH_CHECK_VALUE(cc_major == 9, cluster_kernel, " needs compute capability 9.x (thread-block clusters; its code "
                      "is built for sm_90a), device ", device, " has ", cc_major, ".x");
    check_device_fits(device, cluster_bytes(cluster_size), cluster_kernel.c_str());
  }
  return {static_cast<int>(cluster_size), 0};
}

std::tuple<at::Tensor, at::Tensor> flstm_persistent_fwd(const at::Tensor& x, const at::Tensor& h0,
                                                        const at::Tensor& c0, const at::Tensor& weight_1,
                                                        const at::Tensor& weight_2,
                                                        const std::optional<at::Tensor>& bias, int64_t cluster_size,
                                                        int64_t grid_ctas) {
  const FlstmDims d = check_flstm(x, h0, c0, weight_1, weight_2, bias);
  const c10::cuda::CUDAGuard device_guard(x.device());
  at::Tensor output = at::empty({d.T, d.B, d.H}, x.options());
  at::Tensor cell = at::empty({d.T, d.B, d.H}, x.options().dtype(at::kFloat));
  if (d.T == 0 || d.B == 0) return {output, cell};

  const ElementKind kind = element_kind_of(x);
  const FlstmPlan plan =
      flstm_plan(false, cluster_size, grid_ctas, d.H, d.R, kind, x.scalar_type(), x.get_device());
  // P = (x W1_x^T) W2^T in x's dtype, then float32 + bias: (T, B, 4H).
  const at::Tensor z_input = at::mm(x.view({d.T * d.B, d.I}), weight_1.narrow(1, 0, d.I).t());
  at::Tensor proj = at::mm(z_input, weight_2.t()).to(at::kFloat).view({d.T, d.B, 4 * d.H});
  if (bias.has_value()) proj = proj + bias->to(at::kFloat);
  proj = proj.contiguous();
  const at::Tensor c0_state = c0.to(at::kFloat).contiguous();
  // The grid forward stages h0 with 16-byte loads (see aligned_or_copy); the other forwards read it element-wise.
  const at::Tensor h0_kernel = plan.grid_ctas > 0 ? aligned_or_copy(h0, kFlstmGridH0Alignment) : h0;

  FlstmFwdArgs args{};
  args.proj = proj.const_data_ptr<float>();
  args.h0 = h0_kernel.const_data_ptr();
  args.c0 = c0_state.const_data_ptr<float>();
  args.weight_1 = weight_1.const_data_ptr();
  args.weight_2 = weight_2.const_data_ptr();
  args.output = output.mutable_data_ptr();
  args.cell = cell.mutable_data_ptr<float>();
  args.T = static_cast<int>(d.T);
  args.B = static_cast<int>(d.B);
  args.I = static_cast<int>(d.I);
  args.H = static_cast<int>(d.H);
  args.R = static_cast<int>(d.R);
  launch_flstm_forward_plan(kind, args, plan, x);
  return {output, cell};
}

Grads flstm_persistent_bwd(const at::Tensor& grad_output_in, const std::optional<at::Tensor>& grad_cell_in,
                           const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_1,
                           const at::Tensor& weight_2, const std::optional<at::Tensor>& bias,
                           const at::Tensor& output, const at::Tensor& cell, int64_t cluster_size,
                           int64_t grid_ctas) {
  const FlstmDims d = check_flstm(x, h0, c0, weight_1, weight_2, bias);
  const at::ScalarType dtype = x.scalar_type();
  TORCH_CHECK_VALUE(grad_output_in.sizes() == at::IntArrayRef({d.T, d.B, d.H}), "grad_output must have shape ",
                    at::IntArrayRef({d.T, d.B, d.H}), ", got ", grad_output_in.sizes());
  const at::Tensor grad_output = grad_output_in.to(dtype).contiguous();
  check_tensor(grad_output, "grad_output", x, dtype, {d.T, d.B, d.H});
  check_tensor(output, "output", x, dtype, {d.T, d.B, d.H});
  check_tensor(cell, "cell", x, at::kFloat, {d.T, d.B, d.H});
  const c10::cuda::CUDAGuard device_guard(x.device());
  const at::Tensor grad_cell = state_grad_or_null(grad_cell_in, x, d.T, d.B, d.H);
  if (d.T == 0 || d.B == 0) {
    return {at::zeros_like(x), at::zeros_like(h0), at::zeros_like(c0), at::zeros_like(weight_1),
            at::zeros_like(weight_2), at::zeros({4 * d.H}, x.options())};
  }
  const ElementKind kind = element_kind_of(x);
  const FlstmPlan plan = flstm_plan(true, cluster_size, grid_ctas, d.H, d.R, kind, dtype, x.get_device());

  // Time-parallel recompute: z = [x_t; h_{t-1}] W1^T, pre = z W2^T (x's dtype) -> float32 + bias.
  const at::Tensor h_prev = previous_hidden(h0, output);
  const at::Tensor xh = at::cat({x, h_prev}, 2).view({d.T * d.B, d.I + d.H});
  const at::Tensor z = at::mm(xh, weight_1.t());  // (T*B, R)
  at::Tensor pre_gates = at::mm(z, weight_2.t()).to(at::kFloat);
  if (bias.has_value()) pre_gates = pre_gates + bias->to(at::kFloat);
  pre_gates = pre_gates.contiguous();
  const at::Tensor c0_state = c0.to(at::kFloat).contiguous();

  at::Tensor dgates = at::empty({d.T, d.B, 4 * d.H}, x.options().dtype(at::kFloat));
  at::Tensor dh0 = at::empty({d.B, d.H}, x.options().dtype(at::kFloat));
  at::Tensor dc0 = at::empty({d.B, d.H}, x.options().dtype(at::kFloat));
  FlstmBwdArgs args{};
  args.pre_gates = pre_gates.const_data_ptr<float>();
  args.grad_output = grad_output.const_data_ptr();
  args.grad_cell = grad_cell.defined() ? grad_cell.const_data_ptr<float>() : nullptr;
  args.c0 = c0_state.const_data_ptr<float>();
  args.cell = cell.const_data_ptr<float>();
  args.weight_1 = weight_1.const_data_ptr();
  args.weight_2 = weight_2.const_data_ptr();
  args.dgates = dgates.mutable_data_ptr<float>();
  args.dh0 = dh0.mutable_data_ptr<float>();
  args.dc0 = dc0.mutable_data_ptr<float>();
  args.T = static_cast<int>(d.T);
  args.B = static_cast<int>(d.B);
  args.I = static_cast<int>(d.I);
  args.H = static_cast<int>(d.H);
  args.R = static_cast<int>(d.R);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor dg = dgates.view({d.T * d.B, 4 * d.H});
  at::Tensor dz;  // (T*B, R) float32: dgates W2
  if (plan.grid_ctas > 0) {
    // The grid backward's global workspace (see csrc/flstm_grid_bwd.cu): the per-rank partial dz, (N, Bp, R) float32,
    // and the reduced dz rounded to x's dtype, (Bp, R), Bp = B rounded up to the batch tile; it writes dz (float32).
    const int64_t batch_tile = flstm_cluster_batch_tile(kind);
    const int64_t batch_pad = (d.B + batch_tile - 1) / batch_tile * batch_tile;
    check_fits_int32(batch_pad * d.R, "ceil(B / BT) BT * R");
    at::Tensor partials = at::empty({plan.grid_ctas, batch_pad, d.R}, x.options().dtype(at::kFloat));
    at::Tensor dz_rounded = at::empty({batch_pad, d.R}, x.options());
    dz = at::empty({d.T * d.B, d.R}, x.options().dtype(at::kFloat));
    const cudaError_t err = launch_flstm_grid_bwd(kind, args, plan.grid_ctas, dz.mutable_data_ptr<float>(),
                                                  partials.mutable_data_ptr<float>(), dz_rounded.mutable_data_ptr(),
                                                  stream);
    TORCH_CHECK(err != cudaErrorCooperativeLaunchTooLarge, "the grid F-LSTM backward with N = ", plan.grid_ctas,
                " CTAs of ", flstm_grid_bwd_smem_bytes(d.H, d.R, plan.grid_ctas, kind), " bytes of shared memory each "
                "cannot all be resident on device ", x.get_device(), " (cudaOccupancyMaxActiveBlocksPerMultiprocessor "
                "x SM count < N; another context may hold SMs); use the Triton backend");
    C10_CUDA_CHECK(err);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else if (plan.cluster_size == 1) {
    C10_CUDA_CHECK(launch_flstm_persistent_bwd(kind, args, stream));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    dz = at::mm(dg, weight_2.to(at::kFloat));
  } else {
    const int cluster = plan.cluster_size;
    // The cluster backward reduces dz across the cluster every step anyway and writes it out (float32).
    dz = at::empty({d.T * d.B, d.R}, x.options().dtype(at::kFloat));
    const cudaError_t err = launch_flstm_cluster_bwd(kind, args, cluster, dz.mutable_data_ptr<float>(), stream);
    TORCH_CHECK(err != cudaErrorInvalidClusterSize, "the cluster F-LSTM backward with C = ", cluster, " CTAs of ",
                flstm_cluster_bwd_smem_bytes(d.H, d.R, cluster, kind), " bytes of shared memory each cannot be "
                "resident on device ", x.get_device(), " (cudaOccupancyMaxActiveClusters returned 0; clusters of 16 "
                "need a GPC with 16 free SMs and the non-portable cluster size); force a larger cluster_size or use "
                "the Triton backend");
    C10_CUDA_CHECK(err);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  // Weight gradients and dx in x's dtype (see gradient_gemm_operand); dbias from the float32 dgates.
  const at::Tensor dg_gemm = gradient_gemm_operand(dg, dtype);
  const at::Tensor dz_gemm = gradient_gemm_operand(dz, dtype);
  const at::Tensor dweight_2 = at::mm(dg_gemm.t(), z);
  const at::Tensor dweight_1 = at::mm(dz_gemm.t(), xh);
  const at::Tensor dx = at::mm(dz_gemm, weight_1.narrow(1, 0, d.I)).view({d.T, d.B, d.I});
  const at::Tensor dbias = dg.sum(0);
  return {dx.to(dtype).contiguous(),        dh0.to(dtype),        dc0.to(dtype),
          dweight_1.to(dtype).contiguous(), dweight_2.to(dtype).contiguous(), dbias.to(dtype).contiguous()};
}

}  // namespace
}  // namespace lstmkern

// The emulator registers the same ops in its own library, for CPU tensors (csrc/emu/module.cpp defines its kernel ops
// from csrc/kernel_op_schemas.h).
#if defined(LSTMKERN_EMU)
#define LSTMKERN_KERNEL_LIBRARY lstmkern_emu
#define LSTMKERN_KERNEL_DISPATCH CPU
#else
#define LSTMKERN_KERNEL_LIBRARY lstmkern_cuda
#define LSTMKERN_KERNEL_DISPATCH CUDA
#endif

TORCH_LIBRARY_FRAGMENT(LSTMKERN_KERNEL_LIBRARY, m) {
  // Opt-in dynamic shared memory per block of CUDA device `device` (cudaDevAttrMaxSharedMemoryPerBlockOptin).
  m.def("device_smem_optin(int device) -> int", &lstmkern::device_smem_optin);
  // How many clusters of the cluster F-LSTM forward with cluster_size CTAs for (hidden, rank, dtype) device `device`
  // can hold at once (0: it cannot run there; lstmkern.backends.cuda then falls back for the non-portable C = 16).
  m.def("flstm_cluster_max_active_clusters(int device, int hidden, int rank, int cluster_size, ScalarType dtype) -> "
        "int", &lstmkern::flstm_cluster_max_active);
  // The same for the cluster F-LSTM backward (its own shared memory; lstmkern.backends.cuda runs Triton's backward
  // where it is 0).
  m.def("flstm_cluster_bwd_max_active_clusters(int device, int hidden, int rank, int cluster_size, "
        "ScalarType dtype) -> int", &lstmkern::flstm_cluster_bwd_max_active);
  // The same for the cluster G-LSTM forward with cluster_size CTAs per (group, batch tile) of hidden_per_group units
  // (bench/gpu_facts.py prints it: a layer needs G * ceil(B / 16) such clusters resident for one wave).
  m.def("glstm_cluster_max_active_clusters(int device, int hidden_per_group, int cluster_size, ScalarType dtype) -> "
        "int", &lstmkern::glstm_cluster_max_active);
  // The same for the cluster forward in the projected mode (a projected G-LSTM: hidden cell units, proj = P, groups).
  m.def("projected_cluster_max_active_clusters(int device, int hidden, int proj, int groups, int cluster_size, "
        "ScalarType dtype) -> int", &lstmkern::projected_cluster_max_active);
  m.def("projected_grid_max_resident_ctas(int device, int hidden, int proj, int groups, int grid_ctas, "
        "ScalarType dtype) -> int", &lstmkern::projected_grid_max_resident);
  // The same for the projected backward's cluster and grid kernels (lstmkern.backends.cuda runs Triton's backward
  // where the one it needs cannot be resident).
  m.def("projected_cluster_bwd_max_active_clusters(int device, int hidden, int proj, int groups, int cluster_size, "
        "ScalarType dtype) -> int", &lstmkern::projected_cluster_bwd_max_active);
  m.def("projected_grid_bwd_max_resident_ctas(int device, int hidden, int proj, int groups, int grid_ctas, "
        "ScalarType dtype) -> int", &lstmkern::projected_grid_bwd_max_resident);
  // How many CTAs of the grid F-LSTM forward (its shared memory for hidden, rank, grid_ctas, dtype) device `device` can
  // hold at once (the launcher's co-residency check; lstmkern.backends.cuda falls back where it is < grid_ctas).
  m.def("flstm_grid_max_resident_ctas(int device, int hidden, int rank, int grid_ctas, ScalarType dtype) -> int",
        &lstmkern::flstm_grid_max_resident);
  // The same for the grid F-LSTM backward (lstmkern.backends.cuda runs Triton's backward where it is < grid_ctas).
  m.def("flstm_grid_bwd_max_resident_ctas(int device, int hidden, int rank, int grid_ctas, ScalarType dtype) -> int",
        &lstmkern::flstm_grid_bwd_max_resident);
}

TORCH_LIBRARY_IMPL(LSTMKERN_KERNEL_LIBRARY, LSTMKERN_KERNEL_DISPATCH, m) {
  m.impl("glstm_persistent_fwd", &lstmkern::glstm_persistent_fwd);
  m.impl("glstm_persistent_bwd", &lstmkern::glstm_persistent_bwd);
  m.impl("flstm_persistent_fwd", &lstmkern::flstm_persistent_fwd);
  m.impl("flstm_persistent_bwd", &lstmkern::flstm_persistent_bwd);
}
