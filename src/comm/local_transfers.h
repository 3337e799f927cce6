// The part of a global transfer list (communicator.h) that concerns one
// rank, resolved against that rank's registered regions and checked.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "eplb/communicator.h"
#include "eplb/memory.h"

namespace eplb::comm {

struct LocalOp {
  size_t index = 0;   // position in the global list
  bool send = false;  // this rank is the source (else the destination)
  int peer = -1;
  uint8_t* local = nullptr;  // this rank's bytes (source or destination)
  uint64_t bytes = 0;
  RegionId peer_region = -1;
  uint64_t peer_offset = 0;
};

// Transfers with src_rank == rank (sends) or dst_rank == rank (receives), in
// list order. Throws InvalidArgument naming `layer`, the transfer index and
// the problem: a rank outside [0, size), src == dst, an unknown local region,
// or a byte range past the end of the local region. Zero-byte transfers are
// skipped.
std::vector<LocalOp> SelectLocalOps(const std::string& layer, int rank, int size,
                                    const std::vector<MemoryRegion>& regions,
                                    std::span<const Transfer> transfers);

// "3 sends and 2 receives (12.0 MiB) with peers 1, 3"
std::string DescribeOps(const std::vector<LocalOp>& ops);

}  // namespace eplb::comm
