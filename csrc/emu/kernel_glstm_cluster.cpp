// csrc/glstm_cluster.cu compiled as host C++ for the CPU emulator (see kernel_prelude.h).
#include "kernel_prelude.h"

#include "../glstm_cluster.cu"
