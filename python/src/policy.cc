// The placement policies for Python: eplb._eplb.rebalance and policies().
//
// rebalance runs ComputePlacement (validation, the policy, slot preservation
// against `previous`) with the GIL released, on threads lent from a pool that
// lives as long as the process (one per thread count asked for), and returns
// the maps as int64 numpy arrays in the layout DeepSeek's EPLB returns them.
#include <pybind11/stl.h>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "arrays.h"
#include "bindings.h"
#include "eplb/error.h"
#include "eplb/placement.h"
#include "eplb/policy.h"
#include "runtime/layer_threads.h"

namespace eplb::python {
namespace {

// Threads for the policy's layers. A pool serves one call at a time; a call
// that finds its pool busy (another Python thread in rebalance) gets threads
// of its own for that call. Pools are never destroyed: their threads sleep
// until the process exits.
struct Pool {
  explicit Pool(int threads) : threads(threads) {}
  std::mutex busy;
  runtime::LayerThreads threads;
};

Pool& PoolFor(int threads) {
  static std::mutex mu;
  static auto* pools = new std::map<int, Pool*>();
  std::lock_guard lock(mu);
  Pool*& pool = (*pools)[threads];
  if (pool == nullptr) pool = new Pool(threads);
  return *pool;
}

Placement RunPolicy(const Policy& policy, PolicyInput in, int threads) {
  if (threads == 1) return ComputePlacement(policy, in);
  Pool& pool = PoolFor(threads);
  std::unique_lock lock(pool.busy, std::try_to_lock);
  if (lock.owns_lock()) {
    in.run_layers = pool.threads.runner();
    return ComputePlacement(policy, in);
  }
  runtime::LayerThreads own(threads);
  in.run_layers = own.runner();
  return ComputePlacement(policy, in);
}

// What rebalance returns besides phy2log.
enum class Maps {
  kNone,      // phy2log alone (vLLM's policy interface)
  kDeepSeek,  // log2phy [L][E][R - E + 1] and logcnt, as DeepSeek's EPLB (and vLLM's older interface)
  kMax,       // log2phy [L][E][max replicas], as SGLang's deepseek algorithm
};

Maps ParseMaps(const std::string& s) {
  if (s == "none") return Maps::kNone;
  if (s == "deepseek") return Maps::kDeepSeek;
  if (s == "max") return Maps::kMax;
  throw InvalidArgument("maps must be 'none', 'deepseek' or 'max', not '" + s + "'");
}

py::tuple Rebalance(const py::buffer& weight, int num_replicas, int num_groups, int num_nodes,
                    int num_ranks, const std::string& policy_name, const py::object& previous,
                    int threads, const std::string& maps_name, bool sum_window) {
  const Maps maps = ParseMaps(maps_name);
  if (threads < 0 || threads > runtime::LayerThreads::kMaxThreads)
    throw InvalidArgument("threads must be in [0, " + std::to_string(runtime::LayerThreads::kMaxThreads) +
                          "] (0: one per core), not " + std::to_string(threads));
  const LoadMatrix load = LoadFromBuffer(weight, sum_window ? "tokens_per_expert" : "weight", sum_window);
  std::unique_ptr<Policy> policy = MakePolicy(policy_name);
  PolicyInput in{&load, num_replicas, num_groups, num_nodes, num_ranks, nullptr, {}};
  std::optional<Placement> before;
  std::vector<int32_t> previous_phy2log;
  // A bad shape (num_replicas, num_ranks, ...) is named as such, not as a
  // previous placement that does not fit it: the shape is checked first
  // when the previous placement is refused.
  auto refuse_previous = [&](const InvalidArgument& e, const char* prefix) {
    PolicyInput shape = in;
    shape.previous = nullptr;
    ValidatePolicyInput(shape);
    throw InvalidArgument(prefix + std::string(e.what()));
  };
  if (!previous.is_none()) {
    try {
      previous_phy2log = Phy2LogFromBuffer(previous.cast<py::buffer>(), "previous placement",
                                           load.num_layers, num_replicas);
    } catch (const InvalidArgument& e) {
      refuse_previous(e, "");
    }
  }
  Placement placement;
  {
    py::gil_scoped_release release;
    if (!previous.is_none()) {
      // phy2log alone: ComputePlacement validates it (Placement::Validate),
      // and neither the policies nor slot preservation read the derived
      // maps (logcnt, log2phy) of the previous placement, so they are not
      // built -- a third of vLLM's call at DeepSeek-V3's shape. Every policy
      // with a previous placement is compared with `eplb plan`'s
      // (tests/python/test_policy.py).
      before.emplace();
      before->num_layers = load.num_layers;
      before->num_experts = load.num_experts;
      before->num_slots = num_replicas;
      before->num_ranks = num_ranks;
      before->phy2log = std::move(previous_phy2log);
      in.previous = &*before;
    }
    try {
      placement = RunPolicy(*policy, in, threads);
    } catch (const InvalidArgument& e) {
      // Placement::Validate's "placement: ..." can only be about the previous one.
      if (in.previous != nullptr && std::string_view(e.what()).starts_with("placement: "))
        refuse_previous(e, "previous ");
      throw;
    }
  }
  const py::ssize_t L = placement.num_layers, E = placement.num_experts, R = placement.num_slots;
  py::array_t<int64_t> phy2log = Int64Array(placement.phy2log.data(), {L, R});
  if (maps == Maps::kNone) return py::make_tuple(phy2log, py::none(), py::none());
  py::array_t<int64_t> logcnt = Int64Array(placement.logcnt.data(), {L, E});
  const py::ssize_t have = placement.max_replicas;
  const py::ssize_t width = maps == Maps::kDeepSeek ? R - E + 1 : std::max<py::ssize_t>(have, 1);
  if (have > width)  // every expert keeps a slot, so at most R - E + 1 replicas
    throw Error("policy", "log2phy", std::to_string(have) + " replicas of one expert exceed " +
                                         std::to_string(width) + " columns");
  py::array_t<int64_t> log2phy({L, E, width});
  int64_t* out = log2phy.mutable_data();
  {
    py::gil_scoped_release release;
    const int32_t* in_map = placement.log2phy.data();
    for (py::ssize_t le = 0; le < L * E; ++le) {
      int64_t* row = out + le * width;
      const int32_t* src = in_map + le * have;
      for (py::ssize_t k = 0; k < have; ++k) row[k] = src[k];
      std::fill(row + have, row + width, int64_t{-1});
    }
  }
  return py::make_tuple(phy2log, log2phy, logcnt);
}

}  // namespace

void RegisterPolicy(py::module_& m) {
  m.def("rebalance", &Rebalance, py::arg("weight"), py::arg("num_replicas"), py::arg("num_groups"),
        py::arg("num_nodes"), py::arg("num_ranks"), py::arg("policy"), py::arg("previous"),
        py::arg("threads"), py::arg("maps"), py::arg("sum_window"),
        "ComputePlacement over a host buffer; (phy2log, log2phy | None, logcnt | None) as int64 arrays");
  m.def("policies", [] { return PolicyNames(); }, "Every policy name, 'deepseek' first");
  m.def("policy_description", [](const std::string& name) {
    return std::string(MakePolicy(name)->description());
  }, py::arg("name"), "One line about the policy");
}

}  // namespace eplb::python
