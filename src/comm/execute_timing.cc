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

uint64_t BytesInto(std::span<const Transfer> transfers, int rank) {
  uint64_t bytes = 0;
  for (const Transfer& t : transfers) bytes += t.dst_rank == rank ? t.bytes : 0;
  return bytes;
}

}  // namespace eplb
