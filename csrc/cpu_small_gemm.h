// The CPU backend's small-M GEMM: the per-step recurrent product C (M x N) = A (M x K) op(W) + beta * C, where M (the
// batch) is small, op(W) (K x N) is the same weight every step, and A and C change every step.
//
// Why not the BLAS: at small M the product is one pass over W per step (16 multiply-adds per weight element at
// M = 16), and what a BLAS call adds on top of that pass (re-packing W into its own layout on every call, or, for
// MKL's packed sgemm, kernels that on some CPUs run a narrower instruction set than the CPU has) costs as much as the
// pass. Here W is packed once per op call into K-major panels (below) and every step streams each panel once through
// a register-blocked kernel compiled per instruction set (cpu_small_gemm_avx512.cpp, cpu_small_gemm_avx2.cpp; chosen
// at run time in cpu_small_gemm.cpp).
//
// Packed layout of op(W) (K x N) for a kernel with panel width NR and vector width VW (both per ISA and element type,
// SmallGemmKernel::panel_width / vector_width): panel p (p = 0 .. ceil(N / NR) - 1) holds the columns
// [p*NR, p*NR + width_p) with width_p = min(NR, round_up(N - p*NR, VW)), starts at element p*NR*K, and stores column
// p*NR + j of row k at [k * width_p + j]; the columns >= N of the last panel are zeros (so every vector load is whole).
// A K-block [k0, k0 + kc) of a panel is then one contiguous run of kc * width_p elements.
//
// Callers (cpu_lstm.cpp's StepOperands) ask small_gemm_for<T>(M) once per op call: it gives a kernel where one exists
// for this CPU and M is at most small_gemm_max_rows() (the measured crossover against MKL's packed sgemm, see
// cpu_small_gemm.cpp); otherwise nullptr, and they keep the BLAS path.
#pragma once

#include <cstdint>

namespace lstmkern::cpu {

// One call of an ISA's kernel: C = A op(W) + beta * C over all M rows and N columns. beta == 0 never reads C (it may
// hold garbage, e.g. NaN).
template <typename T>
struct SmallGemmArgs {
  int64_t M, N, K;
  const T* a;  // (M x K), row stride lda
  int64_t lda;
  const T* packed;  // op(W) in the panel layout above
  T beta;
  T* c;  // (M x N), row stride ldc
  int64_t ldc;
};

// One instruction set's kernels: the panel and vector widths its packed layout uses, and the multiply.
template <typename T>
struct SmallGemmKernel {
  int64_t panel_width;   // NR
  int64_t vector_width;  // VW (NR is a multiple of it)
  void (*multiply)(const SmallGemmArgs<T>&);
};

struct SmallGemmKernels {
  const char* isa;
  SmallGemmKernel<float> f32;
  SmallGemmKernel<double> f64;
};

// The AVX-512F and the AVX2 + FMA builds, or nullptr where they were not compiled (not x86-64 GCC). Compiled for their
// ISA and checking nothing: call them only where the CPU has it (cpu_small_gemm.cpp checks first).
const SmallGemmKernels* small_gemm_kernels_avx512();
const SmallGemmKernels* small_gemm_kernels_avx2();

// The kernels this CPU runs (the widest available), or nullptr (no vector kernel: the BLAS path everywhere).
const SmallGemmKernels* small_gemm_kernels();
// "avx512", "avx2" or "none".
const char* small_gemm_isa();

// Largest M the kernel takes (above it MKL's packed sgemm / the BLAS is faster); settable for tests and benchmarks.
int64_t small_gemm_max_rows();

// The kernel for M-row products of element type T: nullptr where none exists or M is 0 or above
// small_gemm_max_rows() (the caller keeps the BLAS path). Packing and multiplying go through the same kernel.
template <typename T>
const SmallGemmKernel<T>* small_gemm_for(int64_t M);

// Elements of T that op(W) (K x N) takes packed: K * round_up(N, vector_width).
template <typename T>
int64_t small_gemm_packed_size(const SmallGemmKernel<T>& kernel, int64_t N, int64_t K);

// Packs op(W) (K x N) into `dst` (small_gemm_packed_size elements). op(W) = W^T when `trans` (W stored N x K,
// row-major, leading dimension ldw), else W itself (stored K x N, leading dimension ldw).
template <typename T>
void small_gemm_pack(const SmallGemmKernel<T>& kernel, bool trans, int64_t N, int64_t K, const T* w, int64_t ldw,
                     T* dst);

// C (M x N) = A (M x K) op(W) + beta * C with op(W) packed by small_gemm_pack for the same kernel. Serial: the
// caller's tasks split N among the threads.
template <typename T>
void small_gemm_multiply(const SmallGemmKernel<T>& kernel, int64_t M, int64_t N, int64_t K, const T* a, int64_t lda,
                         const T* packed, T beta, T* c, int64_t ldc);

}  // namespace lstmkern::cpu
