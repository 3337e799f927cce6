// Factories of the built-in policies (one file each). registry.cc lists them.
#pragma once

#include <memory>

#include "eplb/policy.h"

namespace eplb {

std::unique_ptr<Policy> MakeDeepSeekPolicy();

}  // namespace eplb
