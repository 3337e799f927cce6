// The plan's locality: CountNodeTraffic on a hand-made case, and on the
// measured DeepSeek-V3 loads (data/loads, replayed as the online balancer
// runs them) a plan that prefers senders on the receiver's node sends fewer
// bytes between nodes than one that ignores nodes, layer by layer never more,
// while moving the same experts in all.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "eplb/placement.h"
#include "eplb/policy.h"
#include "policy/sequence.h"
#include "eplb/transfer_plan.h"
#include "io/files.h"
#include "support/paths.h"

namespace eplb {
namespace {

TEST(NodeTraffic, CountsMovesWithinAndBetweenNodes) {
  // 4 ranks x 2 slots, 2 ranks per node. Expert 0 is on ranks 0 and 2;
  // ranks 1 and 3 need it, and rank 3 needs expert 3, held by rank 1 only.
  std::vector<int32_t> old_p{0, 1, 2, 3, 0, 4, 5, 6};
  std::vector<int32_t> new_p{0, 1, 0, 2, 0, 4, 0, 3};
  LayerPlan aware = PlanLayer(old_p, new_p, 4, 0, {2, 100});
  NodeTraffic a = CountNodeTraffic(aware, 2);
  EXPECT_EQ(a.experts_within_nodes, 2);   // expert 0: 0 -> 1 and 2 -> 3
  EXPECT_EQ(a.experts_between_nodes, 1);  // expert 3: 1 -> 3, no holder on rank 3's node
  EXPECT_EQ(a.bytes_within_nodes, 200u);
  EXPECT_EQ(a.bytes_between_nodes, 100u);
  // Senders chosen ignoring nodes (the ring tie-break): expert 0 crosses.
  NodeTraffic b = CountNodeTraffic(PlanLayer(old_p, new_p, 4, 0, {0, 100}), 2);
  EXPECT_EQ(b.experts_between_nodes, 3);
  EXPECT_EQ(b.experts_within_nodes, 0);
  // One node: nothing is between nodes.
  EXPECT_EQ(CountNodeTraffic(aware, 0).experts_between_nodes, 0);
  EXPECT_EQ(CountNodeTraffic(aware, 4).experts_between_nodes, 0);
  EXPECT_EQ(CountNodeTraffic(aware, 0).bytes_within_nodes, aware.total.bytes_received);
}

std::vector<LoadMatrix> DeepSeekLoads() {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(test::DataDir() + "/loads")) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("deepseek-v3-", 0) == 0 && entry.path().extension() == ".json")
      files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  std::vector<LoadMatrix> loads;
  for (const auto& f : files) loads.push_back(io::ReadLoadFile(f).load);
  return loads;
}

struct Totals {
  uint64_t moved = 0, between_aware = 0, between_blind = 0;
};

// Replays the loads through `policy` on `shape` (each window's placement,
// with slot preservation, follows the one in force) and plans every
// rebalance after the first both ways (the first starts from the identity
// placement, which no engine keeps for long).
Totals Replay(const std::vector<LoadMatrix>& loads, const SequenceShape& shape, const char* policy) {
  const int rpn = shape.num_ranks / shape.num_nodes;
  const Placement identity =
      Placement::Identity(loads[0].num_layers, loads[0].num_experts, shape.num_replicas, shape.num_ranks);
  auto p = MakePolicy(policy);
  SequenceRun run = RunSequence(*p, loads, shape, &identity);
  Totals t;
  for (size_t k = 1; k < loads.size(); ++k) {
    const Placement& before = run.placements[k - 1];
    const auto aware = PlanMigration(before, run.placements[k], {rpn, 1 << 20});
    const auto blind = PlanMigration(before, run.placements[k], {0, 1 << 20});
    for (size_t l = 0; l < aware.size(); ++l) {
      const NodeTraffic a = CountNodeTraffic(aware[l], rpn), b = CountNodeTraffic(blind[l], rpn);
      // The sender choice is all that differs: the same experts arrive.
      EXPECT_EQ(aware[l].total.bytes_received, blind[l].total.bytes_received) << "window " << k << " layer " << l;
      EXPECT_EQ(a.bytes_within_nodes + a.bytes_between_nodes, aware[l].total.bytes_received);
      EXPECT_EQ(b.bytes_within_nodes + b.bytes_between_nodes, blind[l].total.bytes_received);
      // A move crosses nodes with the node preference only when no holder
      // is on the receiver's node, and then it crosses whatever the choice.
      EXPECT_LE(a.bytes_between_nodes, b.bytes_between_nodes) << "window " << k << " layer " << l;
      t.moved += a.bytes_within_nodes + a.bytes_between_nodes;
      t.between_aware += a.bytes_between_nodes;
      t.between_blind += b.bytes_between_nodes;
    }
  }
  return t;
}

TEST(NodeTraffic, LocalityAwarePlanSendsFewerBytesBetweenNodesOnMeasuredLoads) {
  const std::vector<LoadMatrix> loads = DeepSeekLoads();
  ASSERT_GE(loads.size(), 6u) << "data/loads should hold the DeepSeek-V3 loads";
  struct Case {
    SequenceShape shape;
    const char* policy;
  };
  // DeepSeek's policy without groups (global: replicas land on any node)
  // at EP32 on 4 nodes; the locality policy at EP32 on 4 nodes, EP64 on 8
  // and the demo's 2 hosts x 2 ranks. (DeepSeek's hierarchical policy keeps
  // a group's experts on one node, so all holders of an expert that moves
  // are on one node and the choice of sender cannot matter there.)
  const Case cases[] = {{{288, 1, 4, 32}, "deepseek"},
                        {{288, 8, 4, 32}, "locality"},
                        {{320, 8, 8, 64}, "locality"},
                        {{288, 8, 2, 4}, "locality"}};
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << c.shape.num_replicas << " slots, " << c.shape.num_ranks << " ranks on "
                                    << c.shape.num_nodes << " nodes, " << c.shape.num_groups << " groups");
    const Totals t = Replay(loads, c.shape, c.policy);
    ASSERT_GT(t.moved, 0u);
    EXPECT_GT(t.between_blind, 0u);
    EXPECT_LT(t.between_aware, t.between_blind);
  }
}

}  // namespace
}  // namespace eplb
