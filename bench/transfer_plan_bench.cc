// Time to compute the transfer plan of a whole model: DeepSeek-V3 sized
// (58 MoE layers, 256 experts) on 32 to 256 ranks, 8 ranks per node, from one
// random placement with redundancy to another (the worst case: most slots change).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <random>

#include "eplb/transfer_plan.h"

namespace {

eplb::Placement Random(std::mt19937& rng, int layers, int experts, int slots, int ranks) {
  std::vector<int32_t> p2l;
  for (int l = 0; l < layers; ++l) {
    std::vector<int32_t> p(slots);
    for (int s = 0; s < slots; ++s)
      p[s] = s < experts ? s : std::uniform_int_distribution<int>(0, experts - 1)(rng);
    std::shuffle(p.begin(), p.end(), rng);
    p2l.insert(p2l.end(), p.begin(), p.end());
  }
  return eplb::Placement::FromPhy2Log(layers, experts, ranks, std::move(p2l));
}

void BM_PlanModel(benchmark::State& state) {
  const int ranks = static_cast<int>(state.range(0));
  const int layers = 58, experts = 256, slots = experts + ranks;  // one redundant slot per rank
  std::mt19937 rng(1);
  eplb::Placement a = Random(rng, layers, experts, slots, ranks);
  eplb::Placement b = Random(rng, layers, experts, slots, ranks);
  int64_t moved = 0;
  for (auto _ : state) {
    auto plans = eplb::PlanMigration(a, b, {8, 44u << 20});
    moved = 0;
    for (const auto& p : plans) moved += p.total.experts_received;
    benchmark::DoNotOptimize(plans);
  }
  state.counters["experts_moved"] = static_cast<double>(moved);
  state.counters["layers_per_s"] =
      benchmark::Counter(static_cast<double>(layers), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_PlanModel)->Arg(32)->Arg(64)->Arg(256)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
