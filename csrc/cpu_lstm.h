// The CPU backend's pointwise LSTM cell kernels: the interface between the drivers (cpu_lstm.cpp: GEMMs, time loop,
// threading) and the vectorised cell code (cpu_cell_kernels.h), which is compiled once per instruction set
// (cpu_cell_default.cpp, cpu_cell_avx2.cpp) and chosen at run time.
//
// Shape legend (as in lstmkern/reference.py): T steps, B batch, I inputs, H hidden units, G groups, Hg = H / G,
// R rank. A cell call covers `rows` batch rows and `units` consecutive hidden units of one group (G-LSTM) or of the
// layer (F-LSTM). Gate q (0..3 = i, f, g, o) of unit u in row r lives at gates[r * gates_ld + q * gate_stride + u]
// (gate_stride = Hg for G-LSTM, H for F-LSTM; the caller offsets every pointer to the first unit of the chunk).
// T (the element type) is float or double and is also the state type (the cell state of float32 inputs is float32).
#pragma once

#include <cstdint>

namespace lstmkern::cpu {

template <typename T>
struct CellForward {
  int64_t rows, units;
  T* gates;  // in: pre-activations without the bias (input projection + recurrent product); out: the activated gates
             // sigmoid(i), sigmoid(f), tanh(g), sigmoid(o), which the backward reads (in place: the same layout)
  int64_t gates_ld, gate_stride;
  const T* bias;  // bias[q * gate_stride + u], or nullptr
  const T* c_prev;
  int64_t c_prev_ld;
  T* c;  // out: c_t
  int64_t c_ld;
  T* h;  // out: h_t = o * tanh(c_t) (with a projection: the cell output m_t, which W_hr then projects)
  int64_t h_ld;
};

template <typename T>
struct CellBackward {
  int64_t rows, units;
  const T* gates;  // the activated gates the forward wrote (kept for the backward)
  T* dgates;       // out: the gradients of the pre-activations, laid out as `gates`
  int64_t gates_ld, gate_stride;
  const T* c_prev;
  int64_t c_prev_ld;
  const T* c;  // c_t
  int64_t c_ld;
  const T* grad_h;  // upstream gradient of h_t (grad_output[t]); with a projection, of m_t (dm_t = dh_t W_hr)
  int64_t grad_h_ld;
  const T* grad_h_next;  // gradient reaching h_t through step t + 1's recurrence, or nullptr (last step)
  int64_t grad_h_next_ld;
  const T* grad_c;  // upstream gradient of c_t (grad_cell[t]), or nullptr
  int64_t grad_c_ld;
  T* dc;  // in: gradient reaching c_t from step t + 1; out: the gradient of c_{t-1}
  int64_t dc_ld;
  // out, or nullptr: m_t = o * tanh(c_t) from the recomputed o and the saved c_t (with a projection, the backward needs
  // every step's m_t for dweight_hr, and this pass already has both factors in registers)
  T* m = nullptr;
  int64_t m_ld = 0;
};

// One instruction set's cell kernels.
struct CellKernels {
  const char* isa;
  void (*forward_f32)(const CellForward<float>&);
  void (*forward_f64)(const CellForward<double>&);
  void (*backward_f32)(const CellBackward<float>&);
  void (*backward_f64)(const CellBackward<double>&);
};

// Portable build (whatever the compiler's baseline flags allow).
const CellKernels* cell_kernels_default();
// AVX2 + FMA build, or nullptr where it was not compiled (not x86-64 GCC).
const CellKernels* cell_kernels_avx2();

}  // namespace lstmkern::cpu
