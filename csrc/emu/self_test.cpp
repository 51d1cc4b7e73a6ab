// Kernels that each break one rule, for tests/test_emu.py: the emulator must refuse every one of them with a message
// naming the problem (lstmkern._emu.self_test(name) returns that message, or "" if the launch succeeded).
#include "kernel_prelude.h"

#include <cstring>
#include <string>

namespace {

namespace wmma = nvcuda::wmma;
namespace cg = cooperative_groups;

// Half of the CTA at __syncthreads, the other half at the cluster barrier: neither can ever release.
__global__ void mixed_barriers_kernel() {
  if (threadIdx.x < 128) {
    __syncthreads();
  } else {
    cg::this_cluster().sync();
  }
}

// Two different __syncthreads sites for the two halves of the CTA (undefined behaviour on a GPU).
__global__ void divergent_barrier_kernel() {
  if (threadIdx.x < 128) {
    __syncthreads();
  } else {
    __syncthreads();
  }
}

// A WMMA load from an address 16 bytes past a 32-byte boundary.
__global__ void misaligned_wmma_kernel() {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fragment;
  wmma::load_matrix_sync(fragment, reinterpret_cast<const __half*>(lstmkern_emu::dynamic_smem() + 16), 16);
}

// Only lane 0 of each warp fills the fragment: the warp-collective operation is not called by the whole warp.
__global__ void partial_warp_wmma_kernel() {
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> fragment;
  if (threadIdx.x % 32 == 0) wmma::fill_fragment(fragment, 0.0f);
  __syncthreads();
}

// A 16-byte __ldcg from an address 4 bytes past a 16-byte boundary.
__global__ void misaligned_ldcg_kernel() {
  const int4 value = __ldcg(reinterpret_cast<const int4*>(lstmkern_emu::dynamic_smem() + 4));
  (void)value;
}

// Peer rank 1 reads rank 0's shared memory after rank 0 has exited (no cluster barrier before the exit).
__global__ void exited_peer_kernel() {
  const cg::cluster_group cluster = cg::this_cluster();
  if (cluster.block_rank() == 1) {
    cluster.sync();  // rank 0 never comes: it has exited, so this releases with rank 1 alone
    (void)*cluster.map_shared_rank(lstmkern_emu::dynamic_smem(), 0);
  }
}

__global__ void empty_kernel() {}

cudaError_t launch_self_test(void (*kernel)(), int ctas, int cluster, size_t smem_bytes) {
  cudaLaunchConfig_t config{};
  cudaLaunchAttribute attribute{};
  config.gridDim = dim3(static_cast<unsigned>(ctas));
  config.blockDim = dim3(256);
  config.dynamicSmemBytes = smem_bytes;
  attribute.id = cudaLaunchAttributeClusterDimension;
  attribute.val.clusterDim.x = static_cast<unsigned>(cluster);
  attribute.val.clusterDim.y = 1;
  attribute.val.clusterDim.z = 1;
  config.attrs = &attribute;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, kernel);
}

}  // namespace

namespace lstmkern_emu {

// The failure message of the self-test kernel `name` ("" if it ran); throws std::invalid_argument for an unknown name.
std::string run_self_test(const std::string& name) {
  cudaError_t err = cudaSuccess;
  if (name == "mixed_barriers") {
    err = launch_self_test(mixed_barriers_kernel, 2, 2, 1024);
  } else if (name == "divergent_barrier") {
    err = launch_self_test(divergent_barrier_kernel, 1, 1, 1024);
  } else if (name == "misaligned_wmma") {
    err = launch_self_test(misaligned_wmma_kernel, 1, 1, 1024);
  } else if (name == "partial_warp_wmma") {
    err = launch_self_test(partial_warp_wmma_kernel, 1, 1, 1024);
  } else if (name == "misaligned_ldcg") {
    err = launch_self_test(misaligned_ldcg_kernel, 1, 1, 1024);
  } else if (name == "exited_peer") {
    err = launch_self_test(exited_peer_kernel, 2, 2, 1024);
  } else if (name == "smem_without_attribute") {
    err = launch_self_test(empty_kernel, 1, 1, 64 * 1024);  // above 48 KiB, cudaFuncSetAttribute never called
  } else if (name == "cluster_of_16_without_attribute") {
    err = launch_self_test(empty_kernel, 16, 16, 1024);
  } else if (name == "smem_above_the_device") {
    err = cudaFuncSetAttribute(empty_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemOptinPerBlock + 16);
    if (err == cudaSuccess) return "";
    return "cudaFuncSetAttribute refused " + std::to_string(kSmemOptinPerBlock + 16) + " bytes";
  } else {
    throw std::invalid_argument("unknown self test " + name);
  }
  return err == cudaSuccess ? std::string() : std::string(cudaGetErrorString(err)) + ": " + last_failure();
}

}  // namespace lstmkern_emu
