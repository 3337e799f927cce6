// The online Balancer: real multi-process runs over real Gloo (loopback TCP) with fingerprinted expert
// weights: async and sync rebalancing that verifies every expert, all ranks
// committing layer k at the same step, and the failure shapes — one rank's
// migration thread stops participating mid-cycle (vLLM #57883), a rank
// stalled by SIGSTOP, a rank killed mid-cycle — each of which must be logged
// naming the rank, leave every weight matching the maps, and (where the
// rank comes back) recover at a later cycle.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <cstring>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include "eplb/balancer.h"
#include "eplb/bootstrap.h"
#include "eplb/error.h"
#include "demo/synthetic_load.h"
#include "demo/fingerprint.h"
#include "runtime/load_window.h"
#include "support/multiprocess.h"
#include "support/paths.h"
#include "support/worker_util.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;

// ---- the scenario a balancer worker runs -----------------------------------------

struct Scenario : test::FieldsAsArgs<Scenario> {
  std::string mode = "async";
  int layers = 6;
  int experts = 16;
  int slots_per_rank = 5;
  uint64_t expert_bytes = 8192;  // tensor 0; tensor 1 is half, tensor 2 this + 24
  int steps = 700;
  int interval = 150;
  int first = 60;
  int window = 60;
  int staging = 2;
  int deadline_ms = 1500;
  int step_us = 2000;  // simulated GPU time of a step
  // Failure injection. stall_comm: the victim's communicator sleeps
  // stall_ms inside its fault_execute-th Execute (its migration thread stops
  // participating, its engine keeps stepping). late_vote: the victim's
  // fault_execute-th AllGather (a commit agreement) completes, but the victim
  // only sees it late_ms after its deadline and gives up, while its peers
  // commit.
  // marker: the victim prints EPLB-MARK at its first commit of cycle
  // fault_cycle; the test signals it.
  std::string fault = "none";
  int victim = -1;
  int fault_execute = 5;
  int fault_cycle = 1;
  int stall_ms = 4000;
  int late_ms = 200;

  // Every field as a worker argument, named once.
  test::ArgFields Fields() {
    test::ArgFields f;
    f("mode", mode)("layers", layers)("experts", experts)("spr", slots_per_rank)("bytes", expert_bytes)(
        "steps", steps)("interval", interval)("first", first)("window", window)("staging", staging)(
        "deadline_ms", deadline_ms)("step_us", step_us)("fault", fault)("victim", victim)(
        "fault_execute", fault_execute)("fault_cycle", fault_cycle)("stall_ms", stall_ms)("late_ms", late_ms);
    return f;
  }
  std::vector<uint64_t> TensorBytes() const { return test::ThreeTensorBytes(expert_bytes); }
};

// The real communicator, except that the victim's migration thread stops
// participating for a while at one Execute: the shape of vLLM #57883.
class StallingCommunicator final : public Communicator {
 public:
  StallingCommunicator(std::unique_ptr<Communicator> inner, const Scenario& s)
      : inner_(std::move(inner)), s_(s) {}
  std::string_view name() const override { return inner_->name(); }
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  RegionId RegisterRegion(const MemoryRegion& r, Deadline d) override {
    return inner_->RegisterRegion(r, d);
  }
  void Execute(std::span<const Transfer> transfers, Deadline deadline) override {
    const int n = ++executes;  // across rebuilds: one stall per run
    if (s_.fault == "stall_comm" && rank() == s_.victim && n == s_.fault_execute) {
      std::fprintf(stderr, "EPLB-STALLING execute=%d for %d ms\n", n, s_.stall_ms);
      std::fflush(stderr);
      std::this_thread::sleep_for(std::chrono::milliseconds(s_.stall_ms));
    }
    inner_->Execute(transfers, deadline);
  }
  static inline std::atomic<int> executes{0};

 private:
  std::unique_ptr<Communicator> inner_;
  const Scenario& s_;
};

// The real control group, except that the victim learns the result of one
// AllGather only after its deadline (late_vote).
class LateControlGroup final : public ControlGroup {
 public:
  LateControlGroup(std::unique_ptr<ControlGroup> inner, const Scenario& s)
      : inner_(std::move(inner)), s_(s) {}
  std::string_view name() const override { return inner_->name(); }
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  void Barrier(Deadline d) override { inner_->Barrier(d); }
  void AllReduceSum(std::span<double> v, Deadline d) override { inner_->AllReduceSum(v, d); }
  void AllReduceSum(std::span<int64_t> v, Deadline d) override { inner_->AllReduceSum(v, d); }
  std::vector<std::vector<uint8_t>> AllGather(std::span<const uint8_t> blob, Deadline d) override {
    auto out = inner_->AllGather(blob, d);
    if (s_.fault == "late_vote" && rank() == s_.victim && ++gathers == s_.fault_execute) {
      std::this_thread::sleep_until(d + std::chrono::milliseconds(s_.late_ms));
      std::fprintf(stderr, "EPLB-LATE-VOTE\n");
      throw TimeoutError("test", "all_gather", "injected: the agreement arrived after the deadline",
                         rank(), -1);
    }
    return out;
  }
  static inline int gathers = 0;

 private:
  std::unique_ptr<ControlGroup> inner_;
  const Scenario& s_;
};

double SteadyMs() {
  return std::chrono::duration<double, std::milli>(Clock::now().time_since_epoch()).count();
}

EPLB_TEST_WORKER(balance) {
  const Scenario s = Scenario::Parse(args);
  test::WorkerRank w = test::JoinRun();
  const int me = w.env.rank, world = w.env.world_size;
  const int spr = s.slots_per_rank, slots = spr * world;

  SelectionRequest request;
  request.communicator = "gloo";
  request.async = s.mode == "async";
  BalancerLinks links = MakeBalancerLinks(w.store, me, world, request, DeadlineAfter(20s));
  auto make = links.make_communicator;
  links.make_communicator = [make, &s](const std::string& group, Deadline d) {
    return std::make_unique<StallingCommunicator>(make(group, d), s);
  };
  auto make_control = links.make_control_group;
  links.make_control_group = [make_control, &s](const std::string& group, Deadline d) {
    return std::make_unique<LateControlGroup>(make_control(group, d), s);
  };

  const auto tensor_bytes = s.TensorBytes();
  std::vector<std::vector<std::vector<uint8_t>>> storage(s.layers);
  std::vector<LayerWeights> weights(s.layers);
  Placement initial = Placement::Identity(s.layers, s.experts, slots, world);
  for (int l = 0; l < s.layers; ++l) {
    for (size_t t = 0; t < tensor_bytes.size(); ++t) {
      storage[l].emplace_back(tensor_bytes[t] * spr);
      weights[l].tensors.push_back(
          {MemoryRegion{storage[l][t].data(), storage[l][t].size(), MemoryKind::kHost, -1},
           tensor_bytes[t], 0});
      for (int i = 0; i < spr; ++i)
        runtime::FillFingerprint(storage[l][t].data() + tensor_bytes[t] * i, tensor_bytes[t], l,
                                 initial.expert_at(l, me * spr + i), static_cast<int>(t));
    }
  }
  // Every slot of this rank in layer l holds the expert `p` says, byte for byte.
  int mismatches = 0;
  auto verify = [&](const Placement& p, int l, const char* when) {
    for (size_t t = 0; t < tensor_bytes.size(); ++t)
      for (int i = 0; i < spr; ++i) {
        const int e = p.expert_at(l, me * spr + i);
        const int64_t bad = runtime::FindFingerprintMismatch(
            storage[l][t].data() + tensor_bytes[t] * i, tensor_bytes[t], l, e, static_cast<int>(t));
        if (bad >= 0) {
          ++mismatches;
          std::fprintf(stderr, "EPLB-MISMATCH %s layer=%d tensor=%zu slot=%d expert=%d byte=%lld\n",
                       when, l, t, me * spr + i, e, static_cast<long long>(bad));
          return;
        }
      }
  };

  BalancerConfig cfg;
  cfg.num_layers = s.layers;
  cfg.num_experts = s.experts;
  cfg.num_slots = slots;
  cfg.mode = s.mode == "async" ? BalancerMode::kAsync : BalancerMode::kSync;
  cfg.window_steps = s.window;
  cfg.step_interval = s.interval;
  cfg.first_rebalance_step = s.first;
  cfg.deadline = std::chrono::milliseconds(s.deadline_ms);
  cfg.connect_timeout = 20s;
  cfg.staging_layers = s.staging;
  Balancer balancer(links, weights, cfg, initial);

  int64_t verified_layers = 0;
  bool marked = false;
  balancer.set_on_commit([&](const CommitEvent& e) {
    verify(*balancer.placement(), e.layer, "commit");
    ++verified_layers;
    std::fprintf(stderr, "EPLB-COMMIT cycle=%lld layer=%d step=%lld rf=%d\n",
                 static_cast<long long>(e.cycle), e.layer, static_cast<long long>(e.step),
                 e.roll_forward ? 1 : 0);
    if (s.fault == "marker" && me == s.victim && e.cycle == s.fault_cycle && !marked) {
      marked = true;
      std::fprintf(stderr, "EPLB-MARK\n");
    }
  });
  balancer.set_on_cycle([&](const CycleReport& r) {
    for (int l = 0; l < s.layers; ++l) verify(*balancer.placement(), l, "cycle end");
    std::fprintf(stderr,
                 "EPLB-CYCLE cycle=%lld ok=%d blamed=%d before=%.4f after=%.4f changed=%d "
                 "committed=%d end_step=%lld t_ms=%.0f\n",
                 static_cast<long long>(r.cycle), r.ok ? 1 : 0, r.blamed_rank,
                 r.balancedness_before, r.balancedness_after, r.layers_changed, r.layers_committed,
                 static_cast<long long>(r.end_step), SteadyMs());
  });

  SyntheticLoadOptions lo;
  lo.num_layers = s.layers;
  lo.num_experts = s.experts;
  lo.skew = 1.3;
  lo.tokens_per_step = 2048;
  lo.drift_period_steps = 40;
  SyntheticLoad load(lo);
  std::vector<int64_t> counts(s.experts);
  const auto t0 = Clock::now();
  const auto period = std::chrono::duration<double, std::micro>(s.step_us);
  int64_t step = 0;
  auto run_step = [&] {
    std::this_thread::sleep_until(t0 + std::chrono::duration_cast<Clock::duration>(period * step));
    // Route with the published maps: every own slot they name must hold that expert.
    auto maps = balancer.placement();
    for (int l = 0; l < s.layers; ++l) {
      load.Counts(step, me, l, counts);
      balancer.RecordLoad(l, counts);
      for (int i = 0; i < spr; ++i) {
        const int e = maps->expert_at(l, me * spr + i);
        uint64_t first;
        std::memcpy(&first, storage[l][0].data() + tensor_bytes[0] * i, 8);
        if (first != runtime::FingerprintWord(l, e, 0, 0)) {
          ++mismatches;
          std::fprintf(stderr, "EPLB-MISMATCH routing step=%lld layer=%d slot=%d expert=%d\n",
                       static_cast<long long>(step), l, me * spr + i, e);
        }
      }
    }
    balancer.Step();
    ++step;
  };
  while (step < s.steps) run_step();
  // Let a running cycle end (every rank steps alike, so each reaches the
  // agreed steps), then check everything.
  const int64_t limit = step + 20000;
  while (!balancer.idle() && step < limit) run_step();
  const BalancerMetrics m = balancer.metrics();
  for (int l = 0; l < s.layers; ++l) verify(*balancer.placement(), l, "final");
  const auto p = balancer.placement();
  uint64_t hash = 1469598103934665603ull;
  for (int32_t v : p->phy2log) hash = (hash ^ static_cast<uint32_t>(v)) * 1099511628211ull;
  std::fprintf(stderr,
               "EPLB-RESULT mismatches=%d completed=%lld failed=%lld started=%lld skipped=%lld "
               "layers=%lld roll_forwards=%lld rebuilds=%lld verified=%lld idle=%d placement=%016llx "
               "balancedness=%.4f\n",
               mismatches, static_cast<long long>(m.cycles_completed),
               static_cast<long long>(m.cycles_failed), static_cast<long long>(m.cycles_started),
               static_cast<long long>(m.cycles_skipped), static_cast<long long>(m.layers_committed),
               static_cast<long long>(m.roll_forwards), static_cast<long long>(m.rebuilds),
               static_cast<long long>(verified_layers), balancer.idle() ? 1 : 0,
               static_cast<unsigned long long>(hash), m.balancedness);
  std::fprintf(stderr, "EPLB-PROMETHEUS-BEGIN\n%sEPLB-PROMETHEUS-END\n",
               balancer.PrometheusText().c_str());
  return mismatches == 0 ? 0 : 5;
}

// ---- parsing what the workers printed --------------------------------------------

struct Commit {
  long long cycle, step;
  int layer, rf;
};
struct CycleLine {
  long long cycle, end_step;
  int ok, blamed, changed, committed;
  double before, after, t_ms;
};
struct RankLog {
  std::vector<Commit> commits;
  std::vector<CycleLine> cycles;
  std::map<std::string, std::string> result;
};

RankLog Parse(const std::string& text) {
  RankLog log;
  std::regex commit_re(R"(EPLB-COMMIT cycle=(\d+) layer=(\d+) step=(\d+) rf=(\d))");
  std::regex cycle_re(
      R"(EPLB-CYCLE cycle=(\d+) ok=(\d) blamed=(-?\d+) before=([\d.]+) after=([\d.]+) changed=(\d+) committed=(\d+) end_step=(\d+) t_ms=([\d.]+))");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), commit_re); it != std::sregex_iterator(); ++it)
    log.commits.push_back({std::stoll((*it)[1]), std::stoll((*it)[3]), std::stoi((*it)[2]), std::stoi((*it)[4])});
  for (auto it = std::sregex_iterator(text.begin(), text.end(), cycle_re); it != std::sregex_iterator(); ++it)
    log.cycles.push_back({std::stoll((*it)[1]), std::stoll((*it)[8]), std::stoi((*it)[2]), std::stoi((*it)[3]),
                          std::stoi((*it)[6]), std::stoi((*it)[7]), std::stod((*it)[4]),
                          std::stod((*it)[5]), std::stod((*it)[9])});
  auto pos = text.find("EPLB-RESULT ");
  if (pos != std::string::npos) {
    std::string line = text.substr(pos + 12, text.find('\n', pos) - pos - 12);
    std::regex kv_re(R"((\w+)=(\S+))");
    for (auto it = std::sregex_iterator(line.begin(), line.end(), kv_re); it != std::sregex_iterator(); ++it)
      log.result[(*it)[1]] = (*it)[2];
  }
  return log;
}

long long Num(const RankLog& log, const std::string& key) {
  auto it = log.result.find(key);
  return it == log.result.end() ? -1 : std::stoll(it->second);
}

// Every (cycle, layer) committed in the normal way is committed by every
// listed rank at one and the same step.
void ExpectSameCommitSteps(const std::vector<RankLog>& logs, const std::vector<int>& ranks) {
  std::map<std::pair<long long, int>, std::map<int, long long>> steps;
  for (int r : ranks)
    for (const Commit& c : logs[r].commits)
      if (!c.rf) steps[{c.cycle, c.layer}][r] = c.step;
  ASSERT_FALSE(steps.empty());
  for (const auto& [key, by_rank] : steps) {
    std::set<long long> distinct;
    for (const auto& [r, st] : by_rank) distinct.insert(st);
    EXPECT_EQ(distinct.size(), 1u) << "cycle " << key.first << " layer " << key.second
                                   << " committed at different steps";
  }
}

std::vector<RankLog> ParseAll(const std::vector<test::RankExit>& exits) {
  if (std::getenv("EPLB_TEST_VERBOSE") != nullptr)
    for (const auto& x : exits) std::fprintf(stderr, "---- rank %d\n%s", x.rank, x.stderr_text.c_str());
  std::vector<RankLog> logs;
  for (const auto& x : exits) logs.push_back(Parse(x.stderr_text));
  return logs;
}

// ---- tests ----------------------------------------------------------------------

TEST(Balancer, AsyncFourRanksVerifiesEveryExpertAndCommitsInLockstep) {
  Scenario s;
  test::RankGroup group(test::Ranks("balance", 4, s.Args()));
  auto exits = group.Wait(DeadlineAfter(90s));
  auto logs = ParseAll(exits);
  for (const auto& x : exits) ASSERT_TRUE(x.status.ok()) << test::Describe(exits);
  std::vector<int> all{0, 1, 2, 3};
  for (int r : all) {
    EXPECT_EQ(Num(logs[r], "mismatches"), 0);
    EXPECT_GE(Num(logs[r], "completed"), 3) << exits[r].stderr_text;
    EXPECT_EQ(Num(logs[r], "failed"), 0) << exits[r].stderr_text;
    EXPECT_GT(Num(logs[r], "verified"), 0);
    EXPECT_EQ(logs[r].result["placement"], logs[0].result["placement"]);
    EXPECT_EQ(logs[r].cycles.size(), logs[0].cycles.size());
  }
  ExpectSameCommitSteps(logs, all);
  // The cycles did useful work: the first one improves balance.
  ASSERT_FALSE(logs[0].cycles.empty());
  EXPECT_GT(logs[0].cycles[0].after, logs[0].cycles[0].before + 0.05);
  EXPECT_GT(logs[0].cycles[0].committed, 0);
  // Every cycle ends at the same step everywhere (the trigger schedule stays aligned).
  for (int r : all)
    for (size_t i = 0; i < logs[r].cycles.size() && i < logs[0].cycles.size(); ++i)
      EXPECT_EQ(logs[r].cycles[i].end_step, logs[0].cycles[i].end_step);
  // Prometheus text on request.
  EXPECT_NE(exits[0].stderr_text.find("eplb_cycles_total{rank=\"0\",result=\"completed\"}"),
            std::string::npos);
  EXPECT_NE(exits[0].stderr_text.find("eplb_info{rank=\"0\",communicator=\"gloo\",mode=\"async\"} 1"),
            std::string::npos);
}

TEST(Balancer, OneRankRebalancesWithLocalCopiesOnly) {
  Scenario s;
  s.slots_per_rank = 20;
  s.steps = 400;
  test::RankGroup group(test::Ranks("balance", 1, s.Args()));
  auto exits = group.Wait(DeadlineAfter(60s));
  auto logs = ParseAll(exits);
  ASSERT_TRUE(exits[0].status.ok()) << test::Describe(exits);
  EXPECT_EQ(Num(logs[0], "mismatches"), 0);
  EXPECT_GE(Num(logs[0], "completed"), 2);
  EXPECT_GT(Num(logs[0], "layers"), 0);
}

TEST(Balancer, SyncTwoRanksOneStagingLayer) {
  Scenario s;
  s.mode = "sync";
  s.steps = 500;
  s.slots_per_rank = 10;
  test::RankGroup group(test::Ranks("balance", 2, s.Args()));
  auto exits = group.Wait(DeadlineAfter(60s));
  auto logs = ParseAll(exits);
  for (const auto& x : exits) ASSERT_TRUE(x.status.ok()) << test::Describe(exits);
  for (int r : {0, 1}) {
    EXPECT_EQ(Num(logs[r], "mismatches"), 0);
    EXPECT_GE(Num(logs[r], "completed"), 3);
    EXPECT_EQ(Num(logs[r], "failed"), 0);
  }
  ExpectSameCommitSteps(logs, {0, 1});
  // Sync commits every layer inside the trigger's step.
  for (const Commit& c : logs[0].commits) EXPECT_EQ((c.step - s.first) % s.interval, 0) << c.step;
}

// vLLM #57883: one rank's migration thread stops participating mid-cycle
// while its engine keeps stepping. Here: every rank logs an error naming it,
// the stalled rank's watchdog says where it is stuck, the cycle is
// abandoned, every weight still matches the maps, and a later cycle
// completes on every rank.
TEST(Balancer, RankThatStopsParticipatingIsNamedAndTheRunRecovers) {
  Scenario s;
  s.fault = "stall_comm";
  s.victim = 1;
  s.fault_execute = 3;  // the transfers of the first cycle's third changed layer
  s.deadline_ms = 1000;
  s.stall_ms = 3500;    // past deadline + 2 s: the watchdog speaks
  s.steps = 2600;       // ~5 s at 2 ms a step: cycles after the stall
  s.interval = 200;
  s.slots_per_rank = 7;
  test::RankGroup group(test::Ranks("balance", 3, s.Args()));
  auto exits = group.Wait(DeadlineAfter(90s));
  auto logs = ParseAll(exits);
  for (const auto& x : exits) ASSERT_TRUE(x.status.ok()) << test::Describe(exits);
  ASSERT_NE(exits[1].stderr_text.find("EPLB-STALLING"), std::string::npos) << exits[1].stderr_text;
  EXPECT_NE(exits[1].stderr_text.find("background migration thread has been in the transfers of MoE layer"),
            std::string::npos)
      << "the stalled rank's watchdog should name where it is stuck\n" << exits[1].stderr_text;
  for (int r : {0, 2}) {
    EXPECT_NE(exits[r].stderr_text.find("abandoned"), std::string::npos) << exits[r].stderr_text;
    bool named = false;
    for (const CycleLine& c : logs[r].cycles) named |= !c.ok && c.blamed == 1;
    EXPECT_TRUE(named) << "rank " << r << " did not name rank 1\n" << exits[r].stderr_text;
  }
  for (int r : {0, 1, 2}) {
    EXPECT_EQ(Num(logs[r], "mismatches"), 0) << exits[r].stderr_text;
    EXPECT_GE(Num(logs[r], "failed"), 1) << exits[r].stderr_text;
    EXPECT_GE(Num(logs[r], "rebuilds"), 1) << exits[r].stderr_text;
    // Recovery: a cycle after the failed one completes on this rank.
    long long first_failed = -1, completed_after = 0;
    for (const CycleLine& c : logs[r].cycles) {
      if (!c.ok && first_failed < 0) first_failed = c.cycle;
      if (c.ok && first_failed >= 0 && c.cycle > first_failed && c.committed >= 0) ++completed_after;
    }
    EXPECT_GE(completed_after, 1) << exits[r].stderr_text;
    EXPECT_EQ(logs[r].result["placement"], logs[0].result["placement"]);
  }
  ExpectSameCommitSteps(logs, {0, 1, 2});
}

// Three ranks; the commit-step agreement of the first cycle's first layer
// completes on ranks 0 and 1, and rank 2 learns it `late_ms` after its
// deadline. Checks what holds either way: rank 2 committed layer 0 of cycle 1
// (rolled forward or not, as `rolled_forward` says), and every rank ends with
// the same maps and weights, every commit at the same step.
struct LateVoteRun {
  std::vector<test::RankExit> exits;
  std::vector<RankLog> logs;
};
LateVoteRun RunLateVote(int late_ms, int steps, bool rolled_forward) {
  Scenario s;
  s.fault = "late_vote";
  s.late_ms = late_ms;
  s.victim = 2;
  s.fault_execute = 2;  // the commit-step agreement of the first cycle's first layer
  s.deadline_ms = 1000;
  s.steps = steps;
  s.interval = 200;
  s.slots_per_rank = 7;
  test::RankGroup group(test::Ranks("balance", 3, s.Args()));
  LateVoteRun run;
  run.exits = group.Wait(DeadlineAfter(90s));
  run.logs = ParseAll(run.exits);
  const auto& exits = run.exits;
  auto& logs = run.logs;
  for (const auto& x : exits) EXPECT_TRUE(x.status.ok()) << test::Describe(exits);
  if (logs.size() != 3) return run;
  EXPECT_NE(exits[2].stderr_text.find("EPLB-LATE-VOTE"), std::string::npos) << exits[2].stderr_text;
  bool committed = false;
  for (const Commit& c : logs[2].commits)
    committed |= c.rf == (rolled_forward ? 1 : 0) && c.cycle == 1 && c.layer == 0;
  EXPECT_TRUE(committed) << exits[2].stderr_text;
  for (int r : {0, 1, 2}) {
    EXPECT_EQ(Num(logs[r], "mismatches"), 0) << exits[r].stderr_text;
    EXPECT_EQ(logs[r].result["placement"], logs[0].result["placement"]) << test::Describe(exits);
    EXPECT_EQ(Num(logs[r], "layers"), Num(logs[0], "layers")) << test::Describe(exits);
  }
  ExpectSameCommitSteps(logs, {0, 1, 2});
  return run;
}

// The peers record "commit at step S" in the store first; the late rank
// records "abandon", finds the commit standing, and commits at S too: no
// rank ever serves a layer map the others do not.
TEST(Balancer, VoteThatFailsOnOneRankStillCommitsAtTheSameStepEverywhere) {
  LateVoteRun run = RunLateVote(/*late_ms=*/200, /*steps=*/1800, /*rolled_forward=*/false);
  ASSERT_EQ(run.logs.size(), 3u);
  EXPECT_NE(run.exits[2].stderr_text.find("recorded the commit: committing it here too"), std::string::npos)
      << run.exits[2].stderr_text;
  EXPECT_EQ(Num(run.logs[2], "roll_forwards"), 0) << run.exits[2].stderr_text;
  for (int r : {0, 1, 2}) {
    bool recovered = false;
    for (const CycleLine& c : run.logs[r].cycles) recovered |= c.ok && c.cycle > 1;
    EXPECT_TRUE(recovered) << run.exits[r].stderr_text;
  }
}

// The remaining window: the late rank learns the outcome after its engine
// passed its proposed step (it waits deadline + 1 s there, then goes on
// without committing). The layer stays staged "in doubt"; the next
// handshake shows the peers committed it, and it commits it too.
TEST(Balancer, LayerInDoubtIsRolledForward) {
  LateVoteRun run = RunLateVote(/*late_ms=*/2500, /*steps=*/2400, /*rolled_forward=*/true);
  ASSERT_EQ(run.logs.size(), 3u);
  EXPECT_NE(run.exits[2].stderr_text.find("was in doubt and a peer committed it"), std::string::npos)
      << run.exits[2].stderr_text;
  EXPECT_GE(Num(run.logs[2], "roll_forwards"), 1) << run.exits[2].stderr_text;
}

TEST(Balancer, DeadRankIsNamedAndTheOthersKeepServing) {
  Scenario s;
  s.fault = "marker";
  s.victim = 3;
  s.fault_cycle = 1;
  s.deadline_ms = 1000;
  s.steps = 1500;
  test::RankGroup group(test::Ranks("balance", 4, s.Args()));
  ASSERT_TRUE(group.WaitForText(s.victim, "EPLB-MARK", DeadlineAfter(30s))) << group.Stderr(s.victim);
  group.Kill(s.victim);
  const double killed_ms =
      std::chrono::duration<double, std::milli>(group.killed_at(s.victim).time_since_epoch()).count();
  auto exits = group.Wait(DeadlineAfter(90s));
  auto logs = ParseAll(exits);
  for (int r : {0, 1, 2}) {
    ASSERT_TRUE(exits[r].status.ok()) << test::Describe(exits);
    EXPECT_EQ(Num(logs[r], "mismatches"), 0) << exits[r].stderr_text;
    const CycleLine* failure = nullptr;
    for (const CycleLine& c : logs[r].cycles)
      if (!c.ok && !failure) failure = &c;
    ASSERT_NE(failure, nullptr) << exits[r].stderr_text;
    EXPECT_EQ(failure->blamed, s.victim) << exits[r].stderr_text;
    EXPECT_LE(failure->t_ms - killed_ms, s.deadline_ms + 1000.0) << exits[r].stderr_text;
    EXPECT_NE(exits[r].stderr_text.find("rank 3"), std::string::npos);
    EXPECT_EQ(logs[r].result["placement"], logs[0].result["placement"]);
    // Later cycles fail at the handshake, naming the dead rank; none hangs.
    EXPECT_NE(exits[r].stderr_text.find("did not join"), std::string::npos) << exits[r].stderr_text;
  }
  ExpectSameCommitSteps(logs, {0, 1, 2});
}

TEST(Balancer, RefusesNcclInAsyncModeAndBadConfigs) {
  BalancerLinks links;
  links.store = MakeFileStore(test::MakeTempDir("balancer-config") + "/store");
  links.rank = 0;
  links.world_size = 1;
  links.selection = {"nccl", "named"};
  links.make_communicator = [](const std::string&, Deadline) -> std::unique_ptr<Communicator> {
    throw Error("test", "connect", "must not be reached");
  };
  links.make_control_group = [](const std::string&, Deadline) -> std::unique_ptr<ControlGroup> {
    throw Error("test", "connect", "must not be reached");
  };
  links.make_copier = [] { return MakeHostCopier(); };
  std::vector<uint8_t> mem(4 * 64);
  std::vector<LayerWeights> w(1);
  w[0].tensors.push_back({MemoryRegion{mem.data(), mem.size(), MemoryKind::kHost, -1}, 64, 0});
  BalancerConfig cfg;
  cfg.num_layers = 1;
  cfg.num_experts = 4;
  cfg.num_slots = 4;
  try {
    Balancer b(links, w, cfg, Placement::Identity(1, 4, 4, 1));
    FAIL() << "nccl accepted in async mode";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("async"), std::string::npos) << e.what();
  }
  links.selection = {"gloo", "named"};
  BalancerConfig bad = cfg;
  bad.policy = "no-such-policy";
  EXPECT_THROW(Balancer(links, w, bad, Placement::Identity(1, 4, 4, 1)), InvalidArgument);
  bad = cfg;
  bad.staging_layers = 3;
  EXPECT_THROW(Balancer(links, w, bad, Placement::Identity(1, 4, 4, 1)), InvalidArgument);
  EXPECT_THROW(Balancer(links, w, cfg, Placement::Identity(1, 4, 8, 1)), InvalidArgument);
}

}  // namespace
}  // namespace eplb
