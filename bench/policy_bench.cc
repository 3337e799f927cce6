// Policy time on every measured load in data/loads, at the shapes that
// DeepSeek-V3 and Qwen deployments use. One benchmark per (file, shape); the
// `balancedness` counter is the model figure of the placement computed.
//
//   build/policy_bench [--benchmark_filter=REGEX] [--benchmark_repetitions=5]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "eplb/placement.h"
#include "eplb/policy.h"
#include "io/files.h"

namespace {

namespace fs = std::filesystem;

struct Shape {
  std::string label;
  int replicas, groups, nodes, ranks;
};

// DeepSeek-V3: 256 routed experts in 8 groups; 8 GPUs per node.
const std::vector<Shape> kDeepSeekShapes = {
    {"R288-P32-N4", 288, 8, 4, 32},     // the issue's headline case: EP32 on 4 nodes
    {"R288-P32-N1", 288, 8, 1, 32},     // EP32 as one node (NVL-class fabric)
    {"R320-P64-N8", 320, 8, 8, 64},     // EP64 on 8 nodes
    {"R288-P144-N18", 288, 8, 18, 144},  // EP144 on 18 nodes: 8 % 18 != 0 -> global
};

// Qwen MoE (no expert groups): 25% and 50% redundant slots on 16 ranks
// (2 nodes of 8) and on 8 ranks (1 node).
std::vector<Shape> QwenShapes(int experts) {
  std::vector<Shape> shapes;
  for (int percent : {25, 50}) {
    const int replicas = experts + experts * percent / 100;
    for (int ranks : {16, 8}) {
      shapes.push_back({"R" + std::to_string(replicas) + "-P" + std::to_string(ranks) + "-N" +
                            std::to_string(ranks / 8) + "-" + std::to_string(percent) + "pct",
                        replicas, 1, ranks / 8, ranks});
    }
  }
  return shapes;
}

std::string DataDir() { return (fs::path(EPLB_SOURCE_DIR) / "data").string(); }

void RunPolicy(benchmark::State& state, std::shared_ptr<eplb::LoadMatrix> load, Shape shape) {
  auto policy = eplb::MakePolicy("deepseek");
  eplb::PolicyInput in;
  in.load = load.get();
  in.num_replicas = shape.replicas;
  in.num_groups = shape.groups;
  in.num_nodes = shape.nodes;
  in.num_ranks = shape.ranks;
  eplb::ValidatePolicyInput(in);
  for (auto _ : state) {
    eplb::Placement p = policy->Rebalance(in);
    benchmark::DoNotOptimize(p.phy2log.data());
  }
  eplb::Placement p = policy->Rebalance(in);
  state.counters["balancedness"] = eplb::ComputeBalancedness(*load, p).mean;
  state.counters["layers"] = load->num_layers;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = DataDir() + "/loads";
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.path().extension() == ".json") files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    std::fprintf(stderr, "policy_bench: no load files in %s\n", dir.c_str());
    return 1;
  }
  for (const auto& path : files) {
    auto load = std::make_shared<eplb::LoadMatrix>(eplb::io::ReadLoadFile(path).load);
    const std::string stem = fs::path(path).stem().string();
    const auto shapes = load->num_experts == 256 ? kDeepSeekShapes : QwenShapes(load->num_experts);
    for (const Shape& shape : shapes) {
      benchmark::RegisterBenchmark(("deepseek/" + stem + "/" + shape.label).c_str(), RunPolicy,
                                   load, shape)
          ->Unit(benchmark::kMicrosecond)
          // The machine is shared: the fastest repetition is the figure to
          // compare (run with --benchmark_repetitions=N).
          ->ComputeStatistics("min", [](const std::vector<double>& v) {
            return *std::min_element(v.begin(), v.end());
          });
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
