// Emulator stand-in for <mma.h>: nvcuda::wmma 16x16x16 fragments (matrix_a / matrix_b in __half or __nv_bfloat16,
// accumulator in float; row- or column-major) with load_matrix_sync, store_matrix_sync, fill_fragment and mma_sync.
//
// Every lane of the warp holds the whole tile (the hardware spreads it over the lanes in an undocumented layout);
// store_matrix_sync writes element e of the tile from lane e mod 32 only, so each element is written once per warp.
// mma_sync accumulates in float32 over k in order 0..15 (valid, but not bitwise the tensor cores' order). Checked:
// pointers 32-byte aligned, ldm a multiple of 16 bytes, and every lane of a warp making the same calls between two
// barriers (csrc/emu/emu.h).
#pragma once

#include <cstdint>
#include <type_traits>

#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "emu.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulator has the m16n16k16 shape only");
  static constexpr int num_elements = 256;
  T x[256];  // the whole tile, row-major: element (row, col) at 16 row + col
};

namespace detail {
enum Op { kLoadA = 1, kLoadB, kLoadC, kStore, kFill, kMma };
template <typename T> inline void check_pointer(const T* pointer, unsigned ldm, int op) {
  if (reinterpret_cast<uintptr_t>(pointer) % 32 != 0) ::lstmkern_emu::fail("WMMA pointer not 32-byte aligned");
  if ((ldm * sizeof(T)) % 16 != 0) ::lstmkern_emu::fail("WMMA ldm not a multiple of 16 bytes");
  ::lstmkern_emu::note_wmma(op, pointer, ldm);
}
inline unsigned lane() { return ::lstmkern_emu::current->thread_idx.x % 32; }
template <typename Layout> constexpr bool kRowMajor = std::is_same_v<Layout, row_major>;
}  // namespace detail

template <typename Use, typename T, typename Layout>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& frag, const T* pointer, unsigned ldm) {
  detail::check_pointer(pointer, ldm, std::is_same_v<Use, matrix_a> ? detail::kLoadA : detail::kLoadB);
  for (int row = 0; row < 16; ++row) {
    for (int col = 0; col < 16; ++col) {
      frag.x[row * 16 + col] = detail::kRowMajor<Layout> ? pointer[row * ldm + col] : pointer[col * ldm + row];
    }
  }
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& frag, const float* pointer, unsigned ldm,
                             layout_t layout) {
  detail::check_pointer(pointer, ldm, detail::kLoadC);
  for (int row = 0; row < 16; ++row) {
    for (int col = 0; col < 16; ++col) {
      frag.x[row * 16 + col] = layout == mem_row_major ? pointer[row * ldm + col] : pointer[col * ldm + row];
    }
  }
}

inline void store_matrix_sync(float* pointer, const fragment<accumulator, 16, 16, 16, float>& frag, unsigned ldm,
                              layout_t layout) {
  detail::check_pointer(pointer, ldm, detail::kStore);
  for (unsigned e = detail::lane(); e < 256; e += 32) {
    const unsigned row = e / 16, col = e % 16;
    pointer[layout == mem_row_major ? row * ldm + col : col * ldm + row] = frag.x[e];
  }
}

template <typename Use, typename T, typename Layout, typename Value>
inline void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& frag, const Value& value) {
  ::lstmkern_emu::note_wmma(detail::kFill, nullptr, 0);
  for (auto& element : frag.x) element = static_cast<T>(value);
}

template <typename T, typename LayoutA, typename LayoutB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LayoutA>& a,
                     const fragment<matrix_b, 16, 16, 16, T, LayoutB>& b,
                     const fragment<accumulator, 16, 16, 16, float>& c) {
  ::lstmkern_emu::note_wmma(detail::kMma, nullptr, 0);
  float result[256];
  for (int row = 0; row < 16; ++row) {
    for (int col = 0; col < 16; ++col) {
      float sum = c.x[row * 16 + col];
      for (int k = 0; k < 16; ++k) sum += static_cast<float>(a.x[row * 16 + k]) * static_cast<float>(b.x[k * 16 + col]);
      result[row * 16 + col] = sum;
    }
  }
  for (int e = 0; e < 256; ++e) d.x[e] = result[e];
}

}  // namespace wmma
}  // namespace nvcuda
