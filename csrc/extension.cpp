// The `lstmkern._C` Python module and the `lstmkern_cuda` operator library.
//
// This file is compiled in every build (CUDA or CPU-only): it defines the op schemas, the shared-memory query ops
// (pure arithmetic on csrc/persistent_layout.h, so the Python-side rule can be checked against them anywhere) and
// the module init. The CUDA kernels of the ops are registered by cuda_ops.cpp, which is only built with CUDA.
#include <Python.h>

#include <torch/library.h>

#include "persistent_layout.h"

#ifndef LSTMKERN_WITH_CUDA
#define LSTMKERN_WITH_CUDA 0
#endif

namespace lstmkern {
namespace {

ElementKind element_kind_of(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::ScalarType::Float: return ElementKind::kFloat32;
    case c10::ScalarType::Half: return ElementKind::kFloat16;
    case c10::ScalarType::BFloat16: return ElementKind::kBFloat16;
    default:
      TORCH_CHECK_VALUE(false, "dtype must be torch.float32, torch.float16 or torch.bfloat16 for the persistent "
                        "kernels, got ", dtype);
  }
}

int64_t glstm_smem_bytes(int64_t hidden_per_group, c10::ScalarType dtype) {
  TORCH_CHECK_VALUE(hidden_per_group >= 1, "hidden_per_group must be >= 1, got ", hidden_per_group);
  return glstm_persistent_smem_bytes(hidden_per_group, element_kind_of(dtype));
}

int64_t flstm_smem_bytes(int64_t hidden, int64_t rank, c10::ScalarType dtype) {
  TORCH_CHECK_VALUE(hidden >= 1, "hidden must be >= 1, got ", hidden);
  TORCH_CHECK_VALUE(rank >= 1, "rank must be >= 1, got ", rank);
  return flstm_persistent_smem_bytes(hidden, rank, element_kind_of(dtype));
}

}  // namespace
}  // namespace lstmkern

TORCH_LIBRARY(lstmkern_cuda, m) {
  // Shapes: see lstmkern/reference.py. All tensors contiguous, CUDA, of x's dtype except `cell` / `grad_cell`
  // (float32, the state dtype). Outputs follow the backend contract in lstmkern/backends/__init__.py.
  m.def("glstm_persistent_fwd(Tensor x, Tensor h0, Tensor c0, Tensor weight_ih, Tensor weight_hh, Tensor? bias)"
        " -> (Tensor output, Tensor cell)");
  m.def("glstm_persistent_bwd(Tensor grad_output, Tensor? grad_cell, Tensor x, Tensor h0, Tensor c0, "
        "Tensor weight_ih, Tensor weight_hh, Tensor? bias, Tensor output, Tensor cell) -> (Tensor dx, Tensor dh0, "
        "Tensor dc0, Tensor dweight_ih, Tensor dweight_hh, Tensor dbias)");
  m.def("flstm_persistent_fwd(Tensor x, Tensor h0, Tensor c0, Tensor weight_1, Tensor weight_2, Tensor? bias)"
        " -> (Tensor output, Tensor cell)");
  m.def("flstm_persistent_bwd(Tensor grad_output, Tensor? grad_cell, Tensor x, Tensor h0, Tensor c0, "
        "Tensor weight_1, Tensor weight_2, Tensor? bias, Tensor output, Tensor cell) -> (Tensor dx, Tensor dh0, "
        "Tensor dc0, Tensor dweight_1, Tensor dweight_2, Tensor dbias)");
  // Dynamic shared memory (bytes per block) the persistent path needs: max over its forward and backward kernels.
  m.def("glstm_persistent_smem_bytes(int hidden_per_group, ScalarType dtype) -> int", &lstmkern::glstm_smem_bytes);
  m.def("flstm_persistent_smem_bytes(int hidden, int rank, ScalarType dtype) -> int", &lstmkern::flstm_smem_bytes);
}

namespace {

PyModuleDef lstmkern_module = {
    PyModuleDef_HEAD_INIT,
    "_C",                                                                    // m_name
    "lstmkern native extension: registers the torch.ops.lstmkern_cuda ops.",  // m_doc
    -1,                                                                      // m_size
    nullptr,                                                                 // m_methods
    nullptr,                                                                 // m_slots
    nullptr,                                                                 // m_traverse
    nullptr,                                                                 // m_clear
    nullptr,                                                                 // m_free
};

}  // namespace

// Importing the module loads this shared library, whose static initialisers register the ops above.
extern "C" PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&lstmkern_module);
  if (module == nullptr) return nullptr;
  if (PyModule_AddIntConstant(module, "built_with_cuda", LSTMKERN_WITH_CUDA) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
