#include "support/in_process_ranks.h"

#include <gtest/gtest.h>

#include <thread>

#include "demo/fingerprint.h"
#include "demo/synthetic_load.h"
#include "eplb/error.h"
#include "eplb/migration.h"
#include "support/in_memory_store.h"
#include "util/mutex.h"

namespace eplb::test {
namespace {

using namespace std::chrono_literals;

constexpr int kWorld = kInProcessWorld;
constexpr int kExperts = 8;
constexpr int kSlotsPerRank = 4;
constexpr uint64_t kExpertBytes = 4096;

// The engines' lockstep: each rank arrives after its Step() and leaves when
// every rank has; the run ends at the first step after which every rank says
// it is done.
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

}  // namespace

std::vector<RankOutcome> RunRanks(InProcessFabric& fabric, const InProcessRun& o) {
  auto shared = std::make_shared<InMemoryStore>();
  StepBarrier barrier(kWorld);
  std::vector<RankOutcome> out(kWorld);
  const int layers = o.layers;
  auto rank_main = [&](int me) {
    RankOutcome& res = out[me];
    BalancerLinks links;
    links.store = o.store_of ? o.store_of(me, shared) : shared;
    links.rank = me;
    links.world_size = kWorld;
    links.make_communicator = [&fabric, me](const std::string& g, Deadline d) {
      return fabric.MakeCommunicator(g, me, d);
    };
    links.make_control_group = [&fabric, me](const std::string& g, Deadline d) {
      return fabric.MakeControlGroup(g, me, d);
    };
    links.make_copier = [] { return MakeHostCopier(); };
    links.selection = {"in_process", "an in-process fake for protocol tests"};

    const int slots = kSlotsPerRank * kWorld;
    Placement initial = Placement::Identity(layers, kExperts, slots, kWorld);
    std::vector<std::vector<uint8_t>> storage(layers, std::vector<uint8_t>(kExpertBytes * kSlotsPerRank));
    std::vector<LayerWeights> weights(layers);
    for (int l = 0; l < layers; ++l) {
      weights[l].tensors.push_back(
          {MemoryRegion{storage[l].data(), storage[l].size(), MemoryKind::kHost, -1}, kExpertBytes, 0});
      for (int i = 0; i < kSlotsPerRank; ++i)
        runtime::FillFingerprint(storage[l].data() + kExpertBytes * i, kExpertBytes, l,
                                 initial.expert_at(l, me * kSlotsPerRank + i), 0);
    }
    BalancerConfig cfg;
    cfg.num_layers = layers;
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
      for (int l = 0; l < layers; ++l) verify(l);
    });

    SyntheticLoadOptions lo;
    lo.num_layers = layers;
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
      if (o.on_step) o.on_step(me, step);
      for (int l = 0; l < layers; ++l) {
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
    for (int l = 0; l < layers; ++l) verify(l);
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

void ExpectConsistent(const std::vector<RankOutcome>& out) {
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_EQ(out[r].error, "") << "rank " << r;
    EXPECT_EQ(out[r].mismatches, 0) << "rank " << r;
    EXPECT_EQ(out[r].phy2log, out[0].phy2log) << "rank " << r;
    EXPECT_EQ(Commits(out[r]), Commits(out[0])) << "rank " << r;
  }
}

void ExpectRecovered(const std::vector<RankOutcome>& out, int64_t cycle) {
  for (int r = 0; r < kWorld; ++r) {
    bool recovered = false;
    for (const CycleReport& c : out[r].cycles) recovered |= c.ok && c.cycle > cycle && c.layers_committed > 0;
    EXPECT_TRUE(recovered) << "rank " << r << " completed no cycle after cycle " << cycle;
  }
}

}  // namespace eplb::test
