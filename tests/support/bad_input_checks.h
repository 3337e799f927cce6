// The bad-input table every communicator must refuse alike: a region with no
// address, memory of a kind the backend does not move, and transfers with a
// rank, a region or a byte range that does not exist. Each must throw
// InvalidArgument naming the backend, before any byte moves, on every rank,
// and leave the communicator usable: a good exchange afterwards still lands.
//
// Collective: every rank of a two-rank group calls it with the same
// arguments. Bad transfers come in pairs (0 -> 1 and 1 -> 0) so each rank
// finds a problem on its own side of the list, whatever the backend checks
// of its peers' regions.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "eplb/communicator.h"
#include "eplb/memory.h"

namespace eplb::test {

struct BadInputMemory {
  // A fresh region of `bytes` of the kind the backend moves; owned by the caller.
  std::function<MemoryRegion(size_t bytes)> make;
  // Memory the backend must refuse (host memory for a device-only backend);
  // nullopt where it moves every kind.
  std::optional<MemoryRegion> refused;
  // Reads `bytes` of a region made by `make`, for the final check.
  std::function<std::string(const MemoryRegion& region, size_t bytes)> read;
  // Fills a region made by `make` with `bytes` of `text`'s bytes repeated.
  std::function<void(const MemoryRegion& region, const std::string& text)> fill;
};

// Returns "" or the first check that failed, with what happened.
std::string CheckBadInputIsRefused(Communicator& comm, const BadInputMemory& memory);

}  // namespace eplb::test
