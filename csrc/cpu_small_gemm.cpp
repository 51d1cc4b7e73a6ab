// The small-M GEMM (cpu_small_gemm.h): the choice of kernel for this CPU, packing, and a few lstmkern_cpu ops that
// expose it to tests and benchmarks (direct products against float64, the ISA, the M crossover).
//
// The crossover (small_gemm_max_rows, kDefaultMaxRows = 256): against MKL's packed sgemm (the path it replaces for
// float32), one thread, CPU time of one step's 32 (H = 1024) or 16 (H = 256) products of N = 128 / 64 columns, medians
// of 5 interleaved runs, AMD EPYC (Zen 4, AVX-512), MKL 2024.2: MKL / kernel = 6.6x at M = 1, 2.9x at M = 8, 2.1x at
// M = 16, 1.5x at M = 32, 1.3-1.5x at M = 48..128 and 1.4x (H = 1024) / 1.2x (H = 256) at M = 256, the largest
// measured. So the kernel takes every M up to 256; above that (unmeasured) the BLAS keeps it. Not measured on Intel
// CPUs, where MKL runs its own AVX-512 kernels and the crossover may lie lower.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <type_traits>

#include "cpu_small_gemm.h"

namespace lstmkern::cpu {
namespace {

constexpr int64_t kDefaultMaxRows = 256;

// The AVX-512 / AVX2 kernels where this CPU runs them, else nullptr. The CPU is checked before the ISA file's function
// is called at all (that function is itself compiled for its ISA).
const SmallGemmKernels* avx512_kernels() {
#if defined(__x86_64__) && defined(__GNUC__)
  if (__builtin_cpu_supports("avx512f")) return small_gemm_kernels_avx512();
#endif
  return nullptr;
}
const SmallGemmKernels* avx2_kernels() {
#if defined(__x86_64__) && defined(__GNUC__)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return small_gemm_kernels_avx2();
#endif
  return nullptr;
}

const SmallGemmKernels* widest_kernels() { return avx512_kernels() != nullptr ? avx512_kernels() : avx2_kernels(); }

// The kernels in use: the widest by default; tests switch to a narrower one to run it on a wider CPU.
std::atomic<const SmallGemmKernels*>& chosen_kernels() {
  static std::atomic<const SmallGemmKernels*> chosen{widest_kernels()};
  return chosen;
}

std::atomic<int64_t> max_rows{kDefaultMaxRows};

template <typename T>
const SmallGemmKernel<T>& kernel_of(const SmallGemmKernels& k) {
  if constexpr (std::is_same_v<T, float>) return k.f32;
  else return k.f64;
}

}  // namespace

const SmallGemmKernels* small_gemm_kernels() { return chosen_kernels().load(); }

const char* small_gemm_isa() {
  const SmallGemmKernels* k = small_gemm_kernels();
  return k == nullptr ? "none" : k->isa;
}

int64_t small_gemm_max_rows() { return max_rows.load(); }

template <typename T>
const SmallGemmKernel<T>* small_gemm_for(int64_t M) {
  const SmallGemmKernels* k = small_gemm_kernels();
  if (k == nullptr || M <= 0 || M > small_gemm_max_rows()) return nullptr;
  return &kernel_of<T>(*k);
}

template <typename T>
int64_t small_gemm_packed_size(const SmallGemmKernel<T>& kernel, int64_t N, int64_t K) {
  const int64_t vw = kernel.vector_width;
  return K * ((N + vw - 1) / vw * vw);
}

template <typename T>
void small_gemm_pack(const SmallGemmKernel<T>& kernel, bool trans, int64_t N, int64_t K, const T* w, int64_t ldw,
                     T* dst) {
  const int64_t nr = kernel.panel_width, vw = kernel.vector_width;
  for (int64_t p0 = 0; p0 < N; p0 += nr) {
    const int64_t cols = std::min(nr, N - p0), width = (cols + vw - 1) / vw * vw;
    T* panel = dst + p0 * K;
    if (trans) {  // column p0 + j of op(W) is row p0 + j of W: read W's rows contiguously
      for (int64_t j = 0; j < cols; ++j) {
        const T* src = w + (p0 + j) * ldw;
        for (int64_t k = 0; k < K; ++k) panel[k * width + j] = src[k];
      }
    } else {
      for (int64_t k = 0; k < K; ++k) std::memcpy(panel + k * width, w + k * ldw + p0, cols * sizeof(T));
    }
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = cols; j < width; ++j) panel[k * width + j] = T(0);
  }
}

template <typename T>
void small_gemm_multiply(const SmallGemmKernel<T>& kernel, int64_t M, int64_t N, int64_t K, const T* a, int64_t lda,
                         const T* packed, T beta, T* c, int64_t ldc) {
  if (M == 0 || N == 0) return;
  kernel.multiply(SmallGemmArgs<T>{M, N, K, a, lda, packed, beta, c, ldc});
}

#define LSTMKERN_SMALL_GEMM_INSTANTIATE(T)                                                                           \
  template const SmallGemmKernel<T>* small_gemm_for<T>(int64_t);                                                    \
  template int64_t small_gemm_packed_size<T>(const SmallGemmKernel<T>&, int64_t, int64_t);                         \
  template void small_gemm_pack<T>(const SmallGemmKernel<T>&, bool, int64_t, int64_t, const T*, int64_t, T*);        \
  template void small_gemm_multiply<T>(const SmallGemmKernel<T>&, int64_t, int64_t, int64_t, const T*, int64_t,    \
                                       const T*, T, T*, int64_t);
LSTMKERN_SMALL_GEMM_INSTANTIATE(float)
LSTMKERN_SMALL_GEMM_INSTANTIATE(double)
#undef LSTMKERN_SMALL_GEMM_INSTANTIATE

namespace {

// ---------------------------------------------------------------------------------------------------------------------
// Ops for tests and benchmarks.
// ---------------------------------------------------------------------------------------------------------------------

std::string isa_op() { return small_gemm_isa(); }

// Switches to the named kernels ("avx512", "avx2", or "none" for the BLAS path everywhere); returns the previous name.
std::string set_isa_op(const std::string& isa) {
  const SmallGemmKernels* next = nullptr;
  if (isa == "avx512" || isa == "avx2") {
    next = isa == "avx512" ? avx512_kernels() : avx2_kernels();
    TORCH_CHECK(next != nullptr, "lstmkern_cpu: the ", isa, " small-GEMM kernels do not run on this CPU or build");
  } else {
    TORCH_CHECK(isa == "none", "lstmkern_cpu: isa must be 'avx512', 'avx2' or 'none', got '", isa, "'");
  }
  const std::string previous = small_gemm_isa();
  chosen_kernels().store(next);
  return previous;
}

int64_t max_rows_op() { return small_gemm_max_rows(); }

// Sets the largest M the kernel takes (0: never); returns the previous value.
int64_t set_max_rows_op(int64_t rows) {
  TORCH_CHECK(rows >= 0, "lstmkern_cpu: rows must be >= 0, got ", rows);
  return max_rows.exchange(rows);
}

// c_out (M, N) = a (M, K) op(w) + beta * c, through pack + multiply of the kernels in use (for any M, whatever the
// crossover). op(w) = w^T with w (N, K) when trans_w, else w (K, N).
at::Tensor small_gemm_op(const at::Tensor& a, const at::Tensor& w, bool trans_w, double beta, const at::Tensor& c) {
  const SmallGemmKernels* kernels = small_gemm_kernels();
  TORCH_CHECK(kernels != nullptr, "lstmkern_cpu: no small-GEMM kernel runs on this CPU (isa 'none')");
  TORCH_CHECK(a.dim() == 2 && w.dim() == 2 && c.dim() == 2, "lstmkern_cpu: a, w and c must be 2-D");
  TORCH_CHECK(a.device().is_cpu() && w.device().is_cpu() && c.device().is_cpu(), "lstmkern_cpu: CPU tensors only");
  TORCH_CHECK(a.scalar_type() == w.scalar_type() && a.scalar_type() == c.scalar_type(),
              "lstmkern_cpu: a, w and c must have one dtype");
  TORCH_CHECK(a.is_contiguous() && w.is_contiguous() && c.is_contiguous(), "lstmkern_cpu: a, w, c must be contiguous");
  const int64_t M = a.size(0), K = a.size(1), N = trans_w ? w.size(0) : w.size(1);
  TORCH_CHECK((trans_w ? w.size(1) : w.size(0)) == K, "lstmkern_cpu: w does not match a's K = ", K);
  TORCH_CHECK(c.size(0) == M && c.size(1) == N, "lstmkern_cpu: c must be (", M, ", ", N, ")");
  at::Tensor out = c.clone();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "lstmkern_cpu::small_gemm", [&] {
    const SmallGemmKernel<scalar_t>& kernel = kernel_of<scalar_t>(*kernels);
    at::Tensor packed = at::empty({small_gemm_packed_size(kernel, N, K)}, a.options());
    small_gemm_pack(kernel, trans_w, N, K, w.data_ptr<scalar_t>(), w.size(1), packed.data_ptr<scalar_t>());
    small_gemm_multiply(kernel, M, N, K, a.data_ptr<scalar_t>(), K, packed.data_ptr<scalar_t>(),
                        static_cast<scalar_t>(beta), out.data_ptr<scalar_t>(), N);
  });
  return out;
}

}  // namespace
}  // namespace lstmkern::cpu

TORCH_LIBRARY_FRAGMENT(lstmkern_cpu, m) {
  // The small-M GEMM of the per-step products (csrc/cpu_small_gemm.h), for tests and benchmarks.
  m.def("small_gemm_isa() -> str", &lstmkern::cpu::isa_op);
  m.def("set_small_gemm_isa(str isa) -> str", &lstmkern::cpu::set_isa_op);
  m.def("small_gemm_max_rows() -> int", &lstmkern::cpu::max_rows_op);
  m.def("set_small_gemm_max_rows(int rows) -> int", &lstmkern::cpu::set_max_rows_op);
  m.def("small_gemm(Tensor a, Tensor w, bool trans_w, float beta, Tensor c) -> Tensor",
        &lstmkern::cpu::small_gemm_op);
}
