// The policy layer through its API: every bad input rejected by
// ValidatePolicyInput with a message naming the problem; the properties every
// DeepSeek placement has (valid, deterministic, replicas of an expert kept on
// its group's node in hierarchical mode); all-zero layers.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <string>

#include "eplb/error.h"
#include "eplb/placement.h"
#include "eplb/policy.h"
#include "io/files.h"
#include "support/paths.h"

namespace eplb {
namespace {

using testing::HasSubstr;

LoadMatrix RandomLoad(int layers, int experts, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> tokens(0, 100000);
  LoadMatrix load(layers, experts);
  for (double& v : load.values) v = tokens(rng);
  return load;
}

PolicyInput Input(const LoadMatrix& load, int replicas, int groups, int nodes, int ranks) {
  PolicyInput in;
  in.load = &load;
  in.num_replicas = replicas;
  in.num_groups = groups;
  in.num_nodes = nodes;
  in.num_ranks = ranks;
  return in;
}

// The message ValidatePolicyInput throws, or "" when it accepts the input.
std::string Rejection(const PolicyInput& in) {
  try {
    ValidatePolicyInput(in);
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "";
}

TEST(ValidatePolicyInput, AcceptsTheDeploymentShapes) {
  LoadMatrix dsv3 = RandomLoad(3, 256, 1);
  EXPECT_EQ(Rejection(Input(dsv3, 288, 8, 4, 32)), "");
  EXPECT_EQ(Rejection(Input(dsv3, 288, 8, 1, 32)), "");
  EXPECT_EQ(Rejection(Input(dsv3, 320, 8, 8, 64)), "");
  EXPECT_EQ(Rejection(Input(dsv3, 288, 8, 18, 144)), "");  // global: 8 % 18 != 0
  LoadMatrix qwen = RandomLoad(3, 128, 2);
  EXPECT_EQ(Rejection(Input(qwen, 160, 1, 2, 16)), "");
  EXPECT_EQ(Rejection(Input(qwen, 192, 1, 1, 8)), "");
}

TEST(ValidatePolicyInput, RejectsAMissingOrEmptyLoad) {
  PolicyInput in;
  EXPECT_THAT(Rejection(in), HasSubstr("no load matrix"));
  LoadMatrix empty;
  EXPECT_THAT(Rejection(Input(empty, 8, 1, 1, 1)), HasSubstr("empty"));
}

TEST(ValidatePolicyInput, RejectsARaggedMatrix) {
  LoadMatrix load = RandomLoad(2, 8, 3);
  load.values.pop_back();  // 15 values for a 2 x 8 matrix
  EXPECT_THAT(Rejection(Input(load, 8, 1, 1, 2)), HasSubstr("15 values for a 2 x 8 matrix"));
}

TEST(ValidatePolicyInput, RejectsNegativeNanAndInfiniteLoads) {
  const double bad[] = {-1.0, std::numeric_limits<double>::quiet_NaN(),
                        std::numeric_limits<double>::infinity(),
                        -std::numeric_limits<double>::infinity()};
  for (double v : bad) {
    LoadMatrix load = RandomLoad(2, 8, 4);
    load.at(1, 5) = v;
    std::string message = Rejection(Input(load, 8, 1, 1, 2));
    EXPECT_THAT(message, HasSubstr("layer 1, expert 5")) << v;
    EXPECT_THAT(message, HasSubstr("finite and non-negative")) << v;
  }
}

TEST(ValidatePolicyInput, RejectsLoadsBeyondFloat32) {
  // The reference computes in float32; a layer totalling more than FLT_MAX
  // would overflow to inf there.
  LoadMatrix load = RandomLoad(2, 8, 5);
  load.at(1, 0) = 1e39;
  EXPECT_THAT(Rejection(Input(load, 8, 1, 1, 2)), HasSubstr("beyond float32 range"));
}

TEST(ValidatePolicyInput, RejectsExpertsNotDividingIntoGroups) {
  LoadMatrix load = RandomLoad(1, 12, 6);
  EXPECT_THAT(Rejection(Input(load, 16, 5, 1, 4)), HasSubstr("experts % groups != 0"));
  // Also when the policy would fall back to global (groups % nodes != 0).
  EXPECT_THAT(Rejection(Input(load, 16, 5, 2, 4)), HasSubstr("experts % groups != 0"));
}

TEST(ValidatePolicyInput, RejectsFewerReplicasThanExperts) {
  LoadMatrix load = RandomLoad(1, 16, 7);
  EXPECT_THAT(Rejection(Input(load, 12, 1, 1, 4)), HasSubstr("replicas must be >= experts"));
}

TEST(ValidatePolicyInput, RejectsReplicasNotDividingOverRanks) {
  LoadMatrix load = RandomLoad(1, 16, 8);
  EXPECT_THAT(Rejection(Input(load, 20, 1, 1, 8)), HasSubstr("replicas % ranks != 0"));
}

TEST(ValidatePolicyInput, RejectsRanksNotDividingOverNodesOnlyWhereHierarchical) {
  LoadMatrix load = RandomLoad(1, 16, 9);
  // groups % nodes == 0: hierarchical, so 6 ranks on 4 nodes is an error.
  EXPECT_THAT(Rejection(Input(load, 24, 4, 4, 6)), HasSubstr("ranks % nodes != 0"));
  // groups % nodes != 0: global policy, nodes play no part.
  EXPECT_EQ(Rejection(Input(load, 24, 4, 3, 6)), "");
}

TEST(ValidatePolicyInput, RejectsNonPositiveCounts) {
  LoadMatrix load = RandomLoad(1, 16, 10);
  EXPECT_THAT(Rejection(Input(load, 0, 1, 1, 1)), HasSubstr("--replicas must be positive"));
  EXPECT_THAT(Rejection(Input(load, 16, 0, 1, 1)), HasSubstr("--groups must be positive"));
  EXPECT_THAT(Rejection(Input(load, 16, 1, -2, 1)), HasSubstr("--nodes must be positive"));
  EXPECT_THAT(Rejection(Input(load, 16, 1, 1, 0)), HasSubstr("--ranks must be positive"));
}

TEST(ValidatePolicyInput, RejectsAbsurdSizes) {
  LoadMatrix load = RandomLoad(1, 16, 11);
  EXPECT_THAT(Rejection(Input(load, 2000000000, 1, 1, 1)), HasSubstr("absurd"));
  EXPECT_THAT(Rejection(Input(load, 16 << 17, 1, 1, 16 << 17)), HasSubstr("absurd"));
  // Every dimension fine alone, the product of layers and slots absurd.
  LoadMatrix tall = RandomLoad(4000, 16, 12);
  EXPECT_THAT(Rejection(Input(tall, 1 << 15, 1, 1, 16)), HasSubstr("absurd"));
  // One expert could take every redundant slot: log2phy would not fit.
  LoadMatrix wide = RandomLoad(64, 4096, 13);
  EXPECT_THAT(Rejection(Input(wide, 1 << 19, 1, 1, 64)), HasSubstr("log2phy"));
  // Global policy with more nodes than ranks: a node without a rank.
  EXPECT_THAT(Rejection(Input(load, 16, 1, 8, 4)), HasSubstr("nodes"));
}

TEST(ValidatePolicyInput, RejectsAPreviousPlacementOfAnotherShape) {
  LoadMatrix load = RandomLoad(2, 16, 14);
  Placement other = Placement::Identity(2, 16, 32, 8);
  PolicyInput in = Input(load, 24, 4, 2, 4);
  in.previous = &other;
  EXPECT_THAT(Rejection(in), HasSubstr("previous placement has 2 layers x 16 experts, 32 slots"));
  Placement same = Placement::Identity(2, 16, 24, 4);
  in.previous = &same;
  EXPECT_EQ(Rejection(in), "");
}

TEST(ComputePlacement, ValidatesFirst) {
  auto policy = MakePolicy("deepseek");
  LoadMatrix load = RandomLoad(1, 16, 15);
  EXPECT_THROW(ComputePlacement(*policy, Input(load, 12, 1, 1, 4)), InvalidArgument);
}

TEST(PolicyRegistry, ListsDeepSeekFirstAndRejectsUnknownNames) {
  ASSERT_FALSE(PolicyNames().empty());
  EXPECT_EQ(PolicyNames()[0], "deepseek");
  for (const auto& name : PolicyNames()) EXPECT_EQ(MakePolicy(name)->name(), name);
  try {
    MakePolicy("nope");
    FAIL() << "no exception";
  } catch (const InvalidArgument& e) {
    EXPECT_THAT(e.what(), HasSubstr("unknown policy 'nope'"));
    EXPECT_THAT(e.what(), HasSubstr("deepseek"));
  }
}

// Checks what every placement must satisfy and returns it.
Placement Place(const PolicyInput& in) {
  auto policy = MakePolicy("deepseek");
  Placement p = ComputePlacement(*policy, in);
  p.Validate();
  EXPECT_EQ(p.num_slots, in.num_replicas);
  EXPECT_EQ(p.num_ranks, in.num_ranks);
  for (int l = 0; l < p.num_layers; ++l) {
    int total = 0;
    for (int e = 0; e < p.num_experts; ++e) total += p.replicas(l, e);
    EXPECT_EQ(total, p.num_slots);
  }
  return p;
}

TEST(DeepSeek, AllZeroLayerGetsAValidPlacement) {
  LoadMatrix load = RandomLoad(3, 64, 16);
  for (int e = 0; e < 64; ++e) load.at(1, e) = 0;  // one all-zero layer among others
  Placement p = Place(Input(load, 80, 8, 2, 16));
  EXPECT_DOUBLE_EQ(LayerBalancedness(load, p, 1), 1.0);
  LoadMatrix zeros(2, 64);  // every layer zero, global policy
  Place(Input(zeros, 96, 8, 3, 12));
}

TEST(DeepSeek, IsDeterministic) {
  LoadMatrix load = RandomLoad(5, 256, 17);
  PolicyInput in = Input(load, 288, 8, 4, 32);
  EXPECT_EQ(Place(in), Place(in));
}

TEST(DeepSeek, HierarchicalKeepsAGroupsReplicasOnOneNode) {
  // Hierarchical mode packs whole groups onto nodes and replicates inside
  // the node, so every replica of an expert lives on the node of its group.
  LoadMatrix load = RandomLoad(4, 256, 18);
  for (auto [replicas, nodes, ranks] : {std::tuple{288, 4, 32}, {320, 8, 64}, {288, 2, 16}}) {
    Placement p = Place(Input(load, replicas, 8, nodes, ranks));
    const int ranks_per_node = ranks / nodes, group_size = 256 / 8;
    for (int l = 0; l < p.num_layers; ++l) {
      std::vector<std::set<int>> nodes_of_group(8);
      for (int s = 0; s < p.num_slots; ++s)
        nodes_of_group[p.expert_at(l, s) / group_size].insert(p.rank_of_slot(s) / ranks_per_node);
      for (int g = 0; g < 8; ++g) EXPECT_EQ(nodes_of_group[g].size(), 1u) << "group " << g;
    }
  }
}

TEST(DeepSeek, ReplicationImprovesBalanceOnRealLoads) {
  io::LoadFile file =
      io::ReadLoadFile(test::DataDir() + "/loads/deepseek-v3-prefill_in1024.json");
  Placement p = Place(Input(file.load, 288, 8, 4, 32));
  Placement identity = Placement::Identity(file.load.num_layers, 256, 288, 32);
  EXPECT_GT(ComputeBalancedness(file.load, p).mean,
            ComputeBalancedness(file.load, identity).mean + 0.2);
}

TEST(DeepSeek, OneSlotPerRankAndNoRedundancy) {
  LoadMatrix load = RandomLoad(2, 16, 19);
  Place(Input(load, 16, 4, 2, 16));  // one slot per rank: replica i on rank i
  Place(Input(load, 16, 1, 1, 1));   // everything on one rank
  Place(Input(load, 64, 4, 4, 64));  // 48 redundant slots, one per rank
}

}  // namespace
}  // namespace eplb
