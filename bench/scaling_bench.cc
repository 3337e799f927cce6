// How one rebalance scales from 8 to 1,024 ranks at DeepSeek-V3's shape (58
// MoE layers, 256 experts in 8 groups, 8 ranks per node): the policy's time
// (with slot preservation against the placement in force) and the transfer
// plan's, on two measured loads in turn (data/loads: the placement of the
// first is in force when the second arrives); what the plan moves, the
// busiest rank's bytes within and between nodes; memory per rank; and a
// model of the migration's time from those bytes and the links' bandwidth.
//
//   build/scaling_bench [--expert-mib 44] [--net-gbps 50] [--nvlink-gbps 360] [--repeat 5]
//
// Memory per rank: the expert weights (58 x slots per rank x expert size),
// the async balancer's staging (2 layers x slots per rank x expert size) and
// eplb's own host memory (the load window: 4 B x 100 steps x layers x
// experts; the placement maps). Model: a rank receives its experts from its
// node at --nvlink-gbps and from other nodes at --net-gbps (GB/s, per rank),
// one after the other; the migration lasts as long as the busiest rank's.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "eplb/placement.h"
#include "eplb/policy.h"
#include "eplb/transfer_plan.h"
#include "io/files.h"

namespace {

using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Shape {
  int ranks, slots;
};

}  // namespace

int main(int argc, char** argv) {
  double expert_mib = 44, net_gbps = 50, nvlink_gbps = 360;
  int repeat = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const double v = std::atof(argv[i + 1]);
    if (a == "--expert-mib") expert_mib = v;
    else if (a == "--net-gbps") net_gbps = v;
    else if (a == "--nvlink-gbps") nvlink_gbps = v;
    else if (a == "--repeat") repeat = std::max(1, static_cast<int>(v));
    else {
      std::fprintf(stderr, "scaling_bench: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  const std::string dir = std::string(EPLB_SOURCE_DIR) + "/data/loads/";
  const eplb::LoadMatrix first = eplb::io::ReadLoadFile(dir + "deepseek-v3-prefill_in1024.json").load;
  const eplb::LoadMatrix second = eplb::io::ReadLoadFile(dir + "deepseek-v3-decode_in1000out1000.json").load;
  const int layers = first.num_layers, experts = first.num_experts, groups = 8, per_node = 8;
  const uint64_t expert_bytes = static_cast<uint64_t>(expert_mib * 1024 * 1024);
  const auto policy = eplb::MakePolicy("deepseek");
  const Shape shapes[] = {{8, 288},   {16, 288},  {32, 288},  {64, 320},   {128, 384},
                          {256, 512}, {256, 1280}, {512, 1024}, {1024, 1024}};
  std::printf("| ranks | slots | nodes | policy | policy ms | plan ms | experts moved | busiest rank: within / "
              "between nodes | model ms | weights + staging per rank | eplb host memory per rank |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (const Shape& s : shapes) {
    const int nodes = std::max(1, s.ranks / per_node), spr = s.slots / s.ranks;
    eplb::PolicyInput in{&first, s.slots, groups, nodes, s.ranks, nullptr, {}};
    const eplb::Placement before = eplb::ComputePlacement(*policy, in);
    in.load = &second;
    in.previous = &before;
    std::vector<double> policy_ms, plan_ms;
    eplb::Placement after;
    std::vector<eplb::LayerPlan> plans;
    for (int k = 0; k < repeat; ++k) {
      auto t0 = Clock::now();
      after = eplb::ComputePlacement(*policy, in);
      auto t1 = Clock::now();
      plans = eplb::PlanMigration(before, after, {per_node, expert_bytes});
      auto t2 = Clock::now();
      policy_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      plan_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
    }
    // Per receiving rank: bytes from its node and from other nodes.
    std::vector<uint64_t> within(s.ranks, 0), between(s.ranks, 0);
    int64_t moved = 0;
    for (const auto& p : plans) {
      moved += p.total.experts_received;
      for (const auto& m : p.wire)
        (m.src_rank / per_node == m.dst_rank / per_node ? within : between)[m.dst_rank] += expert_bytes;
    }
    double worst_s = 0;
    int busiest = 0;
    for (int r = 0; r < s.ranks; ++r) {
      const double t = within[r] / (nvlink_gbps * 1e9) + between[r] / (net_gbps * 1e9);
      if (t > worst_s) worst_s = t, busiest = r;
    }
    const bool hierarchical = groups % nodes == 0;
    const double gib = 1024.0 * 1024 * 1024;
    const double weights = double(layers) * spr * expert_bytes / gib, staging = 2.0 * spr * expert_bytes / gib;
    const double window_mib = 4.0 * 100 * layers * experts / (1 << 20);
    const double maps_mib = (4.0 * layers * s.slots * 2 + 4.0 * layers * experts * (1 + after.max_replicas)) / (1 << 20);
    std::printf("| %d | %d | %d | %s | %.2f | %.2f | %lld | %.2f / %.2f GiB | %.0f | %.1f + %.2f GiB | %.1f MiB |\n",
                s.ranks, s.slots, nodes, hierarchical ? "hierarchical" : "global", Median(policy_ms),
                Median(plan_ms), static_cast<long long>(moved), within[busiest] / gib, between[busiest] / gib,
                worst_s * 1e3, weights, staging, window_mib + maps_mib);
  }
  std::printf("\n(expert %.0f MiB; model: within a node %.0f GB/s, between nodes %.0f GB/s per rank)\n", expert_mib,
              nvlink_gbps, net_gbps);
  return 0;
}
