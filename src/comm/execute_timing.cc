#include "comm/execute_timing.h"

#include <algorithm>

namespace eplb {

ExecuteTimes TimeExecutes(Communicator& communicator, std::span<const Transfer> transfers, int warmup,
                          int iterations, std::chrono::milliseconds deadline_each) {
  ExecuteTimes times;
  for (int i = 0; i < warmup + iterations; ++i) {
    const auto start = Clock::now();
    communicator.Execute(transfers, start + deadline_each);
    if (i >= warmup) times.seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  std::sort(times.seconds.begin(), times.seconds.end());
  return times;
}

std::vector<Transfer> BulkExchange(int size, int experts, uint64_t expert_bytes, bool one_way) {
  std::vector<Transfer> transfers;
  for (int dst = 0; dst < (one_way ? 1 : size); ++dst) {
    const int src = (dst + 1) % size;
    for (int e = 0; e < experts; ++e) {
      transfers.push_back({src, 0, e * expert_bytes, dst, 1, e * expert_bytes, expert_bytes});
    }
  }
  return transfers;
}

uint64_t BytesInto(std::span<const Transfer> transfers, int rank) {
  uint64_t bytes = 0;
  for (const Transfer& t : transfers) bytes += t.dst_rank == rank ? t.bytes : 0;
  return bytes;
}

}  // namespace eplb
