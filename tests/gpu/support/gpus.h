// Skipping GPU tests with the reason when the GPUs they need are missing.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "cuda/runtime.h"

namespace eplb::test {

// Empty when `n` GPUs are visible, else why not ("needs 2 GPUs, found 1",
// "no GPU: no usable CUDA driver (...)").
inline std::string WhyNotGpus(int n) {
  const auto available = cuda::Probe();
  if (available.devices >= n) return "";
  if (available.devices == 0) return "no GPU: " + available.reason;
  return "needs " + std::to_string(n) + " GPUs, found " + std::to_string(available.devices);
}

}  // namespace eplb::test

// In a test body: skips the test unless `n` GPUs are visible.
#define EPLB_REQUIRE_GPUS(n)                                              \
  do {                                                                   \
    const std::string eplb_why_not_gpus = ::eplb::test::WhyNotGpus(n);   \
    if (!eplb_why_not_gpus.empty()) GTEST_SKIP() << eplb_why_not_gpus;   \
  } while (0)
