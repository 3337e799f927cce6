// `eplb simulate` through the real binary: measured DeepSeek-V3 loads and
// synthetic drift, the SVG and JSON it writes, and bad input.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/files.h"
#include "support/bad_files.h"
#include "support/paths.h"
#include "support/run_command.h"

namespace eplb {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

size_t Count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

TEST(SimulateCli, DeepSeekV3FilesGiveTableSvgAndJson) {
  const std::string loads = test::DataDir() + "/loads/";
  const std::string dir = test::MakeTempDir("eplb-sim-");
  const std::string svg = dir + "/sim.svg", out = dir + "/sim.json";
  auto r = test::RunCli({"simulate", "--load", loads + "deepseek-v3-prefill_in512.json", "--load",
                         loads + "deepseek-v3-prefill_in2048.json", "--load",
                         loads + "deepseek-v3-decode_in1000out1000.json", "--replicas", "288",
                         "--groups", "8", "--nodes", "4", "--ranks", "32", "--policies",
                         "deepseek,movement", "--svg", svg, "--output", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("served (mean)"), std::string::npos) << r.out;

  const std::string text = io::ReadFile(svg);
  EXPECT_EQ(text.rfind("<svg", 0), 0u);
  EXPECT_NE(text.find("</svg>"), std::string::npos);
  EXPECT_EQ(Count(text, "<polyline"), 3u);  // two policies + no rebalancing
  EXPECT_NE(text.find("movement (rebalanced)"), std::string::npos);

  json doc = json::parse(io::ReadFile(out));
  ASSERT_EQ(doc["windows"], 3);
  ASSERT_EQ(doc["policies"].size(), 2u);
  const json& deepseek = doc["policies"][0];
  const json& movement = doc["policies"][1];
  EXPECT_EQ(deepseek["policy"], "deepseek");
  // Every rebalance of DeepSeek moves experts; the movement-aware policy
  // moves fewer bytes over the same sequence.
  for (int k = 1; k < 3; ++k) EXPECT_GT(deepseek["bytes_moved"][k].get<double>(), 0);
  EXPECT_LT(movement["total_bytes_moved"].get<double>(),
            deepseek["total_bytes_moved"].get<double>());
  for (const auto& b : deepseek["balancedness_served"]) {
    EXPECT_GT(b.get<double>(), 0.0);
    EXPECT_LE(b.get<double>(), 1.0);
  }
  fs::remove_all(dir);
}

TEST(SimulateCli, RebalancingBeatsAStaticPlacementUnderDrift) {
  auto r = test::RunCli({"simulate", "--synthetic", "--steps", "16", "--layers", "4", "--experts",
                         "32", "--replicas", "40", "--ranks", "8", "--drift", "5", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json doc = json::parse(r.out);
  const json& p = doc["policies"][0];
  EXPECT_GT(p["mean_served"].get<double>(), p["mean_static"].get<double>() + 0.1);
}

TEST(SimulateCli, BadInputExitsTwoAndWritesNothing) {
  const std::string loads = test::DataDir() + "/loads/";
  const std::string dir = test::MakeTempDir("eplb-sim-bad-");
  const std::string svg = dir + "/sim.svg";
  // Two models of different shapes cannot form one sequence.
  auto r = test::RunCli({"simulate", "--load", loads + "deepseek-v3-prefill_in512.json", "--load",
                         loads + "qwen3-30b-a3b-prover.json", "--svg", svg});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("one shape"), std::string::npos) << r.err;
  // Slots that do not divide over ranks.
  r = test::RunCli({"simulate", "--synthetic", "--replicas", "81", "--ranks", "8", "--svg", svg});
  EXPECT_EQ(r.exit_code, 2);
  // Neither files nor --synthetic.
  r = test::RunCli({"simulate", "--svg", svg});
  EXPECT_EQ(r.exit_code, 2);
  r = test::RunCli({"simulate", "--synthetic", "--policies", "nope", "--svg", svg});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown policy"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::is_empty(dir));
  fs::remove_all(dir);
}

TEST(SimulateCli, RefusesBadFilesAndWritesNothing) {
  const std::string inputs = test::MakeTempDir("eplb-sim-in-");
  const std::string dir = test::MakeTempDir("eplb-sim-bad-");
  const std::string good = test::DataDir() + "/loads/deepseek-v3-prefill_in512.json";
  const std::string deep65 = inputs + "/deep65.json", wide = inputs + "/wide.json";
  std::ofstream(deep65) << test::NestedLoadJson(65);
  std::ofstream(wide) << "{\"load\": [[1, \"" << std::string(10000, 'x') << "\"]]}";
  std::vector<test::BadFile> bad = test::MakeBadFiles(inputs);
  bad.push_back({"JSON 65 deep", deep65, "nested more than 64 levels deep"});
  bad.push_back({"a 10 KB string", wide, "expert 1 is a string, not a number"});
  for (const test::BadFile& b : bad) {
    // Second in the sequence: the first file's load is already in memory.
    auto r = test::RunCli({"simulate", "--load", good, "--load", b.path, "--replicas", "288",
                           "--ranks", "32", "--svg", dir + "/sim.svg", "--output",
                           dir + "/sim.json"});
    EXPECT_EQ(r.exit_code, 2) << b.what << ": " << r.err;
    EXPECT_NE(r.err.find(b.message), std::string::npos) << b.what << ": " << r.err;
    EXPECT_LT(r.err.size(), 300u) << b.what;
  }
  EXPECT_TRUE(fs::is_empty(dir));
  fs::remove_all(dir);
  fs::remove_all(inputs);
}

}  // namespace
}  // namespace eplb
