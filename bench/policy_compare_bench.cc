// The reference policy (deepseek) against this library's (balanced, locality,
// movement) on the measured DeepSeek-V3 loads in data/loads: a markdown
// table of balancedness, locality and policy time per file and shape, and one
// of experts sent over sequences of loads (the online balancer's view); then
// Google Benchmark timings of every policy at 288 slots / 32 ranks / 4 nodes.
//
//   build/policy_compare_bench --table-only       # the tables of BENCHMARKS.md
//   build/policy_compare_bench [--benchmark_filter=REGEX] [--benchmark_repetitions=N]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/locality.h"
#include "eplb/placement.h"
#include "eplb/policy.h"
#include "policy/sequence.h"
#include "io/files.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// DeepSeek-V3 expert: gate, up and down projections, 7168 x 2048 each in FP8.
constexpr double kExpertBytes = 3.0 * 7168 * 2048;

struct Shape {
  const char* label;
  int replicas, groups, nodes, ranks;
};

const Shape kShapes[] = {
    {"288 slots, 32 ranks, 4 nodes", 288, 8, 4, 32},
    {"320 slots, 64 ranks, 8 nodes", 320, 8, 8, 64},
    {"288 slots, 32 ranks, 1 node", 288, 8, 1, 32},
};

std::string DataDir() { return (fs::path(EPLB_SOURCE_DIR) / "data").string(); }

struct File {
  std::string stem;  // without "deepseek-v3-"
  std::shared_ptr<eplb::LoadMatrix> load;
};

std::vector<File> DeepSeekFiles() {
  std::vector<File> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(DataDir() + "/loads", ec)) {
    const std::string stem = entry.path().stem().string();
    if (stem.rfind("deepseek-v3-", 0) != 0) continue;
    files.push_back({stem.substr(12), std::make_shared<eplb::LoadMatrix>(
                                          eplb::io::ReadLoadFile(entry.path().string()).load)});
  }
  std::sort(files.begin(), files.end(), [](const File& a, const File& b) { return a.stem < b.stem; });
  return files;
}

eplb::PolicyInput Input(const eplb::LoadMatrix& load, const Shape& s) {
  eplb::PolicyInput in;
  in.load = &load;
  in.num_replicas = s.replicas;
  in.num_groups = s.groups;
  in.num_nodes = s.nodes;
  in.num_ranks = s.ranks;
  return in;
}

// Best of `repeat` runs of the policy alone, in milliseconds.
double PolicyMs(const eplb::Policy& policy, const eplb::PolicyInput& in, int repeat) {
  double best = 1e30;
  for (int i = 0; i < repeat; ++i) {
    const auto t0 = Clock::now();
    eplb::Placement p = policy.Rebalance(in);
    benchmark::DoNotOptimize(p.phy2log.data());
    best = std::min(best, std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  return best;
}

struct Figures {
  double balancedness, min_layer, home_share, ms;
};

Figures Measure(const std::string& name, const eplb::LoadMatrix& load, const Shape& s) {
  auto policy = eplb::MakePolicy(name);
  const eplb::PolicyInput in = Input(load, s);
  eplb::Placement p = eplb::ComputePlacement(*policy, in);
  const eplb::Balancedness b = eplb::ComputeBalancedness(load, p);
  const eplb::Locality loc = eplb::ComputeLocality(load, p, s.groups, s.nodes);
  return {b.mean, *std::min_element(b.per_layer.begin(), b.per_layer.end()), loc.home_share,
          PolicyMs(*policy, in, 20)};
}

void PrintPlacementTables(const std::vector<File>& files) {
  std::printf(
      "Balancedness (model mean; worst layer in brackets), locality (share of each group's "
      "load served on its home node) and policy time (best of 20) per load file.\n\n");
  for (const Shape& s : kShapes) {
    std::printf("#### %s\n\n", s.label);
    std::printf(
        "| load | deepseek bal | deepseek local | locality bal | locality local | balanced bal | "
        "balanced local | deepseek ms | locality ms | balanced ms |\n");
    std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for (const File& f : files) {
      const Figures d = Measure("deepseek", *f.load, s);
      const Figures l = Measure("locality", *f.load, s);
      const Figures g = Measure("balanced", *f.load, s);
      std::printf(
          "| %s | %.4f (%.3f) | %.3f | %.4f (%.3f) | %.3f | %.4f (%.3f) | %.3f | %.3f | %.3f | "
          "%.3f |\n",
          f.stem.c_str(), d.balancedness, d.min_layer, d.home_share, l.balancedness, l.min_layer,
          l.home_share, g.balancedness, g.min_layer, g.home_share, d.ms, l.ms, g.ms);
    }
    std::printf("\n");
  }
}

struct Sequence {
  const char* label;
  std::vector<const char*> stems;
};

void PrintSequenceTable(const std::vector<File>& files) {
  const std::vector<Sequence> sequences = {
      {"prefill 512 -> 1024 -> 2048 -> 4096",
       {"prefill_in512", "prefill_in1024", "prefill_in2048", "prefill_in4096"}},
      {"decode 500/1500 -> 1000/1000 -> 1800/100 -> 2000/100",
       {"decode_in500out1500", "decode_in1000out1000", "decode_in1800out100",
        "decode_in2000out100"}},
      {"mixed prefill/decode (6 steps)",
       {"prefill_in1024", "decode_in1000out1000", "prefill_in2000out100", "decode_in2000out100",
        "prefill_in500out1500", "decode_in500out1500"}},
  };
  std::printf(
      "Over sequences of loads, each policy rebalances from its own previous placement (slot "
      "preservation on); experts sent = (rank, expert) pairs a rank gains, summed over the "
      "rebalances after the first; GB at %.0f MB an expert (DeepSeek-V3, FP8). Balancedness: mean "
      "over all steps.\n\n",
      kExpertBytes / 1e6);
  std::printf(
      "| shape | sequence | deepseek sent | deepseek GB | deepseek bal | movement sent | "
      "movement GB | movement bal | fewer bytes | movement ms/step |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (const Shape& s : kShapes) {
    const eplb::SequenceShape shape{s.replicas, s.groups, s.nodes, s.ranks};
    for (const Sequence& seq : sequences) {
      std::vector<eplb::LoadMatrix> loads;
      for (const char* stem : seq.stems)
        for (const File& f : files)
          if (f.stem == stem) loads.push_back(*f.load);
      if (loads.size() != seq.stems.size()) continue;
      auto reference = eplb::MakePolicy("deepseek");
      auto movement = eplb::MakePolicy("movement");
      const eplb::SequenceRun ref = eplb::RunSequence(*reference, loads, shape);
      const auto t0 = Clock::now();
      const eplb::SequenceRun ours = eplb::RunSequence(*movement, loads, shape);
      const double ms =
          std::chrono::duration<double, std::milli>(Clock::now() - t0).count() / loads.size();
      std::printf("| %s | %s | %lld | %.1f | %.4f | %lld | %.1f | %.4f | %.1f%% | %.1f |\n",
                  s.label, seq.label, static_cast<long long>(ref.total_transfers),
                  ref.total_transfers * kExpertBytes / 1e9, ref.mean_balancedness,
                  static_cast<long long>(ours.total_transfers),
                  ours.total_transfers * kExpertBytes / 1e9, ours.mean_balancedness,
                  100.0 * (1.0 - static_cast<double>(ours.total_transfers) /
                                     std::max<int64_t>(1, ref.total_transfers)),
                  ms);
    }
  }
  std::printf("\n");
}

void RunPolicy(benchmark::State& state, std::shared_ptr<eplb::LoadMatrix> load, std::string name,
               Shape shape) {
  auto policy = eplb::MakePolicy(name);
  const eplb::PolicyInput in = Input(*load, shape);
  eplb::ValidatePolicyInput(in);
  for (auto _ : state) {
    eplb::Placement p = policy->Rebalance(in);
    benchmark::DoNotOptimize(p.phy2log.data());
  }
  eplb::Placement p = policy->Rebalance(in);
  state.counters["balancedness"] = eplb::ComputeBalancedness(*load, p).mean;
  state.counters["home_share"] = eplb::ComputeLocality(*load, p, shape.groups, shape.nodes).home_share;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<File> files = DeepSeekFiles();
  if (files.empty()) {
    std::fprintf(stderr, "policy_compare_bench: no deepseek-v3-*.json in %s/loads\n",
                 DataDir().c_str());
    return 1;
  }
  bool table_only = false;
  for (int i = 1; i < argc; ++i) table_only |= std::strcmp(argv[i], "--table-only") == 0;
  if (table_only) {
    PrintPlacementTables(files);
    PrintSequenceTable(files);
    return 0;
  }
  const Shape& headline = kShapes[0];
  for (const File& f : files)
    for (const char* name : {"deepseek", "balanced", "locality"})
      benchmark::RegisterBenchmark((std::string(name) + "/" + f.stem + "/R288-P32-N4").c_str(),
                                   RunPolicy, f.load, std::string(name), headline)
          ->Unit(benchmark::kMillisecond)
          ->ComputeStatistics("min", [](const std::vector<double>& v) {
            return *std::min_element(v.begin(), v.end());
          });
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
