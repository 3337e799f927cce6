#include "launch.h"

#include <cstdlib>

#include "bindings.h"
#include <pybind11/stl.h>

namespace eplb::python {

LaunchEnv ReadEnv(const EnvOverrides& overrides) {
  return ParseLaunchEnv([&](const char* name) -> std::optional<std::string> {
    if (auto it = overrides.find(name); it != overrides.end()) return it->second;
    if (const char* v = std::getenv(name)) return std::string(v);
    return std::nullopt;
  });
}

void RegisterLaunch(py::module_& m) {
  m.def("launch_env", [](const EnvOverrides& overrides) {
    const LaunchEnv env = ReadEnv(overrides);
    py::dict d;
    d["rank"] = env.rank;
    d["world_size"] = env.world_size;
    d["local_rank"] = env.local_rank;
    d["local_world_size"] = env.local_world_size;
    d["from_launcher"] = env.from_launcher;
    d["master_addr"] = env.master_addr;
    d["master_port"] = env.master_port;
    d["store_spec"] = env.store_spec;
    d["run_id"] = env.run_id;
    return d;
  }, py::arg("overrides") = EnvOverrides{},
  "The launch environment (RANK, WORLD_SIZE, ..., EPLB_STORE, EPLB_RUN_ID) parsed as the balancer does");
}

}  // namespace eplb::python
