// Migration executor across real processes, for every communicator that
// moves host memory: gloo (real Gloo over loopback TCP) and nixl (NIXL's UCX
// backend: CMA and loopback TCP; skipped without NIXL, a failure then under
// EPLB_REQUIRE_NIXL). Random rebalances with redundancy on 2 and 4 ranks with
// every expert's content verified, no change (bit-identical, nothing sent),
// and a peer that is killed, crashes or stalls mid-migration (the others
// fail within the deadline + 1 s naming it, and hold the old placement of
// the failed layer). The control group is Gloo in both.
#include <gtest/gtest.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <random>
#include <thread>

#include "eplb/communicator_factory.h"
#include "eplb/control_group.h"
#include "eplb/detect.h"
#include "eplb/error.h"
#include "eplb/gloo.h"
#include "eplb/migration.h"
#include "support/multiprocess.h"
#include "support/transfer_pattern.h"
#include "support/worker_util.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;

// ---- the scenario, shared by the test and its workers ----------------------

struct Scenario : test::FieldsAsArgs<Scenario> {
  int world = 2;
  int layers = 3;
  int slots_per_rank = 4;
  int experts = 6;
  int rounds = 4;
  int seed = 1;
  int ranks_per_node = 0;
  uint64_t expert_bytes = 4096;  // w1; w2 is half, w3 this + 24
  std::string mode = "random";   // random | nochange | kill | crash | stall
  int victim = -1;               // kill/crash/stall: the rank that goes away
  int fail_round = 0;            // ... in this round
  int fail_layer = 1;            // ... at this layer's transfers
  int deadline_ms = 5000;        // per MigrateLayer
  int staging_layers = 1;        // 2: Migrate() per round, commits overlapping (copier thread)
  std::string comm = "gloo";     // the communicator that moves the weights

  // Every field as a worker argument, named once.
  test::ArgFields Fields() {
    test::ArgFields f;
    f("world", world)("layers", layers)("spr", slots_per_rank)("experts", experts)("rounds", rounds)(
        "seed", seed)("rpn", ranks_per_node)("bytes", expert_bytes)("mode", mode)("victim", victim)(
        "fail_round", fail_round)("fail_layer", fail_layer)("deadline_ms", deadline_ms)(
        "staging_layers", staging_layers)("comm", comm);
    return f;
  }
  std::vector<uint64_t> TensorBytes() const { return test::ThreeTensorBytes(expert_bytes); }
};

// A random placement with redundancy: every expert once, the other slots
// random experts (possibly twice on one rank), shuffled. Every rank draws the
// same sequence from the same seed.
Placement RandomPlacement(std::mt19937& rng, const Scenario& s) {
  const int slots = s.world * s.slots_per_rank;
  std::vector<int32_t> p2l;
  for (int l = 0; l < s.layers; ++l) {
    std::vector<int32_t> p(slots);
    for (int i = 0; i < slots; ++i)
      p[i] = i < s.experts ? i : std::uniform_int_distribution<int>(0, s.experts - 1)(rng);
    std::shuffle(p.begin(), p.end(), rng);
    p2l.insert(p2l.end(), p.begin(), p.end());
  }
  return Placement::FromPhy2Log(s.layers, s.experts, s.world, std::move(p2l));
}

// The content of tensor t of expert e of layer l: the shared transfer pattern
// keyed by expert and (layer, tensor). Two experts differ in every byte, so a
// misplaced or stale expert is caught.
int PatternRegion(int layer, int tensor) { return layer * 8 + tensor; }
void Fill(uint8_t* data, uint64_t bytes, int expert, int region) {
  for (uint64_t i = 0; i < bytes; ++i) data[i] = test::PatternByte(expert, region, i);
}
int64_t FindMismatch(const uint8_t* data, uint64_t bytes, int expert, int region) {
  for (uint64_t i = 0; i < bytes; ++i)
    if (data[i] != test::PatternByte(expert, region, i)) return static_cast<int64_t>(i);
  return -1;
}

// Wraps the real communicator to count what goes through it, and to make
// the victim rank stall or die at a chosen Execute (the failure injection).
class Instrumented final : public Communicator {
 public:
  Instrumented(Communicator& inner, const Scenario& s) : inner_(inner), s_(s) {}
  std::string_view name() const override { return inner_.name(); }
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  RegionId RegisterRegion(const MemoryRegion& r, Deadline d) override {
    return inner_.RegisterRegion(r, d);
  }
  void Execute(std::span<const Transfer> transfers, Deadline deadline) override {
    ++executes;
    for (const Transfer& t : transfers) {
      if (t.src_rank == rank()) bytes_sent += t.bytes;
      if (t.dst_rank == rank()) bytes_received += t.bytes;
    }
    if (arm_failure && rank() == s_.victim) {
      arm_failure = false;
      if (s_.mode == "kill" || s_.mode == "stall") {
        // Stop participating mid-migration; the test kills us (or not).
        std::fprintf(stderr, "EPLB-STALLED\n");
        std::fflush(stderr);
        for (;;) std::this_thread::sleep_for(1h);
      }
      if (s_.mode == "crash") {
        // Die while this layer's bytes are on the wire.
        std::thread([] {
          std::this_thread::sleep_for(20ms);
          raise(SIGKILL);
        }).detach();
      }
    }
    inner_.Execute(transfers, deadline);
  }
  int executes = 0;
  uint64_t bytes_sent = 0, bytes_received = 0;
  bool arm_failure = false;

 private:
  Communicator& inner_;
  const Scenario& s_;
};

EPLB_TEST_WORKER(migrate) {
  const Scenario s = Scenario::Parse(args);
  test::WorkerRank w = test::JoinRun();
  const int me = w.env.rank;
  auto connect = DeadlineAfter(20s);
  std::unique_ptr<Communicator> weights_comm;
  if (s.comm == "gloo") {
    weights_comm = ConnectGlooCommunicator(w.Gloo("weights"), connect);
  } else {
    CommunicatorOptions o;
    o.rank = me;
    o.world_size = w.env.world_size;
    o.store = w.store;
    o.key_prefix = "weights";
    o.connect_timeout = 20s;
    weights_comm = MakeCommunicator(s.comm, o);
  }
  auto control = ConnectGlooControlGroup(w.Gloo("control"), connect);
  Instrumented comm(*weights_comm, s);

  // This rank's weights: per layer three tensors of slots_per_rank experts.
  const auto tensor_bytes = s.TensorBytes();
  std::vector<std::vector<std::vector<uint8_t>>> storage(s.layers);
  std::vector<LayerWeights> weights(s.layers);
  for (int l = 0; l < s.layers; ++l) {
    for (uint64_t b : tensor_bytes) {
      storage[l].emplace_back(b * s.slots_per_rank);
      weights[l].tensors.push_back(
          {MemoryRegion{storage[l].back().data(), storage[l].back().size(), MemoryKind::kHost, -1},
           b, 0});
    }
  }
  MigrationOptions options;
  options.ranks_per_node = s.ranks_per_node;
  options.staging_layers = s.staging_layers;
  MigrationExecutor ex(comm, *control, weights, s.slots_per_rank,
                       s.staging_layers == 2 ? MakeThreadedHostCopier(2) : MakeHostCopier(), options,
                       connect);

  spdlog::info("connected");
  std::mt19937 rng(s.seed);
  Placement cur = RandomPlacement(rng, s);
  auto slot_of = [&](int l, int t, int local) {
    return storage[l][t].data() + tensor_bytes[t] * local;
  };
  for (int l = 0; l < s.layers; ++l)
    for (int t = 0; t < 3; ++t)
      for (int i = 0; i < s.slots_per_rank; ++i)
        Fill(slot_of(l, t, i), tensor_bytes[t], cur.expert_at(l, me * s.slots_per_rank + i),
             PatternRegion(l, t));
  // Every slot of this rank holds its expert of `p` in layer l, byte for byte.
  auto verify = [&](const Placement& p, int l) {
    for (int t = 0; t < 3; ++t)
      for (int i = 0; i < s.slots_per_rank; ++i) {
        const int e = p.expert_at(l, me * s.slots_per_rank + i);
        int64_t bad = FindMismatch(slot_of(l, t, i), tensor_bytes[t], e, PatternRegion(l, t));
        if (bad >= 0) {
          std::fprintf(stderr, "EPLB-MISMATCH layer=%d tensor=%d slot=%d expert=%d byte=%lld\n", l,
                       t, me * s.slots_per_rank + i, e, static_cast<long long>(bad));
          return false;
        }
      }
    return true;
  };

  uint64_t plan_sent = 0, plan_received = 0;
  for (int round = 0; round < s.rounds; ++round) {
    Placement next = s.mode == "nochange" ? cur : RandomPlacement(rng, s);
    std::vector<std::vector<std::vector<uint8_t>>> before;
    if (s.mode == "nochange") before = storage;
    if (s.staging_layers == 2) {
      // The whole model at once: commits overlap the next layer's transfers.
      for (int l = 0; l < s.layers; ++l) {
        LayerPlan plan = ex.Plan(cur, next, l);
        plan_sent += plan.per_rank[me].bytes_sent;
        plan_received += plan.per_rank[me].bytes_received;
      }
      auto reports = ex.Migrate(cur, next, DeadlineAfter(std::chrono::milliseconds(s.deadline_ms)));
      if (static_cast<int>(reports.size()) != s.layers) return 4;
    }
    for (int l = 0; l < s.layers && s.staging_layers == 1; ++l) {
      LayerPlan plan = ex.Plan(cur, next, l);
      plan_sent += plan.per_rank[me].bytes_sent;
      plan_received += plan.per_rank[me].bytes_received;
      comm.arm_failure = s.victim >= 0 && round == s.fail_round && l == s.fail_layer;
      // A crash must land while the layer's bytes are on the wire: every rank
      // enters the layer together, and the victim dies shortly after.
      if (comm.arm_failure && s.mode == "crash") control->Barrier(DeadlineAfter(20s));
      spdlog::info("round {} layer {}: migrating", round, l);
      const auto start = Clock::now();
      try {
        LayerMigrationReport r =
            ex.MigrateLayer(plan, start + std::chrono::milliseconds(s.deadline_ms));
        if (r.rank.bytes_received != plan.per_rank[me].bytes_received || r.layer != l) return 4;
      } catch (const std::exception& e) {
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
        test::ReportError(e, ms);
        // Layers before l hold the new placement, l and after the old one.
        for (int k = 0; k < s.layers; ++k)
          if (!verify(k < l ? next : cur, k)) return 5;
        std::fprintf(stderr, "EPLB-FAILED round=%d moe_layer=%d ms=%.0f\n", round, l, ms);
        return 3;
      }
    }
    for (int l = 0; l < s.layers; ++l)
      if (!verify(next, l)) return 5;
    if (s.mode == "nochange" && storage != before) return 6;
    cur = next;
  }
  // What went over the wire is what the plans said.
  if (comm.bytes_sent != plan_sent || comm.bytes_received != plan_received) {
    std::fprintf(stderr, "EPLB-BYTES sent %llu planned %llu received %llu planned %llu\n",
                 (unsigned long long)comm.bytes_sent, (unsigned long long)plan_sent,
                 (unsigned long long)comm.bytes_received, (unsigned long long)plan_received);
    return 7;
  }
  if (s.mode == "nochange" && comm.executes != 0) return 8;
  std::fprintf(stderr, "EPLB-OK executes=%d bytes_sent=%llu bytes_received=%llu\n", comm.executes,
               (unsigned long long)comm.bytes_sent, (unsigned long long)comm.bytes_received);
  return 0;
}

// ---- tests -----------------------------------------------------------------

// Each test runs once per communicator (the parameter).
class MigrationAcrossProcesses : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() != "nixl") return;
    NixlDetection d = DetectNixl();
    if (d.available) return;
    if (std::getenv("EPLB_REQUIRE_NIXL") != nullptr)
      FAIL() << "EPLB_REQUIRE_NIXL is set but NIXL is not usable: " << d.reason;
    GTEST_SKIP() << "NIXL not usable here: " << d.reason;
  }
  Scenario Make() const {
    Scenario s;
    s.comm = GetParam();
    return s;
  }
};

std::vector<test::RankExit> RunScenario(const Scenario& s, Deadline deadline) {
  test::RankGroup group(test::Ranks("migrate", s.world, s.Args()));
  return group.Wait(deadline);
}

void ExpectAllOk(const std::vector<test::RankExit>& exits) {
  for (const auto& x : exits) EXPECT_TRUE(x.status.ok()) << test::Describe(exits);
}

TEST_P(MigrationAcrossProcesses, RandomRebalancesTwoRanks) {
  Scenario s = Make();
  s.world = 2;
  s.layers = 3;
  s.slots_per_rank = 5;
  s.experts = 8;  // 2 redundant slots
  s.rounds = 6;
  ExpectAllOk(RunScenario(s, DeadlineAfter(60s)));
}

TEST_P(MigrationAcrossProcesses, RandomRebalancesFourRanksTwoNodes) {
  Scenario s = Make();
  s.world = 4;
  s.layers = 3;
  s.slots_per_rank = 4;
  s.experts = 12;  // 4 redundant slots
  s.rounds = 6;
  s.ranks_per_node = 2;
  s.seed = 7;
  ExpectAllOk(RunScenario(s, DeadlineAfter(60s)));
}

TEST_P(MigrationAcrossProcesses, RandomRebalancesFourRanksTwoStagingLayers) {
  Scenario s = Make();
  s.world = 4;
  s.layers = 4;
  s.slots_per_rank = 3;
  s.experts = 9;
  s.rounds = 5;
  s.seed = 11;
  s.staging_layers = 2;
  ExpectAllOk(RunScenario(s, DeadlineAfter(60s)));
}

TEST_P(MigrationAcrossProcesses, NoChangeSendsNothing) {
  Scenario s = Make();
  s.world = 4;
  s.mode = "nochange";
  s.rounds = 2;
  ExpectAllOk(RunScenario(s, DeadlineAfter(60s)));
}

// The failure scenarios: the victim goes away at layer fail_layer of round 0.
struct FailureOutcome {
  std::vector<test::RankExit> exits;
  Clock::time_point killed_at;
};

void ExpectSurvivorsFailedCleanly(const Scenario& s, const std::vector<test::RankExit>& exits,
                                  std::chrono::milliseconds within) {
  for (const auto& x : exits) {
    if (x.rank == s.victim) continue;
    ASSERT_TRUE(x.status.exited && x.status.code == 3)
        << "rank " << x.rank << " should fail cleanly (exit 3)\n"
        << test::Describe(exits);
    EXPECT_NE(x.stderr_text.find("EPLB-FAILED round=0 moe_layer=" + std::to_string(s.fail_layer)),
              std::string::npos)
        << x.stderr_text;
    EXPECT_NE(x.stderr_text.find("MoE layer " + std::to_string(s.fail_layer)), std::string::npos)
        << "error does not name the layer\n"
        << x.stderr_text;
    EXPECT_NE(x.stderr_text.find("peer " + std::to_string(s.victim)), std::string::npos)
        << "error does not name the peer\n"
        << x.stderr_text;
    // Parse ms= of the EPLB-FAILED line.
    auto pos = x.stderr_text.find("EPLB-FAILED");
    auto ms_pos = x.stderr_text.find("ms=", pos);
    ASSERT_NE(ms_pos, std::string::npos);
    double ms = std::stod(x.stderr_text.substr(ms_pos + 3));
    EXPECT_LE(ms, static_cast<double>(within.count())) << x.stderr_text;
  }
}

TEST_P(MigrationAcrossProcesses, PeerKilledMidMigration) {
  Scenario s = Make();
  s.world = 4;
  s.mode = "kill";
  s.victim = 2;
  s.fail_layer = 1;
  s.deadline_ms = 3000;
  test::RankGroup group(test::Ranks("migrate", s.world, s.Args()));
  ASSERT_TRUE(group.WaitForText(s.victim, "EPLB-STALLED", DeadlineAfter(30s)))
      << group.Stderr(s.victim);
  group.Kill(s.victim);
  auto exits = group.Wait(DeadlineAfter(30s));
  ExpectSurvivorsFailedCleanly(s, exits, std::chrono::milliseconds(s.deadline_ms + 1000));
  for (const auto& x : exits) {
    if (x.rank == s.victim) continue;
    // A dead peer is noticed when its connections close, long before the deadline.
    EXPECT_LT(x.ended - group.killed_at(s.victim), 2s) << x.stderr_text;
  }
}

// The victim SIGKILLs itself 20 ms into a layer that moves 10 MiB experts:
// depending on timing it dies before its sync tokens or with bulk bytes in
// flight; both must end the same way.
TEST_P(MigrationAcrossProcesses, PeerCrashesDuringLayerTransfers) {
  Scenario s = Make();
  s.world = 4;
  s.mode = "crash";
  s.victim = 1;
  s.fail_layer = 0;
  s.layers = 1;
  s.slots_per_rank = 3;
  s.experts = 8;
  s.expert_bytes = 4u << 20;  // 10 MiB per expert: the crash lands mid-transfer
  s.deadline_ms = 1500;
  auto exits = RunScenario(s, DeadlineAfter(60s));
  EXPECT_EQ(exits[s.victim].status.signal, SIGKILL) << test::Describe(exits);
  ExpectSurvivorsFailedCleanly(s, exits, std::chrono::milliseconds(s.deadline_ms + 1000));
}

TEST_P(MigrationAcrossProcesses, StalledPeerFailsTheOthersAtTheDeadline) {
  Scenario s = Make();
  s.world = 2;
  s.mode = "stall";
  s.victim = 1;
  s.fail_layer = 0;
  s.deadline_ms = 1500;
  test::RankGroup group(test::Ranks("migrate", s.world, s.Args()));
  ASSERT_TRUE(group.WaitForText(0, "EPLB-FAILED", DeadlineAfter(30s))) << group.Stderr(0);
  group.Kill(s.victim);  // it would stall forever
  auto exits = group.Wait(DeadlineAfter(10s));
  ExpectSurvivorsFailedCleanly(s, exits, std::chrono::milliseconds(s.deadline_ms + 1000));
  EXPECT_NE(exits[0].stderr_text.find("kind=timeout"), std::string::npos) << exits[0].stderr_text;
}

INSTANTIATE_TEST_SUITE_P(HostMemory, MigrationAcrossProcesses, testing::Values("gloo", "nixl"),
                         [](const testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace eplb
