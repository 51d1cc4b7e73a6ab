// The "cpu" backend: G-LSTM and F-LSTM forward and backward on CPU tensors, registered as the torch.ops.lstmkern_cpu
// ops (CPU kernels). Compiled into lstmkern._C in every build, with or without CUDA.
//
// Shape legend (as in lstmkern/reference.py): T steps, B batch, I inputs, H hidden units, G groups, Hg = H / G,
// Ig = I / G, R rank, P projection size (P = H without one), Pg = P / G. x (T, B, I); h0 (B, P); c0 (B, H); G-LSTM
// weight_ih (G, 4Hg, Ig) (grouped input) or (G, 4Hg, I) (dense input), weight_hh (G, 4Hg, Pg), bias (G, 4Hg); F-LSTM
// weight_1 (R, I + P), weight_2 (4H, R), bias (4H); the optional projection weight_hr (P, H).
// Outputs: output (T, B, P) and cell (T, B, H); the backward returns dx, dh0, dc0, the weight gradients, dbias (always)
// and dweight_hr (empty without a projection).
// float32 and float64 (the element type is also the state type, as lstmkern.reference.state_dtype says), and bfloat16
// (float32 state: cell and grad_cell are float32; run by the float32 drivers with bfloat16 rounding, see "bfloat16").
//
// Structure (what makes it fast on a CPU, where the reference's per-step Python and temporaries cost more than the
// arithmetic):
//  * the input projection of all T steps is one large GEMM per group (MKL/OpenBLAS through ATen's cpublas), written
//    straight into the gate buffer (T*B, G*4Hg); the bias is added inside the cell, not in a separate pass;
//  * per step, one at::parallel_for over tasks (group g, chunk of hidden units): each task accumulates the recurrent
//    product of its units' four gate rows onto the gate buffer (small GEMMs with beta = 1, no allocation; the weight
//    slices are packed once per call for cpu_small_gemm.h's kernel, see StepOperands) and runs the vectorised cell for
//    them, writing h_t and c_t straight into `output` and `cell` and the activated gates back into the gate buffer,
//    which the forward returns for the backward (the workspace). A task reads only its slice of W_hh, so each thread
//    streams a disjoint part of the weights every step. Small steps run as one serial task (a parallel region costs
//    more than it saves);
//  * F-LSTM needs z = W1_h h_{t-1} complete before any gate: two parallel regions per step (z by rank chunks, then
//    gates + cell by unit chunks);
//  * backward: on the forward's activated gates (no recompute, no exp, one tanh per unit), the reverse walk with one
//    parallel region per step for G-LSTM (task (g, chunk) forms its columns of dh_t = dgates_{t+1} W_hh[g] and runs
//    the cell backward for the same units into the dgates buffer) and two for F-LSTM (dz_t by rank chunks, kept for
//    the weight gradients; F-LSTM's z, for dweight_2, is recomputed time-parallel: a product (I+P)/4H the size of the
//    gates'); the weight gradients, dx and dbias are large GEMMs / one reduction after the loop;
//  * projection (LSTMP): one more region per step, h_t = m_t W_hr^T by chunks of P columns in the forward, and in the
//    backward dh_t (by columns of P) before dm_t = dh_t W_hr + the cell backward (by units); see "Projection" below.
// The per-step GEMMs run single-threaded (SerialBlas; inside a parallel region MKL would anyway); the large ones outside
// the loop use all threads.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/mm.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>
#include <initializer_list>
#include <optional>
#include <cstdint>

#include "cpu_lstm.h"
#include "cpu_small_gemm.h"

namespace lstmkern::cpu {
namespace {

using at::Tensor;

// ---------------------------------------------------------------------------------------------------------------------
// Cell kernels of the best instruction set this CPU has.
// ---------------------------------------------------------------------------------------------------------------------

const CellKernels& cell_kernels() {
  static const CellKernels* chosen = [] {
#if defined(__x86_64__) && defined(__GNUC__)
    // Ask the CPU first: cell_kernels_avx2() lives in a translation unit compiled with -mavx2, so even calling it
    // may execute AVX2 instructions.
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      if (const CellKernels* avx2 = cell_kernels_avx2(); avx2 != nullptr) return avx2;
    }
#endif
    return cell_kernels_default();
  }();
  return *chosen;
}

void cell_forward(const CellForward<float>& a) { cell_kernels().forward_f32(a); }
void cell_forward(const CellForward<double>& a) { cell_kernels().forward_f64(a); }
void cell_backward(const CellBackward<float>& a) { cell_kernels().backward_f32(a); }
void cell_backward(const CellBackward<double>& a) { cell_kernels().backward_f64(a); }

// ---------------------------------------------------------------------------------------------------------------------
// Row-major GEMM: C (M x N, ldc) = alpha * op(A) op(B) + beta * C, op(A) M x K, op(B) K x N.
// ---------------------------------------------------------------------------------------------------------------------

}  // namespace
}  // namespace lstmkern::cpu

// The Fortran BLAS that libtorch links (MKL in the x86-64 wheels, OpenBLAS elsewhere) is called directly: the per-step
// products are many small GEMMs into views of preallocated buffers, where a tensor-level call (at::addmm_ on
// from_blob views) costs more in dispatch and TensorImpl construction than the product itself. ATen's own
// at::native::cpublas::gemm overloads are not exported from libtorch. Declared weak, so an extension loaded into a
// torch without these symbols still imports (and takes the at::addmm_ path below).
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc) __attribute__((weak));
// MKL's packed GEMM (float32 only): a weight packed once per call into MKL's internal blocked layout, then multiplied
// every step without being re-packed (an unpacked small-batch GEMM re-packs the whole weight on every call, which
// costs as much as the product). oneDNN's RNN primitive, behind nn.LSTM on CPU, does the same with its own kernels.
size_t sgemm_pack_get_size_(const char* identifier, const int* m, const int* n, const int* k) __attribute__((weak));
void sgemm_pack_(const char* identifier, const char* trans, const int* m, const int* n, const int* k,
                 const float* alpha, const float* src, const int* ld, float* dest) __attribute__((weak));
void sgemm_compute_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* a,
                    const int* lda, const float* b, const int* ldb, const float* beta, float* c, const int* ldc)
    __attribute__((weak));
// MKL's per-thread thread count (returns the previous setting; 0 = none set).
int MKL_Set_Num_Threads_Local(int nthreads) __attribute__((weak));
}

namespace lstmkern::cpu {
namespace {

template <typename T>
at::Tensor matrix_view(const T* data, int64_t rows, int64_t cols, int64_t ld, bool transposed) {
  // op(X) as a (rows x cols) tensor over X's row-major storage (X itself is cols x rows when transposed).
  auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  return transposed ? at::from_blob(const_cast<T*>(data), {rows, cols}, {1, ld}, options)
                    : at::from_blob(const_cast<T*>(data), {rows, cols}, {ld, 1}, options);
}

template <typename T>
bool call_blas(char ta, char tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
               int64_t ldb, T beta, T* c, int64_t ldc) {
  constexpr int64_t kIntMax = 2147483647;
  if (std::max({m, n, k, lda, ldb, ldc}) > kIntMax) return false;
  const int mi = static_cast<int>(m), ni = static_cast<int>(n), ki = static_cast<int>(k);
  const int ldai = static_cast<int>(lda), ldbi = static_cast<int>(ldb), ldci = static_cast<int>(ldc);
  if constexpr (std::is_same_v<T, float>) {
    if (sgemm_ == nullptr) return false;
    sgemm_(&ta, &tb, &mi, &ni, &ki, &alpha, a, &ldai, b, &ldbi, &beta, c, &ldci);
  } else {
    if (dgemm_ == nullptr) return false;
    dgemm_(&ta, &tb, &mi, &ni, &ki, &alpha, a, &ldai, b, &ldbi, &beta, c, &ldci);
  }
  return true;
}

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // C = beta * C (a BLAS may not touch C at all here)
    for (int64_t r = 0; r < M; ++r)
      for (int64_t c = 0; c < N; ++c) C[r * ldc + c] = beta == T(0) ? T(0) : beta * C[r * ldc + c];
    return;
  }
  // BLAS is column-major: a row-major matrix is its column-major transpose, so C^T = op(B)^T op(A)^T.
  if (call_blas<T>(trans_b ? 'T' : 'N', trans_a ? 'T' : 'N', N, M, K, alpha, B, ldb, A, lda, beta, C, ldc)) return;
  matrix_view(C, M, N, ldc, false).addmm_(matrix_view(A, M, K, lda, trans_a), matrix_view(B, K, N, ldb, trans_b),
                                          beta, alpha);
}

// ---------------------------------------------------------------------------------------------------------------------
// Step operands: the weight side op(W) (K x N) of the per-step products C (M x N) = A (M x K) op(W) + beta * C, with
// the same M (the batch) every step. Packed once per op call: for the small-M kernel (cpu_small_gemm.h; float32 and
// float64, wherever it runs and M is at most its measured crossover), else for MKL's packed GEMM where it is there
// (float32), else plain BLAS.
// ---------------------------------------------------------------------------------------------------------------------

bool fits_int(std::initializer_list<int64_t> values) {
  for (int64_t v : values)
    if (v > 2147483647) return false;
  return true;
}

template <typename T>
struct StepOperand {
  bool trans = false;  // op(W) = W^T: W is stored (N x K), row-major with leading dimension ldw
  int64_t N = 0, K = 0, ldw = 0;
  const T* w = nullptr;
  float* packed = nullptr;  // MKL packed form of op(W) for M = the batch, or nullptr
  const SmallGemmKernel<T>* small = nullptr;  // the small-M kernel op(W) is packed for (in small_packed), or nullptr
  const T* small_packed = nullptr;

  void multiply(int64_t M, const T* A, int64_t lda, T beta, T* C, int64_t ldc) const {
    if (small != nullptr) {
      small_gemm_multiply<T>(*small, M, N, K, A, lda, small_packed, beta, C, ldc);
      return;
    }
    if constexpr (std::is_same_v<T, float>) {
      if (packed != nullptr && M > 0) {
        const char p = 'P', n = 'N';
        const int ni = static_cast<int>(N), mi = static_cast<int>(M), ki = static_cast<int>(K);
        const int ldai = static_cast<int>(lda), ldci = static_cast<int>(ldc);
        // Column-major C^T (N x M) = op(W)^T (packed) A^T.
        sgemm_compute_(&p, &n, &ni, &mi, &ki, packed, &ni, A, &ldai, &beta, C, &ldci);
        return;
      }
    }
    gemm<T>(false, trans, M, N, K, T(1), A, lda, w, ldw, beta, C, ldc);
  }
};

// Owns the packed buffers of a set of step operands.
template <typename T>
class StepOperands {
 public:
  explicit StepOperands(int64_t M) : M_(M) {}

  // Index of the new operand op(W) (K x N); see StepOperand.
  size_t add(bool trans, int64_t N, int64_t K, const T* w, int64_t ldw) {
    StepOperand<T> op;
    op.trans = trans, op.N = N, op.K = K, op.w = w, op.ldw = ldw;
    operands_.push_back(op);
    return operands_.size() - 1;
  }

  // Packs every operand where packing applies.
  void pack() {
    if (const SmallGemmKernel<T>* kernel = small_gemm_for<T>(M_)) {
      std::vector<int64_t> offsets(operands_.size() + 1, 0);
      for (size_t i = 0; i < operands_.size(); ++i) {  // 64-byte aligned starts
        const int64_t elements = small_gemm_packed_size<T>(*kernel, operands_[i].N, operands_[i].K);
        offsets[i + 1] = offsets[i] + (elements * int64_t{sizeof(T)} + 63) / 64 * 64;
      }
      storage_ = at::empty({offsets.back() + 64}, at::TensorOptions().dtype(at::kByte));
      auto* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(storage_.data_ptr()) + 63) & ~uintptr_t{63});
      for (size_t i = 0; i < operands_.size(); ++i) {
        operands_[i].small = kernel;
        operands_[i].small_packed = reinterpret_cast<const T*>(base + offsets[i]);
      }
      // A copy of the weights: in parallel over the operands (disjoint destinations).
      const int64_t count = static_cast<int64_t>(operands_.size());
      at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const StepOperand<T>& op = operands_[i];
          small_gemm_pack<T>(*kernel, op.trans, op.N, op.K, op.w, op.ldw, reinterpret_cast<T*>(base + offsets[i]));
        }
      });
      return;
    }
    if constexpr (std::is_same_v<T, float>) {
      if (sgemm_pack_get_size_ == nullptr || sgemm_pack_ == nullptr || sgemm_compute_ == nullptr || M_ == 0) return;
      std::vector<int64_t> offsets(operands_.size() + 1, 0);
      for (size_t i = 0; i < operands_.size(); ++i) {
        const StepOperand<T>& op = operands_[i];
        int64_t bytes = 0;
        if (op.N > 0 && op.K > 0 && fits_int({op.N, op.K, M_, op.ldw})) {
          const int ni = static_cast<int>(op.N), mi = static_cast<int>(M_), ki = static_cast<int>(op.K);
          bytes = static_cast<int64_t>(sgemm_pack_get_size_("A", &ni, &mi, &ki));
        }
        offsets[i + 1] = offsets[i] + (bytes + 63) / 64 * 64;  // 64-byte aligned starts
      }
      if (offsets.back() == 0) return;
      storage_ = at::empty({offsets.back() + 64}, at::TensorOptions().dtype(at::kByte));
      auto* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(storage_.data_ptr()) + 63) & ~uintptr_t{63});
      // Serially: MKL threads each pack itself where it is worth it, and a parallel region around MKL calls costs
      // a scheduler slice per call on a loaded machine.
      for (size_t i = 0; i < operands_.size(); ++i) {
        StepOperand<T>& op = operands_[i];
        if (offsets[i + 1] == offsets[i]) continue;
        op.packed = reinterpret_cast<float*>(base + offsets[i]);
        const char a = 'A', tr = op.trans ? 'T' : 'N';
        const int ni = static_cast<int>(op.N), mi = static_cast<int>(M_), ki = static_cast<int>(op.K);
        const int ld = static_cast<int>(op.ldw);
        const float one = 1.0f;
        sgemm_pack_(&a, &tr, &ni, &mi, &ki, &one, op.w, &ld, op.packed);
      }
    }
  }

  const StepOperand<T>& operator[](size_t i) const { return operands_[i]; }

 private:
  int64_t M_;
  std::vector<StepOperand<T>> operands_;
  at::Tensor storage_;
};

// ---------------------------------------------------------------------------------------------------------------------
// Work split of one step: tasks = (group, chunk of `chunk` consecutive hidden units / rank columns).
// ---------------------------------------------------------------------------------------------------------------------

// Below this many multiply-adds per task (~10-20 us of one core) a task costs more in fork/join and narrower small-GEMM
// tiles than it saves (an OpenMP region costs ~2 us here on a quiet machine; on one shared with other processes a
// region can cost a scheduler slice). Measured at I = H = 128, B = 16, 2 threads, against nn.LSTM in the same process:
// G = 1 (1M per step) split in two tasks of 64 units ran its forward at 0.50x -> 0.67-0.71x and forward+backward at
// 0.66x -> 0.88-0.99x nn.LSTM's speed (2^21 -> 2^19); four tasks of 32 units (2^18) gained nothing more; G = 4 and
// R = 32 (256K per step) stay one serial task.
constexpr int64_t kMinTaskMacs = int64_t{1} << 19;
// Chunks are whole 64-byte lines of float32 (or double) where the size allows, so tasks do not share cache lines.
constexpr int64_t kChunkAlign = 16;

struct Split {
  int64_t chunk;             // units per task (the last chunk of a group may be shorter)
  int64_t chunks_per_group;  // ceil(units / chunk)
  int64_t tasks;             // groups * chunks_per_group
  int64_t grain;             // at::parallel_for grain: tasks (serial) or 1

  int64_t group(int64_t task) const { return task / chunks_per_group; }
  int64_t begin(int64_t task) const { return (task % chunks_per_group) * chunk; }
  int64_t size(int64_t task, int64_t units) const { return std::min(chunk, units - begin(task)); }
};

// `units` per group, `macs_per_unit` multiply-adds per unit of one step (over the whole batch).
Split split_units(int64_t groups, int64_t units, int64_t macs_per_unit) {
  const int64_t threads = at::get_num_threads();
  const int64_t total = groups * units;
  const int64_t by_work = std::max<int64_t>(1, total * macs_per_unit / kMinTaskMacs);
  // Up to 4 tasks per thread: enough to even out groups that do not divide among the threads.
  const int64_t want = std::min<int64_t>(threads > 1 ? 4 * threads : 1, by_work);
  int64_t chunk = (total + want - 1) / want;
  chunk = std::min(units, std::max<int64_t>(1, (chunk + kChunkAlign - 1) / kChunkAlign * kChunkAlign));
  chunk = std::max<int64_t>(chunk, 1);
  Split s;
  s.chunk = chunk;
  s.chunks_per_group = units == 0 ? 1 : (units + chunk - 1) / chunk;
  s.tasks = groups * s.chunks_per_group;
  s.grain = (want <= 1 || s.tasks <= 1) ? std::max<int64_t>(s.tasks, 1) : 1;
  return s;
}

// While alive, the BLAS calls of this thread run single-threaded. The per-step products are threaded by the tasks
// around them (inside a parallel region MKL runs sequentially by itself); where a step runs as one serial task, MKL
// would otherwise open its own parallel region for every small product, and on a loaded machine each region can cost
// a scheduler slice while its threads wait for one another.
// Its scope must end before the time-parallel GEMMs after a loop (parallel_gemm checks it): held over them, it ran the
// backward's weight-gradient and dx GEMMs on one thread, half the speed on two.
class SerialBlas {
 public:
  SerialBlas() : previous_(MKL_Set_Num_Threads_Local != nullptr ? MKL_Set_Num_Threads_Local(1) : -1) { ++depth(); }
  ~SerialBlas() {
    --depth();
    if (previous_ >= 0) MKL_Set_Num_Threads_Local(previous_);
  }
  SerialBlas(const SerialBlas&) = delete;
  SerialBlas& operator=(const SerialBlas&) = delete;

  // Whether one is alive on this thread (counted whether or not the BLAS is MKL, so the check holds everywhere).
  static bool active() { return depth() > 0; }

 private:
  static int& depth() {
    thread_local int d = 0;
    return d;
  }
  int previous_;
};

// A time-parallel GEMM (input projections, recompute, weight gradients, dx): the BLAS threads it, so it must not run
// while a SerialBlas holds this thread's BLAS to one thread.
template <typename T>
void parallel_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
                   const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  TORCH_INTERNAL_ASSERT(!SerialBlas::active(), "lstmkern cpu: a time-parallel GEMM inside a SerialBlas scope");
  gemm<T>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <typename F>
void for_each_task(const Split& s, const F& body) {
  if (s.tasks == 0) return;
  at::parallel_for(0, s.tasks, s.grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) body(task);
  });
}

// ---------------------------------------------------------------------------------------------------------------------
// bfloat16: the drivers run in float32 (the state dtype of bfloat16, lstmkern.reference.state_dtype) on the inputs
// converted once per call (bfloat16 -> float32 is exact), with `bf16` set. They then round to bfloat16 exactly where
// the reference's bfloat16 matrix products and casts round (the reference multiplies bfloat16 operands with float32
// accumulation and one rounding of the result):
//  * forward: the input projection, every step's recurrent product (rounded on its own, then added to the rounded
//    input projection in float32), F-LSTM's z_t = h_{t-1} W1_h^T and z_t W2^T, the cell output m_t, and the projection
//    h_t = m_t W_hr^T; so h_t, which the next step multiplies by, holds bfloat16 values (returned as bfloat16 exactly);
//  * backward: the forward's gates (the reference's backward forms its pre-activations as its forward does), the
//    time-parallel recompute of F-LSTM's z (one bfloat16 product, as the reference), and m_t before dweight_hr; the
//    recurrence itself and every gradient run in float32 (as in the reference) and are rounded once, on return.
// The time-parallel products with bfloat16 operands (the input projection; in the backward F-LSTM's z) are the
// reference's own ATen calls on the original bfloat16 tensors (Bf16Originals): oneDNN's bfloat16 GEMM, with float32
// accumulation, where the CPU has it (2.4x the float32 GEMM on this Zen 4); their bfloat16 results are widened into
// the float32 buffers. The weight gradients and dx multiply float32 dgates, so they stay float32 GEMMs, as in the
// reference.
// With bf16 false (float32 and float64 inputs) these helpers do nothing.
// ---------------------------------------------------------------------------------------------------------------------

// The bfloat16 tensors of a bfloat16 call (the drivers get float32 copies of them too). output: backward only.
struct Bf16Originals {
  Tensor x, h0, weight_a, weight_b, output;
};

// (T*B, P) bfloat16: h_{t-1} of every step, [h0; output[0 .. T-2]] (what the backward's recompute multiplies).
Tensor previous_h(const Bf16Originals& o) {
  const int64_t T = o.x.size(0), B = o.x.size(1);
  return at::cat({o.h0.unsqueeze(0), o.output.narrow(0, 0, T - 1)}, 0).view({T * B, o.h0.size(1)});
}

// v rounded to the nearest bfloat16 (ties to even), for float; the drivers only set bf16 for float.
template <typename T>
T bf16_value(T v) {
  if constexpr (std::is_same_v<T, float>) return static_cast<float>(c10::BFloat16(v));
  return v;
}

// X (rows x cols, row stride ld) rounded to bfloat16 values in place.
template <typename T>
void round_to_bf16(bool bf16, T* x, int64_t rows, int64_t cols, int64_t ld) {
  if (!bf16) return;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) x[r * ld + c] = bf16_value(x[r * ld + c]);
}

// The same for a large matrix, in parallel over rows (outside the per-step regions).
template <typename T>
void round_to_bf16_parallel(bool bf16, T* x, int64_t rows, int64_t cols, int64_t ld) {
  if (!bf16 || rows == 0 || cols == 0) return;
  at::parallel_for(0, rows, std::max<int64_t>(1, (int64_t{1} << 16) / cols), [&](int64_t begin, int64_t end) {
    round_to_bf16(bf16, x + begin * ld, end - begin, cols, ld);
  });
}

// base + offset, or nullptr for a buffer that does not exist (pointer arithmetic on nullptr is undefined).
template <typename T>
T* offset_or_null(T* base, int64_t offset) {
  return base == nullptr ? nullptr : base + offset;
}

// C (M x op.N, ldc) += A op(W): with bf16, the product goes into `scratch` (laid out like C: same offset from its
// buffer, same ldc) and is rounded to bfloat16 before it is added, as the reference adds its bfloat16 recurrent
// product to the input projection; else it accumulates onto C directly.
template <typename T>
void add_product(const StepOperand<T>& op, bool bf16, int64_t M, const T* A, int64_t lda, T* C, T* scratch,
                 int64_t ldc) {
  if (!bf16) {
    op.multiply(M, A, lda, T(1), C, ldc);
    return;
  }
  op.multiply(M, A, lda, T(0), scratch, ldc);
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = 0; c < op.N; ++c) C[r * ldc + c] += bf16_value(scratch[r * ldc + c]);
}

// ---------------------------------------------------------------------------------------------------------------------
// Checks (the Python layer validated already; these keep a direct torch.ops call from reading out of bounds).
// ---------------------------------------------------------------------------------------------------------------------

void check_tensor(const Tensor& t, const char* name, const Tensor& x, at::IntArrayRef shape) {
  TORCH_CHECK(t.device().is_cpu(), "lstmkern_cpu: ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), "lstmkern_cpu: ", name, " must have x's dtype ", x.scalar_type(),
              ", got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == shape, "lstmkern_cpu: ", name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), "lstmkern_cpu: ", name, " must be contiguous");
}

void check_x(const Tensor& x) {
  TORCH_CHECK(x.device().is_cpu(), "lstmkern_cpu: x must be a CPU tensor, got ", x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble || x.scalar_type() == at::kBFloat16,
              "lstmkern_cpu: dtype must be float32, float64 or bfloat16, got ", x.scalar_type());
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous(), "lstmkern_cpu: x must be a contiguous (T, B, I) tensor");
}

struct GlstmSizes {
  int64_t T, B, I, H, G, Hg, Ig;
  int64_t P, Pg;  // width of h and its per-group slice: P = H, Pg = Hg without a projection
  bool dense;     // weight_ih (G, 4Hg, I): every group reads all of x
};

GlstmSizes glstm_sizes(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& weight_ih,
                       const Tensor& weight_hh, const std::optional<Tensor>& bias,
                       const std::optional<Tensor>& weight_hr) {
  check_x(x);
  TORCH_CHECK(weight_hh.dim() == 3 && weight_ih.dim() == 3, "lstmkern_cpu: weight_ih and weight_hh must be 3-D");
  TORCH_CHECK(weight_hh.size(1) % 4 == 0, "lstmkern_cpu: weight_hh must be (G, 4Hg, Pg), got ", weight_hh.sizes());
  GlstmSizes s;
  s.T = x.size(0), s.B = x.size(1), s.I = x.size(2);
  s.G = weight_hh.size(0), s.Hg = weight_hh.size(1) / 4, s.H = s.G * s.Hg, s.Ig = weight_ih.size(2);
  s.Pg = weight_hh.size(2), s.P = s.G * s.Pg;
  s.dense = s.Ig == s.I;
  TORCH_CHECK(s.dense || s.Ig * s.G == s.I, "lstmkern_cpu: weight_ih's last dimension must be I / G or I");
  if (weight_hr.has_value())
    check_tensor(*weight_hr, "weight_hr", x, {s.P, s.H});
  else
    TORCH_CHECK(s.Pg == s.Hg, "lstmkern_cpu: without weight_hr, weight_hh must be (G, 4Hg, Hg), got ",
                weight_hh.sizes());
  check_tensor(weight_hh, "weight_hh", x, {s.G, 4 * s.Hg, s.Pg});
  check_tensor(weight_ih, "weight_ih", x, {s.G, 4 * s.Hg, s.Ig});
  check_tensor(h0, "h0", x, {s.B, s.P});
  check_tensor(c0, "c0", x, {s.B, s.H});
  if (bias.has_value()) check_tensor(*bias, "bias", x, {s.G, 4 * s.Hg});
  return s;
}

struct FlstmSizes {
  int64_t T, B, I, H, R;
  int64_t P;  // width of h: P = H without a projection
};

FlstmSizes flstm_sizes(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& weight_1,
                       const Tensor& weight_2, const std::optional<Tensor>& bias,
                       const std::optional<Tensor>& weight_hr) {
  check_x(x);
  TORCH_CHECK(c0.dim() == 2 && weight_1.dim() == 2, "lstmkern_cpu: c0 and weight_1 must be 2-D");
  FlstmSizes s;
  s.T = x.size(0), s.B = x.size(1), s.I = x.size(2), s.H = c0.size(1), s.R = weight_1.size(0);
  s.P = s.H;
  if (weight_hr.has_value()) {
    TORCH_CHECK(weight_hr->dim() == 2, "lstmkern_cpu: weight_hr must be 2-D (P, H)");
    s.P = weight_hr->size(0);
    check_tensor(*weight_hr, "weight_hr", x, {s.P, s.H});
  }
  check_tensor(weight_1, "weight_1", x, {s.R, s.I + s.P});
  check_tensor(weight_2, "weight_2", x, {4 * s.H, s.R});
  check_tensor(h0, "h0", x, {s.B, s.P});
  check_tensor(c0, "c0", x, {s.B, s.H});
  if (bias.has_value()) check_tensor(*bias, "bias", x, {4 * s.H});
  return s;
}

// grad_output and output are (T, B, P), grad_cell and cell (T, B, H), the forward's gates (T*B, 4H).
void check_backward_extras(const Tensor& x, const Tensor& grad_output, const std::optional<Tensor>& grad_cell,
                           const Tensor& output, const Tensor& cell, const Tensor& gates, int64_t P, int64_t H) {
  const int64_t T = x.size(0), B = x.size(1);
  check_tensor(grad_output, "grad_output", x, {T, B, P});
  if (grad_cell.has_value()) check_tensor(*grad_cell, "grad_cell", x, {T, B, H});
  check_tensor(output, "output", x, {T, B, P});
  check_tensor(cell, "cell", x, {T, B, H});
  check_tensor(gates, "gates", x, {T * B, 4 * H});
}

template <typename T>
const T* ptr_or_null(const std::optional<Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

// The gradient of the projection, returned as the backward's 7th tensor: (P, H), or an empty tensor without one (an
// op's outputs cannot be None).
Tensor no_projection_gradient(const Tensor& x) { return at::empty({0}, x.options()); }

// ---------------------------------------------------------------------------------------------------------------------
// Projection (LSTMP): with weight_hr the cell writes m_t = o * tanh(c_t) (B, H) into a per-call buffer, and
// h_t = m_t W_hr^T (B, P) goes into output[t] as one more parallel region per step, by chunks of P columns (so the next
// step reads a complete h_t). The backward walks dh_t (B, P) = grad_output[t] + the recurrent part, forms
// dm_t = dh_t W_hr by chunks of units just before the cell backward of those units, keeps every dh_t, has the cell
// backward write m_t (from the saved c_t), and forms dweight_hr = sum_t dh_t^T m_t as one GEMM after the loop.
// ---------------------------------------------------------------------------------------------------------------------

// The per-step forward product h_t = m_t W_hr^T: operands (W_hr rows p0.., transposed: H x n) added to `ops` for the
// tasks of `split` (over the P columns of h), starting at index `first`.
template <typename T>
struct ForwardProjection {
  const T* w_hr = nullptr;  // (P, H), or nullptr: no projection
  int64_t P = 0, H = 0;
  Split split{};
  size_t first = 0;

  ForwardProjection(const T* w_hr_, int64_t B, int64_t P_, int64_t H_, StepOperands<T>& ops)
      : w_hr(w_hr_), P(P_), H(H_) {
    if (w_hr == nullptr) return;
    split = split_units(1, P, B * H);
    for (int64_t task = 0; task < split.tasks; ++task) {
      const size_t index = ops.add(true, split.size(task, P), H, w_hr + split.begin(task) * H, H);
      if (task == 0) first = index;
    }
  }

  // output_t (B, P) = m (B, H) W_hr^T (rounded to bfloat16 values with bf16).
  void run(const StepOperands<T>& ops, int64_t B, const T* m, T* output_t, bool bf16) const {
    for_each_task(split, [&](int64_t task) {
      const StepOperand<T>& op = ops[first + task];
      op.multiply(B, m, H, T(0), output_t + split.begin(task), P);
      round_to_bf16(bf16, output_t + split.begin(task), B, op.N, P);
    });
  }
};

// dweight_hr = sum_t dh_t^T m_t (P, H): one time-parallel GEMM over the reverse walk's dh_all (T*B, P) and m_all
// (T*B, H) (rounded first where the reference casts m_t to bfloat16); the empty placeholder without a projection.
template <typename T>
Tensor projection_weight_gradient(const Tensor& x, const std::optional<Tensor>& weight_hr, const Tensor& dh_all,
                                  const Tensor& m_all, bool bf16) {
  if (!weight_hr.has_value()) return no_projection_gradient(x);
  const int64_t TB = m_all.size(0), H = m_all.size(1), P = weight_hr->size(0);
  T* mp = m_all.data_ptr<T>();
  round_to_bf16_parallel(bf16, mp, TB, H, H);
  Tensor dweight_hr = at::empty_like(*weight_hr);
  parallel_gemm<T>(true, false, P, H, TB, T(1), dh_all.data_ptr<T>(), P, mp, H, T(0), dweight_hr.data_ptr<T>(), H);
  return dweight_hr;
}

// ---------------------------------------------------------------------------------------------------------------------
// G-LSTM
// ---------------------------------------------------------------------------------------------------------------------

// gates (T*B, G*4Hg) = input projection of every step (no bias).
template <typename T>
void glstm_input_projection(const GlstmSizes& s, const T* x, const T* w_ih, T* gates) {
  const int64_t ld = s.G * 4 * s.Hg, rows = s.T * s.B;
  if (s.dense) {  // one GEMM with weight_ih viewed as (G*4Hg, I)
    parallel_gemm<T>(false, true, rows, ld, s.I, T(1), x, s.I, w_ih, s.I, T(0), gates, ld);
    return;
  }
  for (int64_t g = 0; g < s.G; ++g)
    parallel_gemm<T>(false, true, rows, 4 * s.Hg, s.Ig, T(1), x + g * s.Ig, s.I, w_ih + g * 4 * s.Hg * s.Ig, s.Ig, T(0),
            gates + g * 4 * s.Hg, ld);
}

// The same in bfloat16 through ATen (the reference's products and rounding), widened into `gates` (T*B, G*4Hg) float32.
void glstm_input_projection_bf16(const GlstmSizes& s, const Bf16Originals& o, Tensor& gates) {
  const int64_t TB = s.T * s.B, Hg4 = 4 * s.Hg;
  if (s.dense) {
    gates.copy_(at::mm(o.x.view({TB, s.I}), o.weight_a.view({s.G * Hg4, s.I}).t()));
    return;
  }
  gates.view({TB, s.G, Hg4}).copy_(
      at::bmm(o.x.view({TB, s.G, s.Ig}).transpose(0, 1), o.weight_a.transpose(1, 2)).transpose(0, 1));
}

template <typename T>
std::tuple<Tensor, Tensor, Tensor> glstm_forward(const Tensor& x, const Tensor& h0, const Tensor& c0,
                                                 const Tensor& weight_ih, const Tensor& weight_hh,
                                                 const std::optional<Tensor>& bias,
                                                 const std::optional<Tensor>& weight_hr,
                                                 const Bf16Originals* originals) {
  const bool bf16 = originals != nullptr;  // a bfloat16 call (see "bfloat16")
  const GlstmSizes s = glstm_sizes(x, h0, c0, weight_ih, weight_hh, bias, weight_hr);
  const int64_t ld = s.G * 4 * s.Hg, Hg = s.Hg, H = s.H, B = s.B, P = s.P, Pg = s.Pg;
  Tensor output = at::empty({s.T, B, P}, x.options());
  Tensor cell = at::empty({s.T, B, H}, x.options());
  Tensor gates = at::empty({s.T * B, ld}, x.options());
  T* gp = gates.data_ptr<T>();
  if (bf16)
    glstm_input_projection_bf16(s, *originals, gates);
  else
    glstm_input_projection<T>(s, x.data_ptr<T>(), weight_ih.data_ptr<T>(), gp);
  // bf16: every step's recurrent product lands here first, to be rounded before it is added (see add_product).
  Tensor recurrent = bf16 ? at::empty({B, ld}, x.options()) : Tensor();
  T* rp = bf16 ? recurrent.data_ptr<T>() : nullptr;
  const T* w_hh = weight_hh.data_ptr<T>();
  const T* w_hr = ptr_or_null<T>(weight_hr);
  const T* b = ptr_or_null<T>(bias);
  T* out = output.data_ptr<T>();
  T* cl = cell.data_ptr<T>();
  // With a projection the cell writes m_t here (reused every step); without one it writes h_t into output directly.
  Tensor m = w_hr != nullptr ? at::empty({B, H}, x.options()) : Tensor();
  T* mp = w_hr != nullptr ? m.data_ptr<T>() : nullptr;
  const Split split = split_units(s.G, Hg, B * 4 * Pg);
  // Operand 4 * task + q: the rows of W_hh[g] for gate q of the task's units, transposed (Pg x n).
  StepOperands<T> w_step(B);
  for (int64_t task = 0; task < split.tasks; ++task) {
    const int64_t g = split.group(task), u0 = split.begin(task), n = split.size(task, Hg);
    for (int64_t q = 0; q < 4; ++q) w_step.add(true, n, Pg, w_hh + (g * 4 * Hg + q * Hg + u0) * Pg, Pg);
  }
  const ForwardProjection<T> projection(w_hr, B, P, H, w_step);
  w_step.pack();
  SerialBlas serial_blas;
  for (int64_t t = 0; t < s.T; ++t) {
    const T* h_prev = t == 0 ? h0.data_ptr<T>() : out + (t - 1) * B * P;
    const T* c_prev = t == 0 ? c0.data_ptr<T>() : cl + (t - 1) * B * H;
    T* gates_t = gp + t * B * ld;
    T* cell_out = w_hr != nullptr ? mp : out + t * B * P;  // (B, H) either way: P = H without a projection
    for_each_task(split, [&](int64_t task) {
      const int64_t g = split.group(task), u0 = split.begin(task), n = split.size(task, Hg);
      T* gates_gu = gates_t + g * 4 * Hg + u0;
      for (int64_t q = 0; q < 4; ++q)  // gate q of units [u0, u0 + n): += h_prev[g] W_hh[g][q*Hg + u0 ...]^T
        add_product(w_step[4 * task + q], bf16, B, h_prev + g * Pg, P, gates_gu + q * Hg,
                    offset_or_null(rp, g * 4 * Hg + u0 + q * Hg), ld);
      cell_forward(CellForward<T>{B, n, gates_gu, ld, Hg, b == nullptr ? nullptr : b + g * 4 * Hg + u0,
                                  c_prev + g * Hg + u0, H, cl + t * B * H + g * Hg + u0, H,
                                  cell_out + g * Hg + u0, H});
      round_to_bf16(bf16, cell_out + g * Hg + u0, B, n, H);  // h_t (or m_t) as the reference casts it
    });
    if (w_hr != nullptr) projection.run(w_step, B, mp, out + t * B * P, bf16);
  }
  return {output, cell, gates};
}

template <typename T>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> glstm_backward(
    const Tensor& grad_output, const std::optional<Tensor>& grad_cell, const Tensor& x, const Tensor& h0,
    const Tensor& c0, const Tensor& weight_ih, const Tensor& weight_hh, const std::optional<Tensor>& bias,
    const Tensor& output, const Tensor& cell, const Tensor& gates, const std::optional<Tensor>& weight_hr,
    const Bf16Originals* originals) {
  const bool bf16 = originals != nullptr;  // a bfloat16 call (see "bfloat16")
  const GlstmSizes s = glstm_sizes(x, h0, c0, weight_ih, weight_hh, bias, weight_hr);
  check_backward_extras(x, grad_output, grad_cell, output, cell, gates, s.P, s.H);
  const int64_t ld = s.G * 4 * s.Hg, Hg = s.Hg, H = s.H, B = s.B, G = s.G, TB = s.T * s.B, P = s.P, Pg = s.Pg;
  const T* xp = x.data_ptr<T>();
  const T* w_ih = weight_ih.data_ptr<T>();
  const T* w_hh = weight_hh.data_ptr<T>();
  const T* w_hr = ptr_or_null<T>(weight_hr);
  const T* h0p = h0.data_ptr<T>();
  const T* out = output.data_ptr<T>();
  const T* cl = cell.data_ptr<T>();
  const T* go = grad_output.data_ptr<T>();
  const T* gc = ptr_or_null<T>(grad_cell);
  const T* gp = gates.data_ptr<T>();  // the forward's activated gates of every step (T*B, G*4Hg)
  Tensor dgates = at::empty({TB, ld}, x.options());  // their gradients, written by the cell backward
  T* dgp = dgates.data_ptr<T>();

  Tensor dh0 = at::empty({B, P}, x.options());
  Tensor dc0 = at::zeros({B, H}, x.options());  // carries dc backwards through the loop, ends as dc0
  T* dc = dc0.data_ptr<T>();
  // Task (g, chunk) of dh_split forms its columns of the recurrent dh = dgates_{t+1}[g] W_hh[g] (dgates of step t + 1
  // are complete: previous region). The gate buffer becomes dgates in place (cell backward).
  const Split dh_split = split_units(G, Pg, B * 4 * Hg);
  StepOperands<T> w_step(B);  // operand `task`: the task's columns of W_hh[g] (4Hg x n)
  for (int64_t task = 0; task < dh_split.tasks; ++task) {
    const int64_t g = dh_split.group(task), p0 = dh_split.begin(task), n = dh_split.size(task, Pg);
    w_step.add(false, n, 4 * Hg, w_hh + g * 4 * Hg * Pg + p0, Pg);
  }
  // With a projection, task (g, chunk of units) of cell_split forms its columns of dm_t = dh_t W_hr (operand
  // dm_ops + task: columns of W_hr, P x n) before the cell backward of those units.
  const Split cell_split = w_hr != nullptr ? split_units(G, Hg, B * P) : dh_split;
  const size_t dm_ops = static_cast<size_t>(dh_split.tasks);
  if (w_hr != nullptr)
    for (int64_t task = 0; task < cell_split.tasks; ++task) {
      const int64_t g = cell_split.group(task), u0 = cell_split.begin(task), n = cell_split.size(task, Hg);
      w_step.add(false, n, P, w_hr + g * Hg + u0, H);
    }
  w_step.pack();
  auto dh_columns = [&](int64_t task, const T* dgates, T beta, T* dst) {
    const int64_t g = dh_split.group(task), p0 = dh_split.begin(task);
    w_step[task].multiply(B, dgates + g * 4 * Hg, ld, beta, dst + g * Pg + p0, P);
  };
  // With a projection: dh_t = grad_output[t] + dgates_{t+1} W_hh for every t (kept: dweight_hr needs them all),
  // accumulated in place onto a copy of grad_output, and m_t of every step, written by the cell backward.
  Tensor dh_all, m_all;
  std::optional<SerialBlas> serial_blas(std::in_place);  // the reverse walk; ends before the time-parallel GEMMs
  if (w_hr == nullptr) {
    // h_t is the cell output: task (g, chunk) forms the recurrent dh for its own units, then their cell backward, in
    // one region per step.
    Tensor dh_next = at::empty({B, H}, x.options());
    T* dhn = dh_next.data_ptr<T>();
    for (int64_t t = s.T - 1; t >= 0; --t) {
      const bool last = t == s.T - 1;
      const T* c_prev = t == 0 ? c0.data_ptr<T>() : cl + (t - 1) * B * H;
      const T* gates_t = gp + t * B * ld;
      T* dgates_t = dgp + t * B * ld;
      for_each_task(dh_split, [&](int64_t task) {
        const int64_t g = dh_split.group(task), u0 = dh_split.begin(task), n = dh_split.size(task, Hg);
        if (!last) dh_columns(task, dgates_t + B * ld, T(0), dhn);
        const int64_t off = t * B * H + g * Hg + u0;
        cell_backward(CellBackward<T>{B, n, gates_t + g * 4 * Hg + u0, dgates_t + g * 4 * Hg + u0, ld, Hg,
                                      c_prev + g * Hg + u0, H, cl + off, H, go + off, H,
                                      last ? nullptr : dhn + g * Hg + u0, H, gc == nullptr ? nullptr : gc + off, H,
                                      dc + g * Hg + u0, H});
      });
    }
  } else {
    dh_all = grad_output.clone();
    m_all = at::empty({TB, H}, x.options());
    Tensor dm = at::empty({B, H}, x.options());  // dm_t, reused every step
    T* dhp = dh_all.data_ptr<T>();
    T* mp = m_all.data_ptr<T>();
    T* dmp = dm.data_ptr<T>();
    for (int64_t t = s.T - 1; t >= 0; --t) {
      const bool last = t == s.T - 1;
      const T* c_prev = t == 0 ? c0.data_ptr<T>() : cl + (t - 1) * B * H;
      const T* gates_t = gp + t * B * ld;
      T* dgates_t = dgp + t * B * ld;
      T* dh_t = dhp + t * B * P;
      if (!last) for_each_task(dh_split, [&](int64_t task) { dh_columns(task, dgates_t + B * ld, T(1), dh_t); });
      for_each_task(cell_split, [&](int64_t task) {
        const int64_t g = cell_split.group(task), u0 = cell_split.begin(task), n = cell_split.size(task, Hg);
        const int64_t unit = g * Hg + u0, off = t * B * H + unit;
        w_step[dm_ops + task].multiply(B, dh_t, P, T(0), dmp + unit, H);
        CellBackward<T> args{B, n, gates_t + g * 4 * Hg + u0, dgates_t + g * 4 * Hg + u0, ld, Hg,
                             c_prev + unit, H, cl + off, H, dmp + unit, H, nullptr, H,
                             gc == nullptr ? nullptr : gc + off, H, dc + unit, H};
        args.m = mp + off, args.m_ld = H;
        cell_backward(args);
      });
    }
  }
  T* dh0p = dh0.data_ptr<T>();
  for_each_task(dh_split, [&](int64_t task) { dh_columns(task, dgp, T(0), dh0p); });
  serial_blas.reset();

  Tensor dweight_hr = projection_weight_gradient<T>(x, weight_hr, dh_all, m_all, bf16);

  // Weight gradients and dx: large GEMMs over all T*B rows of dgates.
  Tensor dweight_ih = at::empty_like(weight_ih);
  Tensor dweight_hh = at::empty_like(weight_hh);
  Tensor dx = at::empty_like(x);
  T* dwi = dweight_ih.data_ptr<T>();
  T* dwh = dweight_hh.data_ptr<T>();
  T* dxp = dx.data_ptr<T>();
  for (int64_t g = 0; g < G; ++g) {
    const T* dg = dgp + g * 4 * Hg;
    T* dw = dwh + g * 4 * Hg * Pg;
    parallel_gemm<T>(true, false, 4 * Hg, Pg, B, T(1), dg, ld, h0p + g * Pg, P, T(0), dw, Pg);
    parallel_gemm<T>(true, false, 4 * Hg, Pg, TB - B, T(1), dg + B * ld, ld, out + g * Pg, P, T(1), dw, Pg);
  }
  if (s.dense) {
    parallel_gemm<T>(true, false, ld, s.I, TB, T(1), dgp, ld, xp, s.I, T(0), dwi, s.I);
    parallel_gemm<T>(false, false, TB, s.I, ld, T(1), dgp, ld, w_ih, s.I, T(0), dxp, s.I);
  } else {
    for (int64_t g = 0; g < G; ++g) {
      const T* dg = dgp + g * 4 * Hg;
      parallel_gemm<T>(true, false, 4 * Hg, s.Ig, TB, T(1), dg, ld, xp + g * s.Ig, s.I, T(0),
                       dwi + g * 4 * Hg * s.Ig, s.Ig);
      parallel_gemm<T>(false, false, TB, s.Ig, 4 * Hg, T(1), dg, ld, w_ih + g * 4 * Hg * s.Ig, s.Ig, T(0),
                       dxp + g * s.Ig, s.I);
    }
  }
  Tensor dbias = at::sum(dgates, {0}).view({G, 4 * Hg});
  return {dx, dh0, dc0, dweight_ih, dweight_hh, dbias, dweight_hr};
}

// ---------------------------------------------------------------------------------------------------------------------
// F-LSTM
// ---------------------------------------------------------------------------------------------------------------------

template <typename T>
std::tuple<Tensor, Tensor, Tensor> flstm_forward(const Tensor& x, const Tensor& h0, const Tensor& c0,
                                                 const Tensor& weight_1, const Tensor& weight_2,
                                                 const std::optional<Tensor>& bias,
                                                 const std::optional<Tensor>& weight_hr,
                                                 const Bf16Originals* originals) {
  const bool bf16 = originals != nullptr;  // a bfloat16 call (see "bfloat16")
  const FlstmSizes s = flstm_sizes(x, h0, c0, weight_1, weight_2, bias, weight_hr);
  const int64_t B = s.B, H = s.H, R = s.R, I = s.I, P = s.P, ld1 = I + P, TB = s.T * s.B;
  Tensor output = at::empty({s.T, B, P}, x.options());
  Tensor cell = at::empty({s.T, B, H}, x.options());
  Tensor gates = at::empty({TB, 4 * H}, x.options());
  Tensor z_x = bf16 ? Tensor() : at::empty({TB, R}, x.options());  // bf16: ATen allocates its own
  Tensor z_h = at::empty({B, R}, x.options());
  const T* w1 = weight_1.data_ptr<T>();
  const T* w2 = weight_2.data_ptr<T>();
  const T* w_hr = ptr_or_null<T>(weight_hr);
  const T* b = ptr_or_null<T>(bias);
  T* gp = gates.data_ptr<T>();
  T* zh = z_h.data_ptr<T>();
  T* out = output.data_ptr<T>();
  T* cl = cell.data_ptr<T>();
  // With a projection the cell writes m_t here (reused every step); without one it writes h_t into output directly.
  Tensor m = w_hr != nullptr ? at::empty({B, H}, x.options()) : Tensor();
  T* mp = w_hr != nullptr ? m.data_ptr<T>() : nullptr;
  // Input projection of all steps: W2 (W1_x x_t), as the reference orders it.
  if (bf16) {
    const Bf16Originals& o = *originals;
    gates.copy_(at::mm(at::mm(o.x.view({TB, I}), o.weight_a.narrow(1, 0, I).t()), o.weight_b.t()));
  } else {
    parallel_gemm<T>(false, true, TB, R, I, T(1), x.data_ptr<T>(), I, w1, ld1, T(0), z_x.data_ptr<T>(), R);
    parallel_gemm<T>(false, true, TB, 4 * H, R, T(1), z_x.data_ptr<T>(), R, w2, R, T(0), gp, 4 * H);
  }
  // bf16: every step's recurrent product lands here first, to be rounded before it is added (see add_product).
  Tensor recurrent = bf16 ? at::empty({B, 4 * H}, x.options()) : Tensor();
  T* rp = bf16 ? recurrent.data_ptr<T>() : nullptr;
  const Split z_split = split_units(1, R, B * P);
  const Split unit_split = split_units(1, H, B * 4 * R);
  // Operands: z task i -> rows r0.. of W1_h, transposed (P x n); unit task j, gate q -> z_split.tasks + 4 j + q: rows
  // q*H + u0.. of W2, transposed (R x n); then the projection's.
  StepOperands<T> w_step(B);
  for (int64_t task = 0; task < z_split.tasks; ++task)
    w_step.add(true, z_split.size(task, R), P, w1 + z_split.begin(task) * ld1 + I, ld1);
  for (int64_t task = 0; task < unit_split.tasks; ++task)
    for (int64_t q = 0; q < 4; ++q)
      w_step.add(true, unit_split.size(task, H), R, w2 + (q * H + unit_split.begin(task)) * R, R);
  const ForwardProjection<T> projection(w_hr, B, P, H, w_step);
  w_step.pack();
  const size_t gate_ops = static_cast<size_t>(z_split.tasks);
  SerialBlas serial_blas;
  for (int64_t t = 0; t < s.T; ++t) {
    const T* h_prev = t == 0 ? h0.data_ptr<T>() : out + (t - 1) * B * P;
    const T* c_prev = t == 0 ? c0.data_ptr<T>() : cl + (t - 1) * B * H;
    T* gates_t = gp + t * B * 4 * H;
    T* cell_out = w_hr != nullptr ? mp : out + t * B * P;  // (B, H) either way: P = H without a projection
    for_each_task(z_split, [&](int64_t task) {  // z_h[:, r0 .. r0+n) = h_{t-1} W1_h[r0 .. r0+n)^T
      w_step[task].multiply(B, h_prev, P, T(0), zh + z_split.begin(task), R);
      round_to_bf16(bf16, zh + z_split.begin(task), B, z_split.size(task, R), R);
    });
    for_each_task(unit_split, [&](int64_t task) {
      const int64_t u0 = unit_split.begin(task), n = unit_split.size(task, H);
      for (int64_t q = 0; q < 4; ++q)  // gate q of units [u0, u0 + n): += z_h W2[q*H + u0 ...]^T
        add_product(w_step[gate_ops + 4 * task + q], bf16, B, zh, R, gates_t + q * H + u0,
                    offset_or_null(rp, q * H + u0), 4 * H);
      cell_forward(CellForward<T>{B, n, gates_t + u0, 4 * H, H, b == nullptr ? nullptr : b + u0, c_prev + u0, H,
                                  cl + t * B * H + u0, H, cell_out + u0, H});
      round_to_bf16(bf16, cell_out + u0, B, n, H);  // h_t (or m_t) as the reference casts it
    });
    if (w_hr != nullptr) projection.run(w_step, B, mp, out + t * B * P, bf16);
  }
  return {output, cell, gates};
}

template <typename T>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> flstm_backward(
    const Tensor& grad_output, const std::optional<Tensor>& grad_cell, const Tensor& x, const Tensor& h0,
    const Tensor& c0, const Tensor& weight_1, const Tensor& weight_2, const std::optional<Tensor>& bias,
    const Tensor& output, const Tensor& cell, const Tensor& gates, const std::optional<Tensor>& weight_hr,
    const Bf16Originals* originals) {
  const bool bf16 = originals != nullptr;  // a bfloat16 call (see "bfloat16")
  const FlstmSizes s = flstm_sizes(x, h0, c0, weight_1, weight_2, bias, weight_hr);
  check_backward_extras(x, grad_output, grad_cell, output, cell, gates, s.P, s.H);
  const int64_t B = s.B, H = s.H, R = s.R, I = s.I, P = s.P, ld1 = I + P, TB = s.T * s.B;
  const T* xp = x.data_ptr<T>();
  const T* h0p = h0.data_ptr<T>();
  const T* w1 = weight_1.data_ptr<T>();
  const T* w2 = weight_2.data_ptr<T>();
  const T* w_hr = ptr_or_null<T>(weight_hr);
  const T* out = output.data_ptr<T>();
  const T* cl = cell.data_ptr<T>();
  const T* go = grad_output.data_ptr<T>();
  const T* gc = ptr_or_null<T>(grad_cell);

  // z = W1 [x_t; h_{t-1}] of every step (for dweight_2), recomputed time-parallel: a (T*B, I+P, R) product, small
  // beside the forward's gates (T*B, R, 4H), which the forward keeps.
  Tensor z = at::empty({TB, R}, x.options());
  T* zp = z.data_ptr<T>();
  if (bf16) {  // the reference's z = [x_t; h_{t-1}] W1^T is one bfloat16 product
    const Bf16Originals& o = *originals;
    z.copy_(at::mm(at::cat({o.x.view({TB, I}), previous_h(o)}, 1), o.weight_a.t()));
  } else {
    parallel_gemm<T>(false, true, TB, R, I, T(1), xp, I, w1, ld1, T(0), zp, R);
    parallel_gemm<T>(false, true, B, R, P, T(1), h0p, P, w1 + I, ld1, T(1), zp, R);
    parallel_gemm<T>(false, true, TB - B, R, P, T(1), out, P, w1 + I, ld1, T(1), zp + B * R, R);
  }
  const T* gp = gates.data_ptr<T>();  // the forward's activated gates of every step (T*B, 4H)
  Tensor dgates = at::empty({TB, 4 * H}, x.options());  // their gradients, written by the cell backward
  T* dgp = dgates.data_ptr<T>();

  Tensor dz = at::empty({TB, R}, x.options());  // dz_t = dgates_t W2, kept for the weight gradients
  Tensor dh0 = at::empty({B, P}, x.options());
  Tensor dc0 = at::zeros({B, H}, x.options());
  T* dzp = dz.data_ptr<T>();
  T* dc = dc0.data_ptr<T>();
  // Operands: dh task j -> columns p0.. of W1_h (R x n); z task i -> z_ops + i: columns r0.. of W2 (4H x n); with a
  // projection, cell task k -> dm_ops + k: columns u0.. of W_hr (P x n).
  const Split dh_split = split_units(1, P, B * R);
  const Split z_split = split_units(1, R, B * 4 * H);
  const Split cell_split = w_hr != nullptr ? split_units(1, H, B * P) : dh_split;
  StepOperands<T> w_step(B);
  for (int64_t task = 0; task < dh_split.tasks; ++task)
    w_step.add(false, dh_split.size(task, P), R, w1 + I + dh_split.begin(task), ld1);
  for (int64_t task = 0; task < z_split.tasks; ++task)
    w_step.add(false, z_split.size(task, R), 4 * H, w2 + z_split.begin(task), R);
  if (w_hr != nullptr)
    for (int64_t task = 0; task < cell_split.tasks; ++task)
      w_step.add(false, cell_split.size(task, H), P, w_hr + cell_split.begin(task), H);
  w_step.pack();
  const size_t z_ops = static_cast<size_t>(dh_split.tasks);
  const size_t dm_ops = z_ops + static_cast<size_t>(z_split.tasks);
  auto dz_columns = [&](int64_t t) {  // dz_t[:, r0 .. r0+n) = dgates_t W2[:, r0 .. r0+n)
    for_each_task(z_split, [&](int64_t task) {
      w_step[z_ops + task].multiply(B, dgp + t * B * 4 * H, 4 * H, T(0), dzp + t * B * R + z_split.begin(task), R);
    });
  };
  Tensor dh_all, m_all;  // with a projection, as in the G-LSTM backward
  std::optional<SerialBlas> serial_blas(std::in_place);  // the reverse walk; ends before the time-parallel GEMMs
  if (w_hr == nullptr) {
    Tensor dh_next = at::empty({B, H}, x.options());
    T* dhn = dh_next.data_ptr<T>();
    for (int64_t t = s.T - 1; t >= 0; --t) {
      const bool last = t == s.T - 1;
      const T* c_prev = t == 0 ? c0.data_ptr<T>() : cl + (t - 1) * B * H;
      const T* gates_t = gp + t * B * 4 * H;
      T* dgates_t = dgp + t * B * 4 * H;
      for_each_task(dh_split, [&](int64_t task) {  // dh columns from dz_{t+1}, then the cell backward of step t
        const int64_t u0 = dh_split.begin(task), n = dh_split.size(task, H);
        if (!last) w_step[task].multiply(B, dzp + (t + 1) * B * R, R, T(0), dhn + u0, H);
        const int64_t off = t * B * H + u0;
        cell_backward(CellBackward<T>{B, n, gates_t + u0, dgates_t + u0, 4 * H, H, c_prev + u0, H, cl + off, H,
                                      go + off, H, last ? nullptr : dhn + u0, H, gc == nullptr ? nullptr : gc + off, H,
                                      dc + u0, H});
      });
      dz_columns(t);
    }
  } else {
    // As in the G-LSTM backward: dh_t for every t accumulated onto a copy of grad_output, m_t of every step from the
    // cell backward, dm_t reused every step.
    dh_all = grad_output.clone();
    m_all = at::empty({TB, H}, x.options());
    Tensor dm = at::empty({B, H}, x.options());
    T* dhp = dh_all.data_ptr<T>();
    T* mp = m_all.data_ptr<T>();
    T* dmp = dm.data_ptr<T>();
    for (int64_t t = s.T - 1; t >= 0; --t) {
      const bool last = t == s.T - 1;
      const T* c_prev = t == 0 ? c0.data_ptr<T>() : cl + (t - 1) * B * H;
      const T* gates_t = gp + t * B * 4 * H;
      T* dgates_t = dgp + t * B * 4 * H;
      T* dh_t = dhp + t * B * P;
      if (!last)
        for_each_task(dh_split, [&](int64_t task) {  // dh_t[:, p0 .. p0+n) += dz_{t+1} W1_h[:, p0 .. p0+n)
          w_step[task].multiply(B, dzp + (t + 1) * B * R, R, T(1), dh_t + dh_split.begin(task), P);
        });
      for_each_task(cell_split, [&](int64_t task) {  // dm_t columns u0.., then the cell backward of those units
        const int64_t u0 = cell_split.begin(task), n = cell_split.size(task, H), off = t * B * H + u0;
        w_step[dm_ops + task].multiply(B, dh_t, P, T(0), dmp + u0, H);
        CellBackward<T> args{B, n, gates_t + u0, dgates_t + u0, 4 * H, H, c_prev + u0, H, cl + off, H, dmp + u0, H,
                             nullptr, H, gc == nullptr ? nullptr : gc + off, H, dc + u0, H};
        args.m = mp + off, args.m_ld = H;
        cell_backward(args);
      });
      dz_columns(t);
    }
  }
  T* dh0p = dh0.data_ptr<T>();
  for_each_task(dh_split, [&](int64_t task) {
    w_step[task].multiply(B, dzp, R, T(0), dh0p + dh_split.begin(task), P);
  });
  serial_blas.reset();

  Tensor dweight_hr = projection_weight_gradient<T>(x, weight_hr, dh_all, m_all, bf16);

  Tensor dweight_1 = at::empty_like(weight_1);
  Tensor dweight_2 = at::empty_like(weight_2);
  Tensor dx = at::empty_like(x);
  T* dw1 = dweight_1.data_ptr<T>();
  parallel_gemm<T>(true, false, 4 * H, R, TB, T(1), dgp, 4 * H, zp, R, T(0), dweight_2.data_ptr<T>(), R);
  parallel_gemm<T>(true, false, R, I, TB, T(1), dzp, R, xp, I, T(0), dw1, ld1);
  parallel_gemm<T>(true, false, R, P, B, T(1), dzp, R, h0p, P, T(0), dw1 + I, ld1);
  parallel_gemm<T>(true, false, R, P, TB - B, T(1), dzp + B * R, R, out, P, T(1), dw1 + I, ld1);
  parallel_gemm<T>(false, false, TB, I, R, T(1), dzp, R, w1, ld1, T(0), dx.data_ptr<T>(), I);
  Tensor dbias = at::sum(dgates, {0});
  return {dx, dh0, dc0, dweight_1, dweight_2, dbias, dweight_hr};
}

// ---------------------------------------------------------------------------------------------------------------------
// Op entry points
// ---------------------------------------------------------------------------------------------------------------------

using Gradients = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

// bfloat16 calls (see "bfloat16" above): every tensor is bfloat16 except cell and grad_cell, which are float32 (the
// state dtype); the drivers get float32 copies and the results are converted back (output and the gradients; cell
// stays float32).
void check_dtype(const std::optional<Tensor>& t, const char* name, at::ScalarType dtype) {
  if (t.has_value())
    TORCH_CHECK(t->scalar_type() == dtype, "lstmkern_cpu: ", name, " must be ", dtype, " for bfloat16 x, got ",
                t->scalar_type());
}

void check_bf16_inputs(const Tensor& h0, const Tensor& c0, const Tensor& weight_a, const Tensor& weight_b,
                       const std::optional<Tensor>& bias, const std::optional<Tensor>& weight_hr, const char* name_a,
                       const char* name_b) {
  check_dtype(h0, "h0", at::kBFloat16);
  check_dtype(c0, "c0", at::kBFloat16);
  check_dtype(weight_a, name_a, at::kBFloat16);
  check_dtype(weight_b, name_b, at::kBFloat16);
  check_dtype(bias, "bias", at::kBFloat16);
  check_dtype(weight_hr, "weight_hr", at::kBFloat16);
}

void check_bf16_backward_extras(const Tensor& grad_output, const std::optional<Tensor>& grad_cell,
                                const Tensor& output, const Tensor& cell, const Tensor& gates) {
  check_dtype(grad_output, "grad_output", at::kBFloat16);
  check_dtype(output, "output", at::kBFloat16);
  check_dtype(grad_cell, "grad_cell", at::kFloat);
  check_dtype(cell, "cell", at::kFloat);
  check_dtype(gates, "gates", at::kFloat);
}

Tensor as_float(const Tensor& t) { return t.to(at::kFloat).contiguous(); }

std::optional<Tensor> as_float(const std::optional<Tensor>& t) {
  return t.has_value() ? std::optional<Tensor>(as_float(*t)) : std::nullopt;
}

Gradients as_bf16(const Gradients& g) {
  auto bf16 = [](const Tensor& t) { return t.to(at::kBFloat16); };
  return {bf16(std::get<0>(g)), bf16(std::get<1>(g)), bf16(std::get<2>(g)), bf16(std::get<3>(g)),
          bf16(std::get<4>(g)), bf16(std::get<5>(g)), bf16(std::get<6>(g))};
}

// The four ops share one dtype dispatch: float32 and float64 run the driver of that type; bfloat16 runs the float32
// driver on widened copies (exact) with the original bfloat16 tensors beside them for the products the reference
// computes in bfloat16, and rounds the output and the gradients once. `Layer` names the G-LSTM or F-LSTM drivers and
// their weights (weight_a, weight_b = weight_ih, weight_hh or weight_1, weight_2).
struct GlstmLayer {
  static constexpr const char* weight_a = "weight_ih";
  static constexpr const char* weight_b = "weight_hh";
  static constexpr const char* forward_name = "lstmkern_cpu::glstm_fwd";
  static constexpr const char* backward_name = "lstmkern_cpu::glstm_bwd";
  template <typename T, typename... Args>
  static auto forward(Args&&... args) { return glstm_forward<T>(std::forward<Args>(args)...); }
  template <typename T, typename... Args>
  static auto backward(Args&&... args) { return glstm_backward<T>(std::forward<Args>(args)...); }
};

struct FlstmLayer {
  static constexpr const char* weight_a = "weight_1";
  static constexpr const char* weight_b = "weight_2";
  static constexpr const char* forward_name = "lstmkern_cpu::flstm_fwd";
  static constexpr const char* backward_name = "lstmkern_cpu::flstm_bwd";
  template <typename T, typename... Args>
  static auto forward(Args&&... args) { return flstm_forward<T>(std::forward<Args>(args)...); }
  template <typename T, typename... Args>
  static auto backward(Args&&... args) { return flstm_backward<T>(std::forward<Args>(args)...); }
};

template <typename Layer>
std::tuple<Tensor, Tensor, Tensor> layer_fwd(const Tensor& x, const Tensor& h0, const Tensor& c0,
                                             const Tensor& weight_a, const Tensor& weight_b,
                                             const std::optional<Tensor>& bias,
                                             const std::optional<Tensor>& weight_hr) {
  check_x(x);
  if (x.scalar_type() == at::kBFloat16) {
    check_bf16_inputs(h0, c0, weight_a, weight_b, bias, weight_hr, Layer::weight_a, Layer::weight_b);
    const Bf16Originals originals{x, h0, weight_a, weight_b, Tensor()};
    auto [output, cell, gates] = Layer::template forward<float>(as_float(x), as_float(h0), as_float(c0),
                                                                as_float(weight_a), as_float(weight_b),
                                                                as_float(bias), as_float(weight_hr), &originals);
    return {output.to(at::kBFloat16), cell, gates};  // output holds bfloat16 values: exact; gates stay float32
  }
  return AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), Layer::forward_name, [&] {
    return Layer::template forward<scalar_t>(x, h0, c0, weight_a, weight_b, bias, weight_hr, nullptr);
  });
}

template <typename Layer>
Gradients layer_bwd(const Tensor& grad_output, const std::optional<Tensor>& grad_cell, const Tensor& x,
                    const Tensor& h0, const Tensor& c0, const Tensor& weight_a, const Tensor& weight_b,
                    const std::optional<Tensor>& bias, const Tensor& output, const Tensor& cell,
                    const Tensor& gates, const std::optional<Tensor>& weight_hr) {
  check_x(x);
  if (x.scalar_type() == at::kBFloat16) {
    check_bf16_inputs(h0, c0, weight_a, weight_b, bias, weight_hr, Layer::weight_a, Layer::weight_b);
    check_bf16_backward_extras(grad_output, grad_cell, output, cell, gates);
    const Bf16Originals originals{x, h0, weight_a, weight_b, output};
    return as_bf16(Layer::template backward<float>(as_float(grad_output), grad_cell, as_float(x), as_float(h0),
                                                   as_float(c0), as_float(weight_a), as_float(weight_b),
                                                   as_float(bias), as_float(output), cell, gates,
                                                   as_float(weight_hr), &originals));
  }
  return AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), Layer::backward_name, [&] {
    return Layer::template backward<scalar_t>(grad_output, grad_cell, x, h0, c0, weight_a, weight_b, bias, output,
                                              cell, gates, weight_hr, nullptr);
  });
}

std::string cell_isa() { return cell_kernels().isa; }

// How many threads this extension's at::parallel_for regions run on: at::get_num_threads() when it is compiled with
// OpenMP, 1 when the compiler dropped the `omp parallel` pragma of ATen's inline parallel_for (a build without
// -fopenmp runs every "parallel" region serially, silently). The tests hold the build to it.
int64_t parallel_width() {
  const int64_t threads = at::get_num_threads();
  std::atomic<uint64_t> seen{0};
  at::parallel_for(0, 64 * threads, 1, [&](int64_t, int64_t) {
    seen.fetch_or(uint64_t{1} << std::min<int>(at::get_thread_num(), 63));
  });
  return __builtin_popcountll(seen.load());
}

}  // namespace
}  // namespace lstmkern::cpu

TORCH_LIBRARY(lstmkern_cpu, m) {
  // Shapes, dtypes and the backward contract: lstmkern/backends/__init__.py and the legend at the top of this file.
  // weight_hr (P, H) is the optional projection (LSTMP); without it the backward's dweight_hr is an empty tensor.
  // gates (T*B, 4H), state dtype: every step's activated gates, which the forward returns for the backward.
  m.def("glstm_fwd(Tensor x, Tensor h0, Tensor c0, Tensor weight_ih, Tensor weight_hh, Tensor? bias, "
        "Tensor? weight_hr=None) -> (Tensor output, Tensor cell, Tensor gates)");
  m.def("glstm_bwd(Tensor grad_output, Tensor? grad_cell, Tensor x, Tensor h0, Tensor c0, Tensor weight_ih, "
        "Tensor weight_hh, Tensor? bias, Tensor output, Tensor cell, Tensor gates, Tensor? weight_hr=None) -> "
        "(Tensor dx, Tensor dh0, Tensor dc0, Tensor dweight_ih, Tensor dweight_hh, Tensor dbias, Tensor dweight_hr)");
  m.def("flstm_fwd(Tensor x, Tensor h0, Tensor c0, Tensor weight_1, Tensor weight_2, Tensor? bias, "
        "Tensor? weight_hr=None) -> (Tensor output, Tensor cell, Tensor gates)");
  m.def("flstm_bwd(Tensor grad_output, Tensor? grad_cell, Tensor x, Tensor h0, Tensor c0, Tensor weight_1, "
        "Tensor weight_2, Tensor? bias, Tensor output, Tensor cell, Tensor gates, Tensor? weight_hr=None) -> "
        "(Tensor dx, Tensor dh0, Tensor dc0, Tensor dweight_1, Tensor dweight_2, Tensor dbias, Tensor dweight_hr)");
  // The instruction set of the cell kernels this CPU runs ("avx2" or "default"), for benchmark records.
  m.def("cell_isa() -> str", &lstmkern::cpu::cell_isa);
  // The number of threads a parallel region of this extension runs on (see parallel_width), for the tests.
  m.def("parallel_width() -> int", &lstmkern::cpu::parallel_width);
}

TORCH_LIBRARY_IMPL(lstmkern_cpu, CPU, m) {
  m.impl("glstm_fwd", &lstmkern::cpu::layer_fwd<lstmkern::cpu::GlstmLayer>);
  m.impl("glstm_bwd", &lstmkern::cpu::layer_bwd<lstmkern::cpu::GlstmLayer>);
  m.impl("flstm_fwd", &lstmkern::cpu::layer_fwd<lstmkern::cpu::FlstmLayer>);
  m.impl("flstm_bwd", &lstmkern::cpu::layer_bwd<lstmkern::cpu::FlstmLayer>);
}
