// What csrc/cuda_ops.cpp takes from c10/cuda, for its CPU build inside the emulator (LSTMKERN_EMU): error checks
// that report the emulator's launch failures, a device guard that does nothing and the null stream. The launchers
// themselves compile unchanged.
#pragma once

#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include "cuda_runtime_api.h"

#define C10_CUDA_CHECK(EXPR)                                                                                    \
  do {                                                                                                          \
    const cudaError_t lstmkern_emu_error = (EXPR);                                                              \
    TORCH_CHECK(lstmkern_emu_error == cudaSuccess, "emulated CUDA error: ", cudaGetErrorString(lstmkern_emu_error), \
                ": ", ::lstmkern_emu::last_failure());                                                          \
  } while (false)
#define C10_CUDA_KERNEL_LAUNCH_CHECK() C10_CUDA_CHECK(cudaGetLastError())

namespace c10::cuda {
struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
  explicit CUDAGuard(c10::DeviceIndex) {}
};
inline cudaStream_t getCurrentCUDAStream() { return nullptr; }
}  // namespace c10::cuda
