// The baseline of the Python overhead benchmark (bench/python_policy_bench.py):
// the same ComputePlacement the Python entry points run, timed in C++ on
// input already in eplb's types, as an engine linking eplb would call it.
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "arrays.h"
#include "bindings.h"
#include "eplb/error.h"
#include "eplb/placement.h"
#include "eplb/policy.h"

namespace eplb::python {
namespace {

// Best of `repeat` runs, in seconds: {"compute_placement": ComputePlacement
// (validation, policy, slot preservation against `previous`),
// "policy": Policy::Rebalance alone}.
py::dict TimeComputePlacement(const py::buffer& weight, int num_replicas, int num_groups, int num_nodes,
                              int num_ranks, const std::string& policy_name, const py::object& previous,
                              int repeat) {
  if (repeat < 1 || repeat > 100000) throw InvalidArgument("repeat must be in [1, 100000]");
  const LoadMatrix load = LoadFromBuffer(weight, "weight", false);
  std::unique_ptr<Policy> policy = MakePolicy(policy_name);
  std::optional<Placement> before;
  if (!previous.is_none())
    before = Placement::FromPhy2Log(load.num_layers, load.num_experts, num_ranks,
                                    Phy2LogFromBuffer(previous.cast<py::buffer>(), "previous placement",
                                                      load.num_layers, num_replicas));
  PolicyInput in{&load, num_replicas, num_groups, num_nodes, num_ranks, before ? &*before : nullptr, {}};
  double best_compute = 1e300, best_policy = 1e300;
  {
    py::gil_scoped_release release;
    for (int i = 0; i < repeat; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      Placement p = ComputePlacement(*policy, in);
      auto t1 = std::chrono::steady_clock::now();
      Placement q = policy->Rebalance(in);
      auto t2 = std::chrono::steady_clock::now();
      best_compute = std::min(best_compute, std::chrono::duration<double>(t1 - t0).count());
      best_policy = std::min(best_policy, std::chrono::duration<double>(t2 - t1).count());
    }
  }
  py::dict d;
  d["compute_placement"] = best_compute;
  d["policy"] = best_policy;
  return d;
}

}  // namespace

void RegisterBench(py::module_& m) {
  m.def("_time_compute_placement", &TimeComputePlacement, py::arg("weight"), py::arg("num_replicas"),
        py::arg("num_groups"), py::arg("num_nodes"), py::arg("num_ranks"), py::arg("policy"),
        py::arg("previous"), py::arg("repeat"),
        "Best-of-repeat C++ times (seconds) of ComputePlacement and of the policy alone, one thread");
}

}  // namespace eplb::python
