// eplb simulate: replays a sequence of load matrices through policy and plan,
// without moving any weights, to show what rebalancing buys and costs.
//
//   eplb simulate --load A.json --load B.json ... [shape flags]
//   eplb simulate --synthetic --steps 40 --layers 8 --experts 64 [shape flags]
//
// Each load is one rebalancing window. For every policy the online loop is
// replayed as an engine runs it: the placement computed from window k serves
// window k+1 (so the figures include the cost of loads drifting between
// rebalances), the first window is served by the identity placement. The
// "static" series keeps the first rebalanced placement for ever: what an
// engine that balanced once at start-up would see. Movement per rebalance
// comes from the transfer plan (experts over the wire and their bytes).
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "eplb/command.h"
#include "eplb/error.h"
#include "core/locality.h"
#include "eplb/placement.h"
#include "eplb/policy.h"
#include "policy/sequence.h"
#include "demo/synthetic_load.h"
#include "eplb/transfer_plan.h"
#include "io/files.h"
#include "io/svg_plot.h"

namespace eplb::cli {
namespace {

using nlohmann::json;

struct SimulateOptions {
  std::vector<std::string> load_paths;
  bool synthetic = false;
  int steps = 30;
  int layers = 16;
  int experts = 64;
  double skew = 1.2;
  double drift = 5.0;  // windows for the hot set to move by one expert
  uint64_t seed = 1;
  std::optional<int> replicas, groups, nodes, ranks;
  std::string policies = "deepseek";
  double expert_mib = 44.0;  // DeepSeek-V3: 3 x 7168 x 2048 fp8 weights ~ 42 MiB + scales
  std::string svg_path;
  std::string output_path;
  bool json = false;
};

// Beyond these the run is a typo: 1 TiB experts, sequences of more than
// 4 GiB of loads in memory.
constexpr double kMaxExpertMib = 1 << 20;
constexpr double kMaxSequenceBytes = 4.0 * (1ull << 30);

struct PolicySeries {
  std::string name;
  std::vector<double> served;         // [step] balancedness of the placement in force
  std::vector<double> fresh;          // [step] balancedness of the new placement on its own load
  std::vector<double> home_share;     // [step] locality of the placement in force
  std::vector<int64_t> experts_moved; // [step] experts over the wire at the rebalance after step
  std::vector<uint64_t> bytes_moved;
  // [step] of bytes_moved, between nodes; and what a plan that ignores
  // nodes (senders chosen as if all ranks shared one) would send between them
  std::vector<uint64_t> bytes_between_nodes;
  std::vector<uint64_t> bytes_between_nodes_blind;
  std::vector<double> static_served;  // [step] first placement kept for ever
};

std::vector<std::string> SplitNames(const std::string& list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string::npos) comma = list.size();
    if (comma > start) out.push_back(list.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

std::vector<LoadMatrix> ReadSequence(SimulateOptions& o) {
  std::vector<LoadMatrix> loads;
  if (!o.load_paths.empty()) {
    for (const auto& path : o.load_paths) {
      io::LoadFile f = io::ReadLoadFile(path);
      if (!loads.empty() && (f.load.num_layers != loads[0].num_layers ||
                             f.load.num_experts != loads[0].num_experts))
        throw InvalidArgument(fmt::format(
            "{}: {} x {} loads, but {} has {} x {}; a sequence needs one shape", path,
            f.load.num_layers, f.load.num_experts, o.load_paths[0], loads[0].num_layers,
            loads[0].num_experts));
      if (!o.replicas) o.replicas = f.num_replicas;
      if (!o.groups) o.groups = f.num_groups;
      if (!o.nodes) o.nodes = f.num_nodes;
      if (!o.ranks) o.ranks = f.num_ranks;
      loads.push_back(std::move(f.load));
    }
    return loads;
  }
  if (o.steps < 2 || o.steps > 100000)
    throw InvalidArgument(fmt::format("--steps must be in [2, 100000], not {}", o.steps));
  // The sequence is held in memory: check its size before building it.
  if (o.layers < 1 || o.layers > kMaxLayers || o.experts < 1 || o.experts > kMaxExperts)
    throw InvalidArgument(fmt::format("--layers must be in [1, {}] and --experts in [1, {}]",
                                      kMaxLayers, kMaxExperts));
  const double bytes = double(o.steps) * o.layers * o.experts * sizeof(double);
  if (bytes > kMaxSequenceBytes)
    throw InvalidArgument(fmt::format(
        "--steps x --layers x --experts = {:.3g} loads ({:.1f} GiB); at most {:.0f} GiB", bytes / 8,
        bytes / double(1ull << 30), kMaxSequenceBytes / double(1ull << 30)));
  if (!std::isfinite(o.skew) || o.skew < 0 || o.skew > 10)
    throw InvalidArgument("--skew must be a finite number in [0, 10]");
  if (!std::isfinite(o.drift) || o.drift <= 0)
    throw InvalidArgument("--drift must be a positive finite number of windows");
  SyntheticLoadOptions so;
  so.num_layers = o.layers;
  so.num_experts = o.experts;
  so.skew = o.skew;
  so.drift_period_steps = o.drift;
  so.seed = o.seed;
  SyntheticLoad synthetic(so);
  for (int k = 0; k < o.steps; ++k) loads.push_back(synthetic.Expected(k));
  return loads;
}

PolicySeries Simulate(const Policy& policy, const std::vector<LoadMatrix>& loads,
                      const SequenceShape& shape, uint64_t bytes_per_expert) {
  PolicySeries s;
  s.name = std::string(policy.name());
  const int L = loads[0].num_layers, E = loads[0].num_experts;
  const Placement identity = Placement::Identity(L, E, shape.num_replicas, shape.num_ranks);
  SequenceRun run = RunSequence(policy, loads, shape, &identity);
  PlanOptions plan_options;
  plan_options.ranks_per_node = shape.num_ranks / shape.num_nodes;
  plan_options.bytes_per_expert = bytes_per_expert;
  PlanOptions blind = plan_options;
  blind.ranks_per_node = 0;
  const bool has_locality = E % shape.num_groups == 0 && shape.num_ranks % shape.num_nodes == 0;
  for (size_t k = 0; k < loads.size(); ++k) {
    const Placement& in_force = k == 0 ? identity : run.placements[k - 1];
    s.served.push_back(ComputeBalancedness(loads[k], in_force).mean);
    s.fresh.push_back(run.steps[k].balancedness);
    s.home_share.push_back(
        has_locality ? ComputeLocality(loads[k], in_force, shape.num_groups, shape.num_nodes).home_share
                     : 1.0);
    s.static_served.push_back(ComputeBalancedness(loads[k], run.placements[0]).mean);
    int64_t experts = 0;
    uint64_t bytes = 0;
    NodeTraffic nodes, nodes_blind;
    for (const LayerPlan& plan : PlanMigration(in_force, run.placements[k], plan_options)) {
      experts += plan.total.experts_received;
      bytes += plan.total.bytes_received;
      nodes += CountNodeTraffic(plan, plan_options.ranks_per_node);
    }
    for (const LayerPlan& plan : PlanMigration(in_force, run.placements[k], blind))
      nodes_blind += CountNodeTraffic(plan, plan_options.ranks_per_node);
    s.experts_moved.push_back(experts);
    s.bytes_moved.push_back(bytes);
    s.bytes_between_nodes.push_back(nodes.bytes_between_nodes);
    s.bytes_between_nodes_blind.push_back(nodes_blind.bytes_between_nodes);
  }
  return s;
}

double Mean(const std::vector<double>& v, size_t from = 0) {
  if (v.size() <= from) return 1.0;
  double sum = 0;
  for (size_t i = from; i < v.size(); ++i) sum += v[i];
  return sum / static_cast<double>(v.size() - from);
}

template <typename T>
T Sum(const std::vector<T>& v, size_t from = 0) {
  T sum = 0;
  for (size_t i = from; i < v.size(); ++i) sum += v[i];
  return sum;
}

int RunSimulate(SimulateOptions& o) {
  if (o.load_paths.empty() && !o.synthetic)
    throw InvalidArgument("give load files (--load, one per window) or --synthetic");
  if (!o.load_paths.empty() && o.synthetic)
    throw InvalidArgument("--load and --synthetic exclude each other");
  if (!(o.expert_mib > 0) || o.expert_mib > kMaxExpertMib)
    throw InvalidArgument(fmt::format("--expert-mib must be in (0, {}]", kMaxExpertMib));
  std::vector<LoadMatrix> loads = ReadSequence(o);
  const int E = loads[0].num_experts;
  SequenceShape shape;
  shape.num_replicas = o.replicas.value_or(E + E / 4);
  shape.num_groups = o.groups.value_or(1);
  shape.num_nodes = o.nodes.value_or(1);
  shape.num_ranks = o.ranks.value_or(8);
  const uint64_t bytes_per_expert = static_cast<uint64_t>(o.expert_mib * 1024 * 1024);

  std::vector<std::unique_ptr<Policy>> policies;
  for (const auto& name : SplitNames(o.policies)) policies.push_back(MakePolicy(name));
  if (policies.empty()) throw InvalidArgument("--policies names no policy");

  // Validate the shape once, with the first load, before any work.
  PolicyInput check;
  check.load = &loads[0];
  check.num_replicas = shape.num_replicas;
  check.num_groups = shape.num_groups;
  check.num_nodes = shape.num_nodes;
  check.num_ranks = shape.num_ranks;
  ValidatePolicyInput(check);

  std::vector<PolicySeries> series;
  for (const auto& p : policies) series.push_back(Simulate(*p, loads, shape, bytes_per_expert));

  // Everything is computed; now write (all outputs or none) and print.
  std::vector<std::pair<std::string, std::string>> outputs;
  if (!o.svg_path.empty()) {
    io::PlotSpec plot;
    plot.title = fmt::format("eplb simulate: {} windows, {} layers x {} experts, {} slots on {} ranks",
                             loads.size(), loads[0].num_layers, E, shape.num_replicas,
                             shape.num_ranks);
    plot.x_label = "rebalancing window";
    plot.y_label = "balancedness (mean rank load / max rank load)";
    std::vector<double> x(loads.size());
    for (size_t k = 0; k < x.size(); ++k) x[k] = static_cast<double>(k);
    for (const auto& s : series)
      plot.series.push_back({s.name + " (rebalanced)", x, s.served, false});
    plot.series.push_back({series[0].name + " (no rebalancing)", x, series[0].static_served, true});
    double lo = 1.0;
    for (const auto& ps : plot.series)
      for (size_t k = 1; k < ps.y.size(); ++k) lo = std::min(lo, ps.y[k]);
    plot.y_min = std::max(0.0, std::floor(lo * 20 - 1) / 20);
    plot.y_max = 1.0;
    outputs.emplace_back(o.svg_path, io::RenderLineChart(plot));
  }

  json doc = {{"windows", loads.size()},
              {"num_layers", loads[0].num_layers},
              {"num_experts", E},
              {"num_replicas", shape.num_replicas},
              {"num_groups", shape.num_groups},
              {"num_nodes", shape.num_nodes},
              {"num_ranks", shape.num_ranks},
              {"bytes_per_expert", bytes_per_expert},
              {"policies", json::array()}};
  for (const auto& s : series) {
    doc["policies"].push_back({{"policy", s.name},
                               {"balancedness_served", s.served},
                               {"balancedness_fresh", s.fresh},
                               {"balancedness_static", s.static_served},
                               {"home_share", s.home_share},
                               {"experts_moved", s.experts_moved},
                               {"bytes_moved", s.bytes_moved},
                               {"bytes_between_nodes", s.bytes_between_nodes},
                               {"bytes_between_nodes_plan_ignoring_nodes", s.bytes_between_nodes_blind},
                               {"mean_served", Mean(s.served, 1)},
                               {"mean_static", Mean(s.static_served, 1)},
                               {"total_bytes_moved", Sum(s.bytes_moved, 1)},
                               {"total_bytes_between_nodes", Sum(s.bytes_between_nodes, 1)},
                               {"total_bytes_between_nodes_plan_ignoring_nodes",
                                Sum(s.bytes_between_nodes_blind, 1)}});
  }
  if (!o.output_path.empty()) outputs.emplace_back(o.output_path, doc.dump() + "\n");
  io::WriteFilesAtomic(outputs);
  if (o.json) {
    fmt::print("{}\n", doc.dump());
    return 0;
  }

  fmt::print("eplb simulate: {} windows of {} layers x {} experts, {} slots on {} ranks, {} groups, "
             "{} nodes; {:.0f} MiB per expert\n",
             loads.size(), loads[0].num_layers, E, shape.num_replicas, shape.num_ranks,
             shape.num_groups, shape.num_nodes, o.expert_mib);
  fmt::print("balancedness of the placement in force (computed from the previous window):\n");
  fmt::print("{:>6}", "window");
  for (const auto& s : series) fmt::print(" {:>12} {:>10}", s.name, "moved GiB");
  fmt::print(" {:>14}\n", "no rebalancing");
  for (size_t k = 0; k < loads.size(); ++k) {
    fmt::print("{:>6}", k);
    for (const auto& s : series)
      fmt::print(" {:>12.4f} {:>10.2f}", s.served[k],
                 k == 0 ? 0.0 : s.bytes_moved[k] / double(1ull << 30));
    fmt::print(" {:>14.4f}\n", series[0].static_served[k]);
  }
  fmt::print("\n{:<12} {:>14} {:>14} {:>12} {:>14} {:>10} {:>14} {:>16}\n", "policy", "served (mean)",
             "static (mean)", "home share", "experts moved", "GiB moved", "between nodes",
             "(plan ign. nodes)");
  for (const auto& s : series)
    fmt::print("{:<12} {:>14.4f} {:>14.4f} {:>12.4f} {:>14} {:>10.2f} {:>14.2f} {:>16.2f}\n", s.name,
               Mean(s.served, 1), Mean(s.static_served, 1), Mean(s.home_share, 1), Sum(s.experts_moved, 1),
               Sum(s.bytes_moved, 1) / double(1ull << 30), Sum(s.bytes_between_nodes, 1) / double(1ull << 30),
               Sum(s.bytes_between_nodes_blind, 1) / double(1ull << 30));
  fmt::print("(means over windows 1..{}; window 0 is served by the identity placement;\n"
             " moves of window k are the rebalance after window k-1; the first rebalance from\n"
             " the identity placement is not counted; GiB between nodes: of those moved, the\n"
             " ones between ranks of different nodes, with the plan's senders on the\n"
             " receiver's node where one holds the expert, and with senders chosen ignoring nodes)\n",
             loads.size() - 1);
  if (!o.svg_path.empty()) fmt::print("plot: {}\n", o.svg_path);
  return 0;
}

std::function<int()> Setup(CLI::App& app) {
  auto o = std::make_shared<SimulateOptions>();
  auto* sub = app.add_subcommand(
      "simulate", "replay a sequence of loads through policy and plan (no transfers)");
  sub->add_option("--load", o->load_paths, "load files, one per rebalancing window, in order")
      ->check(NonEmptyPath());
  sub->add_flag("--synthetic", o->synthetic, "synthetic drifting skewed loads instead of files");
  sub->add_option("--steps", o->steps, "synthetic: number of windows")->capture_default_str();
  sub->add_option("--layers", o->layers, "synthetic: MoE layers")->capture_default_str();
  sub->add_option("--experts", o->experts, "synthetic: logical experts")->capture_default_str();
  sub->add_option("--skew", o->skew, "synthetic: Zipf exponent")->capture_default_str();
  sub->add_option("--drift", o->drift, "synthetic: windows for the hot set to move one expert")
      ->capture_default_str();
  sub->add_option("--seed", o->seed, "synthetic: seed")->capture_default_str();
  sub->add_option("--replicas", o->replicas, "physical slots R (default 1.25 x experts)");
  sub->add_option("--groups", o->groups, "expert groups (default 1)");
  sub->add_option("--nodes", o->nodes, "nodes (default 1)");
  sub->add_option("--ranks", o->ranks, "EP ranks (default 8)");
  sub->add_option("--policies", o->policies, "comma-separated policies to compare")
      ->capture_default_str();
  sub->add_option("--expert-mib", o->expert_mib, "MiB of one expert's weights (for bytes moved)")
      ->capture_default_str();
  sub->add_option("--svg", o->svg_path, "write a plot of balancedness over time")
      ->check(NonEmptyPath());
  sub->add_option("--output", o->output_path, "write the full result as JSON")
      ->check(NonEmptyPath());
  sub->add_flag("--json", o->json, "print the result as JSON");
  return [o] { return RunSimulate(*o); };
}

}  // namespace

EPLB_COMMAND(simulate, Setup);

}  // namespace eplb::cli
