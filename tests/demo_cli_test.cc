// `eplb demo` through the real binary: it starts real rank processes that
// rebalance over real Gloo and verify every expert; small models keep it fast.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eplb/detect.h"
#include "support/bad_files.h"
#include "support/paths.h"
#include "support/run_command.h"

namespace eplb {
namespace {

using nlohmann::json;
using testing::HasSubstr;

// A small model that still has the DeepSeek-V3 shape of groups and redundancy.
std::vector<std::string> Small(std::vector<std::string> extra = {}) {
  std::vector<std::string> a = {"demo",       "--layers", "6",       "--experts",  "32",
                                "--groups",   "4",        "--expert-bytes", "8192", "--steps",
                                "400",        "--interval", "100",   "--window",   "50",
                                "--step-ms",  "1",        "--tokens", "64",        "--deadline-ms",
                                "3000"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

// The demo rebalances at steps first, first + interval, ... below its last
// step while no cycle is in flight; a trigger that finds one running is
// skipped, and draining the last cycle after the last step starts none. How long
// a cycle takes depends on the machine's load and the communicator, so the
// expected triggers are derived from the run's own end steps: every free
// trigger must have rebalanced, none other, and at least one did.
void ExpectEveryFreeTriggerRebalanced(const json& j, int first, int interval, int steps) {
  const json& done = j["rebalances"];
  ASSERT_GE(done.size(), 1u) << j.dump();
  size_t next = 0;
  int busy_until = -1;
  for (int t = first; t < steps; t += interval) {
    // A cycle was still running (at its very end step either may happen).
    if (t < busy_until || (t == busy_until && (next >= done.size() || done[next]["trigger_step"] != t))) continue;
    if (next >= done.size()) {
      ADD_FAILURE() << "no rebalance at free trigger step " << t << "\n" << j.dump();
      return;
    }
    EXPECT_EQ(done[next]["trigger_step"].get<int>(), t) << j.dump();
    busy_until = done[next]["end_step"].get<int>();
    ++next;
  }
  EXPECT_EQ(next, done.size()) << j.dump();
}

TEST(DemoCli, AsyncFourRanksVerifiesEveryRebalance) {
  auto r = test::RunCli(Small({"--json"}), std::chrono::seconds(120));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  json j = json::parse(r.out);
  EXPECT_TRUE(j["ok"].get<bool>());
  EXPECT_EQ(j["mode"], "async");
  EXPECT_EQ(j["ranks"], 4);
  EXPECT_EQ(j["mismatches"], 0);
  EXPECT_GT(j["experts_checked"].get<int64_t>(), 0);
  // Rebalances at steps 50, 150, 250, 350 unless a cycle still runs then;
  // each moved experts and verified.
  ExpectEveryFreeTriggerRebalanced(j, 50, 100, 400);
  for (const json& c : j["rebalances"]) {
    EXPECT_TRUE(c["ok"].get<bool>()) << c.dump();
    EXPECT_TRUE(c["verified"].get<bool>()) << c.dump();
    EXPECT_GE(c["balancedness_after"].get<double>(), c["balancedness_before"].get<double>()) << c.dump();
  }
  EXPECT_GT(j["rebalances"][0]["experts_moved"].get<int64_t>(), 0);
  EXPECT_GT(j["rebalances"][0]["bytes_moved"].get<int64_t>(), 0);
  for (const char* when : {"outside_migration", "during_migration"}) {
    EXPECT_GT(j["step_ms"][when]["count"].get<int64_t>(), 0) << when;
    EXPECT_GE(j["step_ms"][when]["p99"].get<double>(), j["step_ms"][when]["p50"].get<double>());
  }
  EXPECT_GE(j["commit_copy_ms_max"].get<double>(), 0.0);
}

// The selection rule, both branches, in the real demo: NIXL where it is
// installed (scripts/setup.sh puts its wheel in .deps/nixl), gloo where it
// is not, or where EPLB_NIXL_DIR=none hides it; every expert verified.
TEST(DemoCli, PicksNixlWhereInstalledAndGlooWhereHidden) {
  NixlDetection nixl = DetectNixl();
  if (!nixl.available && std::getenv("EPLB_REQUIRE_NIXL") != nullptr)
    FAIL() << "EPLB_REQUIRE_NIXL is set but NIXL is not usable: " << nixl.reason;
  if (nixl.available) {
    auto r = test::RunCli(Small({"--ranks", "2"}), std::chrono::seconds(120));
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_THAT(r.out, HasSubstr("eplb: communicator nixl (nixl found at " + nixl.capi_library));
    EXPECT_THAT(r.out, HasSubstr("| nixl | weights verified"));
    EXPECT_THAT(r.out, HasSubstr("result: OK"));
  }
  auto r = test::RunCli(Small({"--ranks", "2"}), std::chrono::seconds(120), {{"EPLB_NIXL_DIR", "none"}});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("eplb: communicator gloo (nixl hidden by EPLB_NIXL_DIR=none)"));
  EXPECT_THAT(r.out, HasSubstr("| gloo | weights verified"));
  EXPECT_THAT(r.out, HasSubstr("result: OK"));
}

TEST(DemoCli, TextReportNamesTheCommunicatorAndSyncMode) {
  auto r = test::RunCli(Small({"--sync", "--ranks", "2"}), std::chrono::seconds(120));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, testing::ContainsRegex("eplb: communicator (gloo|nixl) \\("));
  EXPECT_THAT(r.out, HasSubstr("eplb demo: 2 ranks, sync mode"));
  EXPECT_THAT(r.out, HasSubstr("rebalance 1 at step 50: balancedness"));
  EXPECT_THAT(r.out, HasSubstr("weights verified"));
  EXPECT_THAT(r.out, HasSubstr("during migrations:"));
  EXPECT_THAT(r.out, HasSubstr("result: OK"));
  // Not a terminal: no progress line.
  EXPECT_THAT(r.out, testing::Not(HasSubstr("\x1b[K")));
}

TEST(DemoCli, DriftsAMeasuredLoadFile) {
  const std::string file = test::DataDir() + "/loads/qwen2-57b-a14b-sharegpt.json";
  auto r = test::RunCli({"demo", "--load", file, "--layers", "4", "--experts", "64", "--groups", "1",
                         "--ranks", "2", "--expert-bytes", "4096", "--steps", "250", "--interval", "100",
                         "--window", "50", "--step-ms", "1", "--json"},
                        std::chrono::seconds(120));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  json j = json::parse(r.out);
  EXPECT_TRUE(j["ok"].get<bool>());
  EXPECT_EQ(j["model"]["experts"], 64);
  ExpectEveryFreeTriggerRebalanced(j, 50, 100, 250);
}

TEST(DemoCli, BadInputExitsTwoBeforeStartingRanks) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"demo", "--slots", "250"}, "250 slots do not split over 4 ranks"},
      {{"demo", "--experts", "30", "--groups", "8"}, "group"},
      {{"demo", "--load", "/nonexistent/load.json"}, "/nonexistent/load.json"},
      {{"demo", "--load", test::DataDir() + "/loads/qwen2-57b-a14b-sharegpt.json"}, "--experts 64"},
      {{"demo", "--ranks", "0"}, "--ranks"},
      {{"demo", "--sync", "--communicator", "carrier-pigeon"}, "carrier-pigeon"},
      {{"demo", "--policy", "no-such-policy"}, "no-such-policy"},
  };
  for (const Case& c : cases) {
    auto r = test::RunCli(c.args, std::chrono::seconds(30));
    EXPECT_EQ(r.exit_code, 2) << c.message << "\n" << r.out << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.message));
  }
}

TEST(DemoCli, BadLoadFilesExitTwoBeforeStartingRanks) {
  const std::string dir = test::MakeTempDir("eplb-demo-in-");
  const std::string deep65 = dir + "/deep65.json", wide = dir + "/wide.json";
  std::ofstream(deep65) << test::NestedLoadJson(65);
  std::ofstream(wide) << "{\"load\": [[1, \"" << std::string(10000, 'x') << "\"]]}";
  std::vector<test::BadFile> bad = test::MakeBadFiles(dir);
  bad.push_back({"JSON 65 deep", deep65, "nested more than 64 levels deep"});
  bad.push_back({"a 10 KB string", wide, "expert 1 is a string, not a number"});
  for (const test::BadFile& b : bad) {
    // Ranks refusing the file would end the launcher with exit status 1,
    // "FAILED" and their logs' tails.
    auto r = test::RunCli({"demo", "--load", b.path}, std::chrono::seconds(30));
    EXPECT_EQ(r.exit_code, 2) << b.what << ": " << r.out << r.err;
    EXPECT_THAT(r.err, HasSubstr(b.message)) << b.what;
    EXPECT_THAT(r.err, testing::Not(HasSubstr("FAILED"))) << b.what;
    EXPECT_LT(r.err.size(), 300u) << b.what;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace eplb
