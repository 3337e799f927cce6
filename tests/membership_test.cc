// Membership changes in the pure layer: the next membership, the placement
// for it, the plan in the union space (a lost rank is never read and its
// experts with no other replica come from the weight source; a leaving rank
// sends its experts before it goes; a joining rank receives), executed here
// on plain arrays and checked slot by slot, and routing around a lost rank.
#include "eplb/membership.h"

#include <gtest/gtest.h>

#include <random>
#include <set>

#include "eplb/error.h"

namespace eplb {
namespace {

constexpr int kLayers = 4;
constexpr int kExperts = 16;
constexpr int kSpr = 6;  // slots per rank

LoadMatrix SkewedLoad(uint32_t seed) {
  std::mt19937 rng(seed);
  LoadMatrix load(kLayers, kExperts);
  for (int l = 0; l < kLayers; ++l)
    for (int e = 0; e < kExperts; ++e) load.at(l, e) = 1 + std::uniform_int_distribution<int>(0, 10)(rng) * (e % 5 == 0 ? 20 : 1);
  return load;
}

PolicyInput Input(const LoadMatrix& load, int ranks) {
  PolicyInput in;
  in.load = &load;
  in.num_replicas = ranks * kSpr;
  in.num_ranks = ranks;
  return in;
}

// Runs the plan on arrays: what each union slot holds afterwards (-1 for
// slots out of service), reading only what the plan may read.
std::vector<int32_t> Execute(const LayerPlan& plan, const std::vector<int32_t>& old_row,
                             const MembershipChange& c, int* from_source) {
  std::vector<int32_t> out(old_row.size(), -1);
  auto rank_of = [&](int slot) { return slot / c.slots_per_rank; };
  // Receives and the weight source first, then local work (duplicates copy
  // from a slot filled by either), as the migration executor orders them.
  for (const SlotFill& f : plan.fills) {
    switch (f.action) {
      case SlotAction::kKeep:
        out[f.slot] = old_row[f.slot];
        break;
      case SlotAction::kLocalCopy:
        EXPECT_EQ(rank_of(f.src_slot), rank_of(f.slot));
        out[f.slot] = old_row[f.src_slot];
        break;
      case SlotAction::kReceive:
        EXPECT_FALSE(c.unreadable[f.src_rank]) << "read from lost rank " << c.union_ranks[f.src_rank];
        EXPECT_EQ(rank_of(f.src_slot), f.src_rank);
        out[f.slot] = old_row[f.src_slot];
        break;
      case SlotAction::kFromSource:
        out[f.slot] = f.expert;
        ++*from_source;
        break;
      case SlotAction::kDuplicate:
      case SlotAction::kIdle:
        break;
    }
  }
  for (const SlotFill& f : plan.fills)
    if (f.action == SlotAction::kDuplicate) out[f.slot] = out[f.src_slot];
  return out;
}

struct Changed {
  MembershipChange change;
  Placement in_force, next;
  std::vector<LayerPlan> plans;
  int from_source = 0;
};

// Places for `before`, changes to `after`, plans every layer, runs the plans
// and checks every new member's slots hold what the new placement says.
Changed Change(const Membership& before, const Membership& after, std::vector<int> lost) {
  Changed x;
  const LoadMatrix old_load = SkewedLoad(1), new_load = SkewedLoad(2);
  auto policy = MakePolicy("deepseek");
  x.in_force = ComputePlacement(*policy, Input(old_load, before.size()));
  x.change = DescribeChange(before, after, lost, kSpr);
  x.next = PlaceForMembership(*policy, Input(new_load, after.size()), x.change, x.in_force);
  EXPECT_EQ(x.next.num_ranks, after.size());
  x.next.Validate();
  for (int l = 0; l < kLayers; ++l) {
    LayerPlan plan = PlanMembershipLayer(x.change, x.in_force, x.next, l, PlanOptions{0, 1000});
    const auto got = Execute(plan, UnionOld(x.change, x.in_force, l), x.change, &x.from_source);
    const auto want = UnionNew(x.change, x.next, l);
    EXPECT_EQ(got, want) << "layer " << l;
    for (const WireMove& m : plan.wire) {
      EXPECT_FALSE(x.change.unreadable[m.src_rank]);
      EXPECT_TRUE(after.contains(x.change.union_ranks[m.dst_rank]));
    }
    x.plans.push_back(std::move(plan));
  }
  return x;
}

TEST(Membership, NextMembershipAndItsChecks) {
  Membership m = Membership::All(4);
  EXPECT_EQ(m.Describe(), "4 ranks (0, 1, 2, 3), generation 0");
  std::vector<int> lost{2}, none, join{5};
  Membership n = NextMembership(m, lost, none, none, 6);
  EXPECT_EQ(n.ranks, (std::vector<int>{0, 1, 3}));
  EXPECT_EQ(n.generation, 1);
  EXPECT_EQ(n.index_of(3), 2);
  EXPECT_EQ(n.index_of(2), -1);
  n = NextMembership(n, none, none, join, 6);
  EXPECT_EQ(n.ranks, (std::vector<int>{0, 1, 3, 5}));
  EXPECT_THROW(NextMembership(n, lost, none, none, 6), InvalidArgument);  // 2 is gone already
  std::vector<int> again{3};
  EXPECT_THROW(NextMembership(n, none, none, again, 6), InvalidArgument);
  std::vector<int> outside{6};
  EXPECT_THROW(NextMembership(n, none, none, outside, 6), InvalidArgument);
  std::vector<int> everyone{0, 1, 3, 5};
  EXPECT_THROW(NextMembership(n, none, everyone, none, 6), InvalidArgument);
  Membership bad{0, {1, 1}};
  EXPECT_THROW(bad.Validate(4), InvalidArgument);
}

TEST(Membership, ALostRankIsNeverReadAndItsOnlyExpertsComeFromTheSource) {
  Membership before = Membership::All(4);
  std::vector<int> lost{2}, none;
  Membership after = NextMembership(before, lost, none, none, 4);
  Changed x = Change(before, after, lost);
  // The experts whose every replica was on rank 2 are exactly those filled
  // from the source, once per rank that needs them.
  int only_on_lost = 0;
  for (int l = 0; l < kLayers; ++l) {
    std::set<int> elsewhere, on_lost;
    for (int s = 0; s < x.in_force.num_slots; ++s)
      (x.in_force.rank_of_slot(s) == 2 ? on_lost : elsewhere).insert(x.in_force.expert_at(l, s));
    for (int e : on_lost) only_on_lost += !elsewhere.count(e);
    for (const SlotFill& f : x.plans[l].fills) {
      if (f.action == SlotAction::kFromSource) {
        EXPECT_FALSE(elsewhere.count(f.expert)) << "layer " << l;
      }
      if (x.change.union_ranks[f.slot / kSpr] == 2) {
        EXPECT_EQ(f.action, SlotAction::kIdle);
      }
    }
  }
  EXPECT_GT(only_on_lost, 0) << "the test should lose some expert's every replica";
  EXPECT_GE(x.from_source, only_on_lost);
  // Slot preservation: continuing members keep much of what they hold.
  int kept = 0;
  for (const LayerPlan& p : x.plans) kept += p.total.kept;
  EXPECT_GT(kept, 0);
}

TEST(Membership, ALeavingRankSendsItsExpertsBeforeItGoes) {
  Membership before = Membership::All(4);
  std::vector<int> leaving{1}, none;
  Membership after = NextMembership(before, none, leaving, none, 4);
  Changed x = Change(before, after, none);
  EXPECT_EQ(x.from_source, 0) << "every expert has a readable replica";
  int sent_by_leaver = 0;
  for (const LayerPlan& p : x.plans) sent_by_leaver += p.per_rank[x.change.union_index(1)].experts_sent;
  EXPECT_GT(sent_by_leaver, 0);
}

TEST(Membership, AJoiningRankReceivesEveryExpertItServes) {
  Membership before{3, {0, 1, 3}};
  std::vector<int> joining{2}, none;
  Membership after = NextMembership(before, none, none, joining, 4);
  Changed x = Change(before, after, none);
  EXPECT_EQ(x.from_source, 0);
  const int j = x.change.union_index(2);
  for (const LayerPlan& p : x.plans) {
    EXPECT_EQ(p.per_rank[j].kept, 0);
    EXPECT_EQ(p.per_rank[j].experts_received + p.per_rank[j].duplicates, kSpr);
  }
}

TEST(Membership, TwoChangesInARow) {
  Membership a = Membership::All(4);
  std::vector<int> lost{0}, joining{0}, none;
  Membership b = NextMembership(a, lost, none, none, 4);
  Changed first = Change(a, b, lost);
  Membership c = NextMembership(b, none, none, joining, 4);
  // The rank that comes back holds nothing: it joins like a new process.
  Changed second = Change(b, c, none);
  EXPECT_EQ(second.from_source, 0);
  EXPECT_EQ(c.generation, 2);
}

TEST(Membership, RoutingAroundALostRankNamesOnlyLiveSlots) {
  const LoadMatrix load = SkewedLoad(3);
  Placement p = ComputePlacement(*MakePolicy("deepseek"), Input(load, 4));
  Membership m = Membership::All(4);
  std::vector<int> lost{1};
  LiveRouting r = RouteAroundLost(p, m, lost);
  std::set<std::pair<int, int>> unreachable(r.unreachable.begin(), r.unreachable.end());
  for (int l = 0; l < kLayers; ++l)
    for (int e = 0; e < kExperts; ++e) {
      int live = 0;
      for (int s = 0; s < p.num_slots; ++s) live += p.expert_at(l, s) == e && p.rank_of_slot(s) != 1;
      const size_t cell = static_cast<size_t>(l) * kExperts + e;
      EXPECT_EQ(r.logcnt[cell], live);
      EXPECT_EQ(unreachable.count({l, e}) == 1, live == 0);
      for (int k = 0; k < r.max_replicas; ++k) {
        const int s = r.log2phy[cell * r.max_replicas + k];
        if (k < live) {
          EXPECT_EQ(p.expert_at(l, s), e);
          EXPECT_NE(p.rank_of_slot(s), 1);
        } else {
          EXPECT_EQ(s, -1);
        }
      }
    }
}

TEST(Membership, PlanRefusesWhatItCannotDo) {
  const std::vector<int32_t> old_row{0, 1, 2, 3}, new_row{1, 0, 3, 2};
  const PlanOptions o;
  PlanSources src;
  src.unreadable = {0, 1};
  // Rank 1 cannot be read, yet its new slots hold experts.
  EXPECT_THROW(PlanLayer(old_row, new_row, 2, 0, o, src), InvalidArgument);
  // Experts 2 and 3 were only on rank 1: without the source, refused.
  const std::vector<int32_t> out_of_service{2, 3, -1, -1};
  EXPECT_THROW(PlanLayer(old_row, out_of_service, 2, 0, o, src), InvalidArgument);
  src.from_source = true;
  LayerPlan plan = PlanLayer(old_row, out_of_service, 2, 0, o, src);
  EXPECT_EQ(plan.per_rank[0].from_source, 2);
  EXPECT_EQ(plan.fills[2].action, SlotAction::kIdle);
  EXPECT_TRUE(plan.wire.empty());
  src.unreadable = {0};
  EXPECT_THROW(PlanLayer(old_row, new_row, 2, 0, o, src), InvalidArgument);  // wrong length
}

}  // namespace
}  // namespace eplb
