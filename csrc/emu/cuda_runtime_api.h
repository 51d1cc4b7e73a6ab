// Emulator stand-in for the CUDA runtime API (csrc/emu/emu.h): the types, attributes and calls that csrc/*.cu and
// csrc/cuda_ops.cpp use, answering for the described device (an H100: compute capability 9.0, 132 SMs, 232,448 bytes
// of opt-in shared memory per block). Launches run on the CPU.
#pragma once

#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

#include "emu.h"

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorLaunchFailure = 719,
  cudaErrorCooperativeLaunchTooLarge = 720,
  cudaErrorInvalidClusterSize = 912,
};
using cudaError = cudaError_t;
using cudaStream_t = struct CUstream_st*;

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
struct uint3 {
  unsigned x, y, z;
};

enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributeNonPortableClusterSizeAllowed = 12,
};
enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
enum cudaLaunchAttributeID {
  cudaLaunchAttributeCooperative = 2,
  cudaLaunchAttributeClusterDimension = 4,
};
struct cudaLaunchAttributeValue {
  struct {
    unsigned x, y, z;
  } clusterDim;
  int cooperative;
};
struct cudaLaunchAttribute {
  cudaLaunchAttributeID id;
  cudaLaunchAttributeValue val;
};
struct cudaLaunchConfig_t {
  dim3 gridDim;
  dim3 blockDim;
  size_t dynamicSmemBytes;
  cudaStream_t stream;
  cudaLaunchAttribute* attrs;
  unsigned numAttrs;
};

cudaError_t cudaGetLastError();
const char* cudaGetErrorString(cudaError_t error);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int device);

namespace lstmkern_emu {
LaunchShape shape_of(const cudaLaunchConfig_t& config);
}  // namespace lstmkern_emu

template <typename... Params>
cudaError_t cudaFuncSetAttribute(void (*kernel)(Params...), cudaFuncAttribute attribute, int value) {
  const void* key = reinterpret_cast<const void*>(kernel);
  switch (attribute) {
    case cudaFuncAttributeMaxDynamicSharedMemorySize:
      return static_cast<cudaError_t>(lstmkern_emu::set_max_dynamic_smem(key, value));
    case cudaFuncAttributeNonPortableClusterSizeAllowed:
      return static_cast<cudaError_t>(lstmkern_emu::set_non_portable_cluster(key, value));
  }
  return cudaErrorInvalidValue;
}

// The kernel's parameters are converted and copied at the launch, as CUDA does; the launch is synchronous.
template <typename... Params, typename... Args>
cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* config, void (*kernel)(Params...), Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "kernel argument count");
  std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
  const int err = lstmkern_emu::launch(reinterpret_cast<const void*>(kernel), lstmkern_emu::shape_of(*config),
                                       [&] { std::apply(kernel, params); });
  return static_cast<cudaError_t>(err);  // not sticky: cudaGetLastError reports no launch errors
}

template <typename... Params>
cudaError_t cudaOccupancyMaxActiveClusters(int* count, void (*kernel)(Params...), const cudaLaunchConfig_t* config) {
  *count = lstmkern_emu::max_active_clusters(reinterpret_cast<const void*>(kernel), lstmkern_emu::shape_of(*config));
  return cudaSuccess;
}

template <typename... Params>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* count, void (*kernel)(Params...), int block_size,
                                                          size_t smem_bytes) {
  (void)kernel;
  (void)block_size;
  *count = lstmkern_emu::max_blocks_per_sm(smem_bytes);
  return cudaSuccess;
}
