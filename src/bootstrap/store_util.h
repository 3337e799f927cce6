// Pieces the store implementations share.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "eplb/deadline.h"
#include "eplb/error.h"

namespace eplb::bootstrap {

// Calls check() until it returns true or the deadline passes; checks at least
// once, so an expired deadline still finds a key that is there. Polls quickly
// at first (rendezvous keys usually appear within milliseconds), then every
// 10 ms.
template <typename Check>
bool PollUntil(Deadline deadline, Check check) {
  auto pause = std::chrono::microseconds(250);
  for (;;) {
    if (check()) return true;
    if (Expired(deadline)) return false;
    auto left = deadline - Clock::now();
    std::this_thread::sleep_for(std::min<Clock::duration>(pause, left));
    pause = std::min(pause * 2, std::chrono::microseconds(10000));
  }
}

inline std::string Seconds(Clock::duration d) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f s", std::chrono::duration<double>(d).count());
  return buf;
}

}  // namespace eplb::bootstrap
