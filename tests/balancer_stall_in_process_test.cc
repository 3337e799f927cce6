// Stalls and fast failures in the balancer's cycle protocol, in one process
// (three Balancers in lockstep threads over the in-process fakes of
// support/in_process_ranks.h, for protocol logic): a rank's cycle thread
// that stalls at an exact point of a cycle is blamed by its peers, and
// itself learns that it was the one left behind; an engine that stops
// stepping makes the cycle fail within deadline + 1 s instead of holding the
// migration thread; a rank whose rebuild fails at once does not give up on
// its peers' next handshake while they still wait out their own deadline.
// The same faults on real processes (SIGSTOP, SIGKILL): balancer_faults_test.cc.
#include <gtest/gtest.h>

#include <atomic>
#include <ostream>
#include <string>
#include <thread>

#include "eplb/balancer.h"
#include "eplb/error.h"
#include "support/in_process_group.h"
#include "support/in_process_ranks.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;
using test::ExpectConsistent;
using test::ExpectRecovered;
using test::RankOutcome;

constexpr int kWorld = test::kInProcessWorld;

// The store, except that one rank's write of its handshake state for one
// cycle waits `pause` first: its cycle thread stalls as it joins.
class StallingStore final : public Store {
 public:
  StallingStore(std::shared_ptr<Store> inner, std::string key, std::chrono::milliseconds pause,
                std::atomic<bool>* stalled)
      : inner_(std::move(inner)), key_(std::move(key)), pause_(pause), stalled_(stalled) {}
  std::string_view kind() const override { return inner_->kind(); }
  void Set(const std::string& key, std::span<const uint8_t> value) override {
    if (key == key_) {
      *stalled_ = true;
      std::this_thread::sleep_for(pause_);
    }
    inner_->Set(key, value);
  }
  std::vector<uint8_t> Get(const std::string& key, Deadline deadline) override { return inner_->Get(key, deadline); }
  std::vector<uint8_t> SetIfAbsent(const std::string& key, std::span<const uint8_t> value) override {
    return inner_->SetIfAbsent(key, value);
  }

 private:
  std::shared_ptr<Store> inner_;
  const std::string key_;
  const std::chrono::milliseconds pause_;
  std::atomic<bool>* stalled_;
};

// The first cycle that failed on a rank.
const CycleReport* FirstFailure(const RankOutcome& r) {
  for (const CycleReport& c : r.cycles)
    if (!c.ok) return &c;
  return nullptr;
}

// Where in the first cycle rank 2 stalls: its n-th call of `op`, or (op
// "handshake") the write of its handshake state.
struct StallPoint {
  const char* name;
  const char* op;
  int64_t n;
};

void PrintTo(const StallPoint& p, std::ostream* os) { *os << "a stall in the " << p.name; }

class StalledRank : public testing::TestWithParam<StallPoint> {};

// Rank 2's cycle thread stalls for 600 ms (deadline 250 ms) at one point of
// the first cycle, as a process stopped by SIGSTOP would. Its peers give up
// on it and blame it; it resumes, finds its peers gone, and -- their notes
// blaming it -- says that it was the one left behind instead of blaming the
// first peer it failed to hear from. Every weight still matches the maps,
// every rank agrees on them, and a later cycle completes everywhere.
TEST_P(StalledRank, IsBlamedByItsPeersAndLearnsItWasLeftBehind) {
  const StallPoint point = GetParam();
  const auto pause = 600ms;
  test::InProcessFabric fabric(kWorld);
  std::atomic<bool> stalled{false};
  test::InProcessRun run;
  run.steps = 1500;
  if (std::string(point.op) == "handshake") {
    run.store_of = [&](int rank, std::shared_ptr<Store> shared) -> std::shared_ptr<Store> {
      if (rank != 2) return shared;
      return std::make_shared<StallingStore>(shared, "balancer/cycle/1/2", pause, &stalled);
    };
  } else {
    fabric.set_stall([&](int rank, const std::string& op, int64_t n) {
      if (rank != 2 || op != point.op || n != point.n) return 0ms;
      stalled = true;
      return std::chrono::duration_cast<std::chrono::milliseconds>(pause);
    });
  }
  const auto out = test::RunRanks(fabric, run);
  ASSERT_TRUE(stalled) << "the stall never happened";
  ExpectConsistent(out);
  for (int r = 0; r < kWorld; ++r) {
    const CycleReport* c = FirstFailure(out[r]);
    ASSERT_NE(c, nullptr) << "rank " << r << " failed no cycle";
    EXPECT_EQ(c->blamed_rank, 2) << "rank " << r << ", stall in the " << point.name << ": " << c->error;
    if (r == 2) {
      EXPECT_NE(c->error.find("this rank was stalled or left behind"), std::string::npos) << c->error;
      EXPECT_NE(c->error.find("blamed rank 2 (this rank)"), std::string::npos) << c->error;
    } else {
      EXPECT_EQ(c->error.find("left behind"), std::string::npos) << "rank " << r << ": " << c->error;
    }
  }
  ExpectRecovered(out, FirstFailure(out[2])->cycle);
}

INSTANTIATE_TEST_SUITE_P(
    AtEveryPointOfACycle, StalledRank,
    testing::Values(StallPoint{"handshake", "handshake", 1}, StallPoint{"load sum", "all_reduce_sum", 1},
                    StallPoint{"stage", "execute", 1}, StallPoint{"staging vote", "all_gather", 1},
                    StallPoint{"commit vote", "all_gather", 2}),
    [](const testing::TestParamInfo<StallPoint>& info) {
      std::string name = info.param.name;
      for (char& ch : name)
        if (ch == ' ') ch = '_';
      return name;
    });

// Every engine stops stepping for 3 s right after the first cycle agreed on
// its first layer's commit step (one engine blocks, the others wait for it
// at their step, as engines do behind a stalled peer), while the migration
// threads go on staging. A thread that needs a staging buffer the engine has
// not yet committed out of gives up after deadline + 1 s, saying the engine
// did not reach the step, instead of waiting for ever; the commits agreed
// before happen when the engines resume, on every rank alike.
TEST(BalancerInProcessStall, AnEngineThatStopsSteppingFailsTheCycleWithinTheEngineBudget) {
  test::InProcessFabric fabric(kWorld);
  std::atomic<bool> block{false}, blocked{false};
  fabric.set_gather_fault(
      [&](int rank, int64_t n) {
        if (rank == 1 && n == 2) block = true;  // the first layer's commit-step vote
        return test::GatherFault::kNone;
      },
      0ms);
  test::InProcessRun run;
  run.layers = 6;
  run.steps = 900;
  run.on_step = [&](int rank, int64_t) {
    if (rank == 1 && block && !blocked.exchange(true)) std::this_thread::sleep_for(3s);
  };
  const auto out = test::RunRanks(fabric, run);
  ASSERT_TRUE(blocked) << "the engine never blocked";
  ExpectConsistent(out);
  const double budget_s = (run.deadline + 1s).count() / 1e3;
  for (int r = 0; r < kWorld; ++r) {
    const CycleReport* c = test::FindCycle(out[r], 1);
    ASSERT_NE(c, nullptr) << "rank " << r;
    EXPECT_FALSE(c->ok) << "rank " << r;
    EXPECT_NE(c->error.find("did not reach step"), std::string::npos) << "rank " << r << ": " << c->error;
    // Failed when the engine budget ran out, well before the engines resumed.
    EXPECT_LT(c->seconds, budget_s + 1.0) << "rank " << r << ": " << c->error;
    // The first layer's commit was agreed before: made once the engines
    // went on (after the report; ExpectConsistent: at the same step everywhere).
    EXPECT_NE(test::FindCommit(out[r], 1, 0), nullptr) << "rank " << r << ": the agreed commit was not made";
  }
  ExpectRecovered(out, 1);
}

// After the first cycle fails everywhere (rank 2's staging vote arrives
// late), the second rebuilds the groups; rank 2's connect fails fast (after
// 100 ms), while its peers wait out the rebuild's rendezvous (2 x deadline)
// for it.
// Rank 2 is back at the handshake long before them; it must not give up on
// them there (its next handshake waits as long as they can still be in the
// failed cycle), so the next cycle runs on every rank and nobody blames a
// healthy rank for missing a handshake.
TEST(BalancerInProcessStall, ARankWhoseRebuildFailsAtOnceWaitsForItsPeersAtTheNextHandshake) {
  test::InProcessFabric fabric(kWorld);
  fabric.set_gather_fault(
      [](int rank, int64_t n) { return rank == 2 && n == 1 ? test::GatherFault::kLate : test::GatherFault::kNone; },
      50ms);
  // 100 ms: fast beside the peers' 500 ms, and late enough that they have
  // started the cycle (a note of rank 2 already there would make them refuse
  // it at once: see the handshake).
  std::atomic<int> rebuilds_refused{0};
  fabric.set_connect_fault([&](int rank, const std::string& group) -> std::optional<std::chrono::milliseconds> {
    if (rank == 2 && group.find("/ctl/c") != std::string::npos && rebuilds_refused++ == 0) return 100ms;
    return std::nullopt;
  });
  test::InProcessRun run;
  run.steps = 2000;
  run.interval = 40;  // triggers much closer together than the peers' lag
  const auto out = test::RunRanks(fabric, run);
  ASSERT_GE(rebuilds_refused.load(), 1) << "no rebuild was refused";
  ExpectConsistent(out);
  // The cycle whose rebuild failed on rank 2.
  int64_t refused = -1;
  for (const CycleReport& c : out[2].cycles)
    if (!c.ok && c.error.find("connect fails after") != std::string::npos) refused = c.cycle;
  ASSERT_GE(refused, 0) << "rank 2 reported no failed rebuild";
  int64_t next = -1;
  for (int r = 0; r < kWorld; ++r) {
    const CycleReport* failed = test::FindCycle(out[r], refused);
    ASSERT_NE(failed, nullptr) << "rank " << r;
    EXPECT_FALSE(failed->ok) << "rank " << r;
    if (r != 2) {
      EXPECT_EQ(failed->blamed_rank, 2) << "rank " << r << ": " << failed->error;
    }
    // The report after it: the next cycle, run and completed by every rank.
    const CycleReport* after = nullptr;
    for (const CycleReport& c : out[r].cycles)
      if (c.cycle > refused) {
        after = &c;
        break;
      }
    ASSERT_NE(after, nullptr) << "rank " << r << " ran no cycle after cycle " << refused;
    EXPECT_TRUE(after->ok) << "rank " << r << ", cycle " << after->cycle << ": " << after->error;
    if (next < 0) next = after->cycle;
    EXPECT_EQ(after->cycle, next) << "rank " << r << " ran another cycle than rank 0";
  }
}

}  // namespace
}  // namespace eplb
