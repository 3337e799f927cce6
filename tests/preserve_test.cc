// Slot preservation: properties over random placements, and through
// ComputePlacement with a previous placement.
#include "policy/preserve.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>

#include "eplb/error.h"
#include "eplb/policy.h"

namespace eplb {
namespace {

// A random valid placement: every expert once, the rest random, shuffled.
Placement RandomPlacement(int layers, int experts, int slots, int ranks, std::mt19937& rng) {
  std::vector<int32_t> phy2log;
  std::uniform_int_distribution<int> any(0, experts - 1);
  // Few distinct hot experts, so duplicates on a rank are common.
  std::uniform_int_distribution<int> hot(0, std::min(experts, 4) - 1);
  for (int l = 0; l < layers; ++l) {
    std::vector<int32_t> row;
    for (int e = 0; e < experts; ++e) row.push_back(e);
    while (static_cast<int>(row.size()) < slots) row.push_back(rng() % 2 ? hot(rng) : any(rng));
    std::shuffle(row.begin(), row.end(), rng);
    phy2log.insert(phy2log.end(), row.begin(), row.end());
  }
  return Placement::FromPhy2Log(layers, experts, ranks, std::move(phy2log));
}

std::map<int, int> Multiset(const Placement& p, int layer, int rank) {
  std::map<int, int> m;
  for (int s = rank * p.slots_per_rank(); s < (rank + 1) * p.slots_per_rank(); ++s)
    ++m[p.expert_at(layer, s)];
  return m;
}

// The two properties: the same experts on every rank; an expert that stays
// on a rank keeps as many of its old slots as it has copies there.
void ExpectPreserved(const Placement& previous, const Placement& next, const Placement& out) {
  out.Validate();
  for (int l = 0; l < next.num_layers; ++l) {
    for (int r = 0; r < next.num_ranks; ++r) {
      ASSERT_EQ(Multiset(out, l, r), Multiset(next, l, r)) << "layer " << l << " rank " << r;
      std::map<int, int> old_count = Multiset(previous, l, r), new_count = Multiset(next, l, r);
      std::map<int, int> kept;
      for (int s = r * out.slots_per_rank(); s < (r + 1) * out.slots_per_rank(); ++s)
        if (out.expert_at(l, s) == previous.expert_at(l, s)) ++kept[out.expert_at(l, s)];
      for (auto [e, n] : new_count)
        EXPECT_EQ(kept[e], std::min(n, old_count[e]))
            << "layer " << l << " rank " << r << " expert " << e << " moved slot";
    }
  }
}

TEST(PreserveSlots, RandomPlacementsKeepMultisetsAndSlots) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int ranks = 1 + rng() % 8, per_rank = 1 + rng() % 6;
    const int slots = ranks * per_rank;
    const int experts = 1 + rng() % slots;
    const int layers = 1 + rng() % 3;
    Placement previous = RandomPlacement(layers, experts, slots, ranks, rng);
    Placement next = RandomPlacement(layers, experts, slots, ranks, rng);
    Placement out = PreserveSlots(previous, next);
    ExpectPreserved(previous, next, out);
    if (testing::Test::HasFailure()) return;
  }
}

TEST(PreserveSlots, KeepsAPlacementThatDidNotChange) {
  std::mt19937 rng(8);
  Placement p = RandomPlacement(3, 16, 32, 4, rng);
  EXPECT_EQ(PreserveSlots(p, p), p);
}

TEST(PreserveSlots, ExampleStayersKeepSlotsArrivalsFillTheRest) {
  // One layer, two ranks of three slots.
  Placement previous = Placement::FromPhy2Log(1, 5, 2, {0, 1, 2, 3, 4, 0});
  Placement next = Placement::FromPhy2Log(1, 5, 2, {2, 4, 1, 0, 3, 0});
  Placement out = PreserveSlots(previous, next);
  // Rank 0: 1 and 2 stay in slots 1 and 2; 4 arrives in the freed slot 0.
  // Rank 1: 3 and 0 stay in slots 3 and 5; the second 0 takes slot 4.
  EXPECT_EQ(std::vector<int32_t>(out.phy2log.begin(), out.phy2log.end()),
            (std::vector<int32_t>{4, 1, 2, 3, 0, 0}));
  EXPECT_EQ(out.replicas(0, 0), 2);
}

TEST(PreserveSlots, RejectsPlacementsOfDifferentShapes) {
  std::mt19937 rng(9);
  Placement a = RandomPlacement(2, 8, 16, 4, rng);
  Placement b = RandomPlacement(2, 8, 16, 8, rng);
  EXPECT_THROW(PreserveSlots(a, b), InvalidArgument);
  Placement c = RandomPlacement(3, 8, 16, 4, rng);
  EXPECT_THROW(PreserveSlots(a, c), InvalidArgument);
}

TEST(PreserveSlots, ComputePlacementPreservesAgainstThePrevious) {
  // Two load windows of the same model: the second placement, computed with
  // the first as previous, has the policy's balance and moves nothing extra.
  std::mt19937 rng(10);
  std::uniform_int_distribution<int> tokens(0, 50000);
  LoadMatrix first(4, 64), second(4, 64);
  for (double& v : first.values) v = tokens(rng);
  for (size_t i = 0; i < second.values.size(); ++i)
    second.values[i] = first.values[i] * (0.8 + 0.4 * (rng() % 100) / 100.0);
  auto policy = MakePolicy("deepseek");
  PolicyInput in;
  in.num_replicas = 80;
  in.num_groups = 8;
  in.num_nodes = 2;
  in.num_ranks = 16;
  in.load = &first;
  Placement previous = ComputePlacement(*policy, in);
  in.load = &second;
  Placement fresh = ComputePlacement(*policy, in);
  in.previous = &previous;
  Placement preserved = ComputePlacement(*policy, in);
  ExpectPreserved(previous, fresh, preserved);
  // Same experts per rank: the same balance, up to the order of summation.
  Balancedness a = ComputeBalancedness(second, preserved), b = ComputeBalancedness(second, fresh);
  for (int l = 0; l < 4; ++l) EXPECT_NEAR(a.per_layer[l], b.per_layer[l], 1e-12);
  int kept = 0, kept_fresh = 0;
  for (size_t s = 0; s < previous.phy2log.size(); ++s) {
    kept += preserved.phy2log[s] == previous.phy2log[s];
    kept_fresh += fresh.phy2log[s] == previous.phy2log[s];
  }
  EXPECT_GE(kept, kept_fresh);
}

}  // namespace
}  // namespace eplb
