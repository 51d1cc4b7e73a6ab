// csrc/cuda_ops.cpp (the torch-facing launchers: checks, GEMMs, kernel choice) compiled for the emulator, under its
// own name so its object file does not collide with the CUDA build's.
#include "../cuda_ops.cpp"
