// Included first by each csrc/emu/kernel_*.cpp, which compiles one csrc/*.cu file as host C++: the emulator's CUDA
// headers (this folder is first on the include path, so the kernels' own #include <cuda_runtime.h>, <mma.h>, ...
// find them), then __CUDA_ARCH__ = 900 so the sm_90-only bodies (thread-block clusters) are compiled. It is defined
// only after the headers, which (like c10's Half) would otherwise take it for a device compilation.
#pragma once

#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#define __CUDA_ARCH__ 900
