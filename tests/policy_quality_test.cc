// The policies that beat DeepSeek's (balanced, locality, movement) on the
// measured DeepSeek-V3 loads in data/loads, against the figures they promise:
// balancedness >= 0.97 at 288 slots / 32 ranks / 4 nodes and at 320 / 64 / 8
// with a locality figure well above a locality-blind placement; >= 0.995 at
// 288 / 32 on one node; over sequences of loads, movement-aware rebalancing
// sends at most half the experts that DeepSeek with slot preservation sends,
// at most 0.5% lower balancedness. Plus validity and determinism on small
// and odd shapes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <filesystem>
#include <string>
#include <vector>

#include "core/locality.h"
#include "core/transfer_count.h"
#include "eplb/placement.h"
#include "eplb/policy.h"
#include "policy/sequence.h"
#include "io/files.h"
#include "policy/policies.h"
#include "support/paths.h"

namespace eplb {
namespace {

namespace fs = std::filesystem;

std::string LoadsDir() { return test::DataDir() + "/loads"; }

std::vector<std::string> DeepSeekFiles() {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(LoadsDir(), ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("deepseek-v3-", 0) == 0 && entry.path().extension() == ".json")
      files.push_back(name);
  }
  std::sort(files.begin(), files.end());
  return files;
}

const LoadMatrix& Load(const std::string& name) {
  static std::map<std::string, LoadMatrix> cache;
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(name, io::ReadLoadFile(LoadsDir() + "/" + name).load).first;
  return it->second;
}

struct Shape {
  int replicas, groups, nodes, ranks;
};

PolicyInput Input(const LoadMatrix& load, Shape s, const Placement* previous = nullptr) {
  PolicyInput in;
  in.load = &load;
  in.num_replicas = s.replicas;
  in.num_groups = s.groups;
  in.num_nodes = s.nodes;
  in.num_ranks = s.ranks;
  in.previous = previous;
  return in;
}

double Min(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }

TEST(LoadsFolder, HasTheTwelveDeepSeekRuns) { EXPECT_EQ(DeepSeekFiles().size(), 12u); }

class DeepSeekLoads : public testing::TestWithParam<std::string> {};

// 288 slots on 32 ranks, 4 nodes of 8 (8 groups: hierarchical for DeepSeek).
TEST_P(DeepSeekLoads, LocalityAt288On32RanksAnd4Nodes) {
  const LoadMatrix& load = Load(GetParam());
  const Shape shape{288, 8, 4, 32};
  Placement ours = ComputePlacement(*MakePolicy("locality"), Input(load, shape));
  Placement reference = ComputePlacement(*MakePolicy("deepseek"), Input(load, shape));
  Placement blind = ComputePlacement(*MakePolicy("balanced"), Input(load, shape));
  const Balancedness b = ComputeBalancedness(load, ours);
  EXPECT_GE(b.mean, 0.97);
  EXPECT_GE(Min(b.per_layer), 0.97);
  EXPECT_GT(b.mean, ComputeBalancedness(load, reference).mean);
  const Locality loc = ComputeLocality(load, ours, 8, 4);
  const Locality ref_loc = ComputeLocality(load, reference, 8, 4);
  const Locality blind_loc = ComputeLocality(load, blind, 8, 4);
  EXPECT_DOUBLE_EQ(ref_loc.home_share, 1.0);  // hierarchical: every group on one node
  // Most of each group's load stays home; a locality-blind placement keeps
  // about one node's share (1/4).
  EXPECT_GE(loc.home_share, 0.75);
  EXPECT_GT(loc.home_share, blind_loc.home_share + 0.3);
}

// 320 slots on 64 ranks, 8 nodes of 8.
TEST_P(DeepSeekLoads, LocalityAt320On64RanksAnd8Nodes) {
  const LoadMatrix& load = Load(GetParam());
  const Shape shape{320, 8, 8, 64};
  Placement ours = ComputePlacement(*MakePolicy("locality"), Input(load, shape));
  Placement blind = ComputePlacement(*MakePolicy("balanced"), Input(load, shape));
  const Balancedness b = ComputeBalancedness(load, ours);
  EXPECT_GE(b.mean, 0.97);
  EXPECT_GE(Min(b.per_layer), 0.97);
  const Locality loc = ComputeLocality(load, ours, 8, 8);
  EXPECT_GE(loc.home_share, 0.55);
  EXPECT_GT(loc.home_share, ComputeLocality(load, blind, 8, 8).home_share + 0.3);
  EXPECT_GE(ComputeBalancedness(load, blind).mean, 0.97);
}

// 288 slots on 32 ranks, one node: global balance.
TEST_P(DeepSeekLoads, GlobalAt288On32Ranks) {
  const LoadMatrix& load = Load(GetParam());
  const Shape shape{288, 8, 1, 32};
  const double reference =
      ComputeBalancedness(load, ComputePlacement(*MakePolicy("deepseek"), Input(load, shape))).mean;
  for (const char* name : {"balanced", "locality", "movement"}) {
    const Balancedness b =
        ComputeBalancedness(load, ComputePlacement(*MakePolicy(name), Input(load, shape)));
    EXPECT_GE(b.mean, 0.995) << name;
    EXPECT_GE(Min(b.per_layer), 0.995) << name;
    EXPECT_GT(b.mean, reference) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Files, DeepSeekLoads, testing::ValuesIn(DeepSeekFiles()),
                         [](const testing::TestParamInfo<std::string>& info) {
                           std::string n = info.param.substr(0, info.param.size() - 5);
                           std::replace_if(n.begin(), n.end(), [](char c) { return !isalnum(c); }, '_');
                           return n;
                         });

// Sequences of load files, as the online balancer sees them.
struct SequenceCase {
  const char* label;
  std::vector<const char*> files;
  Shape shape;
};

std::vector<SequenceCase> Sequences() {
  const std::vector<const char*> prefill = {"prefill_in512", "prefill_in1024", "prefill_in2048",
                                            "prefill_in4096"};
  const std::vector<const char*> decode = {"decode_in500out1500", "decode_in1000out1000",
                                           "decode_in1800out100", "decode_in2000out100"};
  const std::vector<const char*> mixed = {"prefill_in1024",       "decode_in1000out1000",
                                          "prefill_in2000out100", "decode_in2000out100",
                                          "prefill_in500out1500", "decode_in500out1500"};
  std::vector<SequenceCase> cases;
  for (Shape shape : {Shape{288, 8, 1, 32}, Shape{288, 8, 4, 32}}) {
    const std::string suffix = shape.nodes == 1 ? "_global" : "_4nodes";
    static std::vector<std::string> labels;  // outlive the cases
    labels.reserve(16);
    labels.push_back("prefill" + suffix);
    cases.push_back({labels.back().c_str(), prefill, shape});
    labels.push_back("decode" + suffix);
    cases.push_back({labels.back().c_str(), decode, shape});
    labels.push_back("mixed" + suffix);
    cases.push_back({labels.back().c_str(), mixed, shape});
  }
  return cases;
}

class Movement : public testing::TestWithParam<SequenceCase> {};

TEST_P(Movement, SendsHalfTheExpertsDeepSeekSendsAtNoWorseBalance) {
  const SequenceCase& c = GetParam();
  std::vector<LoadMatrix> loads;
  for (const char* f : c.files) loads.push_back(Load(std::string("deepseek-v3-") + f + ".json"));
  const SequenceShape shape{c.shape.replicas, c.shape.groups, c.shape.nodes, c.shape.ranks};
  const SequenceRun reference = RunSequence(*MakePolicy("deepseek"), loads, shape);
  const SequenceRun ours = RunSequence(*MakePolicy("movement"), loads, shape);
  ASSERT_GT(reference.total_transfers, 0);
  EXPECT_LE(ours.total_transfers * 2, reference.total_transfers)
      << "movement sent " << ours.total_transfers << " experts, deepseek " << reference.total_transfers;
  EXPECT_GE(ours.mean_balancedness, reference.mean_balancedness * 0.995);
  for (size_t k = 0; k < loads.size(); ++k)
    EXPECT_GE(ours.steps[k].balancedness, reference.steps[k].balancedness * 0.995) << "step " << k;
}

INSTANTIATE_TEST_SUITE_P(Sequences, Movement, testing::ValuesIn(Sequences()),
                         [](const testing::TestParamInfo<SequenceCase>& info) {
                           return std::string(info.param.label);
                         });

// --- validity and determinism on small and odd shapes ----------------------

LoadMatrix Skewed(int layers, int experts, unsigned seed) {
  LoadMatrix load(layers, experts);
  unsigned x = seed;
  for (double& v : load.values) {
    x = x * 1103515245u + 12345u;
    const double u = ((x >> 8) & 0xffff) / 65536.0;
    v = std::floor(1000.0 * u * u * u * u) + 1;  // heavy-tailed
  }
  return load;
}

TEST(NewPolicies, ValidDeterministicAndBalancedOnSmallShapes) {
  struct Case {
    int experts;
    Shape shape;
  };
  const std::vector<Case> cases = {
      {8, {8, 1, 1, 4}},       // no redundancy
      {16, {24, 4, 2, 4}},     // hierarchical-style shape
      {20, {30, 5, 5, 10}},    // one group per node
      {32, {40, 8, 3, 8}},     // groups % nodes != 0: global
      {64, {72, 8, 4, 8}},     // 2 ranks a node
      {128, {160, 1, 1, 16}},  // no groups
      {128, {160, 1, 1, 4}},   // 40 slots a rank: more than one 32-item block
      {96, {300, 4, 2, 4}}};   // 75 slots a rank
  for (const auto& [experts, s] : cases) {
    LoadMatrix load = Skewed(3, experts, 7u + s.replicas);
    for (const std::string& name : {"balanced", "locality", "movement"}) {
      SCOPED_TRACE(name + " R=" + std::to_string(s.replicas));
      auto policy = MakePolicy(name);
      Placement a = ComputePlacement(*policy, Input(load, s));
      Placement b = ComputePlacement(*policy, Input(load, s));
      EXPECT_NO_THROW(a.Validate());
      EXPECT_EQ(a, b);
      EXPECT_EQ(a.num_slots, s.replicas);
      // Never worse than the reference, or (balanced) within its refinement
      // goal of perfect: with many slots a rank the reference gets there too.
      Placement ref = ComputePlacement(*MakePolicy("deepseek"), Input(load, s));
      const double ref_balance = ComputeBalancedness(load, ref).mean;
      EXPECT_GE(ComputeBalancedness(load, a).mean + 1e-9,
                name == "balanced" ? std::min(ref_balance, 1 / (1 + 5e-4)) : ref_balance * 0.99);
      // With a previous placement too; movement within its tolerance of the
      // best balance found.
      Placement c = ComputePlacement(*policy, Input(load, s, &ref));
      EXPECT_NO_THROW(c.Validate());
      if (name == "movement") {
        const Placement best = ComputePlacement(*MakePolicy("balanced"), Input(load, s));
        for (int l = 0; l < load.num_layers; ++l)
          EXPECT_GE(LayerBalancedness(load, c, l),
                    LayerBalancedness(load, best, l) * 0.995 - 1e-12);
      }
    }
  }
}

TEST(NewPolicies, AllZeroLayerStillGetsAValidPlacement) {
  LoadMatrix load(2, 16);
  for (int e = 0; e < 16; ++e) load.at(1, e) = e + 1;
  for (const std::string& name : {"balanced", "locality", "movement"}) {
    Placement p = ComputePlacement(*MakePolicy(name), Input(load, {24, 4, 2, 4}));
    EXPECT_NO_THROW(p.Validate()) << name;
    EXPECT_DOUBLE_EQ(LayerBalancedness(load, p, 0), 1.0) << name;
  }
}

TEST(NewPolicies, ManyRanksAndExpertsTakeTheLargeShapePaths) {
  // 2048 ranks x 2048 experts: past the [rank][expert] tables and the rank
  // relabelling limit, so the scanning fallbacks run.
  LoadMatrix a = Skewed(1, 2048, 11u), b = Skewed(1, 2048, 12u);
  const Shape shape{4096, 1, 1, 2048};
  for (const std::string& name : {"balanced", "locality", "movement"}) {
    auto policy = MakePolicy(name);
    Placement first = ComputePlacement(*policy, Input(a, shape));
    Placement next = ComputePlacement(*policy, Input(b, shape, &first));
    EXPECT_NO_THROW(next.Validate()) << name;
    const double best =
        ComputeBalancedness(b, ComputePlacement(*MakePolicy("balanced"), Input(b, shape))).mean;
    EXPECT_GE(ComputeBalancedness(b, next).mean, best * 0.995 - 1e-12) << name;
  }
}

TEST(MovementPolicy, SendsNothingWhenThePlacementInForceIsGoodEnough) {
  const LoadMatrix& load = Load("deepseek-v3-prefill_in1024.json");
  const Shape shape{288, 8, 1, 32};
  Placement first = ComputePlacement(*MakePolicy("balanced"), Input(load, shape));
  Placement again = ComputePlacement(*MakePolicy("movement"), Input(load, shape, &first));
  EXPECT_EQ(CountTransfers(first, again), 0);
  EXPECT_EQ(again, first);  // slot preservation keeps every slot
}

TEST(MovementPolicy, TighterToleranceCostsMoreTransfers) {
  const LoadMatrix& a = Load("deepseek-v3-prefill_in512.json");
  const LoadMatrix& b = Load("deepseek-v3-prefill_in4096.json");
  const Shape shape{288, 8, 1, 32};
  Placement first = ComputePlacement(*MakePolicy("balanced"), Input(a, shape));
  Placement loose = ComputePlacement(*MakeMovementPolicy(0.02), Input(b, shape, &first));
  Placement tight = ComputePlacement(*MakeMovementPolicy(0.001), Input(b, shape, &first));
  EXPECT_LT(CountTransfers(first, loose), CountTransfers(first, tight));
  EXPECT_GE(ComputeBalancedness(b, tight).mean, ComputeBalancedness(b, loose).mean);
}

}  // namespace
}  // namespace eplb
