// Known byte patterns for migration tests: every (rank, region, offset) has
// its own byte, so a test can tell exactly which byte landed where.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "eplb/communicator.h"

namespace eplb::test {

inline uint8_t PatternByte(int rank, int region, uint64_t offset) {
  return static_cast<uint8_t>(offset * 7 + offset / 251 + rank * 13 + region * 29);
}

inline std::vector<uint8_t> PatternBytes(int rank, int region, uint64_t bytes) {
  std::vector<uint8_t> v(bytes);
  for (uint64_t i = 0; i < bytes; ++i) v[i] = PatternByte(rank, region, i);
  return v;
}

// Compares `actual` (rank `rank`, region `region`, initially
// PatternBytes(rank, region, ...)) with what it must hold after `transfers`
// copied from the other ranks' initial patterns. Empty when equal, else the
// first differing byte.
inline std::string CheckRegion(int rank, int region, const std::vector<uint8_t>& actual,
                               const std::vector<Transfer>& transfers) {
  std::vector<uint8_t> expected = PatternBytes(rank, region, actual.size());
  for (const auto& t : transfers) {
    if (t.dst_rank != rank || t.dst_region != region) continue;
    for (uint64_t i = 0; i < t.bytes; ++i)
      expected[t.dst_offset + i] = PatternByte(t.src_rank, t.src_region, t.src_offset + i);
  }
  for (uint64_t i = 0; i < expected.size(); ++i)
    if (actual[i] != expected[i])
      return "rank " + std::to_string(rank) + " region " + std::to_string(region) + " byte " + std::to_string(i) +
             ": got " + std::to_string(actual[i]) + ", expected " + std::to_string(expected[i]);
  return "";
}

// A two-rank migration over two regions per rank (8 MiB and 1 MiB): both
// directions, an odd size, the second region, a cross-region transfer, and a
// zero-byte transfer that must be skipped. No byte a rank reads overlaps a
// byte written into it, and no two destinations overlap: transfers of one
// Execute run concurrently in no defined order (communicator.h). (An earlier
// version read rank 1's region 1 [0, 512 KiB) while transfer #2 wrote
// [200, 3200) of it, and wrote rank 0's bytes 7 MiB..+5 twice; NCCL runs the
// grouped send and receive concurrently, so rank 0 sometimes got the new
// bytes: "byte 7340232: got 217, expected 162".)
constexpr uint64_t kTwoRankRegionBytes[2] = {8u << 20, 1u << 20};
inline std::vector<Transfer> TwoRankMigration() {
  constexpr uint64_t MiB = 1u << 20;
  return {
      {0, 0, 0, 1, 0, 4 * MiB, 1 * MiB},
      {1, 0, 1 * MiB, 0, 0, 5 * MiB, 2 * MiB + 5},
      {0, 1, 100, 1, 1, 200, 3000},
      {1, 1, 4096, 0, 0, 7 * MiB + 4096, 512 * 1024},
      {0, 0, 6 * MiB, 1, 0, 0, 0},
  };
}
// A follow-up on the same communicator: rank 1 -> rank 0 only.
inline std::vector<Transfer> TwoRankFollowUp() { return {{1, 0, 0, 0, 1, 0, 1u << 20}}; }

}  // namespace eplb::test
