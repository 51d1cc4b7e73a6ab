// csrc/flstm_grid_bwd.cu compiled as host C++ for the CPU emulator (see kernel_prelude.h).
#include "kernel_prelude.h"

#include "../flstm_grid_bwd.cu"
