// The balancer's cycle protocol in one process: the handshake's rule over
// every rank's state (ResolveHandshake: roll forward, drop, a stale version,
// diverging layers) and the handshake's store round (HandshakeRound: the
// cycle every rank joined, a rank that joins a later one), over an
// in-memory store (tests/support/in_memory_store.h, an in-process fake for
// protocol logic). The whole balancer with real processes and real Gloo is
// tested in balancer_test.cc.
#include <gtest/gtest.h>

#include <thread>

#include "eplb/error.h"
#include "runtime/balancer_resolve.h"
#include "runtime/handshake_round.h"
#include "support/in_memory_store.h"

namespace eplb::balancer_internal {
namespace {

using namespace std::chrono_literals;

constexpr int kLayers = 3;

// A rank's state at a handshake: every layer at version 0 holding placement
// hash 100 + layer, nothing in doubt.
RankState Settled(int rank) {
  RankState s;
  s.rank = rank;
  s.label = "init";
  s.versions.assign(kLayers, 0);
  for (int l = 0; l < kLayers; ++l) s.hashes.push_back(100 + l);
  return s;
}

// `s` committed layer l (version + 1), now holding `hash`.
void Commit(RankState& s, int l, uint64_t hash) {
  ++s.versions[l];
  s.hashes[l] = hash;
}

// `s` staged layer l as `hash` and does not know whether it was committed.
void InDoubt(RankState& s, int l, uint64_t hash) {
  s.doubt_layer = l;
  s.doubt_version = s.versions[l] + 1;
  s.doubt_hash = hash;
}

TEST(BalancerResolve, EqualStatesAgreeWithNothingInDoubt) {
  std::vector<RankState> states = {Settled(0), Settled(1), Settled(2)};
  for (int me = 0; me < 3; ++me) EXPECT_EQ(ResolveHandshake(states, me, kLayers), DoubtOutcome::kNone);
}

TEST(BalancerResolve, ALayerAPeerCommittedRollsForward) {
  // Rank 0 committed layer 1 as placement 7; rank 1 staged the same and was
  // left in doubt (its vote failed); rank 2 committed it too.
  std::vector<RankState> states = {Settled(0), Settled(1), Settled(2)};
  Commit(states[0], 1, 7);
  InDoubt(states[1], 1, 7);
  Commit(states[2], 1, 7);
  EXPECT_EQ(ResolveHandshake(states, 1, kLayers), DoubtOutcome::kRollForward);
  EXPECT_EQ(ResolveHandshake(states, 0, kLayers), DoubtOutcome::kNone);
}

TEST(BalancerResolve, ALayerNobodyCommittedIsDropped) {
  std::vector<RankState> states = {Settled(0), Settled(1)};
  InDoubt(states[0], 2, 9);
  InDoubt(states[1], 2, 9);
  EXPECT_EQ(ResolveHandshake(states, 0, kLayers), DoubtOutcome::kDrop);
  EXPECT_EQ(ResolveHandshake(states, 1, kLayers), DoubtOutcome::kDrop);
}

TEST(BalancerResolve, AStaleVersionWithNothingStagedNamesTheRank) {
  std::vector<RankState> states = {Settled(0), Settled(1), Settled(2)};
  Commit(states[0], 0, 5);
  Commit(states[1], 0, 5);  // rank 2 missed the commit and has nothing staged
  try {
    ResolveHandshake(states, 0, kLayers);
    FAIL() << "a stale version was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.peer(), 2);
    EXPECT_EQ(e.rank(), 0);
    EXPECT_EQ(e.operation(), "handshake");
  }
}

TEST(BalancerResolve, AStagedLayerOfAnotherVersionDoesNotCatchUp) {
  // Rank 1 is two versions behind: what it staged is not what was committed last.
  std::vector<RankState> states = {Settled(0), Settled(1)};
  Commit(states[0], 1, 7);
  Commit(states[0], 1, 8);
  InDoubt(states[1], 1, 7);
  try {
    ResolveHandshake(states, 1, kLayers);
    FAIL() << "a rank two versions behind rolled forward";
  } catch (const Error& e) {
    EXPECT_EQ(e.peer(), 1);
  }
}

TEST(BalancerResolve, DivergingLayersNameTheRankThatDiffers) {
  std::vector<RankState> states = {Settled(0), Settled(1), Settled(2)};
  states[2].hashes[1] = 55;  // same version, another placement
  try {
    ResolveHandshake(states, 1, kLayers);
    FAIL() << "diverging placements were accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.peer(), 2);
    EXPECT_EQ(e.rank(), 1);
  }
}

TEST(BalancerResolve, ARollForwardToAnotherPlacementIsRefused) {
  // The layer in doubt would become another placement than the one committed.
  std::vector<RankState> states = {Settled(0), Settled(1)};
  Commit(states[0], 0, 7);
  InDoubt(states[1], 0, 8);
  try {
    ResolveHandshake(states, 0, kLayers);
    FAIL() << "a roll forward to another placement was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.peer(), 1);
  }
}

// ---- the store round ----------------------------------------------------------

Deadline Soon() { return DeadlineAfter(1ms); }

TEST(HandshakeRound, EveryRankJoiningACycleCompletesIt) {
  test::InMemoryStore store;
  HandshakeRound r0(store, "b", 0, 2, kLayers), r1(store, "b", 1, 2, kLayers);
  r0.Join(1, Settled(0));
  EXPECT_FALSE(r0.Poll(Soon()));
  EXPECT_EQ(r0.MissingFromLast(), std::vector<int>{1});
  r1.Join(1, Settled(1));
  for (HandshakeRound* r : {&r0, &r1}) {
    auto done = r->Poll(Soon());
    ASSERT_TRUE(done);
    EXPECT_EQ(done->cycle, 1);
    ASSERT_EQ(done->states.size(), 2u);
    EXPECT_EQ(done->states[0].rank, 0);
    EXPECT_EQ(done->states[1].rank, 1);
    EXPECT_EQ(done->states[1].cycle, 1);
  }
}

TEST(HandshakeRound, ARankBusyPastATriggerMeetsTheOthersAtTheNextCycle) {
  // Rank 1 is still busy when cycle 1 is triggered; ranks 0 and 2 join
  // cycle 1 and, at the next trigger, cycle 2 too. Rank 1 then joins only
  // cycle 2: every rank runs cycle 2.
  test::InMemoryStore store;
  HandshakeRound r0(store, "b", 0, 3, kLayers), r1(store, "b", 1, 3, kLayers),
      r2(store, "b", 2, 3, kLayers);
  r0.Join(1, Settled(0));
  r2.Join(1, Settled(2));
  EXPECT_FALSE(r0.Poll(Soon()));
  r0.Join(2, Settled(0));
  r2.Join(2, Settled(2));
  EXPECT_FALSE(r2.Poll(Soon()));
  EXPECT_EQ(r2.MissingFromLast(), std::vector<int>{1});
  r1.Join(2, Settled(1));
  for (HandshakeRound* r : {&r0, &r1, &r2}) {
    auto done = r->Poll(Soon());
    ASSERT_TRUE(done);
    EXPECT_EQ(done->cycle, 2);
  }
  EXPECT_EQ(r0.joins(), 2u);
  EXPECT_EQ(r1.joins(), 1u);
}

TEST(HandshakeRound, TheRankThatJoinedNoCycleIsTheOneMissingNotTheOneATriggerBehind) {
  // Rank 0 joined cycles 1 and 2, rank 1 only cycle 1 (a trigger behind),
  // rank 2 none (stalled): missing from the last cycle are ranks 1 and 2,
  // but only rank 2 is missing from every cycle joined.
  test::InMemoryStore store;
  HandshakeRound r0(store, "b", 0, 3, kLayers), r1(store, "b", 1, 3, kLayers);
  r0.Join(1, Settled(0));
  r1.Join(1, Settled(1));
  r0.Join(2, Settled(0));
  EXPECT_FALSE(r0.Poll(Soon()));
  EXPECT_EQ(r0.MissingFromLast(), (std::vector<int>{1, 2}));
  EXPECT_EQ(r0.MissingFromAll(), std::vector<int>{2});
}

TEST(HandshakeRound, TheSmallestCycleEveryRankJoinedIsRun) {
  // Rank 0 moved on to cycle 2 before rank 1 joined cycle 1: cycle 1 is
  // complete, so both run it (and cycle 2's join is dropped on both).
  test::InMemoryStore store;
  HandshakeRound r0(store, "b", 0, 2, kLayers), r1(store, "b", 1, 2, kLayers);
  r0.Join(1, Settled(0));
  r0.Join(2, Settled(0));
  r1.Join(1, Settled(1));
  for (HandshakeRound* r : {&r0, &r1}) {
    auto done = r->Poll(Soon());
    ASSERT_TRUE(done);
    EXPECT_EQ(done->cycle, 1);
  }
}

TEST(HandshakeRound, AStateOfAnotherShapeIsAnErrorNamingItsRank) {
  test::InMemoryStore store;
  HandshakeRound r0(store, "b", 0, 2, kLayers), r1(store, "b", 1, 2, kLayers + 1);
  RankState wide = Settled(1);
  wide.versions.push_back(0);
  wide.hashes.push_back(0);
  r1.Join(1, wide);
  r0.Join(1, Settled(0));
  try {
    r0.Poll(Soon());
    FAIL() << "a state of another shape was read";
  } catch (const Error& e) {
    EXPECT_EQ(e.peer(), 1);
  }
}

TEST(HandshakeRound, AJoinWaitsForALateRankWithinTheReadDeadline) {
  test::InMemoryStore store;
  HandshakeRound r0(store, "b", 0, 2, kLayers);
  r0.Join(1, Settled(0));
  std::thread late([&] {
    std::this_thread::sleep_for(20ms);
    HandshakeRound r1(store, "b", 1, 2, kLayers);
    r1.Join(1, Settled(1));
  });
  auto done = r0.Poll(DeadlineAfter(5s));
  late.join();
  ASSERT_TRUE(done);
  EXPECT_EQ(done->cycle, 1);
}

}  // namespace
}  // namespace eplb::balancer_internal
