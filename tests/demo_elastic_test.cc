// `eplb demo` with one membership event, through the real binary: real rank
// processes over real Gloo (and the transfer communicator the rule picks),
// the launcher killing a rank's process or starting a new one. Each run
// checks that the event happened, that every slot of every member held what
// the new placement names right after the change and at the end (the demo
// checks byte for byte and counts mismatches), that every expert has a slot
// (the maps name live members only), and that the group served on: a
// rebalance completed after the change.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/run_command.h"

namespace eplb {
namespace {

using nlohmann::json;

std::vector<std::string> Small(std::vector<std::string> extra) {
  std::vector<std::string> a = {"demo",      "--layers",   "6",        "--experts", "32",   "--groups",
                                "4",         "--expert-bytes", "8192", "--steps",   "500",  "--interval",
                                "100",       "--window",   "50",       "--step-ms", "1",    "--tokens",
                                "64",        "--deadline-ms", "3000",  "--json"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

// The figures every event must show; returns the report.
json RunEvent(const std::vector<std::string>& event, int ranks_after) {
  auto r = test::RunCli(Small(event), std::chrono::seconds(180));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  json j = json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    ADD_FAILURE() << "no JSON report: " << r.out << r.err;
    return json::object();
  }
  EXPECT_TRUE(j["ok"].get<bool>()) << j.dump();
  EXPECT_EQ(j["ranks"].get<int>(), ranks_after);
  EXPECT_EQ(j["mismatches"].get<int64_t>(), 0);
  const json& m = j["membership"];
  EXPECT_TRUE(m.is_object()) << j.dump();
  if (!m.is_object()) return j;
  EXPECT_TRUE(m["verified"].get<bool>()) << m.dump();
  EXPECT_EQ(m["members"].size(), static_cast<size_t>(ranks_after)) << m.dump();
  EXPECT_EQ(m["generation"].get<int>(), 1);
  EXPECT_GE(m["changed_at_step"].get<int64_t>(), m["at_step"].get<int64_t>());
  // Every expert moved is whole: the bytes follow the experts.
  EXPECT_EQ(m["bytes_from_source"].get<uint64_t>(), m["experts_from_source"].get<uint64_t>() * 8192) << m.dump();
  EXPECT_EQ(m["bytes_over_wire"].get<uint64_t>(), m["experts_over_wire"].get<uint64_t>() * 8192) << m.dump();
  EXPECT_GT(m["served_again_seconds"].get<double>(), 0);
  // Served on: a rebalance of the new generation completed and verified.
  bool after = false;
  for (const json& c : j["rebalances"])
    after |= c.value("generation", 0) == 1 && c["ok"].get<bool>() && c["verified"].get<bool>();
  EXPECT_TRUE(after) << "no rebalance completed after the change\n" << j.dump();
  EXPECT_TRUE(m.contains("balancedness_after_next_rebalance")) << m.dump();
  return j;
}

// Kill rank 2 at several points of the run: between cycles (120), at a
// trigger (the handshake, 150), in the migration that follows (160).
class DemoElasticKill : public testing::TestWithParam<int> {};

TEST_P(DemoElasticKill, TheLostRanksExpertsComeBackAndTheOthersServeOn) {
  const json j = RunEvent({"--kill-rank", "2", "--kill-at", std::to_string(GetParam())}, 3);
  const json& m = j["membership"];
  ASSERT_TRUE(m.is_object());
  EXPECT_EQ(m["lost"], json::array({2})) << m.dump();
  EXPECT_EQ(m["members"], json::array({0, 1, 3})) << m.dump();
  // Rank 2's experts came back: from the others' replicas over the wire,
  // from the source where it held the only one.
  EXPECT_GT(m["experts_from_source"].get<int64_t>() + m["experts_over_wire"].get<int64_t>(), 0) << m.dump();
  // From the kill to every expert served again: the loss is seen at once
  // (the connections close), then the change moves 6 layers of 8 KiB experts.
  EXPECT_LT(m["served_again_seconds"].get<double>(), 3.0 + 5.0) << m.dump();
}

INSTANTIATE_TEST_SUITE_P(AtPointsOfACycle, DemoElasticKill, testing::Values(120, 150, 160),
                         [](const auto& info) { return "step" + std::to_string(info.param); });

TEST(DemoElastic, ALeavingRankSendsItsExpertsAndTheOthersServeOn) {
  const json j = RunEvent({"--leave-rank", "1", "--leave-at", "200"}, 3);
  const json& m = j["membership"];
  ASSERT_TRUE(m.is_object());
  EXPECT_EQ(m["lost"], json::array()) << m.dump();
  EXPECT_EQ(m["members"], json::array({0, 2, 3})) << m.dump();
  // A graceful leave restores nothing from the source: the leaver sends.
  EXPECT_EQ(m["experts_from_source"].get<int64_t>(), 0) << m.dump();
  EXPECT_GT(m["experts_over_wire"].get<int64_t>(), 0) << m.dump();
}

TEST(DemoElastic, ANewProcessJoinsWithEmptySlotsAndServes) {
  const json j = RunEvent({"--join-at", "200"}, 5);
  const json& m = j["membership"];
  ASSERT_TRUE(m.is_object());
  EXPECT_EQ(m["members"], json::array({0, 1, 2, 3, 4})) << m.dump();
  EXPECT_EQ(m["experts_from_source"].get<int64_t>(), 0) << m.dump();
  EXPECT_GT(m["experts_over_wire"].get<int64_t>(), 0) << m.dump();  // the joiner's slots were filled
}

TEST(DemoElastic, BadEventsAreRefusedBeforeAnyRankStarts) {
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"--kill-rank", "0", "--kill-at", "100"}, "rank 0 writes the report"},
      {{"--kill-rank", "4", "--kill-at", "100"}, "ranks 1 to 3 can"},
      {{"--kill-rank", "2"}, "--kill-rank and --kill-at go together"},
      {{"--leave-at", "100"}, "--leave-rank and --leave-at go together"},
      {{"--kill-rank", "2", "--kill-at", "100", "--join-at", "200"}, "one membership event per run"},
      {{"--join-at", "500"}, "must be in [1, --steps)"},
      {{"--kill-rank", "2", "--kill-at", "100", "--gpu"}, "host weights"},
      {{"--kill-rank", "2", "--kill-at", "100", "--slots", "32"}, "with 3 ranks of 8 slots"},
  };
  for (const Case& c : cases) {
    auto r = test::RunCli(Small(c.args), std::chrono::seconds(30));
    EXPECT_EQ(r.exit_code, 2) << testing::PrintToString(c.args) << r.out << r.err;
    EXPECT_NE(r.err.find(c.says), std::string::npos) << testing::PrintToString(c.args) << "\n" << r.err;
  }
}

}  // namespace
}  // namespace eplb
