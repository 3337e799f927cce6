// The whole balancer's cycle protocol in one process: three ranks as
// threads, each with its own Balancer over an in-process control group and
// communicator (tests/support/in_process_group.h) and an in-memory store
// (tests/support/in_memory_store.h), both in-process fakes for protocol
// logic. Faults land at exact points -- the n-th vote of a rank arrives
// late, a rank is cut off from its peers at its n-th vote -- so each test
// has one right outcome: who commits what at which step, who is blamed,
// that every weight matches the maps, that the engines keep stepping. The
// same protocol over real processes and real Gloo: balancer_test.cc.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <map>
#include <thread>

#include "eplb/balancer.h"
#include "eplb/error.h"
#include "eplb/migration.h"
#include "support/in_process_group.h"
#include "support/in_process_ranks.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;
using test::GatherFault;

constexpr int kWorld = test::kInProcessWorld;
using test::Commits;
using test::ExpectConsistent;
using test::ExpectRecovered;
using test::FindCommit;
using test::FindCycle;
using test::RankOutcome;
using test::RunRanks;
using Options = test::InProcessRun;

TEST(BalancerInProcess, EveryRankCommitsEveryLayerAtTheSameStep) {
  test::InProcessFabric fabric(kWorld);
  auto out = RunRanks(fabric, Options{});
  ExpectConsistent(out);
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_EQ(out[r].metrics.cycles_failed, 0) << "rank " << r << ": " << out[r].metrics.last_error;
    EXPECT_GE(out[r].metrics.cycles_completed, 3) << "rank " << r;
    EXPECT_GT(out[r].metrics.layers_committed, 0) << "rank " << r;
  }
}

// Rank 2's commit-step vote on the first cycle's first layer (its second
// AllGather) completes on ranks 0 and 1 but not on rank 2. The peers saw
// every vote and record "commit at S"; rank 2 records "abandon", finds the
// commit standing, and commits at S too, then leaves the cycle.
TEST(BalancerInProcess, ACommitVoteLateOnOneRankStillCommitsAtTheSameStepEverywhere) {
  test::InProcessFabric fabric(kWorld);
  fabric.set_gather_fault([](int rank, int64_t n) { return rank == 2 && n == 2 ? GatherFault::kLate : GatherFault::kNone; },
                          50ms);
  auto out = RunRanks(fabric, Options{});
  ExpectConsistent(out);
  const CommitEvent* late = FindCommit(out[2], 1, 0);
  ASSERT_NE(late, nullptr) << "rank 2 did not commit the layer its peers committed";
  EXPECT_FALSE(late->roll_forward);
  const CycleReport* c = FindCycle(out[2], 1);
  ASSERT_NE(c, nullptr);
  EXPECT_FALSE(c->ok);
  ExpectRecovered(out, 1);
}

// Rank 2's staging vote on the first cycle's first layer (its first
// AllGather) completes on ranks 0 and 1 only. They move on to the
// commit-step vote, which rank 2 never joins: they time out naming rank 2,
// and nobody saw both rounds, so the layer is abandoned on every rank.
TEST(BalancerInProcess, AStagingVoteLateOnOneRankAbandonsTheLayerEverywhere) {
  test::InProcessFabric fabric(kWorld);
  fabric.set_gather_fault([](int rank, int64_t n) { return rank == 2 && n == 1 ? GatherFault::kLate : GatherFault::kNone; },
                          50ms);
  auto out = RunRanks(fabric, Options{});
  ExpectConsistent(out);
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_EQ(FindCommit(out[r], 1, 0), nullptr) << "rank " << r << " committed an abandoned layer";
    const CycleReport* c = FindCycle(out[r], 1);
    ASSERT_NE(c, nullptr) << "rank " << r;
    EXPECT_FALSE(c->ok) << "rank " << r;
    EXPECT_EQ(c->layers_committed, 0) << "rank " << r;
    if (r != 2) {
      EXPECT_EQ(c->blamed_rank, 2) << "rank " << r << ": " << c->error;
    }
  }
  ExpectRecovered(out, 1);
}

// Rank 2 is cut off from its peers as it casts its commit-step vote on the
// first cycle's first layer, and comes back 150 steps later. Ranks 0 and 1
// time out naming rank 2, abandon the layer, and keep stepping (a step
// waits for the vote at most deadline + 1 s); once rank 2
// is back a later cycle completes everywhere.
TEST(BalancerInProcess, AVoterCutOffIsBlamedTheOthersKeepSteppingAndTheRunRecovers) {
  test::InProcessFabric fabric(kWorld);
  std::atomic<int64_t> cut_at{-1};
  fabric.set_gather_fault(
      [&](int rank, int64_t n) {
        if (rank == 2 && n == 2) fabric.Cut(2);
        return GatherFault::kNone;
      },
      0ms);
  Options o;
  o.steps = 1500;  // a rebuild the cut rank misses costs its peers 2 x deadline
  o.on_step = [&](int rank, int64_t step) {
    if (rank != 2) return;
    if (cut_at < 0 && fabric.IsCut(2)) cut_at = step;
    if (cut_at >= 0 && step == cut_at + 150) fabric.Cut(2, false);
  };
  auto out = RunRanks(fabric, o);
  ASSERT_GE(cut_at, 0) << "the fault never fired";
  ExpectConsistent(out);
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_EQ(FindCommit(out[r], 1, 0), nullptr) << "rank " << r << " committed an abandoned layer";
    const CycleReport* c = FindCycle(out[r], 1);
    ASSERT_NE(c, nullptr) << "rank " << r;
    EXPECT_FALSE(c->ok) << "rank " << r;
    if (r != 2) {
      EXPECT_EQ(c->blamed_rank, 2) << "rank " << r << ": " << c->error;
      // The engines kept stepping: a step that reached its proposed commit
      // step waits for the agreement (its maps must match the peers'), and
      // at most deadline + 1 s (balancer.h).
      EXPECT_LT(out[r].longest_step_gap_ms, o.deadline.count() + 1000.0) << "rank " << r;
      EXPECT_GE(out[r].metrics.step, o.steps) << "rank " << r;
    }
  }
  ExpectRecovered(out, 1);
}

}  // namespace
}  // namespace eplb
