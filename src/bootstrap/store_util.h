// Pieces the store implementations share.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

#include "comm/backoff.h"
#include "eplb/deadline.h"
#include "eplb/error.h"

namespace eplb::bootstrap {

// Calls check() until it returns true or the deadline passes; checks at least
// once, so an expired deadline still finds a key that is there. Polls quickly
// at first (rendezvous keys usually appear within milliseconds), then every
// millisecond (comm::Backoff).
template <typename Check>
bool PollUntil(Deadline deadline, Check check) {
  comm::Backoff backoff;
  for (;;) {
    if (check()) return true;
    if (Expired(deadline)) return false;
    backoff.Sleep();
  }
}

inline std::string Seconds(Clock::duration d) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f s", std::chrono::duration<double>(d).count());
  return buf;
}

}  // namespace eplb::bootstrap
