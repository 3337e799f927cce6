// Whether the NIXL suites may run here, for every test that needs NIXL: they
// skip, with the reason, where NIXL is not usable, unless EPLB_REQUIRE_NIXL
// is set (scripts/test.sh sets it where setup installed NIXL), under which
// such a test fails instead, so CI never skips them silently.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>

#include "eplb/detect.h"

#define EPLB_SKIP_WITHOUT_NIXL()                                                    \
  do {                                                                              \
    ::eplb::NixlDetection eplb_nixl =                                               \
        ::eplb::DetectNixl();                                                       \
    if (!eplb_nixl.available) {                                                     \
      if (std::getenv("EPLB_REQUIRE_NIXL") != nullptr)                              \
        FAIL() << "EPLB_REQUIRE_NIXL is set but NIXL is not usable: " << eplb_nixl.reason; \
      GTEST_SKIP() << "NIXL not usable here: " << eplb_nixl.reason;                 \
    }                                                                               \
  } while (0)
