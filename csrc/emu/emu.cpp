// The CPU emulator's runtime: the fiber scheduler, barriers, distributed shared memory, launch checks and the fake
// CUDA runtime calls. The execution model and its checks are described in csrc/emu/emu.h.
#include "emu.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <stdexcept>

#include "cuda_runtime.h"

namespace lstmkern_emu {

ThreadContext* current = nullptr;

namespace {

constexpr size_t kStackBytes = 256 * 1024;  // per emulated thread; a guard page below it turns overflow into SIGSEGV

struct FuncAttributes {
  int max_dynamic_smem = kDefaultSmemPerBlock;
  bool non_portable_cluster = false;
};

struct Fiber {
  ThreadContext context;
  ucontext_t ucontext;
  void* stack = nullptr;
  int cta = 0;
  enum State { kReady, kWaiting, kDone } state = kReady;
  Scope scope = Scope::kBlock;
  const char* wait_file = "";
  unsigned wait_line = 0;
};

struct Cta {
  unsigned char* mapping = nullptr;
  size_t mapping_bytes = 0;
  unsigned char* smem = nullptr;
  Dim3 block_idx;
  unsigned rank = 0;
  int cluster = 0;  // index of its cluster within the group
  int first_fiber = 0;
  int live = 0;     // threads not yet exited
};

struct Group {
  LaunchShape shape;
  const std::function<void()>* body = nullptr;
  std::vector<Cta> ctas;
  std::vector<std::vector<int>> clusters;  // cluster -> CTA index by rank
  std::vector<Fiber> fibers;
  ucontext_t scheduler;
  std::string error;
  std::string first_site_file;
};

std::mutex launch_mutex;       // one launch at a time (the scheduler state below is global)
Group* active = nullptr;
Fiber* running = nullptr;
std::vector<void*> stack_pool;  // reused across launches
std::map<const void*, FuncAttributes> attributes;
uint64_t schedule_seed = 0;
std::string dropped_site;
std::vector<LaunchRecord> launch_log;
std::string failure;

const char* base_name(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash != nullptr ? slash + 1 : path;
}

std::string site_name(const char* file, unsigned line) {
  return std::string(base_name(file)) + ":" + std::to_string(line);
}

const char* scope_name(Scope scope) {
  switch (scope) {
    case Scope::kBlock: return "__syncthreads";
    case Scope::kCluster: return "cluster.sync";
    case Scope::kGrid: return "grid.sync";
  }
  return "?";
}

// swapcontext behind a call that is never inlined: the caller's locals then need no protection from a function that
// "returns twice" (-Wclobbered).
[[gnu::noinline]] void switch_context(ucontext_t* from, ucontext_t* to) { swapcontext(from, to); }

// A context that starts fiber_entry on `stack` (getcontext also "returns twice": kept out of the callers likewise).
[[gnu::noinline]] void start_context(ucontext_t& context, void* stack);

void* take_stack() {
  if (!stack_pool.empty()) {
    void* stack = stack_pool.back();
    stack_pool.pop_back();
    return stack;
  }
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* mapping = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
  if (mapping == MAP_FAILED) throw std::runtime_error("lstmkern emulator: cannot map a fiber stack");
  mprotect(mapping, page, PROT_NONE);
  return static_cast<unsigned char*>(mapping) + page;
}

void fiber_entry() {
  (*active->body)();
  running->state = Fiber::kDone;
  --active->ctas[running->cta].live;
  switch_context(&running->ucontext, &active->scheduler);  // never resumed
}

void start_context(ucontext_t& context, void* stack) {
  getcontext(&context);
  context.uc_stack.ss_sp = stack;
  context.uc_stack.ss_size = kStackBytes;
  context.uc_link = nullptr;
  makecontext(&context, fiber_entry, 0);
}

// Orders the fibers that run in this round: the schedule.
void order(std::vector<int>& ready, uint64_t seed, uint64_t round) {
  if (seed == 1) {
    std::reverse(ready.begin(), ready.end());
  } else if (seed > 1) {
    std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + round);
    std::shuffle(ready.begin(), ready.end(), rng);
  }
}

std::string cta_name(const Cta& cta) {
  return "CTA (" + std::to_string(cta.block_idx.x) + ", " + std::to_string(cta.block_idx.y) + ", " +
         std::to_string(cta.block_idx.z) + ")";
}

// Releases the fibers of `members` (all waiting at `scope`) if they wait at one site; records an error otherwise.
bool release(Group& group, const std::vector<int>& members, Scope scope) {
  const Fiber* first = nullptr;
  for (int index : members) {
    const Fiber& fiber = group.fibers[index];
    if (fiber.state == Fiber::kDone) continue;
    if (fiber.state != Fiber::kWaiting || fiber.scope != scope) return false;
    if (first == nullptr) {
      first = &fiber;
    } else if (fiber.wait_line != first->wait_line || std::strcmp(fiber.wait_file, first->wait_file) != 0) {
      group.error = std::string("divergent barrier: threads of one ") + scope_name(scope) + " scope wait at " +
                    site_name(first->wait_file, first->wait_line) + " and at " +
                    site_name(fiber.wait_file, fiber.wait_line) + " (" + cta_name(group.ctas[fiber.cta]) + ")";
      return false;
    }
  }
  if (first == nullptr) return false;
  // Warp-collective WMMA: every live lane of a warp made the same calls since the previous barrier.
  for (int index : members) {
    Fiber& fiber = group.fibers[index];
    const int lane0 = index - static_cast<int>(fiber.context.thread_idx.x % 32);
    const Fiber& leader = group.fibers[lane0];
    if (fiber.state != Fiber::kDone && leader.state != Fiber::kDone &&
        fiber.context.wmma_signature != leader.context.wmma_signature) {
      group.error = "lanes " + std::to_string(lane0 % 32) + " and " + std::to_string(fiber.context.thread_idx.x % 32) +
                    " of warp " + std::to_string(fiber.context.thread_idx.x / 32) + " of " +
                    cta_name(group.ctas[fiber.cta]) + " made different WMMA calls before " +
                    site_name(first->wait_file, first->wait_line);
      return false;
    }
  }
  for (int index : members) {
    Fiber& fiber = group.fibers[index];
    fiber.context.wmma_signature = 0;
    if (fiber.state == Fiber::kWaiting) fiber.state = Fiber::kReady;
  }
  return true;
}

bool release_barriers(Group& group) {
  bool released = false;
  std::vector<int> members;
  for (const Cta& cta : group.ctas) {
    members.clear();
    for (int t = 0; t < static_cast<int>(group.shape.block.x * group.shape.block.y * group.shape.block.z); ++t) {
      members.push_back(cta.first_fiber + t);
    }
    released |= release(group, members, Scope::kBlock);
    if (!group.error.empty()) return false;
  }
  for (const std::vector<int>& cluster : group.clusters) {
    members.clear();
    for (int cta : cluster) {
      const int threads = static_cast<int>(group.shape.block.x * group.shape.block.y * group.shape.block.z);
      for (int t = 0; t < threads; ++t) members.push_back(group.ctas[cta].first_fiber + t);
    }
    released |= release(group, members, Scope::kCluster);
    if (!group.error.empty()) return false;
  }
  members.clear();
  for (int index = 0; index < static_cast<int>(group.fibers.size()); ++index) members.push_back(index);
  released |= release(group, members, Scope::kGrid);
  return released && group.error.empty();
}

std::string deadlock_report(const Group& group) {
  std::string report = "deadlock: no thread can run and no barrier can release;";
  for (const Cta& cta : group.ctas) {
    std::map<std::string, int> waits;
    for (int t = 0; t < static_cast<int>(group.fibers.size()); ++t) {
      const Fiber& fiber = group.fibers[t];
      if (&group.ctas[fiber.cta] != &cta || fiber.state != Fiber::kWaiting) continue;
      ++waits[std::string(scope_name(fiber.scope)) + " at " + site_name(fiber.wait_file, fiber.wait_line)];
    }
    if (waits.empty()) continue;
    report += " ";
    report += cta_name(cta);
    report += ":";
    for (const auto& [where, count] : waits) {
      report += " ";
      report += std::to_string(count);
      report += " threads wait in ";
      report += where;
      report += ";";
    }
  }
  return report;
}

// Runs one group of CTAs that must be co-resident; returns "" or the error.
std::string run_group(const LaunchShape& shape, const std::function<void()>& body, const std::vector<Dim3>& blocks,
                      std::string& first_site_file) {
  Group group;
  group.shape = shape;
  group.body = &body;
  const int threads = static_cast<int>(shape.block.x * shape.block.y * shape.block.z);
  const unsigned cluster_blocks = shape.cluster.x * shape.cluster.y * shape.cluster.z;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t smem_span = (shape.smem_bytes + 127) / 128 * 128;
  const size_t mapping_bytes = (smem_span + page - 1) / page * page + page;
  std::map<std::tuple<unsigned, unsigned, unsigned>, int> cluster_of;
  for (const Dim3& block : blocks) {
    Cta cta;
    cta.block_idx = block;
    cta.rank = block.x % shape.cluster.x + (block.y % shape.cluster.y) * shape.cluster.x +
               (block.z % shape.cluster.z) * shape.cluster.x * shape.cluster.y;
    const auto key = std::make_tuple(block.x / shape.cluster.x, block.y / shape.cluster.y, block.z / shape.cluster.z);
    auto found = cluster_of.find(key);
    if (found == cluster_of.end()) {
      found = cluster_of.emplace(key, static_cast<int>(group.clusters.size())).first;
      group.clusters.emplace_back(cluster_blocks, -1);
    }
    cta.cluster = found->second;
    group.clusters[cta.cluster][cta.rank] = static_cast<int>(group.ctas.size());
    void* mapping = mmap(nullptr, mapping_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mapping == MAP_FAILED) throw std::runtime_error("lstmkern emulator: cannot map shared memory");
    cta.mapping = static_cast<unsigned char*>(mapping);
    cta.mapping_bytes = mapping_bytes;
    mprotect(cta.mapping + mapping_bytes - page, page, PROT_NONE);  // guard page right after the CTA's bytes
    cta.smem = cta.mapping + mapping_bytes - page - smem_span;
    std::memset(cta.smem, 0xFF, smem_span);  // NaN in float32, fp16 and bf16: unwritten shared memory shows
    cta.first_fiber = static_cast<int>(group.ctas.size()) * threads;
    cta.live = threads;
    group.ctas.push_back(cta);
  }
  group.fibers.resize(group.ctas.size() * threads);
  for (int c = 0; c < static_cast<int>(group.ctas.size()); ++c) {
    for (int t = 0; t < threads; ++t) {
      Fiber& fiber = group.fibers[c * threads + t];
      fiber.cta = c;
      ThreadContext& context = fiber.context;
      context.thread_idx = Dim3{t % shape.block.x, (t / shape.block.x) % shape.block.y,
                                t / (shape.block.x * shape.block.y)};
      context.block_idx = group.ctas[c].block_idx;
      context.block_dim = shape.block;
      context.grid_dim = shape.grid;
      context.smem = group.ctas[c].smem;
      context.cluster_rank = group.ctas[c].rank;
      context.cluster_blocks = cluster_blocks;
      context.wmma_signature = 0;
      fiber.stack = take_stack();
      start_context(fiber.ucontext, fiber.stack);
    }
  }

  active = &group;
  std::vector<int> ready;
  for (uint64_t round = 0;; ++round) {
    ready.clear();
    for (int index = 0; index < static_cast<int>(group.fibers.size()); ++index) {
      if (group.fibers[index].state == Fiber::kReady) ready.push_back(index);
    }
    if (ready.empty()) {
      if (std::all_of(group.fibers.begin(), group.fibers.end(),
                      [](const Fiber& fiber) { return fiber.state == Fiber::kDone; })) {
        // The WMMA calls after the last barrier: the lanes of each warp must have made the same ones too.
        for (const Fiber& fiber : group.fibers) {
          const Fiber& leader = *(&fiber - fiber.context.thread_idx.x % 32);
          if (fiber.context.wmma_signature != leader.context.wmma_signature) {
            group.error = "lanes of warp " + std::to_string(fiber.context.thread_idx.x / 32) + " of " +
                          cta_name(group.ctas[fiber.cta]) + " made different WMMA calls before exiting";
            break;
          }
        }
        break;
      }
      if (!release_barriers(group)) {
        if (group.error.empty()) group.error = deadlock_report(group);
        break;
      }
      continue;
    }
    order(ready, schedule_seed, round);
    for (int index : ready) {
      running = &group.fibers[index];
      current = &running->context;
      threadIdx = uint3{current->thread_idx.x, current->thread_idx.y, current->thread_idx.z};
      blockIdx = uint3{current->block_idx.x, current->block_idx.y, current->block_idx.z};
      blockDim = dim3(current->block_dim.x, current->block_dim.y, current->block_dim.z);
      gridDim = dim3(current->grid_dim.x, current->grid_dim.y, current->grid_dim.z);
      switch_context(&group.scheduler, &running->ucontext);
      if (!group.error.empty()) break;
    }
    if (!group.error.empty()) break;
  }
  active = nullptr;
  running = nullptr;
  current = nullptr;
  if (first_site_file.empty()) first_site_file = group.first_site_file;
  for (Fiber& fiber : group.fibers) stack_pool.push_back(fiber.stack);
  for (Cta& cta : group.ctas) munmap(cta.mapping, cta.mapping_bytes);
  return group.error;
}

}  // namespace

void barrier(Scope scope, const std::source_location& where) {
  if (active->first_site_file.empty()) active->first_site_file = base_name(where.file_name());
  if (!dropped_site.empty() && site_name(where.file_name(), where.line()) == dropped_site) return;
  if (scope == Scope::kGrid && !active->shape.cooperative) {
    fail("grid.sync() in a launch without cudaLaunchAttributeCooperative");
  }
  running->state = Fiber::kWaiting;
  running->scope = scope;
  running->wait_file = where.file_name();
  running->wait_line = where.line();
  switch_context(&running->ucontext, &active->scheduler);
}

void fail(const char* what) {
  if (active == nullptr || running == nullptr) throw std::runtime_error(std::string("lstmkern emulator: ") + what);
  const ThreadContext& context = running->context;
  active->error = std::string(what) + " (thread " + std::to_string(context.thread_idx.x) + " of " +
                  cta_name(active->ctas[running->cta]) + ")";
  switch_context(&running->ucontext, &active->scheduler);  // never resumed
  std::abort();
}

void* map_shared(const void* address, unsigned rank) {
  const Cta& cta = active->ctas[running->cta];
  const auto* byte = static_cast<const unsigned char*>(address);
  if (byte < cta.smem || byte >= cta.smem + active->shape.smem_bytes) {
    fail("map_shared_rank of an address outside this CTA's dynamic shared memory");
  }
  if (rank >= current->cluster_blocks) fail("map_shared_rank with a rank outside the cluster");
  const Cta& target = active->ctas[active->clusters[cta.cluster][rank]];
  if (target.live == 0) {
    fail(("map_shared_rank into cluster rank " + std::to_string(rank) + ", which has exited").c_str());
  }
  return target.smem + (byte - cta.smem);
}

void note_wmma(int op, const void* pointer, unsigned ldm) {
  uint64_t value = static_cast<uint64_t>(op) * 0x100000001B3ull ^ reinterpret_cast<uintptr_t>(pointer) ^
                   (static_cast<uint64_t>(ldm) << 48);
  value ^= value >> 29;
  value *= 0xBF58476D1CE4E5B9ull;
  current->wmma_signature = (current->wmma_signature ^ value) * 0x94D049BB133111EBull + 1;
}

int set_max_dynamic_smem(const void* kernel, int bytes) {
  std::lock_guard<std::mutex> lock(launch_mutex);
  if (bytes < 0 || bytes > kSmemOptinPerBlock) return cudaErrorInvalidValue;
  attributes[kernel].max_dynamic_smem = bytes;
  return cudaSuccess;
}

int set_non_portable_cluster(const void* kernel, int allowed) {
  std::lock_guard<std::mutex> lock(launch_mutex);
  attributes[kernel].non_portable_cluster = allowed != 0;
  return cudaSuccess;
}

int max_blocks_per_sm(size_t smem_bytes) {
  if (smem_bytes > static_cast<size_t>(kSmemOptinPerBlock)) return 0;
  return static_cast<int>(std::min<size_t>(8, kSmemPerSm / (smem_bytes + 1024)));
}

int max_active_clusters(const void* kernel, const LaunchShape& shape) {
  const unsigned size = shape.cluster.x * shape.cluster.y * shape.cluster.z;
  bool non_portable = false;
  {
    std::lock_guard<std::mutex> lock(launch_mutex);
    non_portable = attributes[kernel].non_portable_cluster;
  }
  if (size > 16 || (size > 8 && !non_portable)) return 0;
  // The described H100 has 132 SMs in GPCs of at most 16 usable SMs for clusters: a rough count, enough for the
  // launcher's "can it be resident at all" question.
  return static_cast<int>(kSmCount / 16 * (16 / size)) * max_blocks_per_sm(shape.smem_bytes);
}

LaunchShape shape_of(const cudaLaunchConfig_t& config) {
  LaunchShape shape;
  shape.grid = Dim3{config.gridDim.x, config.gridDim.y, config.gridDim.z};
  shape.block = Dim3{config.blockDim.x, config.blockDim.y, config.blockDim.z};
  shape.smem_bytes = config.dynamicSmemBytes;
  for (unsigned a = 0; a < config.numAttrs; ++a) {
    const cudaLaunchAttribute& attribute = config.attrs[a];
    if (attribute.id == cudaLaunchAttributeClusterDimension) {
      shape.cluster = Dim3{attribute.val.clusterDim.x, attribute.val.clusterDim.y, attribute.val.clusterDim.z};
    } else if (attribute.id == cudaLaunchAttributeCooperative) {
      shape.cooperative = attribute.val.cooperative != 0;
    }
  }
  return shape;
}

int launch(const void* kernel, const LaunchShape& shape, const std::function<void()>& body) {
  std::lock_guard<std::mutex> lock(launch_mutex);
  failure.clear();
  const auto refuse = [](int error, const std::string& why) {
    failure = why;
    return error;
  };
  const FuncAttributes& attrs = attributes[kernel];
  if (shape.smem_bytes > static_cast<size_t>(attrs.max_dynamic_smem)) {
    return refuse(cudaErrorInvalidValue, "dynamic shared memory of " + std::to_string(shape.smem_bytes) +
                                             " bytes exceeds the kernel's limit of " +
                                             std::to_string(attrs.max_dynamic_smem) +
                                             " (cudaFuncSetAttribute(MaxDynamicSharedMemorySize) not raised)");
  }
  const unsigned cluster_size = shape.cluster.x * shape.cluster.y * shape.cluster.z;
  if (cluster_size > 16 || (cluster_size > 8 && !attrs.non_portable_cluster)) {
    return refuse(cudaErrorInvalidClusterSize, "cluster of " + std::to_string(cluster_size) +
                                                   " CTAs without the non-portable cluster size attribute");
  }
  if (shape.grid.x % shape.cluster.x != 0 || shape.grid.y % shape.cluster.y != 0 ||
      shape.grid.z % shape.cluster.z != 0) {
    return refuse(cudaErrorInvalidClusterSize, "grid not a multiple of the cluster dimensions");
  }
  const size_t blocks = static_cast<size_t>(shape.grid.x) * shape.grid.y * shape.grid.z;
  if (shape.cooperative && blocks > static_cast<size_t>(kSmCount) * max_blocks_per_sm(shape.smem_bytes)) {
    return refuse(cudaErrorCooperativeLaunchTooLarge, "cooperative grid larger than the resident CTAs");
  }
  // Groups of CTAs that run at the same time.
  std::vector<std::vector<Dim3>> groups;
  std::map<std::tuple<unsigned, unsigned, unsigned>, size_t> group_of;
  for (unsigned z = 0; z < shape.grid.z; ++z) {
    for (unsigned y = 0; y < shape.grid.y; ++y) {
      for (unsigned x = 0; x < shape.grid.x; ++x) {
        const auto key = shape.cooperative ? std::make_tuple(0u, 0u, 0u)
                         : cluster_size > 1 ? std::make_tuple(x / shape.cluster.x, y / shape.cluster.y,
                                                              z / shape.cluster.z)
                                            : std::make_tuple(x, y, z);
        auto found = group_of.find(key);
        if (found == group_of.end()) {
          found = group_of.emplace(key, groups.size()).first;
          groups.emplace_back();
        }
        groups[found->second].push_back(Dim3{x, y, z});
      }
    }
  }
  std::vector<size_t> group_order(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) group_order[g] = g;
  if (schedule_seed == 1) {
    std::reverse(group_order.begin(), group_order.end());
  } else if (schedule_seed > 1) {
    std::mt19937_64 rng(schedule_seed);
    std::shuffle(group_order.begin(), group_order.end(), rng);
  }
  LaunchRecord record;
  record.shape = shape;
  for (size_t g : group_order) {
    const std::string error = run_group(shape, body, groups[g], record.kernel_file);
    if (!error.empty()) return refuse(cudaErrorLaunchFailure, error);
  }
  launch_log.push_back(record);
  return cudaSuccess;
}

void set_schedule_seed(uint64_t seed) {
  std::lock_guard<std::mutex> lock(launch_mutex);
  schedule_seed = seed;
}

void set_dropped_barrier(const std::string& site) {
  std::lock_guard<std::mutex> lock(launch_mutex);
  dropped_site = site;
}

std::vector<LaunchRecord> take_launch_log() {
  std::lock_guard<std::mutex> lock(launch_mutex);
  std::vector<LaunchRecord> log;
  log.swap(launch_log);
  return log;
}

const char* last_failure() { return failure.c_str(); }

}  // namespace lstmkern_emu

uint3 threadIdx;
uint3 blockIdx;
dim3 blockDim;
dim3 gridDim;

cudaError_t cudaGetLastError() { return cudaSuccess; }  // launch errors are returned by the launch itself

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorCooperativeLaunchTooLarge: return "too many blocks in cooperative launch";
    case cudaErrorInvalidClusterSize: return "invalid cluster size";
  }
  return "unknown error";
}

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int device) {
  (void)device;
  switch (attribute) {
    case cudaDevAttrMultiProcessorCount: *value = lstmkern_emu::kSmCount; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *value = lstmkern_emu::kComputeMajor; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = lstmkern_emu::kComputeMinor; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = lstmkern_emu::kSmemOptinPerBlock; return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}
