// The DeepSeek policy against reference placements: every file in
// data/golden/deepseek (whatever is there), computed by the reference
// Python `rebalance_experts`. Exact cases must match phy2log and logcnt
// bit for bit; the others (real loads with ties, where the reference's
// unstable sort decides) must match or beat its balancedness on every layer.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eplb/placement.h"
#include "eplb/policy.h"
#include "io/files.h"
#include "support/paths.h"

namespace eplb {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string GoldenDir() { return test::DataDir() + "/golden/deepseek"; }

std::vector<std::string> GoldenFiles() {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(GoldenDir(), ec))
    if (entry.path().extension() == ".json") files.push_back(entry.path().filename().string());
  std::sort(files.begin(), files.end());
  return files;
}

TEST(GoldenFolder, HasCases) {
  EXPECT_GE(GoldenFiles().size(), 1u) << "no golden cases in " << GoldenDir();
}

class Golden : public testing::TestWithParam<std::string> {};

TEST_P(Golden, MatchesReference) {
  const std::string path = GoldenDir() + "/" + GetParam();
  io::LoadFile file = io::ReadLoadFile(path);
  json doc = json::parse(io::ReadFile(path));
  const json& expected = doc.at("expected");
  const bool exact = doc.at("exact").get<bool>();

  PolicyInput in;
  in.load = &file.load;
  in.num_replicas = file.num_replicas.value();
  in.num_groups = file.num_groups.value();
  in.num_nodes = file.num_nodes.value();
  in.num_ranks = file.num_ranks.value();
  auto policy = MakePolicy("deepseek");
  Placement got = ComputePlacement(*policy, in);
  got.Validate();
  ASSERT_EQ(got.num_layers, file.load.num_layers);
  ASSERT_EQ(got.num_slots, in.num_replicas);

  const auto ref_phy2log = expected.at("phy2log").get<std::vector<std::vector<int32_t>>>();
  const auto ref_logcnt = expected.at("logcnt").get<std::vector<std::vector<int32_t>>>();
  const auto ref_balance = expected.at("balancedness_per_layer").get<std::vector<double>>();
  ASSERT_EQ(ref_phy2log.size(), static_cast<size_t>(got.num_layers));
  ASSERT_EQ(ref_balance.size(), static_cast<size_t>(got.num_layers));

  Balancedness ours = ComputeBalancedness(file.load, got);
  for (int l = 0; l < got.num_layers; ++l) {
    auto row = got.layer_phy2log(l);
    std::vector<int32_t> phy2log(row.begin(), row.end());
    std::vector<int32_t> logcnt(got.logcnt.begin() + static_cast<size_t>(l) * got.num_experts,
                                got.logcnt.begin() + static_cast<size_t>(l + 1) * got.num_experts);
    if (exact) {
      EXPECT_EQ(phy2log, ref_phy2log[l]) << "phy2log of layer " << l;
      EXPECT_EQ(logcnt, ref_logcnt[l]) << "logcnt of layer " << l;
    }
    // Both figures are float64 over the same float inputs; allow rounding only.
    EXPECT_GE(ours.per_layer[l], ref_balance[l] - 1e-9) << "balancedness of layer " << l;
  }
}

INSTANTIATE_TEST_SUITE_P(DeepSeek, Golden, testing::ValuesIn(GoldenFiles()),
                         [](const testing::TestParamInfo<std::string>& info) {
                           std::string name = fs::path(info.param).stem().string();
                           for (char& c : name)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

}  // namespace
}  // namespace eplb
