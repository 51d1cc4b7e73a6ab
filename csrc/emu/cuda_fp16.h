// Emulator stand-in for <cuda_fp16.h>: __half is c10::Half (IEEE binary16; conversions from float round to nearest
// even, like __float2half_rn), so the emulator needs no CUDA toolkit.
#pragma once

#include <c10/util/Half.h>

using __half = c10::Half;
inline float __half2float(__half value) { return static_cast<float>(value); }
inline __half __float2half_rn(float value) { return __half(value); }
