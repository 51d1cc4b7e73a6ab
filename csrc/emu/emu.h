// The CPU emulator's execution model, shared by its fake CUDA headers (cuda_runtime.h, mma.h, cooperative_groups.h)
// and its runtime (emu.cpp). Not a CUDA implementation: just the part of CUDA the kernels in csrc/*.cu use.
//
// Execution: a launch is split into groups of CTAs that must run at the same time (one CTA; the CTAs of one
// thread-block cluster; every CTA of a cooperative grid). The groups run one after another in a seeded order; inside a
// group every CUDA thread is a user-space fiber (ucontext) on one OS thread, and a fiber runs until it reaches a
// barrier (__syncthreads, cluster.sync(), grid.sync()) or exits. A barrier releases once every live thread of its
// scope waits on it; all threads of the scope must wait at the same source line (else: "divergent barrier"); if no
// fiber can run and a barrier cannot release, the launch fails with a deadlock report naming the barriers waited on.
// The order in which the released fibers of one barrier interval run is the schedule: seed 0 runs them in thread
// order, seed 1 in reverse, other seeds shuffle each round. A kernel whose result depends on the seed reads memory
// another thread writes in the same barrier interval (a race): tests compare several seeds bitwise.
//
// Checks that make the launch fail with a message (returned by cudaGetErrorString / lstmkern_emu::last_failure):
// dynamic shared memory above 48 KiB without cudaFuncSetAttribute, above the described device's 232,448 bytes, or a
// cluster above 8 CTAs without the non-portable attribute; WMMA pointers not 32-byte aligned or an illegal ldm; the
// lanes of a warp calling different WMMA operations between two barriers; __ldcg/__ldg of a misaligned vector;
// map_shared_rank of a pointer outside the CTA's shared memory or into a CTA that has exited; __trap(); deadlock.
// Shared memory starts as NaN bytes (0xFF) and ends at an inaccessible guard page.
//
// A new kernel file csrc/<name>.cu runs here once csrc/emu/kernel_<name>.cpp includes it (see the others) and
// setup.py's EMU_SOURCES lists that file; it must launch through cudaLaunchKernelEx (launch_plain, ClusterLaunch,
// CooperativeLaunch) and reach shared memory through dynamic_smem(). A new kernel op goes into
// csrc/kernel_op_schemas.h and its launcher into csrc/cuda_ops.cpp: both libraries then have it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <source_location>
#include <string>
#include <vector>

namespace lstmkern_emu {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

// The emulated thread that runs now (valid inside a kernel only; one launch runs at a time, on one OS thread).
struct ThreadContext {
  Dim3 thread_idx, block_idx, block_dim, grid_dim;
  unsigned char* smem;   // this CTA's dynamic shared memory
  unsigned cluster_rank;
  unsigned cluster_blocks;
  uint64_t wmma_signature;  // hash of this thread's WMMA calls since the last barrier (warp-collective check)
};
extern ThreadContext* current;

inline unsigned char* dynamic_smem() { return current->smem; }

enum class Scope { kBlock, kCluster, kGrid };
// Waits at a barrier of `scope`; `where` names the call site.
void barrier(Scope scope, const std::source_location& where);
// Ends the launch with an error naming the emulated thread (never returns).
[[noreturn]] void fail(const char* what);
// The other CTA's address of `address` (this CTA's shared memory) in cluster rank `rank`.
void* map_shared(const void* address, unsigned rank);
// Records a WMMA call of this thread for the warp-collective check.
void note_wmma(int op, const void* pointer, unsigned ldm);

struct LaunchShape {
  Dim3 grid, block, cluster;
  bool cooperative = false;
  size_t smem_bytes = 0;
};
// Runs `body` (the kernel with its arguments bound) on the emulated device; returns 0 or a cudaError_t value.
int launch(const void* kernel, const LaunchShape& shape, const std::function<void()>& body);
// Function attributes (cudaFuncSetAttribute) and their checks.
int set_max_dynamic_smem(const void* kernel, int bytes);
int set_non_portable_cluster(const void* kernel, int allowed);
int max_active_clusters(const void* kernel, const LaunchShape& shape);
int max_blocks_per_sm(size_t smem_bytes);

// Controls (lstmkern._emu's module functions). The schedule seed: 0 = thread order, 1 = reverse, others shuffled.
void set_schedule_seed(uint64_t seed);
// A barrier site "file.cu:line" that is skipped (a planted race for the detector's test); "" for none.
void set_dropped_barrier(const std::string& site);
struct LaunchRecord {
  std::string kernel_file;  // the source file of the first barrier the kernel reached ("" if none)
  LaunchShape shape;
};
// The launches since the last call, oldest first.
std::vector<LaunchRecord> take_launch_log();

// Runs the rule-breaking kernel `name` of self_test.cpp; returns the launch's failure message ("" if it ran).
std::string run_self_test(const std::string& name);

// The details of the last failed launch ("" if none).
const char* last_failure();
// The described device (an H100 SXM).
constexpr int kComputeMajor = 9;
constexpr int kComputeMinor = 0;
constexpr int kSmCount = 132;
constexpr int kSmemOptinPerBlock = 232448;
constexpr int kSmemPerSm = 233472;
constexpr int kDefaultSmemPerBlock = 49152;

}  // namespace lstmkern_emu
