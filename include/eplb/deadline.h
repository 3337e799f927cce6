// Every blocking wait in eplb takes a Deadline: an absolute point on the
// monotonic clock. Absolute rather than relative so a sequence of waits shares
// one budget and cannot silently extend it.
#pragma once

#include <chrono>

namespace eplb {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

inline Deadline DeadlineAfter(std::chrono::milliseconds d) { return Clock::now() + d; }

// Time left before the deadline, never negative.
inline std::chrono::milliseconds TimeLeft(Deadline d) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(d - Clock::now());
  return left.count() > 0 ? left : std::chrono::milliseconds(0);
}

inline bool Expired(Deadline d) { return Clock::now() >= d; }

}  // namespace eplb
