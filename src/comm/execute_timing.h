// Timing a communicator's Execute: the measurement behind `eplb bench` and
// the GPU suite's bandwidth check.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <vector>

#include "eplb/communicator.h"

namespace eplb {

struct ExecuteTimes {
  std::vector<double> seconds;  // one per timed Execute, sorted
  double median() const { return seconds.empty() ? 0 : seconds[seconds.size() / 2]; }
  double min() const { return seconds.empty() ? 0 : seconds.front(); }
};

// Runs Execute(transfers) `warmup` times untimed, then `iterations` times
// timed, each with its own deadline. Collective, like Execute. Every rank
// runs the same number, so back-to-back Executes proceed in lockstep and the
// median is the steady-state time of one exchange.
ExecuteTimes TimeExecutes(Communicator& communicator, std::span<const Transfer> transfers, int warmup,
                          int iterations, std::chrono::milliseconds deadline_each);

// A whole layer moving: rank d pulls `experts` pieces of `expert_bytes`
// from rank (d + 1) % size, region 0 (weights) -> region 1 (staging), same
// offsets; with `one_way`, only rank 0 pulls. The bench's and the GPU
// suite's bandwidth pattern.
std::vector<Transfer> BulkExchange(int size, int experts, uint64_t expert_bytes, bool one_way);

// Bytes the transfers move into `rank`.
uint64_t BytesInto(std::span<const Transfer> transfers, int rank);

}  // namespace eplb
