#include "support/random_transfers.h"

#include <algorithm>
#include <chrono>
#include <random>

#include "support/transfer_pattern.h"

namespace eplb::test {

std::vector<Transfer> RandomTransfers(int world, uint64_t seed, int count, std::vector<int> ranks) {
  if (ranks.empty()) {
    for (int r = 0; r < world; ++r) ranks.push_back(r);
  }
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> cursor(world, 0);
  std::vector<Transfer> out;
  for (int k = 0; k < count; ++k) {
    Transfer t;
    const size_t n = ranks.size();
    size_t si = rng() % n;
    t.src_rank = ranks[si];
    t.dst_rank = ranks[(si + 1 + rng() % (n - 1)) % n];
    t.src_region = 0;
    t.dst_region = 1;
    uint64_t kind = rng() % 10;
    uint64_t bytes = kind == 0 ? 0 : kind < 5 ? 1 + rng() % 4096 : 1 + rng() % (256 << 10);
    uint64_t start = std::min(kDstBytes, cursor[t.dst_rank] + rng() % 16);
    bytes = std::min(bytes, kDstBytes - start);
    t.bytes = bytes;
    t.src_offset = rng() % (kSrcBytes - bytes + 1);
    t.dst_offset = start;
    cursor[t.dst_rank] = start + bytes;
    out.push_back(t);
  }
  return out;
}

bool Buffers::Register(Communicator& comm) {
  const Deadline deadline = DeadlineAfter(std::chrono::seconds(10));
  return comm.RegisterRegion({src.data(), src.size(), MemoryKind::kHost, -1}, deadline) == 0 &&
         comm.RegisterRegion({dst.data(), dst.size(), MemoryKind::kHost, -1}, deadline) == 1;
}

void Buffers::Prepare(int rank) {
  auto s = PatternBytes(rank, 0, src.size()), d = PatternBytes(rank, 1, dst.size());
  std::copy(s.begin(), s.end(), src.begin());
  std::copy(d.begin(), d.end(), dst.begin());
}

std::string Buffers::Verify(const std::vector<Transfer>& list, int rank, uint64_t* received) const {
  for (const auto& t : list) {
    if (t.dst_rank == rank) *received += t.bytes;
  }
  std::string problem = CheckRegion(rank, 1, dst, list);
  return problem.empty() ? CheckRegion(rank, 0, src, list) : problem;
}

}  // namespace eplb::test
