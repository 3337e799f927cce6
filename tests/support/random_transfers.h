// Random transfer lists and the host buffers they move between, shared by
// the communicator suites (gloo, nixl) so every backend is held to the same
// traffic: region 0 of each rank holds sources, region 1 destinations, both
// filled with the known pattern of transfer_pattern.h before a round.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "eplb/communicator.h"

namespace eplb::test {

constexpr uint64_t kSrcBytes = 2 << 20;
constexpr uint64_t kDstBytes = 4 << 20;

// A random transfer list, the same on every rank for a seed: sources anywhere
// in region 0 of the sender, destinations packed (with gaps) into region 1 of
// the receiver, sizes from 0 (skipped) to 256 KiB. Destinations never
// overlap, so the outcome does not depend on the order transfers land.
std::vector<Transfer> RandomTransfers(int world, uint64_t seed, int count, std::vector<int> ranks = {});

// Host memory of one rank: region 0 (sources) and region 1 (destinations).
struct Buffers {
  std::vector<uint8_t> src = std::vector<uint8_t>(kSrcBytes);
  std::vector<uint8_t> dst = std::vector<uint8_t>(kDstBytes);
  // Registers region 0 and 1; false when the ids are not 0 and 1.
  bool Register(Communicator& comm);
  // Fills both with their pattern, in place (registered addresses stay).
  void Prepare(int rank);
  // Every byte is what the transfers put there (or its own pattern where
  // none did); sources are untouched. Returns "" or the first wrong byte.
  std::string Verify(const std::vector<Transfer>& list, int rank, uint64_t* received) const;
};

}  // namespace eplb::test
