// Polling with a deadline, for waits that have no blocking call with a
// timeout (cudaEventQuery, flags in shared memory).
#pragma once

#include <chrono>
#include <thread>

#include "eplb/deadline.h"

namespace eplb {

// Calls `ready()` until it returns true (-> true) or `deadline` passes
// (-> false; `ready` is always tried at least once). Yields for the first
// 2 ms, so a short wait (a copy of a few MiB) ends within microseconds of the
// event, then sleeps in pauses growing to 50 us: a long wait costs little CPU
// and still overshoots by less than 5% of a millisecond-scale copy.
// The pause between two polls (see PollUntil), for loops that poll several
// things at once.
class Backoff {
 public:
  void Pause() {
    if (Clock::now() - start_ < std::chrono::milliseconds(2)) {
      std::this_thread::yield();
      return;
    }
    std::this_thread::sleep_for(pause_);
    if (pause_ < std::chrono::microseconds(50)) pause_ *= 2;
  }

 private:
  Clock::time_point start_ = Clock::now();
  std::chrono::microseconds pause_{2};
};

template <typename Ready>
bool PollUntil(Ready&& ready, Deadline deadline) {
  Backoff backoff;
  for (;;) {
    if (ready()) return true;
    if (Clock::now() >= deadline) return false;
    backoff.Pause();
  }
}

}  // namespace eplb
