// eplb plan: a placement from a load file.
//
//   eplb plan --load LOAD.json [--replicas R --groups G --nodes N --ranks P]
//             [--previous PLACEMENT.json] [--output OUT.json] [--policy NAME] [--json]
//   eplb plan --list-policies
//
// Golden files carry their shape under `input`; those values serve as
// defaults. Everything is validated before anything is written: bad input
// exits 2 with a message naming the problem and leaves no output file.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "eplb/command.h"
#include "eplb/error.h"
#include "eplb/placement.h"
#include "eplb/policy.h"
#include "runtime/layer_threads.h"
#include "io/files.h"

namespace eplb::cli {
namespace {

using nlohmann::json;

struct PlanOptions {
  std::string load_path;
  std::optional<int> replicas, groups, nodes, ranks;
  std::string previous_path;
  std::string output_path;
  std::string policy = "deepseek";
  bool list_policies = false;
  bool json = false;
  int repeat = 50;
  int threads = 0;  // 0: one per core
};

json BalancednessToJson(const Balancedness& b) {
  return json{{"per_layer", b.per_layer}, {"mean", b.mean}};
}

double WorstLayer(const Balancedness& b) {
  return b.per_layer.empty() ? 1.0 : *std::min_element(b.per_layer.begin(), b.per_layer.end());
}

// Policy runs timed at most: a second or so even at the largest shapes.
constexpr int kMaxRepeat = 10000;

// Best of `repeat` runs of the policy alone (no validation, I/O or preservation).
double TimePolicy(const Policy& policy, const PolicyInput& in, int repeat) {
  double best = 1e300;
  for (int i = 0; i < repeat; ++i) {
    auto start = std::chrono::steady_clock::now();
    Placement p = policy.Rebalance(in);
    auto stop = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double>(stop - start).count());
  }
  return best;
}

void PrintSummary(const PlanOptions& o, const PolicyInput& in, const LoadMatrix& load,
                  const Placement& placement, const Balancedness& before,
                  const Balancedness& after, double seconds) {
  const bool hierarchical = in.num_groups % in.num_nodes == 0;
  fmt::print("eplb plan: policy {} ({}), {} layers x {} experts -> {} slots on {} ranks\n",
             o.policy,
             hierarchical ? fmt::format("hierarchical: {} groups on {} nodes", in.num_groups,
                                        in.num_nodes)
                          : fmt::format("global: {} groups do not split over {} nodes",
                                        in.num_groups, in.num_nodes),
             load.num_layers, load.num_experts, in.num_replicas, in.num_ranks);
  fmt::print("balancedness (mean rank load / max rank load, mean over layers):\n");
  fmt::print("  {:.4f} -> {:.4f}   ({} before; worst layer {:.4f} -> {:.4f})\n", before.mean,
             after.mean, in.previous ? "previous placement" : "identity placement",
             WorstLayer(before), WorstLayer(after));
  fmt::print("policy time: {:.3f} ms (best of {} runs)\n", seconds * 1e3, o.repeat);

  // The hottest (layer, expert) pairs by load relative to their layer's mean.
  struct Hot {
    int layer, expert;
    double ratio;
  };
  std::vector<Hot> hot;
  for (int l = 0; l < load.num_layers; ++l) {
    auto row = load.layer(l);
    double mean = std::accumulate(row.begin(), row.end(), 0.0) / load.num_experts;
    if (mean <= 0) continue;
    for (int e = 0; e < load.num_experts; ++e) hot.push_back({l, e, row[e] / mean});
  }
  const size_t shown = std::min<size_t>(5, hot.size());
  std::partial_sort(hot.begin(), hot.begin() + shown, hot.end(), [](const Hot& a, const Hot& b) {
    return a.ratio > b.ratio || (a.ratio == b.ratio && a.layer < b.layer) ||
           (a.ratio == b.ratio && a.layer == b.layer && a.expert < b.expert);
  });
  if (shown > 0) fmt::print("hottest experts (load / layer mean -> replicas, ranks):\n");
  for (size_t i = 0; i < shown; ++i) {
    const Hot& h = hot[i];
    std::vector<int> ranks;
    for (int s = 0; s < placement.num_slots; ++s)
      if (placement.expert_at(h.layer, s) == h.expert) ranks.push_back(placement.rank_of_slot(s));
    fmt::print("  layer {:>3} expert {:>4}: {:5.1f}x -> {} replica{} on rank{} {}\n", h.layer,
               h.expert, h.ratio, ranks.size(), ranks.size() == 1 ? "" : "s",
               ranks.size() == 1 ? "" : "s", fmt::join(ranks, ","));
  }
  if (!o.output_path.empty()) fmt::print("wrote {}\n", o.output_path);
}

int RunPlan(const PlanOptions& o) {
  if (o.list_policies) {
    if (o.json) {
      json list = json::array();
      for (const auto& name : PolicyNames())
        list.push_back({{"name", name}, {"description", MakePolicy(name)->description()}});
      fmt::print("{}\n", list.dump(2));
    } else {
      for (const auto& name : PolicyNames()) fmt::print("{}\n", name);
    }
    return 0;
  }
  if (o.load_path.empty()) throw InvalidArgument("plan: --load FILE is required");
  if (o.repeat < 1 || o.repeat > kMaxRepeat)
    throw InvalidArgument(fmt::format("plan: --repeat must be 1 to {} (got {})", kMaxRepeat, o.repeat));
  auto policy = MakePolicy(o.policy);

  io::LoadFile file = io::ReadLoadFile(o.load_path);
  auto pick = [&](const std::optional<int>& flag, const std::optional<int>& from_file,
                  std::optional<int> fallback, const char* name) {
    if (flag) return *flag;
    if (from_file) return *from_file;
    if (fallback) return *fallback;
    throw InvalidArgument(fmt::format("plan: --{} is required ({} gives no default)", name,
                                      o.load_path));
  };
  PolicyInput in;
  in.load = &file.load;
  in.num_replicas = pick(o.replicas, file.num_replicas, std::nullopt, "replicas");
  in.num_groups = pick(o.groups, file.num_groups, 1, "groups");
  in.num_nodes = pick(o.nodes, file.num_nodes, 1, "nodes");
  in.num_ranks = pick(o.ranks, file.num_ranks, std::nullopt, "ranks");

  std::optional<Placement> previous;
  if (!o.previous_path.empty()) {
    previous = io::ReadPlacementFile(o.previous_path, in.num_ranks);
    in.previous = &*previous;
  }
  ValidatePolicyInput(in);
  if (o.threads < 0 || o.threads > runtime::LayerThreads::kMaxThreads)
    throw InvalidArgument(fmt::format("plan: --threads must be 0 (one per core) to {} (got {})",
                                      runtime::LayerThreads::kMaxThreads, o.threads));
  runtime::LayerThreads threads(o.threads);
  in.run_layers = threads.runner();

  Placement placement = ComputePlacement(*policy, in);
  const double seconds = TimePolicy(*policy, in, o.repeat);
  const Placement before_placement =
      previous ? *previous
               : Placement::Identity(file.load.num_layers, file.load.num_experts,
                                     in.num_replicas, in.num_ranks);
  const Balancedness before = ComputeBalancedness(file.load, before_placement);
  const Balancedness after = ComputeBalancedness(file.load, placement);

  json out = io::PlacementToJson(placement);
  out["policy"] = o.policy;
  out["num_groups"] = in.num_groups;
  out["num_nodes"] = in.num_nodes;
  out["balancedness"] = BalancednessToJson(after);
  out["balancedness_before"] = BalancednessToJson(before);
  out["policy_seconds"] = seconds;
  out["policy_runs"] = o.repeat;
  out["policy_threads"] = threads.threads();
  if (!o.output_path.empty()) io::WriteFileAtomic(o.output_path, out.dump() + "\n");

  if (o.json) {
    fmt::print("{}\n", out.dump());
  } else {
    PrintSummary(o, in, file.load, placement, before, after, seconds);
  }
  return 0;
}

}  // namespace

EPLB_COMMAND(plan, [](CLI::App& app) -> std::function<int()> {
  auto o = std::make_shared<PlanOptions>();
  CLI::App* cmd = app.add_subcommand("plan", "compute a placement of experts from a load file");
  cmd->add_option("--load", o->load_path,
                  "JSON with a `load` [layers][experts] matrix, at the top level or under "
                  "`input` (whose num_replicas/num_groups/num_nodes/num_gpus become defaults)")
      ->check(NonEmptyPath());
  cmd->add_option("--replicas", o->replicas, "physical slots per layer (R >= experts)");
  cmd->add_option("--groups", o->groups, "expert groups (default: from the file, else 1)");
  cmd->add_option("--nodes", o->nodes, "nodes (default: from the file, else 1)");
  cmd->add_option("--ranks", o->ranks, "EP ranks (GPUs); R % ranks == 0");
  cmd->add_option("--previous", o->previous_path,
                  "placement in force (JSON with phy2log); experts that stay on a rank keep "
                  "their slot")
      ->check(NonEmptyPath());
  cmd->add_option("--output", o->output_path,
                  "write phy2log, logcnt, log2phy, balancedness, policy_seconds here "
                  "(atomically)")
      ->check(NonEmptyPath());
  cmd->add_option("--policy", o->policy, "placement policy (see --list-policies)")
      ->capture_default_str();
  cmd->add_flag("--list-policies", o->list_policies, "print the policy names, one per line");
  cmd->add_option("--threads", o->threads,
                  "threads the policy's layers are split over (0: one per core); the placement is "
                  "the same with any number")
      ->capture_default_str();
  cmd->add_option("--repeat", o->repeat, "policy runs to time (best is reported)")
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "machine output: the OUT.json document on stdout");
  return [o] { return RunPlan(*o); };
});

}  // namespace eplb::cli
