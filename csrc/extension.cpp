// The `lstmkern._C` Python module and the `lstmkern_cuda` operator library.
//
// This file is compiled in every build (CUDA or CPU-only): it defines the op schemas, the shared-memory and
// kernel-choice query ops (pure arithmetic on csrc/persistent_layout.h, so the Python-side rule can be checked against
// them anywhere) and the module init. The CUDA kernels of the ops are registered by cuda_ops.cpp, which is only built
// with CUDA.
#include <Python.h>

#include <torch/library.h>

#include "kernel_op_schemas.h"
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

void check_glstm_cluster_shape(int64_t hidden_per_group, int64_t cluster_size, const char* kernel) {
  TORCH_CHECK_VALUE(glstm_cluster_shape_ok(hidden_per_group, cluster_size), "the cluster G-LSTM ", kernel, " takes "
                    "cluster_size 2, 4 or 8 and hidden_per_group a multiple of 16 * cluster_size, got cluster_size = ",
                    cluster_size, ", hidden_per_group = ", hidden_per_group);
}

int64_t glstm_cluster_smem(int64_t hidden_per_group, int64_t cluster_size, c10::ScalarType dtype) {
  const ElementKind kind = element_kind_of(dtype);
  check_glstm_cluster_shape(hidden_per_group, cluster_size, "forward");
  return glstm_cluster_smem_bytes(hidden_per_group, cluster_size, kind);
}

int64_t glstm_cluster_bwd_smem(int64_t hidden_per_group, int64_t cluster_size, c10::ScalarType dtype) {
  const ElementKind kind = element_kind_of(dtype);
  check_glstm_cluster_shape(hidden_per_group, cluster_size, "backward");
  return glstm_cluster_bwd_smem_bytes(hidden_per_group, cluster_size, kind);
}

int64_t glstm_forward_cluster_size(int64_t hidden_per_group, c10::ScalarType dtype, int64_t smem_optin,
                                   int64_t cc_major) {
  TORCH_CHECK_VALUE(hidden_per_group >= 1, "hidden_per_group must be >= 1, got ", hidden_per_group);
  return glstm_fwd_cluster_size(hidden_per_group, element_kind_of(dtype), smem_optin, static_cast<int>(cc_major));
}

int64_t flstm_smem_bytes(int64_t hidden, int64_t rank, c10::ScalarType dtype) {
  TORCH_CHECK_VALUE(hidden >= 1, "hidden must be >= 1, got ", hidden);
  TORCH_CHECK_VALUE(rank >= 1, "rank must be >= 1, got ", rank);
  return flstm_persistent_smem_bytes(hidden, rank, element_kind_of(dtype));
}

int64_t flstm_cluster_smem(int64_t hidden, int64_t rank, int64_t cluster_size, c10::ScalarType dtype) {
  const ElementKind kind = element_kind_of(dtype);
  TORCH_CHECK_VALUE(flstm_cluster_shape_ok(hidden, rank, cluster_size), "the cluster F-LSTM forward takes "
                    "cluster_size 2, 4, 8 or 16, hidden a multiple of 16 * cluster_size and rank a multiple of 16, got "
                    "cluster_size = ", cluster_size, ", hidden = ", hidden, ", rank = ", rank);
  return flstm_cluster_smem_bytes(hidden, rank, cluster_size, kind);
}

int64_t flstm_forward_cluster_size(int64_t hidden, int64_t rank, c10::ScalarType dtype, int64_t smem_optin,
                                   int64_t cc_major) {
  TORCH_CHECK_VALUE(hidden >= 1, "hidden must be >= 1, got ", hidden);
  TORCH_CHECK_VALUE(rank >= 1, "rank must be >= 1, got ", rank);
  return flstm_fwd_cluster_size(hidden, rank, element_kind_of(dtype), smem_optin, static_cast<int>(cc_major));
}

int64_t flstm_cluster_bwd_smem(int64_t hidden, int64_t rank, int64_t cluster_size, c10::ScalarType dtype) {
  const ElementKind kind = element_kind_of(dtype);
  TORCH_CHECK_VALUE(flstm_cluster_shape_ok(hidden, rank, cluster_size), "the cluster F-LSTM backward takes "
                    "cluster_size 2, 4, 8 or 16, hidden a multiple of 16 * cluster_size and rank a multiple of 16, got "
                    "cluster_size = ", cluster_size, ", hidden = ", hidden, ", rank = ", rank);
  return flstm_cluster_bwd_smem_bytes(hidden, rank, cluster_size, kind);
}

int64_t flstm_backward_cluster_size(int64_t hidden, int64_t rank, c10::ScalarType dtype, int64_t smem_optin,
                                    int64_t cc_major) {
  TORCH_CHECK_VALUE(hidden >= 1, "hidden must be >= 1, got ", hidden);
  TORCH_CHECK_VALUE(rank >= 1, "rank must be >= 1, got ", rank);
  return flstm_bwd_cluster_size(hidden, rank, element_kind_of(dtype), smem_optin, static_cast<int>(cc_major));
}

int64_t flstm_grid_smem(int64_t hidden, int64_t rank, int64_t grid_ctas, c10::ScalarType dtype) {
  const ElementKind kind = element_kind_of(dtype);
  TORCH_CHECK_VALUE(flstm_grid_shape_ok(hidden, rank, grid_ctas), "the grid F-LSTM forward takes grid_ctas >= 1, "
                    "hidden a multiple of 16 * grid_ctas and rank a multiple of 16, got grid_ctas = ", grid_ctas,
                    ", hidden = ", hidden, ", rank = ", rank);
  return flstm_grid_smem_bytes(hidden, rank, grid_ctas, kind);
}

int64_t flstm_forward_grid_ctas(int64_t hidden, int64_t rank, c10::ScalarType dtype, int64_t smem_optin,
                                int64_t sm_count) {
  TORCH_CHECK_VALUE(hidden >= 1, "hidden must be >= 1, got ", hidden);
  TORCH_CHECK_VALUE(rank >= 1, "rank must be >= 1, got ", rank);
  return flstm_fwd_grid_ctas(hidden, rank, element_kind_of(dtype), smem_optin, sm_count);
}

int64_t flstm_grid_bwd_smem(int64_t hidden, int64_t rank, int64_t grid_ctas, c10::ScalarType dtype) {
  const ElementKind kind = element_kind_of(dtype);
  TORCH_CHECK_VALUE(flstm_grid_shape_ok(hidden, rank, grid_ctas), "the grid F-LSTM backward takes grid_ctas >= 1, "
                    "hidden a multiple of 16 * grid_ctas and rank a multiple of 16, got grid_ctas = ", grid_ctas,
                    ", hidden = ", hidden, ", rank = ", rank);
  return flstm_grid_bwd_smem_bytes(hidden, rank, grid_ctas, kind);
}

int64_t flstm_backward_grid_ctas(int64_t hidden, int64_t rank, c10::ScalarType dtype, int64_t smem_optin,
                                 int64_t sm_count) {
  TORCH_CHECK_VALUE(hidden >= 1, "hidden must be >= 1, got ", hidden);
  TORCH_CHECK_VALUE(rank >= 1, "rank must be >= 1, got ", rank);
  return flstm_bwd_grid_ctas(hidden, rank, element_kind_of(dtype), smem_optin, sm_count);
}

void check_projected_shape(int64_t hidden, int64_t proj, int64_t groups) {
  TORCH_CHECK_VALUE(projected_shape_ok(hidden, proj, groups), "a projected layer needs hidden, proj, groups >= 1 with "
                    "hidden and proj divisible by groups, got hidden = ", hidden, ", proj = ", proj, ", groups = ",
                    groups);
}

int64_t projected_smem(int64_t hidden, int64_t proj, int64_t groups, c10::ScalarType dtype) {
  const ElementKind kind = element_kind_of(dtype);
  check_projected_shape(hidden, proj, groups);
  return projected_smem_bytes(hidden, proj, groups, kind);
}

int64_t projected_cluster_smem(int64_t hidden, int64_t proj, int64_t groups, int64_t cluster_size,
                               c10::ScalarType dtype) {
  const ElementKind kind = element_kind_of(dtype);
  TORCH_CHECK_VALUE(projected_cluster_shape_ok(hidden, proj, groups, cluster_size), "the cluster projected forward "
                    "takes cluster_size 2, 4, 8 or 16 a multiple of groups, hidden a multiple of 16 * cluster_size and "
                    "proj / groups a multiple of 16, got cluster_size = ", cluster_size, ", hidden = ", hidden,
                    ", proj = ", proj, ", groups = ", groups);
  return projected_cluster_smem_bytes(hidden, proj, groups, cluster_size, kind);
}

int64_t projected_grid_smem(int64_t hidden, int64_t proj, int64_t groups, int64_t grid_ctas, c10::ScalarType dtype) {
  const ElementKind kind = element_kind_of(dtype);
  TORCH_CHECK_VALUE(projected_grid_shape_ok(hidden, proj, groups, grid_ctas), "the grid projected forward takes "
                    "grid_ctas >= 1 a multiple of groups, hidden a multiple of 16 * grid_ctas and proj / groups a "
                    "multiple of 16, got grid_ctas = ", grid_ctas, ", hidden = ", hidden, ", proj = ", proj,
                    ", groups = ", groups);
  return projected_grid_smem_bytes(hidden, proj, groups, grid_ctas, kind);
}

int64_t projected_forward_grid_ctas(int64_t hidden, int64_t proj, int64_t groups, c10::ScalarType dtype,
                                    int64_t smem_optin, int64_t sm_count) {
  const ElementKind kind = element_kind_of(dtype);
  check_projected_shape(hidden, proj, groups);
  return projected_fwd_grid_ctas(hidden, proj, groups, kind, smem_optin, sm_count);
}

int64_t projected_forward_cluster_size(int64_t hidden, int64_t proj, int64_t groups, c10::ScalarType dtype,
                                       int64_t smem_optin, int64_t cc_major) {
  const ElementKind kind = element_kind_of(dtype);
  check_projected_shape(hidden, proj, groups);
  return projected_fwd_cluster_size(hidden, proj, groups, kind, smem_optin, static_cast<int>(cc_major));
}

// The projected backward's layouts and choice (projected_bwd_cluster_size and friends in persistent_layout.h).
int64_t projected_cluster_bwd_smem(int64_t hidden, int64_t proj, int64_t groups, int64_t cluster_size,
                                   c10::ScalarType dtype) {
  const ElementKind kind = element_kind_of(dtype);
  TORCH_CHECK_VALUE(projected_cluster_shape_ok(hidden, proj, groups, cluster_size), "the cluster projected backward "
                    "takes cluster_size 2, 4, 8 or 16 a multiple of groups, hidden a multiple of 16 * cluster_size and "
                    "proj / groups a multiple of 16, got cluster_size = ", cluster_size, ", hidden = ", hidden,
                    ", proj = ", proj, ", groups = ", groups);
  return projected_cluster_bwd_smem_bytes(hidden, proj, groups, cluster_size, kind);
}

int64_t projected_grid_bwd_smem(int64_t hidden, int64_t proj, int64_t groups, int64_t grid_ctas,
                                c10::ScalarType dtype) {
  const ElementKind kind = element_kind_of(dtype);
  TORCH_CHECK_VALUE(projected_grid_shape_ok(hidden, proj, groups, grid_ctas), "the grid projected backward takes "
                    "grid_ctas >= 1 a multiple of groups, hidden a multiple of 16 * grid_ctas and proj / groups a "
                    "multiple of 16, got grid_ctas = ", grid_ctas, ", hidden = ", hidden, ", proj = ", proj,
                    ", groups = ", groups);
  return projected_grid_bwd_smem_bytes(hidden, proj, groups, grid_ctas, kind);
}

int64_t projected_backward_cluster_size(int64_t hidden, int64_t proj, int64_t groups, c10::ScalarType dtype,
                                        int64_t smem_optin, int64_t cc_major) {
  const ElementKind kind = element_kind_of(dtype);
  check_projected_shape(hidden, proj, groups);
  return projected_bwd_cluster_size(hidden, proj, groups, kind, smem_optin, static_cast<int>(cc_major));
}

int64_t projected_backward_grid_ctas(int64_t hidden, int64_t proj, int64_t groups, c10::ScalarType dtype,
                                     int64_t smem_optin, int64_t sm_count) {
  const ElementKind kind = element_kind_of(dtype);
  check_projected_shape(hidden, proj, groups);
  return projected_bwd_grid_ctas(hidden, proj, groups, kind, smem_optin, sm_count);
}

}  // namespace
}  // namespace lstmkern

TORCH_LIBRARY(lstmkern_cuda, m) {
  // The kernel ops (their schemas and arguments: csrc/kernel_op_schemas.h, shared with the emulator's lstmkern_emu).
  for (const char* schema : lstmkern::kKernelOpSchemas) m.def(schema);
  // Dynamic shared memory (bytes per block) the persistent path needs: max over its forward and backward kernels.
  m.def("glstm_persistent_smem_bytes(int hidden_per_group, ScalarType dtype) -> int", &lstmkern::glstm_smem_bytes);
  m.def("flstm_persistent_smem_bytes(int hidden, int rank, ScalarType dtype) -> int", &lstmkern::flstm_smem_bytes);
  // Dynamic shared memory per CTA of the cluster G-LSTM forward / backward with cluster_size CTAs per group
  // (ValueError where that cluster size is not accepted for hidden_per_group), and the kernel the automatic forward
  // picks: 1 = single CTA, C = cluster of C CTAs, 0 = none fits.
  m.def("glstm_cluster_smem_bytes(int hidden_per_group, int cluster_size, ScalarType dtype) -> int",
        &lstmkern::glstm_cluster_smem);
  m.def("glstm_cluster_bwd_smem_bytes(int hidden_per_group, int cluster_size, ScalarType dtype) -> int",
        &lstmkern::glstm_cluster_bwd_smem);
  m.def("glstm_forward_cluster_size(int hidden_per_group, ScalarType dtype, int smem_optin, int cc_major) -> int",
        &lstmkern::glstm_forward_cluster_size);
  // The same for the cluster F-LSTM forward (C CTAs per batch tile; ValueError where C is not accepted for
  // (hidden, rank)) and the F-LSTM forward kernel the automatic mode picks (1, C, or 0).
  m.def("flstm_cluster_smem_bytes(int hidden, int rank, int cluster_size, ScalarType dtype) -> int",
        &lstmkern::flstm_cluster_smem);
  m.def("flstm_forward_cluster_size(int hidden, int rank, ScalarType dtype, int smem_optin, int cc_major) -> int",
        &lstmkern::flstm_forward_cluster_size);
  // The same for the grid F-LSTM forward: bytes per CTA with grid_ctas CTAs (ValueError where that count is not
  // accepted for (hidden, rank)), and the CTA count the automatic mode uses where neither the single CTA nor a cluster
  // fits (0: none fits within sm_count CTAs).
  m.def("flstm_grid_smem_bytes(int hidden, int rank, int grid_ctas, ScalarType dtype) -> int",
        &lstmkern::flstm_grid_smem);
  m.def("flstm_forward_grid_ctas(int hidden, int rank, ScalarType dtype, int smem_optin, int sm_count) -> int",
        &lstmkern::flstm_forward_grid_ctas);
  // The cluster F-LSTM backward: bytes per CTA with cluster_size CTAs (ValueError where C is not accepted), and the
  // backward kernel the op's automatic mode picks (flstm_bwd_cluster_size: 1, C, or 0).
  m.def("flstm_cluster_bwd_smem_bytes(int hidden, int rank, int cluster_size, ScalarType dtype) -> int",
        &lstmkern::flstm_cluster_bwd_smem);
  m.def("flstm_backward_cluster_size(int hidden, int rank, ScalarType dtype, int smem_optin, int cc_major) -> int",
        &lstmkern::flstm_backward_cluster_size);
  // The grid F-LSTM backward: bytes per CTA with grid_ctas CTAs (ValueError where that count is not accepted), and the
  // CTA count the op's automatic mode uses where flstm_backward_cluster_size is 0 (flstm_bwd_grid_ctas; 0: none fits).
  m.def("flstm_grid_bwd_smem_bytes(int hidden, int rank, int grid_ctas, ScalarType dtype) -> int",
        &lstmkern::flstm_grid_bwd_smem);
  m.def("flstm_backward_grid_ctas(int hidden, int rank, ScalarType dtype, int smem_optin, int sm_count) -> int",
        &lstmkern::flstm_backward_grid_ctas);
  // Projected layers (weight_hr (proj, hidden), a G-LSTM with `groups` groups) on the F-LSTM forward kernels: bytes
  // per block of the single-CTA projected forward and per CTA of the cluster one (ValueError where the shape or C is
  // not accepted), and the kernel the automatic mode picks (1, C, or 0).
  m.def("projected_smem_bytes(int hidden, int proj, int groups, ScalarType dtype) -> int", &lstmkern::projected_smem);
  m.def("projected_cluster_smem_bytes(int hidden, int proj, int groups, int cluster_size, ScalarType dtype) -> int",
        &lstmkern::projected_cluster_smem);
  m.def("projected_forward_cluster_size(int hidden, int proj, int groups, ScalarType dtype, int smem_optin, "
        "int cc_major) -> int", &lstmkern::projected_forward_cluster_size);
  // ... and of the grid projected forward (bytes per CTA with grid_ctas CTAs; the CTA count the automatic mode uses
  // where neither one CTA nor a cluster fits, 0 where none within sm_count CTAs does).
  m.def("projected_grid_smem_bytes(int hidden, int proj, int groups, int grid_ctas, ScalarType dtype) -> int",
        &lstmkern::projected_grid_smem);
  m.def("projected_forward_grid_ctas(int hidden, int proj, int groups, ScalarType dtype, int smem_optin, "
        "int sm_count) -> int", &lstmkern::projected_forward_grid_ctas);
  // The projected backward: bytes per CTA of its cluster and grid kernels (its single CTA holds the forward's
  // projected_smem_bytes), and the kernel the automatic mode picks (cluster size 1, C or 0, then the CTA count).
  m.def("projected_cluster_bwd_smem_bytes(int hidden, int proj, int groups, int cluster_size, ScalarType dtype) -> "
        "int", &lstmkern::projected_cluster_bwd_smem);
  m.def("projected_grid_bwd_smem_bytes(int hidden, int proj, int groups, int grid_ctas, ScalarType dtype) -> int",
        &lstmkern::projected_grid_bwd_smem);
  m.def("projected_backward_cluster_size(int hidden, int proj, int groups, ScalarType dtype, int smem_optin, "
        "int cc_major) -> int", &lstmkern::projected_backward_cluster_size);
  m.def("projected_backward_grid_ctas(int hidden, int proj, int groups, ScalarType dtype, int smem_optin, "
        "int sm_count) -> int", &lstmkern::projected_backward_grid_ctas);
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
