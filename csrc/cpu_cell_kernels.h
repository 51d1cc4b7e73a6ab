// Vectorised pointwise LSTM cell (forward and backward), written once over a small SIMD policy and instantiated per
// instruction set: cpu_cell_default.cpp (one element at a time with std::exp / std::tanh: any CPU) and
// cpu_cell_avx2.cpp (8 floats / 4 doubles per AVX2 register; float32 exp and tanh inlined there, float64's from SLEEF,
// which libtorch carries). See
// cpu_lstm.h for the layout.
//
// Why not at::vec: its headers need -Wno-unknown-pragmas (`#pragma unroll`), and this project compiles with -Werror
// and torch's headers on -I (GCC 12 cannot silence that warning from inside a file).
//
// The formulas and their order of operations are lstmkern/reference.py's (_cell, _cell_backward) and torch's:
// sigmoid(x) = 1 / (1 + exp(-x)), c = f * c_prev + i * g, h = o * tanh(c).
//
// A policy S provides: type V, constexpr int kWidth, V load(const T*, int n) (lanes >= n read as 0), store(T*, V,
// int n) (lanes >= n not written), V splat(T), add, sub, mul, div, neg, exp, tanh.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu_lstm.h"

namespace lstmkern::cpu::cell_impl {

template <typename S>
inline typename S::V sigmoid(typename S::V x) {
  return S::div(S::splat(1), S::add(S::splat(1), S::exp(S::neg(x))));
}

template <typename S>
struct Gates {
  typename S::V i, f, g, o;
};

// The four activated gates of `n` units: pre-activations at gates[k * gate_stride] (+ bias[k * gate_stride] if given)
// for the gates i, f, g, o (k = 0..3), then sigmoid, sigmoid, tanh, sigmoid.
template <typename T, typename S>
inline Gates<S> activated_gates(const T* gates, const T* bias, int64_t gate_stride, int n) {
  typename S::V pre[4];
  for (int k = 0; k < 4; ++k) {
    pre[k] = S::load(gates + k * gate_stride, n);
    if (bias != nullptr) pre[k] = S::add(pre[k], S::load(bias + k * gate_stride, n));
  }
  return {sigmoid<S>(pre[0]), sigmoid<S>(pre[1]), S::tanh(pre[2]), sigmoid<S>(pre[3])};
}

template <typename T, typename S>
void cell_forward(const CellForward<T>& a) {
  using V = typename S::V;
  const int64_t gs = a.gate_stride;
  for (int64_t r = 0; r < a.rows; ++r) {
    T* gr = a.gates + r * a.gates_ld;
    for (int64_t u = 0; u < a.units; u += S::kWidth) {
      const int n = static_cast<int>(std::min<int64_t>(S::kWidth, a.units - u));
      const Gates<S> gate = activated_gates<T, S>(gr + u, a.bias == nullptr ? nullptr : a.bias + u, gs, n);
      const V i = gate.i, f = gate.f, g = gate.g, o = gate.o;
      // Kept for the backward, which then needs no exp and one tanh per unit instead of three exp and two tanh.
      S::store(gr + u, i, n);
      S::store(gr + gs + u, f, n);
      S::store(gr + 2 * gs + u, g, n);
      S::store(gr + 3 * gs + u, o, n);
      const V c = S::add(S::mul(f, S::load(a.c_prev + r * a.c_prev_ld + u, n)), S::mul(i, g));
      S::store(a.c + r * a.c_ld + u, c, n);
      S::store(a.h + r * a.h_ld + u, S::mul(o, S::tanh(c)), n);
    }
  }
}

template <typename T, typename S>
void cell_backward(const CellBackward<T>& a) {
  using V = typename S::V;
  const int64_t gs = a.gate_stride;
  const V one = S::splat(1);
  for (int64_t r = 0; r < a.rows; ++r) {
    const T* gr = a.gates + r * a.gates_ld;
    T* dr = a.dgates + r * a.gates_ld;
    for (int64_t u = 0; u < a.units; u += S::kWidth) {
      const int n = static_cast<int>(std::min<int64_t>(S::kWidth, a.units - u));
      const V i = S::load(gr + u, n), f = S::load(gr + gs + u, n), g = S::load(gr + 2 * gs + u, n),
              o = S::load(gr + 3 * gs + u, n);
      const V tanh_c = S::tanh(S::load(a.c + r * a.c_ld + u, n));
      if (a.m != nullptr) S::store(a.m + r * a.m_ld + u, S::mul(o, tanh_c), n);
      V dh = S::load(a.grad_h + r * a.grad_h_ld + u, n);
      if (a.grad_h_next != nullptr) dh = S::add(S::load(a.grad_h_next + r * a.grad_h_next_ld + u, n), dh);
      T* dc_ptr = a.dc + r * a.dc_ld + u;
      V dc = S::load(dc_ptr, n);
      if (a.grad_c != nullptr) dc = S::add(dc, S::load(a.grad_c + r * a.grad_c_ld + u, n));
      const V d_o = S::mul(dh, tanh_c);
      dc = S::add(dc, S::mul(S::mul(dh, o), S::sub(one, S::mul(tanh_c, tanh_c))));
      const V di = S::mul(dc, g);
      const V df = S::mul(dc, S::load(a.c_prev + r * a.c_prev_ld + u, n));
      const V dg = S::mul(dc, i);
      S::store(dr + u, S::mul(S::mul(di, i), S::sub(one, i)), n);
      S::store(dr + gs + u, S::mul(S::mul(df, f), S::sub(one, f)), n);
      S::store(dr + 2 * gs + u, S::mul(dg, S::sub(one, S::mul(g, g))), n);
      S::store(dr + 3 * gs + u, S::mul(S::mul(d_o, o), S::sub(one, o)), n);
      S::store(dc_ptr, S::mul(dc, f), n);
    }
  }
}

}  // namespace lstmkern::cpu::cell_impl
