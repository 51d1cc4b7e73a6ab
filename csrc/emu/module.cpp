// The `lstmkern._emu` Python module and the `lstmkern_emu` operator library: the kernel ops of lstmkern_cuda with
// identical schemas (csrc/kernel_op_schemas.h), implemented for CPU tensors by csrc/cuda_ops.cpp's launchers compiled
// against the emulator (csrc/emu/emu.h), which runs the csrc/*.cu kernels on the CPU for a described H100.
//
// Module functions (for tests):
//   set_schedule(seed)   order of the emulated threads in each barrier interval: 0 = thread order, 1 = reverse,
//                        others a seeded shuffle (a result that depends on it is a race);
//   drop_barrier(site)   skip the barrier at "file.cu:line" ("" restores all): a planted race for the detector's test;
//   take_launches()      the launches since the last call: dicts with kernel_file, grid, cluster, cooperative,
//                        smem_bytes;
//   self_test(name)      runs one of the rule-breaking kernels of self_test.cpp, returns the emulator's message.
#include <Python.h>

#include <torch/library.h>

#include <stdexcept>
#include <string>

#include "../kernel_op_schemas.h"
#include "emu.h"

TORCH_LIBRARY(lstmkern_emu, m) {
  for (const char* schema : lstmkern::kKernelOpSchemas) m.def(schema);
}

namespace {

PyObject* set_schedule(PyObject*, PyObject* arg) {
  const unsigned long long seed = PyLong_AsUnsignedLongLong(arg);
  if (PyErr_Occurred() != nullptr) return nullptr;
  lstmkern_emu::set_schedule_seed(seed);
  Py_RETURN_NONE;
}

PyObject* drop_barrier(PyObject*, PyObject* arg) {
  const char* site = PyUnicode_AsUTF8(arg);
  if (site == nullptr) return nullptr;
  lstmkern_emu::set_dropped_barrier(site);
  Py_RETURN_NONE;
}

PyObject* dim_tuple(const lstmkern_emu::Dim3& dim) { return Py_BuildValue("(III)", dim.x, dim.y, dim.z); }

PyObject* take_launches(PyObject*, PyObject*) {
  const std::vector<lstmkern_emu::LaunchRecord> log = lstmkern_emu::take_launch_log();
  PyObject* list = PyList_New(0);
  if (list == nullptr) return nullptr;
  for (const lstmkern_emu::LaunchRecord& record : log) {
    PyObject* item = Py_BuildValue("{s:s,s:N,s:N,s:O,s:n}", "kernel_file", record.kernel_file.c_str(), "grid",
                                   dim_tuple(record.shape.grid), "cluster", dim_tuple(record.shape.cluster),
                                   "cooperative", record.shape.cooperative ? Py_True : Py_False, "smem_bytes",
                                   static_cast<Py_ssize_t>(record.shape.smem_bytes));
    if (item == nullptr || PyList_Append(list, item) < 0) {
      Py_XDECREF(item);
      Py_DECREF(list);
      return nullptr;
    }
    Py_DECREF(item);
  }
  return list;
}

PyObject* self_test(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_AsUTF8(arg);
  if (name == nullptr) return nullptr;
  try {
    return PyUnicode_FromString(lstmkern_emu::run_self_test(name).c_str());
  } catch (const std::exception& error) {
    PyErr_SetString(PyExc_ValueError, error.what());
    return nullptr;
  }
}

PyMethodDef methods[] = {
    {"set_schedule", set_schedule, METH_O, "Order of the emulated threads per barrier interval (seed)."},
    {"drop_barrier", drop_barrier, METH_O, "Skip the barrier at 'file.cu:line' ('' for none)."},
    {"take_launches", take_launches, METH_NOARGS, "The emulated launches since the last call."},
    {"self_test", self_test, METH_O, "Run a rule-breaking self-test kernel; returns the emulator's message."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef emu_module = {
    PyModuleDef_HEAD_INIT,
    "_emu",
    "lstmkern's CUDA kernels run on the CPU: registers the torch.ops.lstmkern_emu ops.",
    -1,
    methods,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
};

}  // namespace

extern "C" PyMODINIT_FUNC PyInit__emu(void) { return PyModule_Create(&emu_module); }
