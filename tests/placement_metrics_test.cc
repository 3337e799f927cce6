// Locality (locality.h), wire transfers (transfer_count.h) and policy sequences
// (sequence.h) on placements small enough to check by hand.
#include <gtest/gtest.h>

#include "eplb/error.h"
#include "core/locality.h"
#include "core/transfer_count.h"
#include "eplb/placement.h"
#include "eplb/policy.h"
#include "policy/sequence.h"
#include "eplb/transfer_plan.h"

namespace eplb {
namespace {

// 8 experts in 2 groups ({0..3}, {4..7}); 4 ranks x 3 slots on 2 nodes.
LoadMatrix EightExperts() {
  LoadMatrix load(1, 8);
  const double v[] = {4, 2, 1, 1, 8, 1, 1, 2};
  for (int e = 0; e < 8; ++e) load.at(0, e) = v[e];
  return load;
}

TEST(Locality, GroupsKeptOnOneNodeScoreOne) {
  // node 0 = ranks 0,1 = slots 0..5 hold group 0 (+ a copy of 0 and 1);
  // node 1 = ranks 2,3 = slots 6..11 hold group 1 (+ copies of 4).
  Placement p = Placement::FromPhy2Log(1, 8, 4, {0, 1, 2, 3, 0, 1, 4, 5, 6, 7, 4, 4});
  Locality loc = ComputeLocality(EightExperts(), p, 2, 2);
  EXPECT_DOUBLE_EQ(loc.home_share, 1.0);
  EXPECT_DOUBLE_EQ(loc.nodes_per_group, 1.0);
}

TEST(Locality, ReplicaAwayFromHomeServesItsShareThere) {
  // Node 0 holds {0, 1, 2, 3, 0, 4}, node 1 {4, 5, 6, 7, 1, 2}. Expert 4
  // (load 8) serves 4 on each node; experts 1 and 2 half on each.
  // Group 0 serves 4 + 1 + 0.5 + 1 = 6.5 on node 0 (home) and 1.5 on node 1;
  // group 1 serves 4 on node 0 and 4 + 1 + 1 + 2 = 8 on node 1 (home).
  Placement p = Placement::FromPhy2Log(1, 8, 4, {0, 1, 2, 3, 0, 4, 4, 5, 6, 7, 1, 2});
  Locality loc = ComputeLocality(EightExperts(), p, 2, 2);
  EXPECT_DOUBLE_EQ(loc.home_share, (6.5 + 8) / 20.0);
  // Group 0: experts 1 and 2 have replicas on node 1 too -> 2 nodes; group 1: 2.
  EXPECT_DOUBLE_EQ(loc.nodes_per_group, 2.0);
  EXPECT_THROW(ComputeLocality(EightExperts(), p, 3, 2), InvalidArgument);
  EXPECT_THROW(ComputeLocality(EightExperts(), p, 2, 3), InvalidArgument);
}

TEST(Transfers, CountExpertsARankGains) {
  Placement before = Placement::FromPhy2Log(1, 4, 2, {0, 1, 2, 3, 0, 1});
  // Same multiset per rank, other slots: nothing moves.
  Placement shuffled = Placement::FromPhy2Log(1, 4, 2, {2, 0, 1, 1, 3, 0});
  EXPECT_EQ(CountTransfers(before, shuffled), 0);
  // Rank 0 gains 3 (sent), rank 1 gains a second copy of 1 (local): 1 transfer.
  Placement after = Placement::FromPhy2Log(1, 4, 2, {0, 3, 2, 1, 1, 3});
  // rank 0 {0,3,2}: 3 is new; rank 1 {1,1,3}: nothing new.
  EXPECT_EQ(CountTransfers(before, after), 1);
  EXPECT_EQ(CountTransfersPerLayer(before, after), std::vector<int64_t>({1}));
  Placement other = Placement::FromPhy2Log(1, 4, 3, {0, 1, 2, 3, 0, 1});
  EXPECT_THROW(CountTransfers(before, other), InvalidArgument);
}

TEST(Transfers, EqualTheWireMovesOfTheTransferPlan) {
  // Two placements of skewed loads: the count is what the migration plan
  // sends over the wire (transfer_plan.h), layer by layer.
  LoadMatrix a(3, 16), b(3, 16);
  for (int l = 0; l < 3; ++l)
    for (int e = 0; e < 16; ++e) {
      a.at(l, e) = (e * 7 + l * 3) % 11 + (e == l ? 40 : 1);
      b.at(l, e) = (e * 5 + l) % 13 + (e == 15 - l ? 50 : 1);
    }
  auto policy = MakePolicy("balanced");
  PolicyInput in;
  in.num_replicas = 24;
  in.num_groups = 4;
  in.num_nodes = 2;
  in.num_ranks = 4;
  in.load = &a;
  Placement before = ComputePlacement(*policy, in);
  in.load = &b;
  in.previous = &before;
  Placement after = ComputePlacement(*MakePolicy("deepseek"), in);
  const std::vector<int64_t> counts = CountTransfersPerLayer(before, after);
  const std::vector<LayerPlan> plan = PlanMigration(before, after, PlanOptions{});
  ASSERT_EQ(plan.size(), 3u);
  int64_t total = 0;
  for (int l = 0; l < 3; ++l) {
    EXPECT_EQ(counts[l], plan[l].total.experts_received) << "layer " << l;
    total += counts[l];
  }
  EXPECT_GT(total, 0);
}

TEST(Sequence, ChainsPlacementsAndCountsTransfers) {
  LoadMatrix a = EightExperts();
  LoadMatrix b = EightExperts();
  b.at(0, 0) = 9;  // expert 0 becomes the hot one
  std::vector<LoadMatrix> loads = {a, b, b};
  SequenceShape shape{12, 2, 2, 4};
  auto policy = MakePolicy("deepseek");
  SequenceRun run = RunSequence(*policy, loads, shape);
  ASSERT_EQ(run.steps.size(), 3u);
  EXPECT_EQ(run.steps[0].transfers, 0);
  EXPECT_EQ(run.steps[1].transfers, CountTransfers(run.placements[0], run.placements[1]));
  EXPECT_EQ(run.steps[2].transfers, 0);  // same load, deterministic policy, preserved slots
  EXPECT_EQ(run.total_transfers, run.steps[1].transfers);
  EXPECT_DOUBLE_EQ(run.steps[1].balancedness, ComputeBalancedness(b, run.placements[1]).mean);
  Placement start = Placement::Identity(1, 8, 12, 4);
  SequenceRun from_identity = RunSequence(*policy, loads, shape, &start);
  EXPECT_EQ(from_identity.steps[0].transfers, CountTransfers(start, from_identity.placements[0]));
  EXPECT_THROW(RunSequence(*policy, std::vector<LoadMatrix>{}, shape), InvalidArgument);
}

}  // namespace
}  // namespace eplb
