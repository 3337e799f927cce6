// Property tests of the transfer plan over many random placements with
// redundancy: applying the plan to fingerprinted weights gives exactly the new
// placement, sends and receives match, nothing crosses the wire needlessly.
#include "eplb/transfer_plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <set>

#include "eplb/error.h"

namespace eplb {
namespace {

constexpr int kBytes = 24;  // bytes of one expert in the simulation

// The content of expert e of layer l: bytes no other expert has.
std::vector<uint8_t> Fingerprint(int layer, int expert) {
  std::vector<uint8_t> v(kBytes);
  uint64_t x = 0x9E3779B97F4A7C15ull * (static_cast<uint64_t>(layer) * 1000003 + expert + 1);
  for (int i = 0; i < kBytes; ++i) {
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    v[i] = static_cast<uint8_t>(x >> 56);
  }
  return v;
}

// A random placement of one layer: every expert at least once, the rest of
// the slots random experts (so a rank may hold an expert twice), shuffled.
std::vector<int32_t> RandomLayer(std::mt19937& rng, int num_experts, int num_slots) {
  std::vector<int32_t> p(num_slots);
  for (int s = 0; s < num_slots; ++s)
    p[s] = s < num_experts ? s : std::uniform_int_distribution<int>(0, num_experts - 1)(rng);
  std::shuffle(p.begin(), p.end(), rng);
  return p;
}

// A new placement that changes a few slots of the old one (swaps and
// re-pointed redundant slots), like a rebalance with slot preservation.
std::vector<int32_t> Perturb(std::mt19937& rng, std::vector<int32_t> p, int num_experts) {
  const int n = static_cast<int>(p.size());
  int changes = std::uniform_int_distribution<int>(1, std::max(1, n / 4))(rng);
  for (int i = 0; i < changes; ++i) {
    int a = std::uniform_int_distribution<int>(0, n - 1)(rng);
    int b = std::uniform_int_distribution<int>(0, n - 1)(rng);
    std::swap(p[a], p[b]);
  }
  // Re-point slots whose expert has another replica.
  std::vector<int> count(num_experts, 0);
  for (int e : p) ++count[e];
  for (int i = 0; i < changes; ++i) {
    int a = std::uniform_int_distribution<int>(0, n - 1)(rng);
    if (count[p[a]] > 1) {
      --count[p[a]];
      p[a] = std::uniform_int_distribution<int>(0, num_experts - 1)(rng);
      ++count[p[a]];
    }
  }
  return p;
}

struct Shape {
  int num_ranks, slots_per_rank, num_experts, ranks_per_node;
};

// Runs the plan on simulated ranks the way the migration executor does:
// receives into staging, local copies from the weights in use, duplicates
// from staging, then commit of the changed slots. Checks each step reads
// what it should, and returns the weights after the migration.
std::vector<std::vector<uint8_t>> Apply(const LayerPlan& plan, std::span<const int32_t> old_p,
                                        int layer) {
  const int n = static_cast<int>(old_p.size());
  std::vector<std::vector<uint8_t>> weights(n), staging(n);
  for (int s = 0; s < n; ++s) weights[s] = Fingerprint(layer, old_p[s]);
  for (int r = 0; r < plan.num_ranks; ++r) {
    for (const WireMove& m : plan.ReceivesOf(r)) {
      EXPECT_EQ(m.src_slot / plan.slots_per_rank, m.src_rank);
      EXPECT_EQ(old_p[m.src_slot], m.expert) << "sender's old slot holds another expert";
      staging[m.dst_slot] = weights[m.src_slot];
    }
  }
  for (int r = 0; r < plan.num_ranks; ++r) {
    for (const SlotFill& f : plan.LocalOf(r)) {
      EXPECT_EQ(f.src_slot / plan.slots_per_rank, r) << "local work reads another rank";
      if (f.action == SlotAction::kLocalCopy) {
        staging[f.slot] = weights[f.src_slot];
      } else {
        EXPECT_EQ(f.action, SlotAction::kDuplicate);
        EXPECT_EQ(plan.fills[f.src_slot].action, SlotAction::kReceive);
        EXPECT_FALSE(staging[f.src_slot].empty()) << "duplicate of a slot not yet received";
        staging[f.slot] = staging[f.src_slot];
      }
    }
  }
  for (const SlotFill& f : plan.fills)
    if (f.action != SlotAction::kKeep) weights[f.slot] = staging[f.slot];
  return weights;
}

void CheckPlan(const LayerPlan& plan, std::span<const int32_t> old_p,
               std::span<const int32_t> new_p, const Shape& shape, int layer) {
  const int R = static_cast<int>(old_p.size());
  const int spr = shape.slots_per_rank;
  const int per_node = shape.ranks_per_node > 0 ? shape.ranks_per_node : shape.num_ranks;
  auto rank_has = [&](std::span<const int32_t> p, int r, int e) {
    for (int s = r * spr; s < (r + 1) * spr; ++s)
      if (p[s] == e) return true;
    return false;
  };

  // 1. Applying the plan gives exactly the new placement.
  auto after = Apply(plan, old_p, layer);
  for (int s = 0; s < R; ++s)
    ASSERT_EQ(after[s], Fingerprint(layer, new_p[s])) << "slot " << s << " after migration";

  // 2. Every send has its receive, and the views partition the wire moves.
  std::multiset<std::tuple<int, int, int, int, int>> sends, receives;
  for (int r = 0; r < shape.num_ranks; ++r) {
    for (const WireMove& m : plan.SendsOf(r)) {
      EXPECT_EQ(m.src_rank, r);
      sends.insert({m.expert, m.src_rank, m.src_slot, m.dst_rank, m.dst_slot});
    }
    for (const WireMove& m : plan.ReceivesOf(r)) {
      EXPECT_EQ(m.dst_rank, r);
      EXPECT_EQ(m.dst_slot / spr, r);
      receives.insert({m.expert, m.src_rank, m.src_slot, m.dst_rank, m.dst_slot});
    }
  }
  EXPECT_EQ(sends, receives);
  EXPECT_EQ(sends.size(), plan.wire.size());

  // 3. No expert crosses to a rank that already had it; at most once per
  //    receiving rank; the number of wire moves is the least possible.
  std::set<std::pair<int, int>> arrived;
  for (const WireMove& m : plan.wire) {
    EXPECT_NE(m.src_rank, m.dst_rank);
    EXPECT_FALSE(rank_has(old_p, m.dst_rank, m.expert))
        << "expert " << m.expert << " sent to rank " << m.dst_rank << " which holds it";
    EXPECT_TRUE(arrived.insert({m.dst_rank, m.expert}).second)
        << "expert " << m.expert << " crosses to rank " << m.dst_rank << " twice";
    EXPECT_EQ(plan.fills[m.dst_slot].action, SlotAction::kReceive);
    EXPECT_EQ(plan.fills[m.dst_slot].src_rank, m.src_rank);
    EXPECT_EQ(plan.fills[m.dst_slot].src_slot, m.src_slot);
  }
  size_t needed = 0;
  for (int r = 0; r < shape.num_ranks; ++r) {
    std::set<int> missing;
    for (int s = r * spr; s < (r + 1) * spr; ++s)
      if (!rank_has(old_p, r, new_p[s])) missing.insert(new_p[s]);
    needed += missing.size();
  }
  EXPECT_EQ(plan.wire.size(), needed);

  // 4. Same-node preference: a holder on the receiver's node sends when there is one.
  for (const WireMove& m : plan.wire) {
    bool node_has = false;
    for (int h = 0; h < shape.num_ranks; ++h)
      if (h / per_node == m.dst_rank / per_node && rank_has(old_p, h, m.expert)) node_has = true;
    if (node_has) {
      EXPECT_EQ(m.src_rank / per_node, m.dst_rank / per_node)
          << "expert " << m.expert << " to rank " << m.dst_rank << " from another node";
    }
  }

  // 5. Slot actions are what the placements say; counts add up.
  RankTraffic sum;
  for (int r = 0; r < shape.num_ranks; ++r) {
    const RankTraffic& t = plan.per_rank[r];
    EXPECT_EQ(t.kept + t.slots_changed(), spr);
    EXPECT_EQ(t.bytes_sent, static_cast<uint64_t>(t.experts_sent) * plan.bytes_per_expert);
    EXPECT_EQ(t.bytes_received, static_cast<uint64_t>(t.experts_received) * plan.bytes_per_expert);
    sum += t;
  }
  EXPECT_EQ(sum, plan.total);
  EXPECT_EQ(plan.total.experts_sent, static_cast<int>(plan.wire.size()));
  EXPECT_EQ(plan.total.experts_received, static_cast<int>(plan.wire.size()));
  for (const SlotFill& f : plan.fills) {
    EXPECT_EQ(f.expert, new_p[f.slot]);
    EXPECT_EQ(f.action == SlotAction::kKeep, old_p[f.slot] == new_p[f.slot]);
    if (f.action == SlotAction::kLocalCopy) {
      EXPECT_EQ(old_p[f.src_slot], f.expert);
    }
  }
}

std::vector<Shape> Shapes() {
  return {
      {1, 8, 5, 0},  {2, 4, 6, 0},  {2, 5, 7, 1},    {4, 3, 9, 2},  {4, 4, 16, 0},   {4, 6, 16, 2},
      {8, 4, 24, 4}, {8, 5, 32, 2}, {16, 9, 128, 8}, {6, 4, 20, 3}, {32, 9, 256, 8}, {3, 3, 9, 0},
  };
}

TEST(TransferPlan, RandomRebalancesGiveTheNewPlacement) {
  std::mt19937 rng(12345);
  int planned = 0;
  for (const Shape& shape : Shapes()) {
    const int R = shape.num_ranks * shape.slots_per_rank;
    for (int trial = 0; trial < 40; ++trial) {
      auto old_p = RandomLayer(rng, shape.num_experts, R);
      auto new_p = trial % 2 == 0 ? RandomLayer(rng, shape.num_experts, R)
                                  : Perturb(rng, old_p, shape.num_experts);
      PlanOptions opt{shape.ranks_per_node, 4096};
      LayerPlan plan = PlanLayer(old_p, new_p, shape.num_ranks, trial, opt);
      SCOPED_TRACE(testing::Message()
                   << "ranks " << shape.num_ranks << " slots/rank " << shape.slots_per_rank
                   << " experts " << shape.num_experts << " trial " << trial);
      CheckPlan(plan, old_p, new_p, shape, trial);
      // Deterministic: every rank computes the same plan.
      LayerPlan again = PlanLayer(old_p, new_p, shape.num_ranks, trial, opt);
      EXPECT_EQ(again.wire, plan.wire);
      ++planned;
    }
  }
  EXPECT_GT(planned, 400);
}

TEST(TransferPlan, IdenticalPlacementsSendNothing) {
  std::mt19937 rng(7);
  for (const Shape& shape : Shapes()) {
    const int R = shape.num_ranks * shape.slots_per_rank;
    auto p = RandomLayer(rng, shape.num_experts, R);
    LayerPlan plan = PlanLayer(p, p, shape.num_ranks, 0, {shape.ranks_per_node, 100});
    EXPECT_TRUE(plan.unchanged());
    EXPECT_TRUE(plan.wire.empty());
    EXPECT_EQ(plan.total.bytes_sent, 0u);
    EXPECT_EQ(plan.total.kept, R);
    for (int r = 0; r < shape.num_ranks; ++r) EXPECT_TRUE(plan.LocalOf(r).empty());
    CheckPlan(plan, p, p, shape, 0);
  }
}

// Every rank's experts are replaced by ones it does not hold: everything
// moves, and the senders are spread.
TEST(TransferPlan, AllExpertsMoving) {
  for (int ranks : {2, 3, 4, 8}) {
    for (int spr : {1, 2, 5}) {
      const int E = ranks * spr, R = E;
      std::vector<int32_t> old_p(R), new_p(R);
      for (int s = 0; s < R; ++s) {
        old_p[s] = s;
        new_p[s] = (s + spr) % E;  // each rank takes the next rank's experts
      }
      Shape shape{ranks, spr, E, 0};
      LayerPlan plan = PlanLayer(old_p, new_p, ranks, 0, {0, 10});
      CheckPlan(plan, old_p, new_p, shape, 0);
      EXPECT_EQ(plan.total.experts_received, R);
      EXPECT_EQ(plan.total.bytes_received, static_cast<uint64_t>(R) * 10);
      for (int r = 0; r < ranks; ++r) {
        EXPECT_EQ(plan.per_rank[r].experts_sent, spr);
        EXPECT_EQ(plan.per_rank[r].experts_received, spr);
      }
    }
  }
}

TEST(TransferPlan, DuplicatesCrossTheWireOnce) {
  // 2 ranks x 4 slots. Rank 1 gets expert 0 three times: one receive, two duplicates.
  std::vector<int32_t> old_p{0, 1, 2, 3, 4, 5, 1, 2};
  std::vector<int32_t> new_p{0, 1, 2, 3, 0, 0, 5, 0};
  LayerPlan plan = PlanLayer(old_p, new_p, 2, 3, {0, 8});
  ASSERT_EQ(plan.wire.size(), 1u);
  EXPECT_EQ(plan.wire[0], (WireMove{0, 0, 0, 1, 4}));
  EXPECT_EQ(plan.fills[5].action, SlotAction::kDuplicate);
  EXPECT_EQ(plan.fills[5].src_slot, 4);
  EXPECT_EQ(plan.fills[7].action, SlotAction::kDuplicate);
  EXPECT_EQ(plan.fills[7].src_slot, 4);
  EXPECT_EQ(plan.fills[6].action, SlotAction::kLocalCopy);  // 5 was in slot 5
  EXPECT_EQ(plan.fills[6].src_slot, 5);
  EXPECT_EQ(plan.per_rank[1].duplicates, 2);
  EXPECT_EQ(plan.per_rank[1].local_copies, 1);
  EXPECT_EQ(plan.per_rank[0].bytes_sent, 8u);
  EXPECT_EQ(plan.total.slots_changed(), 4);
  auto local = plan.LocalOf(1);
  ASSERT_EQ(local.size(), 3u);
  EXPECT_EQ(local[0].action, SlotAction::kLocalCopy);  // copies before duplicates
  EXPECT_TRUE(plan.LocalOf(0).empty());
}

TEST(TransferPlan, ReceiversSpreadOverHolders) {
  // 6 ranks x 2 slots. Expert 0 is held by ranks 0 and 1; ranks 2..5 need it:
  // each holder sends it twice. (The new placement drops experts 4, 6, 8, 10:
  // covering every expert is the policy's business, not the plan's.)
  std::vector<int32_t> old_p{0, 1, 0, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  std::vector<int32_t> new_p{0, 1, 0, 2, 3, 0, 5, 0, 7, 0, 9, 0};
  LayerPlan plan = PlanLayer(old_p, new_p, 6, 0, {0, 1});
  CheckPlan(plan, old_p, new_p, Shape{6, 2, 11, 0}, 0);
  std::map<int, int> sent;
  for (const WireMove& m : plan.wire) ++sent[m.src_rank];
  EXPECT_EQ(plan.wire.size(), 4u);
  EXPECT_EQ(sent[0], 2);
  EXPECT_EQ(sent[1], 2);
}

TEST(TransferPlan, PrefersSameNode) {
  // 4 ranks x 2 slots, 2 ranks per node. Expert 0 is on ranks 0 and 2; ranks
  // 1 and 3 need it: rank 1 takes it from rank 0 (its node), rank 3 from rank 2.
  std::vector<int32_t> old_p{0, 1, 2, 3, 0, 4, 5, 6};
  std::vector<int32_t> new_p{0, 1, 0, 2, 0, 4, 0, 3};
  for (int rpn : {2, 0}) {
    LayerPlan plan = PlanLayer(old_p, new_p, 4, 0, {rpn, 1});
    CheckPlan(plan, old_p, new_p, Shape{4, 2, 7, rpn}, 0);
    std::map<int, int> from;
    for (const WireMove& m : plan.wire)
      if (m.expert == 0) from[m.dst_rank] = m.src_rank;
    if (rpn == 2) {
      EXPECT_EQ(from[1], 0);
      EXPECT_EQ(from[3], 2);
    } else {
      // One node: the ring tie-break picks the holder after the receiver, so
      // the node preference above is what made rank 1 read from rank 0.
      EXPECT_EQ(from[1], 2);
      EXPECT_EQ(from[3], 0);
    }
  }
}

TEST(TransferPlan, MultiLayerPlanIsPerLayer) {
  Placement a = Placement::Identity(3, 6, 8, 2);
  Placement b = a;
  std::swap(b.layer_phy2log(1)[2], b.layer_phy2log(1)[4]);  // experts 2 <-> 4 across ranks
  b.Derive();
  auto plans = PlanMigration(a, b, {0, 64});
  ASSERT_EQ(plans.size(), 3u);
  EXPECT_TRUE(plans[0].unchanged());
  EXPECT_TRUE(plans[2].unchanged());
  EXPECT_EQ(plans[1].layer, 1);
  EXPECT_EQ(plans[1].total.experts_received, 2);
  EXPECT_EQ(plans[1].total.bytes_received, 128u);
}

TEST(TransferPlan, RejectsMismatchedPlacements) {
  std::vector<int32_t> a{0, 1, 2, 3}, b{0, 1, 2};
  EXPECT_THROW(PlanLayer(a, b, 2, 0, {}), InvalidArgument);
  EXPECT_THROW(PlanLayer(a, a, 3, 0, {}), InvalidArgument);
  std::vector<int32_t> c{0, 1, 2, 4};  // expert 4 held by nobody before
  try {
    PlanLayer(a, c, 2, 5, {});
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("layer 5"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("expert 4"), std::string::npos) << e.what();
  }
  Placement p = Placement::Identity(1, 4, 4, 2), q = Placement::Identity(1, 4, 4, 4);
  EXPECT_THROW(PlanLayer(p, q, 0, {}), InvalidArgument);
  EXPECT_THROW(PlanLayer(p, p, 1, {}), InvalidArgument);
}

TEST(TransferPlan, WireTransfersPerTensor) {
  std::vector<int32_t> old_p{0, 1, 2, 3, 4, 5};
  std::vector<int32_t> new_p{0, 4, 2, 3, 1, 5};  // 3 ranks x 2 slots: 1 <-> 4
  LayerPlan plan = PlanLayer(old_p, new_p, 3, 0, {0, 30});
  ASSERT_EQ(plan.wire.size(), 2u);
  // Two tensors: 10 and 20 bytes per expert; weights regions 0 and 1, staging
  // region 2 laid out [tensor][local slot].
  std::vector<WireTensor> tensors{{10, 0, 0, 10, 2, 0, 10}, {20, 1, 0, 20, 2, 20, 20}};
  auto t = WireTransfers(plan, tensors);
  ASSERT_EQ(t.size(), 4u);
  // slot 1 (rank 0, local 1) receives expert 4 from rank 2 slot 4 (local 0).
  EXPECT_EQ(t[0].src_rank, 2);
  EXPECT_EQ(t[0].dst_rank, 0);
  EXPECT_EQ(t[0].src_region, 0);
  EXPECT_EQ(t[0].src_offset, 0u);
  EXPECT_EQ(t[0].dst_region, 2);
  EXPECT_EQ(t[0].dst_offset, 10u);
  EXPECT_EQ(t[0].bytes, 10u);
  EXPECT_EQ(t[1].src_region, 1);
  EXPECT_EQ(t[1].dst_offset, 40u);
  EXPECT_EQ(t[1].bytes, 20u);
  // slot 4 (rank 2, local 0) receives expert 1 from rank 0 slot 1 (local 1).
  EXPECT_EQ(t[2].src_rank, 0);
  EXPECT_EQ(t[2].src_offset, 10u);
  EXPECT_EQ(t[2].dst_rank, 2);
  EXPECT_EQ(t[2].dst_offset, 0u);
  EXPECT_EQ(t[3].src_offset, 20u);
  EXPECT_EQ(t[3].dst_offset, 20u);
}

}  // namespace
}  // namespace eplb
