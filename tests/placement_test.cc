#include "eplb/placement.h"

#include <gtest/gtest.h>

#include "eplb/error.h"

namespace eplb {
namespace {

TEST(Placement, DerivesReplicaCountsAndSlots) {
  // 2 ranks x 3 slots, 4 experts; expert 1 replicated on both ranks.
  Placement p = Placement::FromPhy2Log(1, 4, 2, {0, 1, 2, 1, 3, 1});
  EXPECT_EQ(p.num_slots, 6);
  EXPECT_EQ(p.slots_per_rank(), 3);
  EXPECT_EQ(p.replicas(0, 1), 3);
  EXPECT_EQ(p.max_replicas, 3);
  EXPECT_EQ(p.log2phy[1 * 3 + 0], 1);
  EXPECT_EQ(p.log2phy[1 * 3 + 1], 3);
  EXPECT_EQ(p.log2phy[1 * 3 + 2], 5);
  EXPECT_EQ(p.log2phy[0 * 3 + 1], -1);
}

TEST(Placement, RejectsMissingExpert) {
  EXPECT_THROW(Placement::FromPhy2Log(1, 4, 2, {0, 1, 2, 1, 1, 1}), InvalidArgument);
}

TEST(Balancedness, ReplicaCarriesItsShare) {
  LoadMatrix load(1, 4);
  load.at(0, 0) = 1;
  load.at(0, 1) = 6;
  load.at(0, 2) = 1;
  load.at(0, 3) = 4;
  // rank0: 1 + 2 + 1 = 4; rank1: 2 + 4 + 2 = 8 -> mean 6 / max 8
  Placement p = Placement::FromPhy2Log(1, 4, 2, {0, 1, 2, 1, 3, 1});
  EXPECT_DOUBLE_EQ(LayerBalancedness(load, p, 0), 0.75);
  LoadMatrix zero(1, 4);
  EXPECT_DOUBLE_EQ(LayerBalancedness(zero, p, 0), 1.0);
}

}  // namespace
}  // namespace eplb
