// The CPU backend's cell kernels for any CPU: one element at a time (the compiler's baseline instruction set), with
// std::exp and std::tanh. See cpu_cell_kernels.h.
#include <cmath>

#include "cpu_cell_kernels.h"

namespace lstmkern::cpu {
namespace {

template <typename T>
struct Scalar {
  using V = T;
  static constexpr int kWidth = 1;
  static V load(const T* p, int) { return *p; }
  static void store(T* p, V v, int) { *p = v; }
  static V splat(T v) { return v; }
  static V add(V a, V b) { return a + b; }
  static V sub(V a, V b) { return a - b; }
  static V mul(V a, V b) { return a * b; }
  static V div(V a, V b) { return a / b; }
  static V neg(V a) { return -a; }
  static V exp(V a) { return std::exp(a); }
  static V tanh(V a) { return std::tanh(a); }
};

}  // namespace

const CellKernels* cell_kernels_default() {
  static const CellKernels table{"default", &cell_impl::cell_forward<float, Scalar<float>>,
                                 &cell_impl::cell_forward<double, Scalar<double>>,
                                 &cell_impl::cell_backward<float, Scalar<float>>,
                                 &cell_impl::cell_backward<double, Scalar<double>>};
  return &table;
}

}  // namespace lstmkern::cpu
