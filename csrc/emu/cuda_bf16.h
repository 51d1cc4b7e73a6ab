// Emulator stand-in for <cuda_bf16.h>: __nv_bfloat16 is c10::BFloat16 (conversions from float round to nearest even,
// like __float2bfloat16_rn), so the emulator needs no CUDA toolkit.
#pragma once

#include <c10/util/BFloat16.h>

using __nv_bfloat16 = c10::BFloat16;
inline float __bfloat162float(__nv_bfloat16 value) { return static_cast<float>(value); }
inline __nv_bfloat16 __float2bfloat16_rn(float value) { return __nv_bfloat16(value); }
