// Sleeps between polls of a deadline-bound wait: short at first (a small
// transfer finishes in microseconds), growing to 1 ms so a long wait costs
// no CPU.
#pragma once

#include <algorithm>
#include <chrono>
#include <thread>

namespace eplb::comm {

class Backoff {
 public:
  void Sleep() {
    std::this_thread::sleep_for(delay_);
    delay_ = std::min(delay_ * 2, std::chrono::microseconds(1000));
  }

 private:
  std::chrono::microseconds delay_{10};
};

}  // namespace eplb::comm
