// A rank stopped (SIGSTOP, then SIGCONT) or killed (SIGKILL) at each moment
// of a rebalance cycle -- its handshake, the load sum, a layer's transfers,
// the staging vote, a commit -- in real rank processes over real Gloo
// (loopback TCP), with fingerprinted weights. The victim signals itself at
// the exact point (raise), so each trial has one right outcome: every
// survivor names the victim within deadline + 1 s of the fault and keeps
// stepping; a victim that resumes says it was the one left behind (its
// peers blamed it) instead of blaming a healthy peer; every weight matches
// the maps and the ranks that finish agree on them; after a stop, a later
// cycle completes everywhere. Two trials per case, with different victims.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <ostream>
#include <cstring>
#include <regex>
#include <string>
#include <thread>

#include "demo/fingerprint.h"
#include "demo/synthetic_load.h"
#include "eplb/balancer.h"
#include "eplb/bootstrap.h"
#include "eplb/error.h"
#include "support/multiprocess.h"
#include "support/worker_util.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;

constexpr int kRanks = 4;
constexpr int kDeadlineMs = 1000;
constexpr int kStallMs = 2500;  // past the deadline and the blame budget

struct Fault : test::FieldsAsArgs<Fault> {
  std::string point = "stage";  // handshake, load_sum, stage, vote, commit
  std::string action = "stop";  // stop (SIGSTOP itself; the test sends SIGCONT) or kill
  int victim = 1;
  int steps = 2500;             // 2 ms each
  test::ArgFields Fields() {
    test::ArgFields f;
    f("point", point)("action", action)("victim", victim)("steps", steps);
    return f;
  }
};

double SteadyMs() {
  return std::chrono::duration<double, std::milli>(Clock::now().time_since_epoch()).count();
}

// The victim, at the fault point: says so (with the time), then stops or
// dies there, every thread with it.
class Trap {
 public:
  Trap(const Fault& f, int me) : f_(f), armed_(me == f.victim) {}
  void At(const char* point) {
    if (!armed_ || f_.point != point || fired_.exchange(true)) return;
    std::fprintf(stderr, "EPLB-FAULT point=%s t_ms=%.0f\n", point, SteadyMs());
    std::fflush(stderr);
    raise(f_.action == "kill" ? SIGKILL : SIGSTOP);
  }

 private:
  const Fault& f_;
  const bool armed_;
  std::atomic<bool> fired_{false};
};

class TrapStore final : public Store {
 public:
  TrapStore(std::shared_ptr<Store> inner, Trap& trap, std::string key)
      : inner_(std::move(inner)), trap_(trap), key_(std::move(key)) {}
  std::string_view kind() const override { return inner_->kind(); }
  void Set(const std::string& key, std::span<const uint8_t> value) override {
    if (key == key_) trap_.At("handshake");  // before it joins the first cycle
    inner_->Set(key, value);
  }
  std::vector<uint8_t> Get(const std::string& key, Deadline d) override { return inner_->Get(key, d); }
  std::vector<uint8_t> SetIfAbsent(const std::string& key, std::span<const uint8_t> value) override {
    return inner_->SetIfAbsent(key, value);
  }

 private:
  std::shared_ptr<Store> inner_;
  Trap& trap_;
  const std::string key_;
};

class TrapGroup final : public ControlGroup {
 public:
  TrapGroup(std::unique_ptr<ControlGroup> inner, Trap& trap) : inner_(std::move(inner)), trap_(trap) {}
  std::string_view name() const override { return inner_->name(); }
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  void Barrier(Deadline d) override { inner_->Barrier(d); }
  void AllReduceSum(std::span<double> v, Deadline d) override { inner_->AllReduceSum(v, d); }
  void AllReduceSum(std::span<int64_t> v, Deadline d) override {
    trap_.At("load_sum");
    inner_->AllReduceSum(v, d);
  }
  std::vector<std::vector<uint8_t>> AllGather(std::span<const uint8_t> blob, Deadline d) override {
    trap_.At("vote");  // the first: the staging vote of the first changed layer
    return inner_->AllGather(blob, d);
  }

 private:
  std::unique_ptr<ControlGroup> inner_;
  Trap& trap_;
};

class TrapComm final : public Communicator {
 public:
  TrapComm(std::unique_ptr<Communicator> inner, Trap& trap) : inner_(std::move(inner)), trap_(trap) {}
  std::string_view name() const override { return inner_->name(); }
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  RegionId RegisterRegion(const MemoryRegion& r, Deadline d) override { return inner_->RegisterRegion(r, d); }
  void Execute(std::span<const Transfer> transfers, Deadline d) override {
    trap_.At("stage");
    inner_->Execute(transfers, d);
  }

 private:
  std::unique_ptr<Communicator> inner_;
  Trap& trap_;
};

EPLB_TEST_WORKER(faulty) {
  const Fault f = Fault::Parse(args);
  test::WorkerRank w = test::JoinRun();
  const int me = w.env.rank, world = w.env.world_size;
  constexpr int kLayers = 6, kExperts = 16, kSpr = 5;
  const uint64_t kBytes = 8192;
  Trap trap(f, me);

  SelectionRequest request;
  request.communicator = "gloo";
  BalancerLinks links = MakeBalancerLinks(std::make_shared<TrapStore>(w.store, trap, "balancer/cycle/1/" +
                                                                                         std::to_string(me)),
                                          me, world, request, DeadlineAfter(20s));
  auto make_comm = links.make_communicator;
  links.make_communicator = [make_comm, &trap](const std::string& g, Deadline d) {
    return std::make_unique<TrapComm>(make_comm(g, d), trap);
  };
  auto make_control = links.make_control_group;
  links.make_control_group = [make_control, &trap](const std::string& g, Deadline d) {
    return std::make_unique<TrapGroup>(make_control(g, d), trap);
  };

  std::vector<std::vector<uint8_t>> storage(kLayers, std::vector<uint8_t>(kBytes * kSpr));
  std::vector<LayerWeights> weights(kLayers);
  const Placement initial = Placement::Identity(kLayers, kExperts, kSpr * world, world);
  for (int l = 0; l < kLayers; ++l) {
    weights[l].tensors.push_back({MemoryRegion{storage[l].data(), storage[l].size(), MemoryKind::kHost, -1}, kBytes, 0});
    for (int i = 0; i < kSpr; ++i)
      runtime::FillFingerprint(storage[l].data() + kBytes * i, kBytes, l, initial.expert_at(l, me * kSpr + i), 0);
  }
  int mismatches = 0;
  BalancerConfig cfg;
  cfg.num_layers = kLayers;
  cfg.num_experts = kExperts;
  cfg.num_slots = kSpr * world;
  cfg.window_steps = 60;
  cfg.step_interval = 150;
  cfg.first_rebalance_step = 60;
  cfg.deadline = std::chrono::milliseconds(kDeadlineMs);
  cfg.connect_timeout = 20s;
  Balancer balancer(links, weights, cfg, initial);
  auto verify = [&](int l) {
    const auto p = balancer.placement();
    for (int i = 0; i < kSpr; ++i)
      if (runtime::FindFingerprintMismatch(storage[l].data() + kBytes * i, kBytes, l, p->expert_at(l, me * kSpr + i),
                                           0) >= 0)
        ++mismatches;
  };
  balancer.set_on_commit([&](const CommitEvent& e) {
    verify(e.layer);
    if (e.cycle == 1) trap.At("commit");  // the engine thread, right after a commit
  });
  balancer.set_on_cycle([&](const CycleReport& r) {
    for (int l = 0; l < kLayers; ++l) verify(l);
    std::fprintf(stderr, "EPLB-CYCLE cycle=%lld ok=%d blamed=%d t_ms=%.0f error=%s\n",
                 static_cast<long long>(r.cycle), r.ok ? 1 : 0, r.blamed_rank, SteadyMs(), r.error.c_str());
  });

  SyntheticLoadOptions lo;
  lo.num_layers = kLayers;
  lo.num_experts = kExperts;
  lo.skew = 1.3;
  lo.tokens_per_step = 2048;
  lo.drift_period_steps = 40;
  SyntheticLoad load(lo);
  std::vector<int64_t> counts(kExperts);
  const auto t0 = Clock::now();
  int64_t step = 0;
  auto run_step = [&] {
    std::this_thread::sleep_until(t0 + std::chrono::milliseconds(2) * step);
    for (int l = 0; l < kLayers; ++l) {
      load.Counts(step, me, l, counts);
      balancer.RecordLoad(l, counts);
    }
    balancer.Step();
    ++step;
  };
  while (step < f.steps) run_step();
  const int64_t limit = step + 20000;
  while (!balancer.idle() && step < limit) run_step();
  for (int l = 0; l < kLayers; ++l) verify(l);
  uint64_t hash = 1469598103934665603ull;
  for (int32_t v : balancer.placement()->phy2log) hash = (hash ^ static_cast<uint32_t>(v)) * 1099511628211ull;
  std::fprintf(stderr, "EPLB-RESULT mismatches=%d steps=%lld placement=%016llx\n", mismatches,
               static_cast<long long>(step), static_cast<unsigned long long>(hash));
  return mismatches == 0 ? 0 : 5;
}

struct CycleLine {
  long long cycle;
  int ok, blamed;
  double t_ms;
  std::string error;
};

std::vector<CycleLine> Cycles(const std::string& text) {
  std::vector<CycleLine> out;
  std::regex re(R"(EPLB-CYCLE cycle=(\d+) ok=(\d) blamed=(-?\d+) t_ms=(\d+) error=([^\n]*))");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it)
    out.push_back({std::stoll((*it)[1]), std::stoi((*it)[2]), std::stoi((*it)[3]), std::stod((*it)[4]), (*it)[5]});
  return out;
}

std::string Field(const std::string& text, const std::string& key) {
  std::smatch m;
  return std::regex_search(text, m, std::regex(key + "=(\\S+)")) ? m[1].str() : "";
}

void RunTrial(const std::string& point, const std::string& action, int victim) {
  SCOPED_TRACE(action + " of rank " + std::to_string(victim) + " at its " + point);
  Fault f;
  f.point = point;
  f.action = action;
  f.victim = victim;
  test::RankGroup group(test::Ranks("faulty", kRanks, f.Args()));
  ASSERT_TRUE(group.WaitForText(victim, "EPLB-FAULT", DeadlineAfter(40s))) << group.Stderr(victim);
  if (action == "stop") {
    std::this_thread::sleep_for(std::chrono::milliseconds(kStallMs));
    group.Kill(victim, SIGCONT);
  }
  auto exits = group.Wait(DeadlineAfter(60s));
  const double fault_ms = std::stod(Field(exits[victim].stderr_text, "t_ms"));
  std::string placement;
  for (int r = 0; r < kRanks; ++r) {
    const std::string& log = exits[r].stderr_text;
    if (r == victim && action == "kill") {
      EXPECT_EQ(exits[r].status.signal, SIGKILL) << test::Describe(exits);
      continue;
    }
    ASSERT_TRUE(exits[r].status.ok()) << test::Describe(exits);
    EXPECT_EQ(Field(log, "mismatches"), "0") << log;
    if (placement.empty()) placement = Field(log, "placement");
    EXPECT_EQ(Field(log, "placement"), placement) << "rank " << r << " ends on other maps\n" << test::Describe(exits);
    const auto cycles = Cycles(log);
    const CycleLine* failed = nullptr;
    for (const CycleLine& c : cycles)
      if (!c.ok && failed == nullptr) failed = &c;
    ASSERT_NE(failed, nullptr) << "rank " << r << " failed no cycle\n" << log;
    EXPECT_EQ(failed->blamed, victim) << "rank " << r << ": " << failed->error;
    if (r == victim) {
      EXPECT_NE(failed->error.find("this rank was stalled or left behind"), std::string::npos) << failed->error;
    } else {
      EXPECT_EQ(failed->error.find("left behind"), std::string::npos) << "rank " << r << ": " << failed->error;
      EXPECT_LE(failed->t_ms - fault_ms, kDeadlineMs + 1000.0) << "rank " << r << ": " << failed->error;
      std::printf("%s of rank %d at its %s: rank %d reported it %.0f ms later (deadline %d ms)\n", action.c_str(),
                  victim, point.c_str(), r, failed->t_ms - fault_ms, kDeadlineMs);
    }
    if (action == "stop") {
      bool recovered = false;
      for (const CycleLine& c : cycles) recovered |= c.ok && c.cycle > failed->cycle;
      EXPECT_TRUE(recovered) << "rank " << r << " completed no cycle after the stall\n" << log;
    }
  }
}

struct Case {
  const char* point;
  const char* action;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.action << " at the " << c.point; }

class RankFault : public testing::TestWithParam<Case> {};

TEST_P(RankFault, EverySurvivorNamesTheVictimInTimeAndTheVictimKnowsItWasLeftBehind) {
  for (int victim : {1, 3}) RunTrial(GetParam().point, GetParam().action, victim);
}

INSTANTIATE_TEST_SUITE_P(
    AtEveryMomentOfACycle, RankFault,
    testing::Values(Case{"handshake", "stop"}, Case{"load_sum", "stop"}, Case{"stage", "stop"},
                    Case{"vote", "stop"}, Case{"commit", "stop"}, Case{"handshake", "kill"},
                    Case{"load_sum", "kill"}, Case{"stage", "kill"}, Case{"vote", "kill"},
                    Case{"commit", "kill"}),
    [](const testing::TestParamInfo<Case>& info) {
      return std::string(info.param.action) + "_at_" + info.param.point;
    });

}  // namespace
}  // namespace eplb
