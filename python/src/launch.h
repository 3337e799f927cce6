// The run's launch environment (torchrun-style RANK, WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT, EPLB_STORE, EPLB_RUN_ID; bootstrap.h) as Python sees it:
// variables from the process's environment, with overrides given in Python
// taking their place.
#pragma once

#include <map>
#include <string>

#include "eplb/bootstrap.h"

namespace eplb::python {

using EnvOverrides = std::map<std::string, std::string>;

// ParseLaunchEnv over the overrides, then the environment. Throws
// InvalidArgument naming a bad variable.
LaunchEnv ReadEnv(const EnvOverrides& overrides);

}  // namespace eplb::python
