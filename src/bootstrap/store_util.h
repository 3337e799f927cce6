// Pieces the store implementations share (polling lives in util/backoff.h).
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

#include "util/backoff.h"
#include "eplb/deadline.h"
#include "eplb/error.h"

namespace eplb::bootstrap {

inline std::string Seconds(Clock::duration d) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f s", std::chrono::duration<double>(d).count());
  return buf;
}

}  // namespace eplb::bootstrap
