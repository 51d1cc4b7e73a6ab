// Emulator stand-in for <cuda_runtime.h> (csrc/emu/emu.h): the CUDA qualifiers as nothing, the built-in thread
// coordinates of the running emulated thread, __syncthreads, __ldcg / __ldg, __trap, vector types and the device
// min / max. Included by the kernel sources compiled as host C++ (csrc/emu/kernel_*.cpp).
#pragma once

#include <math.h>

#include <cstdint>
#include <source_location>

#include "cuda_runtime_api.h"
#include "emu.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

// The running emulated thread's coordinates: plain globals, which the scheduler sets at every fiber switch (one launch
// runs at a time, on one OS thread).
extern uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;

struct alignas(16) int4 {
  int x, y, z, w;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline int64_t min(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max(int64_t a, int64_t b) { return a > b ? a : b; }

namespace lstmkern_emu {
inline void syncthreads(const std::source_location& where = std::source_location::current()) {
  barrier(Scope::kBlock, where);
}
template <typename T> inline T load_checked(const T* pointer, const char* what) {
  if (reinterpret_cast<uintptr_t>(pointer) % alignof(T) != 0) fail(what);
  return *pointer;
}
}  // namespace lstmkern_emu

#define __syncthreads ::lstmkern_emu::syncthreads
template <typename T> inline T __ldcg(const T* pointer) {
  return ::lstmkern_emu::load_checked(pointer, "__ldcg of a misaligned address");
}
template <typename T> inline T __ldg(const T* pointer) {
  return ::lstmkern_emu::load_checked(pointer, "__ldg of a misaligned address");
}
[[noreturn]] inline void __trap() { ::lstmkern_emu::fail("__trap()"); }
