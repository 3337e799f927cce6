// Pauses between polls of a deadline-bound wait: short at first (a small
// transfer finishes in microseconds), growing to `max_sleep` so a long wait
// costs no CPU. Waits whose events land within milliseconds and whose
// latency counts (a layer over NVLink takes about 1 ms) first yield for a
// `spin` period and keep the sleeps short.
#pragma once

#include <algorithm>
#include <chrono>
#include <thread>

#include "eplb/deadline.h"

namespace eplb::util {

class Backoff {
 public:
  Backoff() = default;
  Backoff(std::chrono::microseconds spin, std::chrono::microseconds max_sleep)
      : spin_(spin), max_(max_sleep) {}

  void Sleep() {
    if (spin_.count() > 0 && Clock::now() - start_ < spin_) {
      std::this_thread::yield();
      return;
    }
    std::this_thread::sleep_for(delay_);
    delay_ = std::min(delay_ * 2, max_);
  }

 private:
  Clock::time_point start_ = Clock::now();
  std::chrono::microseconds spin_{0};
  std::chrono::microseconds max_{1000};
  std::chrono::microseconds delay_{10};
};

// The fast-reacting pauses for copy-engine waits: yield for 2 ms, then sleep
// at most 50 us (an overshoot under 5% of a millisecond-scale copy).
inline Backoff FastBackoff() {
  return Backoff(std::chrono::microseconds(2000), std::chrono::microseconds(50));
}

// Calls `ready()` until it returns true (-> true) or `deadline` passes
// (-> false); `ready` is always tried at least once.
template <typename Ready>
bool PollUntil(Ready&& ready, Deadline deadline, Backoff backoff = FastBackoff()) {
  for (;;) {
    if (ready()) return true;
    if (Clock::now() >= deadline) return false;
    backoff.Sleep();
  }
}

}  // namespace eplb::util
