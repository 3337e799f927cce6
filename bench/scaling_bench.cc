// How one rebalance's cost grows with the group: DeepSeek-V3 (58 MoE layers,
// 256 experts in 8 groups, 264 to 1,280 slots) on 8 to 1,024 ranks, 8 ranks per node, driven by two measured loads (the
// placement in force is `deepseek` of one; the rebalance follows the other).
// Per shape:
//   policy/deepseek  a fresh placement of the new load
//   policy/movement  the movement-aware policy against the placement in force
//   plan             the transfer plan of the whole model (every rank runs it)
// Counters (same on every benchmark of a shape): the placement's and the
// plan's size in memory, the handshake's bytes through the store per rank and
// per cycle, the experts and bytes (44 MiB an expert) the movement plan sends,
// the busiest rank's bytes in or out, and the migration time that implies
// over a per-rank link of 100 and 400 Gbit/s (layers one after another, each
// as long as its busiest rank's larger direction).
//
//   build/scaling_bench [--benchmark_repetitions=3]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "eplb/placement.h"
#include "eplb/policy.h"
#include "eplb/transfer_plan.h"
#include "io/files.h"

namespace {

namespace fs = std::filesystem;

constexpr uint64_t kExpertBytes = 44ull << 20;  // DeepSeek-V3 FP8 routed expert
constexpr int kRanksPerNode = 8;

struct Shape {
  int ranks, slots, nodes;
};

struct Case {
  eplb::LoadMatrix before, after;
  Shape shape;
  eplb::Placement in_force;  // deepseek of `before`
  eplb::Placement next;      // movement of `after` against in_force
};

eplb::PolicyInput Input(const eplb::LoadMatrix& load, const Shape& s, const eplb::Placement* previous) {
  eplb::PolicyInput in;
  in.load = &load;
  in.num_replicas = s.slots;
  in.num_groups = 8;
  in.num_nodes = s.nodes;
  in.num_ranks = s.ranks;
  in.previous = previous;
  return in;
}

uint64_t PlacementBytes(const eplb::Placement& p) {
  return 4 * (p.phy2log.size() + p.logcnt.size() + p.log2phy.size());
}

// What the handshake reads per rank per cycle: every rank's state (a version
// and a placement hash per layer, 16 bytes, plus its framing).
uint64_t HandshakeBytesPerRank(const Shape& s, int layers) {
  return static_cast<uint64_t>(s.ranks) * (16ull * layers + 64);
}

void SetCounters(benchmark::State& state, const Case& c) {
  const auto plans = eplb::PlanMigration(c.in_force, c.next, {kRanksPerNode, kExpertBytes});
  uint64_t plan_bytes = 0, bytes = 0, busiest = 0;
  int64_t experts = 0;
  double seconds_100 = 0;
  for (const auto& p : plans) {
    plan_bytes += p.fills.size() * sizeof(eplb::SlotFill) + p.wire.size() * sizeof(eplb::WireMove) +
                  p.per_rank.size() * sizeof(eplb::RankTraffic);
    experts += p.total.experts_received;
    bytes += p.total.bytes_received;
    uint64_t layer_busiest = 0;
    for (const auto& t : p.per_rank) layer_busiest = std::max({layer_busiest, t.bytes_received, t.bytes_sent});
    busiest = std::max(busiest, layer_busiest);
    seconds_100 += layer_busiest / (100e9 / 8);
  }
  state.counters["ranks"] = c.shape.ranks;
  state.counters["slots"] = c.shape.slots;
  state.counters["placement_KiB"] = PlacementBytes(c.next) / 1024.0;
  state.counters["plan_KiB"] = plan_bytes / 1024.0;
  state.counters["handshake_KiB_per_rank"] = HandshakeBytesPerRank(c.shape, c.next.num_layers) / 1024.0;
  // Every rank reads every rank's state: ranks^2 store reads a cycle.
  state.counters["handshake_store_reads"] = static_cast<double>(c.shape.ranks) * c.shape.ranks;
  state.counters["experts_moved"] = static_cast<double>(experts);
  state.counters["GB_moved"] = bytes / 1e9;
  state.counters["busiest_rank_layer_MB"] = busiest / 1e6;
  state.counters["s_at_100Gbit"] = seconds_100;
  state.counters["s_at_400Gbit"] = seconds_100 / 4;
  state.counters["balancedness"] = eplb::ComputeBalancedness(c.after, c.next).mean;
}

void Policy(benchmark::State& state, std::shared_ptr<Case> c, std::string name) {
  auto policy = eplb::MakePolicy(name);
  const eplb::PolicyInput in = Input(c->after, c->shape, name == "movement" ? &c->in_force : nullptr);
  for (auto _ : state) {
    eplb::Placement p = eplb::ComputePlacement(*policy, in);
    benchmark::DoNotOptimize(p.phy2log.data());
  }
  SetCounters(state, *c);
}

void Plan(benchmark::State& state, std::shared_ptr<Case> c) {
  for (auto _ : state) {
    auto plans = eplb::PlanMigration(c->in_force, c->next, {kRanksPerNode, kExpertBytes});
    benchmark::DoNotOptimize(plans.data());
  }
  SetCounters(state, *c);
}

}  // namespace

int main(int argc, char** argv) {
  const fs::path loads = fs::path(EPLB_SOURCE_DIR) / "data" / "loads";
  const fs::path before_file = loads / "deepseek-v3-prefill_in1024.json";
  const fs::path after_file = loads / "deepseek-v3-decode_in1000out1000.json";
  for (const fs::path& f : {before_file, after_file})
    if (!fs::exists(f)) {
      std::fprintf(stderr, "scaling_bench: missing %s\n", f.c_str());
      return 1;
    }
  const eplb::LoadMatrix before = eplb::io::ReadLoadFile(before_file.string()).load;
  const eplb::LoadMatrix after = eplb::io::ReadLoadFile(after_file.string()).load;
  // (ranks, slots): one redundant slot per rank up to 256 ranks, then the
  // slots of two (and, at 1,024 ranks, one) experts per rank.
  const std::pair<int, int> shapes[] = {{8, 264},   {16, 272},   {32, 288},  {64, 320},  {128, 384},
                                        {256, 512}, {512, 1024}, {640, 1280}, {1024, 1024}};
  for (auto [ranks, slots] : shapes) {
    auto c = std::make_shared<Case>();
    c->before = before;
    c->after = after;
    c->shape = {ranks, slots, std::max(1, ranks / kRanksPerNode)};
    c->in_force = eplb::ComputePlacement(*eplb::MakePolicy("deepseek"), Input(c->before, c->shape, nullptr));
    c->next = eplb::ComputePlacement(*eplb::MakePolicy("movement"), Input(c->after, c->shape, &c->in_force));
    const std::string label = "P" + std::to_string(ranks) + "-R" + std::to_string(c->shape.slots);
    for (const char* policy : {"deepseek", "movement"})
      benchmark::RegisterBenchmark(("policy/" + std::string(policy) + "/" + label).c_str(), Policy, c,
                                   std::string(policy))
          ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("plan/" + label).c_str(), Plan, c)->Unit(benchmark::kMillisecond);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
