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

#include "demo/fingerprint.h"
#include "demo/synthetic_load.h"
#include "eplb/balancer.h"
#include "eplb/error.h"
#include "eplb/migration.h"
#include "support/in_memory_store.h"
#include "support/in_process_group.h"
#include "util/mutex.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;
using test::GatherFault;

constexpr int kWorld = 3;
constexpr int kLayers = 3;
constexpr int kExperts = 8;
constexpr int kSlotsPerRank = 4;
constexpr uint64_t kExpertBytes = 4096;

struct Options {
  int steps = 500;
  int interval = 100;
  int first = 40;
  std::chrono::milliseconds deadline{250};
  std::chrono::microseconds step_period{500};
};

struct RankOutcome {
  int mismatches = 0;
  std::vector<CommitEvent> commits;
  std::vector<CycleReport> cycles;
  BalancerMetrics metrics;
  std::vector<int32_t> phy2log;
  double longest_step_gap_ms = 0;  // wall time between two Step() calls
  std::string error;  // what the rank's thread threw, if anything
};

// The engines step in lockstep, as an engine's ranks do (every step's
// all-to-all waits for every rank): each rank arrives after its Step() and
// leaves when every rank has; the run ends at the first step after which
// every rank says it is done.
class StepBarrier {
 public:
  explicit StepBarrier(int n) : n_(n) {}
  // Returns whether every rank passed done = true at this step; throws
  // TimeoutError when a rank does not arrive by `deadline`.
  bool Arrive(bool done, Deadline deadline) {
    util::MutexLock lock(&mu_);
    const int64_t gen = gen_;
    all_done_now_ &= done;
    if (++arrived_ == n_) {
      last_all_done_ = all_done_now_;
      all_done_now_ = true;
      arrived_ = 0;
      ++gen_;
      cv_.NotifyAll();
      return last_all_done_;
    }
    while (gen_ == gen)
      if (!cv_.WaitUntil(&mu_, deadline) && gen_ == gen)
        throw TimeoutError("test", "engine step barrier", "a rank's engine did not finish its step");
    return last_all_done_;
  }

 private:
  const int n_;
  util::Mutex mu_;
  util::CondVar cv_;
  int arrived_ GUARDED_BY(mu_) = 0;
  int64_t gen_ GUARDED_BY(mu_) = 0;
  bool all_done_now_ GUARDED_BY(mu_) = true;
  bool last_all_done_ GUARDED_BY(mu_) = false;
};

// Runs every rank's engine loop in its own thread, in lockstep, until
// `o.steps` steps and every balancer idle. `on_step(rank, step)` runs before
// each step.
std::vector<RankOutcome> RunRanks(test::InProcessFabric& fabric, const Options& o,
                                  std::function<void(int, int64_t)> on_step = {}) {
  auto store = std::make_shared<test::InMemoryStore>();
  StepBarrier barrier(kWorld);
  std::vector<RankOutcome> out(kWorld);
  auto rank_main = [&](int me) {
    RankOutcome& res = out[me];
    BalancerLinks links;
    links.store = store;
    links.rank = me;
    links.world_size = kWorld;
    links.make_communicator = [&fabric, me](const std::string& g, Deadline) { return fabric.MakeCommunicator(g, me); };
    links.make_control_group = [&fabric, me](const std::string& g, Deadline) { return fabric.MakeControlGroup(g, me); };
    links.make_copier = [] { return MakeHostCopier(); };
    links.selection = {"in_process", "an in-process fake for protocol tests"};

    const int slots = kSlotsPerRank * kWorld;
    Placement initial = Placement::Identity(kLayers, kExperts, slots, kWorld);
    std::vector<std::vector<uint8_t>> storage(kLayers, std::vector<uint8_t>(kExpertBytes * kSlotsPerRank));
    std::vector<LayerWeights> weights(kLayers);
    for (int l = 0; l < kLayers; ++l) {
      weights[l].tensors.push_back(
          {MemoryRegion{storage[l].data(), storage[l].size(), MemoryKind::kHost, -1}, kExpertBytes, 0});
      for (int i = 0; i < kSlotsPerRank; ++i)
        runtime::FillFingerprint(storage[l].data() + kExpertBytes * i, kExpertBytes, l,
                                 initial.expert_at(l, me * kSlotsPerRank + i), 0);
    }
    BalancerConfig cfg;
    cfg.num_layers = kLayers;
    cfg.num_experts = kExperts;
    cfg.num_slots = slots;
    cfg.mode = BalancerMode::kAsync;
    cfg.window_steps = 40;
    cfg.step_interval = o.interval;
    cfg.first_rebalance_step = o.first;
    cfg.last_rebalance_step = o.steps;
    cfg.deadline = o.deadline;
    cfg.connect_timeout = 5s;
    cfg.policy_threads = 1;
    Balancer balancer(links, weights, cfg, initial);
    auto verify = [&](int l) {
      const auto p = balancer.placement();
      for (int i = 0; i < kSlotsPerRank; ++i)
        if (runtime::FindFingerprintMismatch(storage[l].data() + kExpertBytes * i, kExpertBytes, l,
                                             p->expert_at(l, me * kSlotsPerRank + i), 0) >= 0)
          ++res.mismatches;
    };
    balancer.set_on_commit([&](const CommitEvent& e) {
      res.commits.push_back(e);
      verify(e.layer);
    });
    balancer.set_on_cycle([&](const CycleReport& r) {
      res.cycles.push_back(r);
      for (int l = 0; l < kLayers; ++l) verify(l);
    });

    SyntheticLoadOptions lo;
    lo.num_layers = kLayers;
    lo.num_experts = kExperts;
    lo.skew = 1.5;
    lo.tokens_per_step = 1024;
    lo.drift_period_steps = 30;
    SyntheticLoad load(lo);
    std::vector<int64_t> counts(kExperts);
    auto last = Clock::now();
    int64_t step = 0;
    const int64_t limit = o.steps + 5000;
    for (bool done = false; !done && step < limit;) {
      // A step's own time, after whatever the previous step waited: an engine
      // that paused does not catch up by racing through steps.
      std::this_thread::sleep_for(o.step_period);
      if (on_step) on_step(me, step);
      for (int l = 0; l < kLayers; ++l) {
        load.Counts(step, me, l, counts);
        balancer.RecordLoad(l, counts);
      }
      balancer.Step();
      const auto now = Clock::now();
      res.longest_step_gap_ms =
          std::max(res.longest_step_gap_ms, std::chrono::duration<double, std::milli>(now - last).count());
      last = now;
      ++step;
      done = barrier.Arrive(step >= o.steps && balancer.idle(), DeadlineAfter(10s));
    }
    for (int l = 0; l < kLayers; ++l) verify(l);
    res.metrics = balancer.metrics();
    res.phy2log = balancer.placement()->phy2log;
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < kWorld; ++r)
    threads.emplace_back([&, r] {
      try {
        rank_main(r);
      } catch (const std::exception& e) {
        out[r].error = e.what();
      }
    });
  for (auto& t : threads) t.join();
  return out;
}

// (cycle, layer) -> step, every commit of a rank.
std::map<std::pair<int64_t, int>, int64_t> Commits(const RankOutcome& r) {
  std::map<std::pair<int64_t, int>, int64_t> m;
  for (const CommitEvent& e : r.commits) m[{e.cycle, e.layer}] = e.step;
  return m;
}

const CommitEvent* FindCommit(const RankOutcome& r, int64_t cycle, int layer) {
  for (const CommitEvent& e : r.commits)
    if (e.cycle == cycle && e.layer == layer) return &e;
  return nullptr;
}

const CycleReport* FindCycle(const RankOutcome& r, int64_t cycle) {
  for (const CycleReport& c : r.cycles)
    if (c.cycle == cycle) return &c;
  return nullptr;
}

// Every rank holds what its maps say, all ranks end on the same maps, and
// every layer was committed at the same step everywhere.
void ExpectConsistent(const std::vector<RankOutcome>& out) {
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_EQ(out[r].error, "") << "rank " << r;
    EXPECT_EQ(out[r].mismatches, 0) << "rank " << r;
    EXPECT_EQ(out[r].phy2log, out[0].phy2log) << "rank " << r;
    EXPECT_EQ(Commits(out[r]), Commits(out[0])) << "rank " << r;
  }
}

// A cycle after `cycle` completed on every rank and committed something.
void ExpectRecovered(const std::vector<RankOutcome>& out, int64_t cycle) {
  for (int r = 0; r < kWorld; ++r) {
    bool recovered = false;
    for (const CycleReport& c : out[r].cycles) recovered |= c.ok && c.cycle > cycle && c.layers_committed > 0;
    EXPECT_TRUE(recovered) << "rank " << r << " completed no cycle after cycle " << cycle;
  }
}

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
  o.steps = 700;
  auto out = RunRanks(fabric, o, [&](int rank, int64_t step) {
    if (rank != 2) return;
    if (cut_at < 0 && fabric.IsCut(2)) cut_at = step;
    if (cut_at >= 0 && step == cut_at + 150) fabric.Cut(2, false);
  });
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
