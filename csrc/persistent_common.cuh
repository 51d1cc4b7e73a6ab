// Device helpers shared by the persistent kernels: element conversions, activations, the LSTM cell forward and
// backward, and the block-wide shared-memory fill. Included only by csrc/*.cu.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <utility>

#include "persistent_layout.h"

namespace lstmkern {

template <ElementKind kKind> struct ElementOf;
template <> struct ElementOf<ElementKind::kFloat32> { using type = float; };
template <> struct ElementOf<ElementKind::kFloat16> { using type = __half; };
template <> struct ElementOf<ElementKind::kBFloat16> { using type = __nv_bfloat16; };

// Runs launch(std::integral_constant<ElementKind, kind>{}) for the runtime `kind`: the one place that turns the dtype
// the host picked into a kernel template argument.
template <typename Launch> cudaError_t dispatch_element_kind(ElementKind kind, Launch&& launch) {
  switch (kind) {
    case ElementKind::kFloat32: return launch(std::integral_constant<ElementKind, ElementKind::kFloat32>{});
    case ElementKind::kFloat16: return launch(std::integral_constant<ElementKind, ElementKind::kFloat16>{});
    case ElementKind::kBFloat16: return launch(std::integral_constant<ElementKind, ElementKind::kBFloat16>{});
  }
  return cudaErrorInvalidValue;
}

__device__ __forceinline__ float to_float(float value) { return value; }
__device__ __forceinline__ float to_float(__half value) { return __half2float(value); }
__device__ __forceinline__ float to_float(__nv_bfloat16 value) { return __bfloat162float(value); }

// Round-to-nearest-even conversion from float32 (what torch's .to(dtype) does).
template <typename Element> __device__ __forceinline__ Element from_float(float value);
template <> __device__ __forceinline__ float from_float<float>(float value) { return value; }
template <> __device__ __forceinline__ __half from_float<__half>(float value) { return __float2half_rn(value); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float value) {
  return __float2bfloat16_rn(value);
}

// The block's dynamic shared memory (the `extern __shared__` array of the launch's dynamicSmemBytes). One accessor
// instead of an `extern __shared__` declaration per kernel, so the CPU emulator (csrc/emu, LSTMKERN_EMU) can hand each
// emulated CTA its own buffer: the one place where the kernel sources branch for it.
__device__ __forceinline__ unsigned char* dynamic_smem() {
#if defined(LSTMKERN_EMU)
  return lstmkern_emu::dynamic_smem();
#else
  extern __shared__ __align__(kSmemAlignment) unsigned char lstmkern_dynamic_smem[];
  return lstmkern_dynamic_smem;
#endif
}

// Host-side launch preparation that every launch of the process shares, per (device, kernel): the dynamic
// shared-memory limit and the cluster-size attribute already set on it (cudaFuncSetAttribute), and the occupancy
// answers already obtained (cudaOccupancyMaxActiveClusters / ...MaxActiveBlocksPerMultiprocessor) per (device,
// kernel, shared memory, cluster size). Without it every launch paid for two attribute calls and an occupancy query,
// and two host threads could race: thread A raises kernel K's limit to 200 KB, thread B lowers it to 100 KB for its
// own smaller launch of K, and A's launch then fails with "invalid argument".
// Thread safety: one process-wide mutex guards the tables and is held across each cudaFuncSetAttribute and occupancy
// query, so they run once per key however many threads launch at once. The shared-memory limit is only ever raised
// (a smaller request leaves the larger limit in place): it is a cap on what a launch may ask for, not a reservation,
// so a launch and the occupancy query still see their own dynamicSmemBytes, and a limit some thread has seen set can
// never be lowered under its launch. Likewise the non-portable cluster size, once allowed, stays allowed (it permits
// clusters above 8, it does not change smaller ones). The occupancy of a configuration is a property of the device and
// the compiled kernel, so caching it changes no answer. Tables grow by one entry per distinct key (a handful of
// kernels times the layer shapes a process uses).
class LaunchCache {
 public:
  // Makes sure `kernel` on the current device allows `smem_bytes` of dynamic shared memory and, with
  // `non_portable_cluster`, clusters above the portable size 8. Returns the first failing call's error.
  template <typename Kernel>
  static cudaError_t prepare_kernel(Kernel kernel, int64_t smem_bytes, bool non_portable_cluster) {
    int device = 0;
    cudaError_t err = cudaGetDevice(&device);
    if (err != cudaSuccess) return err;
    LaunchCache& cache = instance();
    const std::lock_guard<std::mutex> lock(cache.mutex_);
    KernelState& state = cache.kernels_[KernelKey{device, reinterpret_cast<const void*>(kernel)}];
    if (smem_bytes > state.smem_limit) {
      err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_bytes));
      if (err != cudaSuccess) return err;
      state.smem_limit = smem_bytes;
    }
    if (non_portable_cluster && !state.non_portable_cluster) {
      err = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
      if (err != cudaSuccess) return err;
      state.non_portable_cluster = true;
    }
    return cudaSuccess;
  }

  // The occupancy answer for (current device, kernel, smem_bytes, cluster_size): `query(&count)` runs once per key
  // (under the lock, after prepare_kernel) and its count is remembered; a failing query is not remembered.
  template <typename Kernel, typename Query>
  static cudaError_t occupancy(Kernel kernel, int64_t smem_bytes, int cluster_size, int* count, Query&& query) {
    *count = 0;
    int device = 0;
    const cudaError_t err = cudaGetDevice(&device);
    if (err != cudaSuccess) return err;
    LaunchCache& cache = instance();
    const std::lock_guard<std::mutex> lock(cache.mutex_);
    const OccupancyKey key{device, reinterpret_cast<const void*>(kernel), smem_bytes, cluster_size};
    const auto found = cache.occupancy_.find(key);
    if (found != cache.occupancy_.end()) {
      *count = found->second;
      return cudaSuccess;
    }
    const cudaError_t query_err = query(count);
    if (query_err == cudaSuccess) cache.occupancy_.emplace(key, *count);
    return query_err;
  }

 private:
  using KernelKey = std::pair<int, const void*>;                    // (device, kernel)
  using OccupancyKey = std::tuple<int, const void*, int64_t, int>;  // (device, kernel, smem bytes, cluster size)
  struct KernelState {
    int64_t smem_limit = 0;  // 0: never raised (the default limit, 48 KiB, is not recorded)
    bool non_portable_cluster = false;
  };

  static LaunchCache& instance() {
    static LaunchCache cache;  // one per process: an inline function's static is shared by every translation unit
    return cache;
  }

  std::mutex mutex_;
  std::map<KernelKey, KernelState> kernels_;
  std::map<OccupancyKey, int> occupancy_;
};

// Host side of a plain (single-CTA-per-work-item) kernel launch: raises the kernel's dynamic shared-memory limit to
// `smem_bytes` (once per device and kernel: LaunchCache), then launches `grid` CTAs of kThreadsPerBlock threads on
// `stream`. Every launch of the project goes
// through cudaLaunchKernelEx (here, ClusterLaunch or CooperativeLaunch) rather than `<<<...>>>`, which is not C++:
// the CPU emulator (csrc/emu) compiles these same sources and provides cudaLaunchKernelEx. Returns the error of
// cudaFuncSetAttribute or of the launch itself.
template <typename... Params, typename... Args>
cudaError_t launch_plain(void (*kernel)(Params...), dim3 grid, int64_t smem_bytes, cudaStream_t stream,
                         Args... args) {
  const cudaError_t err = LaunchCache::prepare_kernel(kernel, smem_bytes, false);
  if (err != cudaSuccess) return err;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = dim3(kThreadsPerBlock);
  config.dynamicSmemBytes = static_cast<size_t>(smem_bytes);
  config.stream = stream;
  return cudaLaunchKernelEx(&config, kernel, args...);
}

// Host side of a thread-block-cluster kernel launch: grid (C * ceil(B / batch_tile), groups), cluster dims (C, 1, 1),
// kThreadsPerBlock threads, `smem_bytes` of dynamic shared memory. prepare() raises the kernel's shared-memory limit
// and, above the portable size 8, allows a non-portable cluster size; both attributes must be set before the occupancy
// query as well as before the launch. The attributes and the occupancy answer are set and asked once per device,
// kernel and configuration (LaunchCache), so launches from several host threads at once are safe and a repeated
// launch costs no attribute call or occupancy query. Not copyable: `config` points at `attribute`.
struct ClusterLaunch {
  cudaLaunchConfig_t config{};
  cudaLaunchAttribute attribute{};

  ClusterLaunch() = default;
  ClusterLaunch(const ClusterLaunch&) = delete;
  ClusterLaunch& operator=(const ClusterLaunch&) = delete;

  template <typename Kernel>
  cudaError_t prepare(Kernel kernel, int64_t smem_bytes, int batch_tile, int B, int groups, int cluster_size,
                      cudaStream_t stream) {
    const cudaError_t err = LaunchCache::prepare_kernel(kernel, smem_bytes, cluster_size > 8);
    if (err != cudaSuccess) return err;
    config.gridDim = dim3(static_cast<unsigned>(cluster_size * ((B + batch_tile - 1) / batch_tile)),
                          static_cast<unsigned>(groups));
    config.blockDim = dim3(kThreadsPerBlock);
    config.dynamicSmemBytes = static_cast<size_t>(smem_bytes);
    config.stream = stream;
    attribute.id = cudaLaunchAttributeClusterDimension;
    attribute.val.clusterDim.x = static_cast<unsigned>(cluster_size);
    attribute.val.clusterDim.y = 1;
    attribute.val.clusterDim.z = 1;
    config.attrs = &attribute;
    config.numAttrs = 1;
    return cudaSuccess;
  }

  // How many clusters of this configuration can be resident at once: 0 where C CTAs with this much shared memory
  // do not fit one GPC. The answer does not depend on the grid size (only on the cluster size and the shared memory),
  // so it is cached per (device, kernel, shared memory, cluster size).
  template <typename Kernel> cudaError_t max_active_clusters(Kernel kernel, int* count) const {
    return LaunchCache::occupancy(kernel, static_cast<int64_t>(config.dynamicSmemBytes),
                                  static_cast<int>(attribute.val.clusterDim.x), count,
                                  [&](int* active) { return cudaOccupancyMaxActiveClusters(active, kernel, &config); });
  }

  // Launches, or returns cudaErrorInvalidClusterSize where no cluster can be resident (a clear error instead of a
  // launch that fails or never starts).
  template <typename Kernel, typename... Args> cudaError_t launch(Kernel kernel, Args... args) const {
    int active = 0;
    const cudaError_t err = max_active_clusters(kernel, &active);
    if (err != cudaSuccess) return err;
    if (active < 1) return cudaErrorInvalidClusterSize;
    return cudaLaunchKernelEx(&config, kernel, args...);
  }
};

// Host side of a cooperative (grid-synchronising) kernel launch: `ctas` CTAs of kThreadsPerBlock threads with
// `smem_bytes` of dynamic shared memory, launched with cudaLaunchAttributeCooperative so that
// cooperative_groups::this_grid().sync() is valid in the kernel. All CTAs must be resident at once: launch() checks
// that first (cudaOccupancyMaxActiveBlocksPerMultiprocessor x SM count of the current device) and returns
// cudaErrorCooperativeLaunchTooLarge instead of launching where they are not. The shared-memory attribute and the
// residency answer are set and asked once per device, kernel and shared memory (LaunchCache). Not copyable: `config`
// points at `attribute`.
struct CooperativeLaunch {
  cudaLaunchConfig_t config{};
  cudaLaunchAttribute attribute{};

  CooperativeLaunch() = default;
  CooperativeLaunch(const CooperativeLaunch&) = delete;
  CooperativeLaunch& operator=(const CooperativeLaunch&) = delete;

  template <typename Kernel>
  cudaError_t prepare(Kernel kernel, int64_t smem_bytes, int ctas, cudaStream_t stream) {
    const cudaError_t err = LaunchCache::prepare_kernel(kernel, smem_bytes, false);
    if (err != cudaSuccess) return err;
    config.gridDim = dim3(static_cast<unsigned>(ctas));
    config.blockDim = dim3(kThreadsPerBlock);
    config.dynamicSmemBytes = static_cast<size_t>(smem_bytes);
    config.stream = stream;
    attribute.id = cudaLaunchAttributeCooperative;
    attribute.val.cooperative = 1;
    config.attrs = &attribute;
    config.numAttrs = 1;
    return cudaSuccess;
  }

  // How many CTAs of this configuration the current device can hold at once (cached per device, kernel and shared
  // memory; cluster size 0 in LaunchCache's key stands for "no cluster").
  template <typename Kernel> cudaError_t max_resident_ctas(Kernel kernel, int* count) const {
    return LaunchCache::occupancy(kernel, static_cast<int64_t>(config.dynamicSmemBytes), 0, count, [&](int* resident) {
      int device = 0;
      cudaError_t err = cudaGetDevice(&device);
      if (err != cudaSuccess) return err;
      int sm_count = 0;
      err = cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device);
      if (err != cudaSuccess) return err;
      int per_sm = 0;
      err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, static_cast<int>(config.blockDim.x),
                                                          config.dynamicSmemBytes);
      if (err != cudaSuccess) return err;
      *resident = per_sm * sm_count;
      return cudaSuccess;
    });
  }

  template <typename Kernel, typename... Args> cudaError_t launch(Kernel kernel, Args... args) const {
    int resident = 0;
    const cudaError_t err = max_resident_ctas(kernel, &resident);
    if (err != cudaSuccess) return err;
    if (resident < static_cast<int>(config.gridDim.x)) return cudaErrorCooperativeLaunchTooLarge;
    return cudaLaunchKernelEx(&config, kernel, args...);
  }
};

// Accurate (non-fast-math) activations: the kernels are held to the float32 reference.
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// Forward cell for one hidden unit. Pre-activations (i, f, g, o) in; returns h and updates c in place.
__device__ __forceinline__ float lstm_cell_forward(float pre_i, float pre_f, float pre_g, float pre_o, float& c) {
  const float gate_i = sigmoid(pre_i);
  const float gate_f = sigmoid(pre_f);
  const float gate_g = tanhf(pre_g);
  const float gate_o = sigmoid(pre_o);
  c = gate_f * c + gate_i * gate_g;
  return gate_o * tanhf(c);
}

// One gate's pre-activation: the input projection P_t (float32) plus the recurrent product (float32 accumulation)
// rounded to the element type first. The reference's recurrent matmul runs in x's dtype (lstmkern/reference.py), and
// every forward kernel rounds it here, in one place, so the kernels and the reference round alike (the identity for
// float32).
template <typename Element> __device__ __forceinline__ float pre_activation(float proj, float product) {
  return proj + to_float(from_float<Element>(product));
}

struct CellGrad {
  float d_i, d_f, d_g, d_o;  // gradients of the pre-activation gates
  float dc_prev;             // gradient flowing to c_{t-1}
};

// Backward of the cell for one hidden unit, in the same order of operations as lstmkern.reference._cell_backward.
// dh, dc: gradients arriving at h_t and c_t (already summed over the step's own output and the later steps).
__device__ __forceinline__ CellGrad lstm_cell_backward(float pre_i, float pre_f, float pre_g, float pre_o,
                                                       float c_prev, float c, float dh, float dc) {
  const float gate_i = sigmoid(pre_i);
  const float gate_f = sigmoid(pre_f);
  const float gate_g = tanhf(pre_g);
  const float gate_o = sigmoid(pre_o);
  const float tanh_c = tanhf(c);
  const float d_out = dh * tanh_c;
  const float dc_total = dc + dh * gate_o * (1.0f - tanh_c * tanh_c);
  CellGrad grad;
  grad.d_i = dc_total * gate_g * gate_i * (1.0f - gate_i);
  grad.d_f = dc_total * c_prev * gate_f * (1.0f - gate_f);
  grad.d_g = dc_total * gate_i * (1.0f - gate_g * gate_g);
  grad.d_o = d_out * gate_o * (1.0f - gate_o);
  grad.dc_prev = dc_total * gate_f;
  return grad;
}

// Zeroes `bytes` (a multiple of kSmemAlignment) of shared memory with the whole block. Padding rows and columns of
// the tiles must read as 0 for the whole sequence, and racecheck/initcheck want no uninitialised reads.
__device__ __forceinline__ void zero_shared(unsigned char* smem, int64_t bytes) {
  int4* words = reinterpret_cast<int4*>(smem);
  const int64_t count = bytes / static_cast<int64_t>(sizeof(int4));
  for (int64_t idx = threadIdx.x; idx < count; idx += blockDim.x) words[idx] = make_int4(0, 0, 0, 0);
}

static_assert(kSmemAlignment % sizeof(int4) == 0, "layouts are padded to whole int4 words");

}  // namespace lstmkern
