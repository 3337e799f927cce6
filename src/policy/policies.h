// Factories of the built-in policies (one file each). registry.cc lists them.
#pragma once

#include <memory>

#include "eplb/policy.h"

namespace eplb {

std::unique_ptr<Policy> MakeDeepSeekPolicy();
std::unique_ptr<Policy> MakeBalancedPolicy();  // balanced.cc
std::unique_ptr<Policy> MakeLocalityPolicy();  // locality.cc
// movement.cc: within `tolerance` (relative) of the best balancedness found.
std::unique_ptr<Policy> MakeMovementPolicy(double tolerance = 0.005);

}  // namespace eplb
