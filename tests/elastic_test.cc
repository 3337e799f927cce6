// Membership changes with real processes over real Gloo (elastic.h): a rank
// lost (its process gone before the change), a rank leaving gracefully, a
// process joining with empty slots, and a loss followed by a join of a new
// process in the lost one's place. Every process fingerprints its experts;
// after each change every serving process checks each of its slots against
// the new placement, byte for byte, and all report the same placement. After
// the last change the new members build a Balancer over themselves and run
// rebalance cycles, verifying every commit: the group serves on.
#include <gtest/gtest.h>
#include <unistd.h>

#include <map>
#include <regex>

#include "demo/fingerprint.h"
#include "demo/synthetic_load.h"
#include "eplb/balancer.h"
#include "eplb/elastic.h"
#include "support/multiprocess.h"
#include "support/worker_util.h"
#include "util/hash.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;

constexpr int kLayers = 4;
constexpr int kExperts = 12;
constexpr int kSpr = 4;
const std::vector<uint64_t> kTensorBytes = {4096, 1024};

struct Scenario : test::FieldsAsArgs<Scenario> {
  std::string change = "lose";  // lose, lose_apart, leave, join, lose_then_join, all_lost
  int victim = 2;               // lost, leaving or joining rank
  int initial = 4;              // members at the start: ranks [0, initial)
  test::ArgFields Fields() {
    test::ArgFields f;
    f("change", change)("victim", victim)("initial", initial);
    return f;
  }
};

struct Weights {
  std::vector<std::vector<std::vector<uint8_t>>> storage;  // [layer][tensor]
  std::vector<LayerWeights> layers;
  Weights() : storage(kLayers), layers(kLayers) {
    for (int l = 0; l < kLayers; ++l)
      for (uint64_t bytes : kTensorBytes) {
        storage[l].emplace_back(bytes * kSpr);
        layers[l].tensors.push_back({MemoryRegion{storage[l].back().data(), storage[l].back().size(), MemoryKind::kHost, -1},
                                     bytes, 0});
      }
  }
  void Fill(const Placement& p, int index) {
    for (int l = 0; l < kLayers; ++l)
      for (size_t t = 0; t < kTensorBytes.size(); ++t)
        for (int j = 0; j < kSpr; ++j)
          runtime::FillFingerprint(storage[l][t].data() + kTensorBytes[t] * j, kTensorBytes[t], l,
                                   p.expert_at(l, index * kSpr + j), static_cast<int>(t));
  }
  int Mismatches(const Placement& p, int index) const {
    int bad = 0;
    for (int l = 0; l < kLayers; ++l)
      for (size_t t = 0; t < kTensorBytes.size(); ++t)
        for (int j = 0; j < kSpr; ++j)
          bad += runtime::FindFingerprintMismatch(storage[l][t].data() + kTensorBytes[t] * j, kTensorBytes[t], l,
                                                  p.expert_at(l, index * kSpr + j), static_cast<int>(t)) >= 0;
    return bad;
  }
};

LoadMatrix Load(int rank) {
  SyntheticLoadOptions o;
  o.num_layers = kLayers;
  o.num_experts = kExperts;
  o.skew = 1.4;
  o.tokens_per_step = 4096;
  SyntheticLoad synthetic(o);
  LoadMatrix m(kLayers, kExperts);
  std::vector<int64_t> counts(kExperts);
  for (int l = 0; l < kLayers; ++l) {
    synthetic.Counts(7, rank, l, counts);
    for (int e = 0; e < kExperts; ++e) m.at(l, e) = static_cast<double>(counts[e]);
  }
  return m;
}

uint64_t Hash(const Placement& p) { return util::Fnv1a(p.phy2log.data(), p.phy2log.size() * sizeof(int32_t)); }

EPLB_TEST_WORKER(elastic) {
  const Scenario s = Scenario::Parse(args);
  test::WorkerRank w = test::JoinRun();
  const int me = w.env.rank, capacity = w.env.world_size;
  MembershipChangeOptions opt;
  opt.capacity = capacity;
  opt.slots_per_rank = kSpr;
  opt.communicator.communicator = "gloo";
  opt.deadline = 20s;
  WeightSource source = [](int l, int e, int t, const MemoryRegion& dst) {
    runtime::FillFingerprint(static_cast<uint8_t*>(dst.base), dst.bytes, l, e, t);
  };
  Membership members;
  for (int r = 0; r < s.initial; ++r) members.ranks.push_back(r);
  Placement placement = Placement::Identity(kLayers, kExperts, s.initial * kSpr, s.initial);
  Weights weights;
  const bool starts_joining = (s.change == "join" && me == s.victim);
  if (s.change == "lose_apart" && me < 2) {
    // Ranks 0 and 1 committed layer 1 of the next placement, rank 3 did not
    // (a rank lost at the step a layer commits): in the next one ranks 1 and
    // 3 trade slots, so experts 4-7 are in no live member's own slots.
    std::vector<int32_t> phy2log = placement.phy2log;
    auto layer1 = std::span<int32_t>(phy2log).subspan(kSpr * 4, kSpr * 4);
    std::swap_ranges(layer1.begin() + kSpr, layer1.begin() + 2 * kSpr, layer1.begin() + 3 * kSpr);
    placement = Placement::FromPhy2Log(kLayers, kExperts, s.initial, std::move(phy2log));
  }
  if (members.contains(me)) weights.Fill(placement, members.index_of(me));
  const bool lost_here =
      (s.change == "lose" || s.change == "lose_apart" || s.change == "lose_then_join") && me == s.victim;
  if (lost_here && s.change != "lose_then_join") {
    std::fprintf(stderr, "EPLB-GONE\n");
    _exit(0);  // the process is gone before the change
  }

  auto change = [&](MembershipChangeRequest req, bool join) {
    const Membership none;
    const Placement nothing;
    MembershipChangeResult r = ChangeMembership(w.store, me, join ? none : members, join ? nothing : placement,
                                                Load(me), req, weights.layers, source, opt);
    std::fprintf(stderr,
                 "EPLB-CHANGE gen=%lld serves=%d members=%d over_wire=%lld from_source=%lld before=%.4f "
                 "after=%.4f placement=%016llx mismatches=%d\n",
                 static_cast<long long>(r.after.generation), r.serves ? 1 : 0, r.after.size(),
                 static_cast<long long>(r.experts_over_wire), static_cast<long long>(r.experts_from_source),
                 r.balancedness_before, r.balancedness_after,
                 static_cast<unsigned long long>(r.serves ? Hash(r.placement) : 0),
                 r.serves ? weights.Mismatches(r.placement, r.after.index_of(me)) : 0);
    members = r.after;
    if (r.serves) placement = r.placement;
    return r.serves;
  };

  bool serves = true;
  if (s.change == "all_lost") {
    // The members 0-2 record themselves lost while rank 3 joins: nobody is
    // left to hold the placement in force, and the joiner is told.
    try {
      serves = change({{0, 1, 2}, {}, {3}}, me == 3);
    } catch (const Error& e) {
      std::fprintf(stderr, "EPLB-REFUSED %s\n", e.what());
      return 0;
    }
    return serves ? 6 : 0;
  }
  if (s.change == "lose" || s.change == "lose_apart") {
    serves = change({{s.victim}, {}, {}}, false);
  } else if (s.change == "leave") {
    serves = change({{}, {s.victim}, {}}, false);
  } else if (s.change == "join") {
    serves = change({{}, {}, {s.victim}}, starts_joining);
  } else if (s.change == "lose_then_join") {
    // The victim's first process is gone; a new one takes its rank, with
    // nothing in its slots, and joins the next generation.
    if (me == s.victim) {
      for (auto& layer : weights.storage)
        for (auto& t : layer) std::fill(t.begin(), t.end(), 0);
      serves = change({{}, {}, {s.victim}}, true);
    } else {
      serves = change({{s.victim}, {}, {}}, false) && change({{}, {}, {s.victim}}, false);
    }
  }
  if (!serves) return 0;

  // The group serves on: a Balancer over the new members, a few cycles.
  const int index = members.index_of(me), size = members.size();
  SelectionRequest request;
  request.communicator = "gloo";
  request.async = true;
  auto bstore = MakePrefixStore(w.store, "balancer/g" + std::to_string(members.generation));
  BalancerLinks links = MakeBalancerLinks(bstore, index, size, request, DeadlineAfter(20s));
  BalancerConfig cfg;
  cfg.num_layers = kLayers;
  cfg.num_experts = kExperts;
  cfg.num_slots = size * kSpr;
  cfg.mode = BalancerMode::kAsync;
  cfg.window_steps = 30;
  cfg.step_interval = 80;
  cfg.first_rebalance_step = 30;
  cfg.last_rebalance_step = 250;
  cfg.deadline = 3s;
  Balancer balancer(links, weights.layers, cfg, placement);
  int mismatches = 0;
  balancer.set_on_commit([&](const CommitEvent&) { mismatches += weights.Mismatches(*balancer.placement(), index); });
  SyntheticLoadOptions lo;
  lo.num_layers = kLayers;
  lo.num_experts = kExperts;
  lo.skew = 1.5;
  lo.drift_period_steps = 40;
  SyntheticLoad load(lo);
  std::vector<int64_t> counts(kExperts);
  int64_t step = 0;
  while ((step < 300 || !balancer.idle()) && step < 20000) {
    std::this_thread::sleep_for(1ms);
    for (int l = 0; l < kLayers; ++l) {
      load.Counts(step, me, l, counts);
      balancer.RecordLoad(l, counts);
    }
    balancer.Step();
    ++step;
  }
  const BalancerMetrics m = balancer.metrics();
  mismatches += weights.Mismatches(*balancer.placement(), index);
  std::fprintf(stderr, "EPLB-SERVED completed=%lld failed=%lld layers=%lld mismatches=%d\n",
               static_cast<long long>(m.cycles_completed), static_cast<long long>(m.cycles_failed),
               static_cast<long long>(m.layers_committed), mismatches);
  return mismatches == 0 ? 0 : 5;
}

struct ChangeLine {
  long long gen, over_wire, from_source;
  int serves, members, mismatches;
  std::string placement;
};

std::vector<ChangeLine> Changes(const std::string& text) {
  std::vector<ChangeLine> out;
  std::regex re(R"(EPLB-CHANGE gen=(\d+) serves=(\d) members=(\d+) over_wire=(\d+) from_source=(\d+) )"
                R"(before=[0-9.]+ after=[0-9.]+ placement=([0-9a-f]+) mismatches=(\d+))");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it) {
    const auto& m = *it;
    out.push_back({std::stoll(m[1]), std::stoll(m[4]), std::stoll(m[5]), std::stoi(m[2]), std::stoi(m[3]),
                   std::stoi(m[7]), m[6]});
  }
  return out;
}

// Runs the scenario on `world` processes; every process exits 0, and the
// serving ones agree on each generation's placement with every slot verified.
std::vector<test::RankExit> RunScenario(const Scenario& s, int world) {
  test::RankGroup group(test::Ranks("elastic", world, s.Args()));
  auto exits = group.Wait(DeadlineAfter(90s));
  for (const auto& x : exits) EXPECT_TRUE(x.status.ok()) << test::Describe(exits);
  std::map<long long, std::string> placement_of;
  for (const auto& x : exits)
    for (const ChangeLine& c : Changes(x.stderr_text)) {
      EXPECT_EQ(c.mismatches, 0) << "rank " << x.rank << "\n" << x.stderr_text;
      if (!c.serves) continue;
      auto [it, fresh] = placement_of.emplace(c.gen, c.placement);
      EXPECT_EQ(it->second, c.placement) << "generation " << c.gen << "\n" << test::Describe(exits);
    }
  return exits;
}

// The process served on after its changes: its Balancer over the new
// members completed a cycle that committed layers, and none failed.
bool Served(const test::RankExit& x) {
  std::smatch m;
  if (!std::regex_search(x.stderr_text, m, std::regex(R"(EPLB-SERVED completed=(\d+) failed=(\d+) layers=(\d+))")))
    return false;
  return std::stoll(m[1]) >= 1 && std::stoll(m[2]) == 0 && std::stoll(m[3]) >= 1;
}

TEST(Elastic, ALostRanksExpertsComeBackFromReplicasAndTheSource) {
  Scenario s;
  s.change = "lose";
  auto exits = RunScenario(s, 4);
  for (int r : {0, 1, 3}) {
    auto c = Changes(exits[r].stderr_text);
    ASSERT_EQ(c.size(), 1u) << exits[r].stderr_text;
    EXPECT_EQ(c[0].members, 3);
    EXPECT_GT(c[0].from_source, 0) << "rank 2 held the only replicas of some experts";
    EXPECT_TRUE(Served(exits[r])) << exits[r].stderr_text;
  }
}

// Rank 2 is lost while the others are one commit apart: every member's
// slots are taken as its own map says, and the experts that are in nobody's
// (4-7 of layer 1) come back from the source with rank 2's (8-11, every
// layer): 12 slots for 12 experts, so exactly 3 x 4 + 8.
TEST(Elastic, MembersOneCommitApartEachKeepTheirOwnSlots) {
  Scenario s;
  s.change = "lose_apart";
  auto exits = RunScenario(s, 4);
  for (int r : {0, 1, 3}) {
    auto c = Changes(exits[r].stderr_text);
    ASSERT_EQ(c.size(), 1u) << exits[r].stderr_text;
    EXPECT_EQ(c[0].members, 3);
    EXPECT_EQ(c[0].from_source, 3 * 4 + 8);
    EXPECT_NE(exits[r].stderr_text.find("differ in 1 layer(s)"), std::string::npos) << exits[r].stderr_text;
    EXPECT_TRUE(Served(exits[r])) << exits[r].stderr_text;
  }
}

TEST(Elastic, ALeavingRankHandsOverItsExpertsAndGoes) {
  Scenario s;
  s.change = "leave";
  s.victim = 1;
  auto exits = RunScenario(s, 4);
  for (int r = 0; r < 4; ++r) {
    auto c = Changes(exits[r].stderr_text);
    ASSERT_EQ(c.size(), 1u) << exits[r].stderr_text;
    EXPECT_EQ(c[0].from_source, 0) << "every expert had a readable replica";
    EXPECT_EQ(c[0].serves, r == 1 ? 0 : 1);
    EXPECT_EQ(Served(exits[r]), r != 1) << exits[r].stderr_text;
  }
}

TEST(Elastic, AJoiningProcessReceivesItsExpertsAndServes) {
  Scenario s;
  s.change = "join";
  s.victim = 3;
  s.initial = 3;
  auto exits = RunScenario(s, 4);
  for (int r = 0; r < 4; ++r) {
    auto c = Changes(exits[r].stderr_text);
    ASSERT_EQ(c.size(), 1u) << exits[r].stderr_text;
    EXPECT_EQ(c[0].members, 4);
    EXPECT_EQ(c[0].from_source, 0);
    EXPECT_GT(c[0].over_wire, 0);
    EXPECT_TRUE(Served(exits[r])) << exits[r].stderr_text;
  }
}

TEST(Elastic, AJoinerWithEveryMemberLostIsRefusedNamingWhy) {
  Scenario s;
  s.change = "all_lost";
  s.initial = 3;
  auto exits = RunScenario(s, 4);
  for (int r : {0, 1, 2}) {
    auto c = Changes(exits[r].stderr_text);
    ASSERT_EQ(c.size(), 1u) << exits[r].stderr_text;
    EXPECT_EQ(c[0].serves, 0);
  }
  EXPECT_NE(exits[3].stderr_text.find("EPLB-REFUSED"), std::string::npos) << exits[3].stderr_text;
  EXPECT_NE(exits[3].stderr_text.find("is lost: no process holds the placement in force"), std::string::npos)
      << exits[3].stderr_text;
}

TEST(Elastic, ALossThenANewProcessInItsPlace) {
  Scenario s;
  s.change = "lose_then_join";
  s.victim = 1;
  auto exits = RunScenario(s, 4);
  for (int r : {0, 2, 3}) EXPECT_EQ(Changes(exits[r].stderr_text).size(), 2u) << exits[r].stderr_text;
  for (int r = 0; r < 4; ++r) EXPECT_TRUE(Served(exits[r])) << exits[r].stderr_text;
}

}  // namespace
}  // namespace eplb
