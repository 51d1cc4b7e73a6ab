// Emulator stand-in for <cooperative_groups.h>: this_cluster() (block_rank, num_blocks, sync, map_shared_rank into
// a peer CTA's shared memory) and this_grid().sync() (csrc/emu/emu.h).
#pragma once

#include <source_location>

#include "emu.h"

namespace cooperative_groups {

struct cluster_group {
  unsigned block_rank() const { return ::lstmkern_emu::current->cluster_rank; }
  unsigned num_blocks() const { return ::lstmkern_emu::current->cluster_blocks; }
  void sync(const std::source_location& where = std::source_location::current()) const {
    ::lstmkern_emu::barrier(::lstmkern_emu::Scope::kCluster, where);
  }
  template <typename T> T* map_shared_rank(T* address, unsigned rank) const {
    return static_cast<T*>(::lstmkern_emu::map_shared(address, rank));
  }
};
inline cluster_group this_cluster() { return {}; }

struct grid_group {
  void sync(const std::source_location& where = std::source_location::current()) const {
    ::lstmkern_emu::barrier(::lstmkern_emu::Scope::kGrid, where);
  }
};
inline grid_group this_grid() { return {}; }

}  // namespace cooperative_groups
