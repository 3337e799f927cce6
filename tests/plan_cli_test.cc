// `eplb plan` through the real binary: outputs, defaults from golden files,
// --previous, --json, --list-policies, and every bad input
// (exit status 2, a message naming the problem, no output file written).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/bad_files.h"
#include "support/paths.h"
#include "support/run_command.h"

namespace eplb {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::HasSubstr;

class PlanCli : public testing::Test {
 protected:
  void SetUp() override {
    inputs_ = test::MakeTempDir("eplb-plan-in-");
    outputs_ = test::MakeTempDir("eplb-plan-out-");
  }
  void TearDown() override {
    fs::remove_all(inputs_);
    fs::remove_all(outputs_);
  }

  std::string Input(const std::string& name, const std::string& content) {
    std::string path = inputs_ + "/" + name;
    std::ofstream(path) << content;
    return path;
  }
  std::string Output() const { return outputs_ + "/out.json"; }
  static std::string Bundled() {
    return test::DataDir() + "/loads/deepseek-v3-prefill_in1024.json";
  }
  static json ReadJson(const std::string& path) {
    std::ifstream in(path);
    return json::parse(in);
  }
  // A small valid load file: `layers` x `experts` of distinct counts.
  static std::string LoadJson(int layers, int experts) {
    json rows = json::array();
    for (int l = 0; l < layers; ++l) {
      json row = json::array();
      for (int e = 0; e < experts; ++e) row.push_back((e * 37 + l * 11) % 101 + 1);
      rows.push_back(row);
    }
    return json{{"load", rows}}.dump();
  }

  // Runs `eplb plan ARGS --output OUT` expecting rejection: exit status 2, a
  // message containing `expected`, and nothing at all written to the output
  // folder (not even a temporary file). Returns stderr.
  std::string ExpectRejected(std::vector<std::string> args, const std::string& expected) {
    args.insert(args.begin(), "plan");
    args.push_back("--output");
    args.push_back(Output());
    test::CommandResult r = test::RunCli(args);
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    EXPECT_EQ(r.exit_code, 2) << joined << "\nstdout: " << r.out << "\nstderr: " << r.err;
    EXPECT_THAT(r.err, HasSubstr(expected)) << joined;
    EXPECT_TRUE(fs::is_empty(outputs_)) << joined << ": something was written";
    return r.err;
  }

  std::string inputs_, outputs_;
};

TEST_F(PlanCli, WritesThePlacementAndSummarizes) {
  test::CommandResult r = test::RunCli({"plan", "--load", Bundled(), "--replicas", "288",
                                        "--groups", "8", "--nodes", "4", "--ranks", "32",
                                        "--output", Output()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("balancedness"));
  EXPECT_THAT(r.out, HasSubstr("->"));
  EXPECT_THAT(r.out, HasSubstr("identity placement"));
  EXPECT_THAT(r.out, HasSubstr("hottest experts"));
  EXPECT_THAT(r.out, HasSubstr("replicas on ranks"));

  json out = ReadJson(Output());
  ASSERT_EQ(out["phy2log"].size(), 58u);
  EXPECT_EQ(out["phy2log"][0].size(), 288u);
  EXPECT_EQ(out["logcnt"][0].size(), 256u);
  EXPECT_EQ(out["log2phy"][0].size(), 256u);
  EXPECT_EQ(out["balancedness"]["per_layer"].size(), 58u);
  EXPECT_GT(out["balancedness"]["mean"].get<double>(),
            out["balancedness_before"]["mean"].get<double>());
  EXPECT_GT(out["policy_seconds"].get<double>(), 0.0);
  EXPECT_EQ(out["policy"], "deepseek");
  // log2phy agrees with phy2log.
  for (int e = 0; e < 256; ++e)
    for (const json& slot : out["log2phy"][3][e]) {
      if (slot.get<int>() < 0) continue;
      EXPECT_EQ(out["phy2log"][3][slot.get<int>()].get<int>(), e);
    }
}

TEST_F(PlanCli, TakesTheShapeFromAGoldenFile) {
  const std::string golden = test::DataDir() + "/golden/deepseek/deepseek-readme.json";
  test::CommandResult r = test::RunCli({"plan", "--load", golden, "--output", Output()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json expected = ReadJson(golden)["expected"];
  json out = ReadJson(Output());
  EXPECT_EQ(out["phy2log"], expected["phy2log"]);
  EXPECT_EQ(out["logcnt"], expected["logcnt"]);
}

TEST_F(PlanCli, JsonOnStdoutAndTheListOfPolicies) {
  test::CommandResult r =
      test::RunCli({"plan", "--load", Input("l.json", LoadJson(2, 16)), "--replicas", "20",
                    "--ranks", "4", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json out = json::parse(r.out);
  EXPECT_EQ(out["num_slots"], 20);
  EXPECT_EQ(out["balancedness"]["per_layer"].size(), 2u);

  r = test::RunCli({"plan", "--list-policies"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.substr(0, r.out.find('\n')), "deepseek");
}

TEST_F(PlanCli, PreviousPlacementKeepsSlots) {
  const std::string first = outputs_ + "/first.json";
  ASSERT_EQ(test::RunCli({"plan", "--load", Bundled(), "--replicas", "288", "--groups", "8",
                          "--nodes", "4", "--ranks", "32", "--output", first})
                .exit_code,
            0);
  const std::string other = test::DataDir() + "/loads/deepseek-v3-decode_in1000out1000.json";
  const std::string fresh = outputs_ + "/fresh.json", kept = outputs_ + "/kept.json";
  std::vector<std::string> args = {"plan",  "--load",  other, "--replicas", "288", "--groups",
                                   "8",     "--nodes", "4",   "--ranks",    "32"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = args;
    a.insert(a.end(), extra.begin(), extra.end());
    return test::RunCli(a);
  };
  ASSERT_EQ(with({"--output", fresh}).exit_code, 0);
  test::CommandResult r = with({"--previous", first, "--output", kept});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("previous placement"));
  json a = ReadJson(first)["phy2log"], f = ReadJson(fresh)["phy2log"], k = ReadJson(kept)["phy2log"];
  int same_fresh = 0, same_kept = 0;
  for (size_t l = 0; l < a.size(); ++l) {
    for (size_t s = 0; s < a[l].size(); ++s) {
      same_fresh += a[l][s] == f[l][s];
      same_kept += a[l][s] == k[l][s];
    }
  }
  EXPECT_GT(same_kept, same_fresh);
}

TEST_F(PlanCli, AllZeroLayerStillGetsAPlacement) {
  json doc = json::parse(LoadJson(3, 16));
  for (auto& v : doc["load"][1]) v = 0;
  test::CommandResult r = test::RunCli({"plan", "--load", Input("z.json", doc.dump()),
                                        "--replicas", "24", "--groups", "4", "--nodes", "2",
                                        "--ranks", "4", "--output", Output()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json out = ReadJson(Output());
  std::vector<int> seen(16, 0);
  for (const json& e : out["phy2log"][1]) ++seen.at(e.get<int>());
  for (int e = 0; e < 16; ++e) EXPECT_GE(seen[e], 1) << "expert " << e << " has no slot";
  EXPECT_EQ(out["balancedness"]["per_layer"][1], 1.0);
}

TEST_F(PlanCli, RejectsMissingAndMalformedFiles) {
  const std::vector<std::string> shape = {"--replicas", "16", "--ranks", "4"};
  auto with = [&](const std::string& path) {
    std::vector<std::string> a = {"--load", path};
    a.insert(a.end(), shape.begin(), shape.end());
    return a;
  };
  ExpectRejected(with(inputs_ + "/absent.json"), "cannot open file");
  ExpectRejected(with(Input("bad.json", "{\"load\": [[1, 2,")), "not valid JSON");
  ExpectRejected(with(Input("nan.json", "{\"load\": [[1, NaN, 3, 4]]}")), "not valid JSON");
  ExpectRejected(with(Input("none.json", "{\"loads\": [[1]]}")), "no `load` matrix");
  ExpectRejected(with(Input("array.json", "[[1, 2]]")), "expected a JSON object");
  ExpectRejected(with(Input("empty.json", "{\"load\": []}")), "non-empty array");
  ExpectRejected({"--replicas", "16", "--ranks", "4"}, "--load FILE is required");
}

TEST_F(PlanCli, RejectsBadMatrices) {
  const std::vector<std::string> shape = {"--replicas", "4", "--ranks", "2"};
  auto with = [&](const std::string& name, const std::string& content) {
    std::vector<std::string> a = {"--load", Input(name, content)};
    a.insert(a.end(), shape.begin(), shape.end());
    return a;
  };
  ExpectRejected(with("ragged.json", "{\"load\": [[1, 2, 3, 4], [1, 2, 3]]}"),
                 "ragged: row 1 has 3 values");
  ExpectRejected(with("negative.json", "{\"load\": [[1, 2, -5, 4]]}"),
                 "layer 0, expert 2 is -5");
  ExpectRejected(with("inf.json", "{\"load\": [[1, 2, 3, 1e999]]}"),
                 "loads must be finite and non-negative");
  ExpectRejected(with("string.json", "{\"load\": [[1, \"2\", 3, 4]]}"),
                 "layer 0, expert 1 is a string, not a number");
  // 2^64 - 1 would read as -1 in 64 signed bits.
  ExpectRejected({"--load", Input("wide.json", "{\"input\": {\"load\": [[1, 2, 3, 4]], "
                                               "\"num_replicas\": 4, \"num_gpus\": "
                                               "18446744073709551615}}")},
                 "`num_gpus` must be an integer in 32-bit range");
  ExpectRejected(with("huge.json", "{\"load\": [[1, 2, 3, 1e39]]}"), "beyond float32 range");
  std::string tall = "{\"load\": [";
  for (int l = 0; l <= 100000; ++l) tall += std::string(l ? "," : "") + "[1]";
  ExpectRejected(with("tall.json", tall + "]}"), "absurdly large");
}

TEST_F(PlanCli, RefusesFilesThatAreNotRegularOrTooLarge) {
  for (const test::BadFile& bad : test::MakeBadFiles(inputs_)) {
    SCOPED_TRACE(bad.what);
    ExpectRejected({"--load", bad.path, "--replicas", "4", "--ranks", "2"}, bad.message);
    ExpectRejected({"--load", Input("l.json", LoadJson(2, 16)), "--replicas", "16", "--ranks",
                    "4", "--previous", bad.path},
                   bad.message);
  }
  // Exactly at the limit the file is read (and is not JSON: all zero bytes).
  const std::string at_limit = inputs_ + "/at-limit.json";
  fs::resize_file(Input("at-limit.json", ""), 64ull << 20);
  ExpectRejected({"--load", at_limit, "--replicas", "4", "--ranks", "2"}, "not valid JSON");
}

TEST_F(PlanCli, RefusesDeepNestingAndNeverEchoesAValue) {
  const std::vector<std::string> shape = {"--replicas", "4", "--ranks", "2"};
  auto with = [&](const std::string& name, const std::string& content) {
    std::vector<std::string> a = {"--load", Input(name, content)};
    a.insert(a.end(), shape.begin(), shape.end());
    return a;
  };
  ExpectRejected(with("deep65.json", test::NestedLoadJson(65)),
                 "nested more than 64 levels deep");
  std::vector<std::string> deep64 = with("deep64.json", test::NestedLoadJson(64));
  deep64.insert(deep64.end(), {"--output", Output()});
  deep64.insert(deep64.begin(), "plan");
  test::CommandResult r = test::RunCli(deep64);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ReadJson(Output())["num_slots"], 4);
  fs::remove(Output());

  // A 10 KB string where a number belongs: named by place and kind, not echoed.
  const std::string big(10000, 'x');
  std::string err = ExpectRejected(
      with("string.json", "{\"load\": [[1, 2, 3, \"" + big + "\"]]}"),
      "`load` layer 0, expert 3 is a string, not a number");
  EXPECT_LT(err.size(), 300u) << err;
  err = ExpectRejected(with("object.json", "{\"load\": [[1, {\"k\": \"" + big + "\"}]]}"),
                       "expert 1 is an object, not a number");
  EXPECT_LT(err.size(), 300u) << err;
  err = ExpectRejected(with("row.json", "{\"load\": [[1, 2], \"" + big + "\"]}"),
                       "`load` row 1 is a string, not an array");
  EXPECT_LT(err.size(), 300u) << err;
  // The parser's own message quotes what it read: cut short.
  err = ExpectRejected(with("open.json", "{\"load\": [[1, \"" + big), "not valid JSON");
  EXPECT_LT(err.size(), 500u) << err;
}

TEST_F(PlanCli, RejectsShapesThePolicyCannotServe) {
  const std::string load = Input("l.json", LoadJson(2, 16));
  auto shape = [&](const char* replicas, const char* groups, const char* nodes,
                   const char* ranks) {
    return std::vector<std::string>{"--load",  load,  "--replicas", replicas, "--groups",
                                    groups,    "--nodes", nodes,    "--ranks",  ranks};
  };
  ExpectRejected(shape("16", "3", "1", "4"), "experts % groups != 0");
  ExpectRejected(shape("12", "4", "1", "4"), "replicas must be >= experts");
  ExpectRejected(shape("20", "4", "1", "8"), "replicas % ranks != 0");
  ExpectRejected(shape("24", "4", "4", "6"), "ranks % nodes != 0");
  ExpectRejected(shape("2000000000", "4", "1", "4"), "absurd");
  ExpectRejected(shape("16", "0", "1", "4"), "--groups must be positive");
  ExpectRejected({"--load", load, "--ranks", "4"}, "--replicas is required");
  ExpectRejected({"--load", load, "--replicas", "abc", "--ranks", "4"}, "--replicas");
  ExpectRejected({"--load", load, "--replicas", "16", "--ranks", "4", "--policy", "magic"},
                 "unknown policy 'magic'");
}

TEST_F(PlanCli, RejectsABadPreviousPlacement) {
  const std::string load = Input("l.json", LoadJson(2, 16));
  const std::string other_shape =
      Input("prev.json", json{{"phy2log", {{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                                            0, 1, 2, 3}}},
                              {"num_ranks", 4}}
                             .dump());
  ExpectRejected({"--load", load, "--replicas", "20", "--ranks", "4", "--previous", other_shape},
                 "previous placement has 1 layers");
  ExpectRejected({"--load", load, "--replicas", "20", "--ranks", "4", "--previous",
                  Input("garbage.json", "{\"phy2log\": 3}")},
                 "phy2log");
  ExpectRejected({"--load", load, "--replicas", "20", "--ranks", "4", "--previous",
                  inputs_ + "/absent.json"},
                 "cannot open file");
  // 2^40 would become 0 in 32 bits: expert 0, a valid-looking placement.
  std::vector<long long> slots = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3};
  slots[16] = 1ll << 40;
  ExpectRejected({"--load", load, "--replicas", "20", "--ranks", "4", "--previous",
                  Input("wide.json", json{{"phy2log", {slots}}, {"num_ranks", 4}}.dump())},
                 "`phy2log` layer 0, slot 16 is an integer beyond 32 bits");
  // Its maps would take 12000 x 12001 entries (every expert once, expert 0 in the rest).
  std::vector<int> many(24000, 0);
  for (int e = 0; e < 12000; ++e) many[e] = e;
  ExpectRejected({"--load", load, "--replicas", "20", "--ranks", "4", "--previous",
                  Input("many.json", json{{"phy2log", {many}}, {"num_ranks", 4}}.dump())},
                 "the placement is absurdly large (1 layers x 24000 slots, 12000 experts)");
}

TEST_F(PlanCli, LeavesNothingBehindWhenTheOutputCannotBeWritten) {
  const std::string load = Input("l.json", LoadJson(2, 16));
  test::CommandResult r = test::RunCli({"plan", "--load", load, "--replicas", "16", "--ranks",
                                        "4", "--output", outputs_ + "/no/such/dir/out.json"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("cannot create a temporary file"));
  EXPECT_TRUE(fs::is_empty(outputs_));
}

}  // namespace
}  // namespace eplb
