// Strangers at a real run's store. `eplb demo` ranks (real processes,
// launched torchrun-style) meet through a real redis-server that anyone may
// reach: a stranger lists the keys, learns the run's prefix, and writes the
// balancer's "abandon" decisions for the coming cycles before the ranks
// decide. With the run's job token those values are foreign and every
// rebalance goes through; without it (an open run, the control) they stand
// and no rebalance does. And in a file store folder that others may list,
// the names of a token run's keys cannot be worked out (Gloo names each
// file by a hash of its key), where an open run's can.
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "eplb/bootstrap.h"
#include "eplb/gloo.h"
#include "io/process.h"
#include "runtime/balancer_messages.h"
#include "support/multiprocess.h"
#include "support/paths.h"
#include "support/redis_server.h"
#include "support/worker_util.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct DemoRun {
  int rank0_exit = -1;
  bool all_exited_in_time = true;
  std::string rank0_out;
  std::vector<std::string> logs;  // per rank, stderr
};

// Two `eplb demo` ranks through `store_spec`, with `token` (empty: an open
// run). The first rebalance comes 250 steps of 2 ms in, so a stranger that
// starts with the ranks has time to learn the prefix.
DemoRun RunDemoRanks(const std::string& store_spec, const std::string& run_id, const std::string& token) {
  const std::string dir = test::MakeTempDir("eplb-store-stranger-");
  const std::vector<std::string> args = {
      EPLB_CLI_PATH, "demo",      "--layers",      "6",    "--experts", "32",  "--groups",     "4",
      "--expert-bytes", "8192",   "--steps",       "800",  "--first",   "250", "--interval",   "200",
      "--window",      "50",      "--step-ms",     "2",    "--tokens",  "64",  "--deadline-ms", "3000",
      "--communicator", "gloo",   "--json"};
  std::vector<io::Process> ranks;
  for (int r = 0; r < 2; ++r) {
    io::SpawnOptions so;
    so.argv = args;
    so.env = {{"RANK", std::to_string(r)}, {"WORLD_SIZE", "2"}, {"EPLB_STORE", store_spec}, {"EPLB_RUN_ID", run_id}};
    if (!token.empty()) so.env.push_back({"EPLB_JOB_TOKEN", token});
    so.stdout_path = dir + "/rank" + std::to_string(r) + ".out";
    so.stderr_path = dir + "/rank" + std::to_string(r) + ".err";
    ranks.push_back(io::Process::Spawn(so));
  }
  DemoRun run;
  const Deadline deadline = DeadlineAfter(120s);
  for (int r = 0; r < 2; ++r) {
    auto status = ranks[r].Wait(deadline);
    if (!status) {
      run.all_exited_in_time = false;
      status = ranks[r].Kill();
    }
    if (r == 0) run.rank0_exit = status->exited ? status->code : 128 + status->signal;
    run.logs.push_back(ReadFile(dir + "/rank" + std::to_string(r) + ".err"));
  }
  run.rank0_out = ReadFile(dir + "/rank0.out");
  std::filesystem::remove_all(dir);
  return run;
}

std::string Abandon() {
  auto bytes = balancer_internal::EncodeDecision(std::nullopt);
  return std::string(bytes.begin(), bytes.end());
}

// Writes an "abandon" decision for cycles 1..8, layers 0..5 under `prefix`;
// returns how many keys it wrote.
int WriteAbandons(test::RedisServer& server, const std::string& prefix) {
  int written = 0;
  for (int cycle = 1; cycle <= 8; ++cycle)
    for (int layer = 0; layer < 6; ++layer)
      written += server.SetRaw(prefix + "balancer/decision/" + std::to_string(cycle) + "/" + std::to_string(layer),
                               Abandon());
  return written;
}

TEST(StoreStranger, ForeignDecisionsDoNotStopTheRebalancing) {
  test::RedisServer server;
  const std::string run = "victim-" + std::to_string(::getpid());
  std::atomic<int> written{0};
  std::atomic<bool> stop{false};
  // The stranger: polls the open server's keys until the run's first one
  // shows its prefix, then writes the decisions.
  std::thread stranger([&] {
    const Deadline until = DeadlineAfter(60s);
    while (!stop && !Expired(until)) {
      auto keys = server.Keys("eplb/" + run + "/t-*");
      if (!keys.empty()) {
        const size_t end = keys[0].find('/', ("eplb/" + run + "/t-").size());
        written = WriteAbandons(server, keys[0].substr(0, end + 1));
        return;
      }
      std::this_thread::sleep_for(2ms);
    }
  });
  DemoRun r = RunDemoRanks(server.spec(), run, GenerateJobToken());
  stop = true;
  stranger.join();
  const std::string logs = r.logs[0] + r.logs[1];
  ASSERT_EQ(written.load(), 48) << "the stranger did not get its decisions in\n" << logs;
  ASSERT_TRUE(r.all_exited_in_time) << logs;
  ASSERT_EQ(r.rank0_exit, 0) << r.rank0_out << logs;
  json j = json::parse(r.rank0_out);
  EXPECT_TRUE(j["ok"].get<bool>()) << r.rank0_out;
  ASSERT_GE(j["rebalances"].size(), 1u) << r.rank0_out;
  for (const json& c : j["rebalances"]) {
    EXPECT_TRUE(c["ok"].get<bool>()) << c.dump();
    EXPECT_EQ(c["layers_committed"], c["layers_changed"]) << c.dump();
  }
  // The ranks met the stranger's decisions, and passed over them.
  EXPECT_NE(logs.find("/balancer/decision/1/"), std::string::npos) << logs;
  EXPECT_NE(logs.find("' holds a foreign value"), std::string::npos) << logs;
}

// The control: the same stranger against an open run (no token), whose key
// names anyone can write down beforehand. Its decisions stand.
TEST(StoreStranger, WithoutATokenTheStrangersDecisionsStand) {
  test::RedisServer server;
  const std::string run = "open-" + std::to_string(::getpid());
  ASSERT_EQ(WriteAbandons(server, "eplb/" + run + "/"), 48);
  DemoRun r = RunDemoRanks(server.spec(), run, "");
  const std::string logs = r.logs[0] + r.logs[1];
  ASSERT_TRUE(r.all_exited_in_time) << logs;
  EXPECT_NE(logs.find("no EPLB_JOB_TOKEN"), std::string::npos) << "no warning that the run is open";
  EXPECT_NE(logs.find("recorded abandoning the layer"), std::string::npos) << logs;
  // Not one layer was ever committed.
  EXPECT_NE(r.rank0_exit, 0) << r.rank0_out;
  if (!r.rank0_out.empty()) {
    json j = json::parse(r.rank0_out);
    for (const json& c : j["rebalances"]) EXPECT_EQ(c["layers_committed"], 0) << c.dump();
  }
}

// A rank of a Gloo control group of two; one barrier.
EPLB_TEST_WORKER(store_stranger_group) {
  test::WorkerRank w = test::JoinRun();
  auto group = ConnectGlooControlGroup(w.Gloo("peers"), DeadlineAfter(30s));
  group->Barrier(DeadlineAfter(10s));
  return 0;
}

// Where Gloo's file store keeps `key`: a file named by std::hash of the key
// (gloo/rendezvous/file_store.cc), which anyone can work out from the name.
std::string FileOf(const std::string& dir, const std::string& key) {
  return dir + "/" + std::to_string(std::hash<std::string>{}(key));
}

TEST(StoreStranger, WithoutTheTokenTheAddressesCannotBeFound) {
  for (bool token : {true, false}) {
    SCOPED_TRACE(token ? "with a token" : "an open run");
    // A folder the user made readable to all: its file names can be listed.
    const std::string dir = test::MakeTempDir("eplb-listable-");
    ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);
    test::GroupOptions o = test::Ranks("store_stranger_group", 2);
    o.store_spec = "file:" + dir;
    o.job_token = token;
    test::RankGroup group(o);
    auto exits = group.Wait(DeadlineAfter(60s));
    for (const auto& e : exits) ASSERT_TRUE(e.status.ok()) << test::Describe(exits);
    // Rank 0's listening addresses, where an open run keeps them.
    const std::string addresses = FileOf(dir, "eplb/" + group.run_id() + "/peers/g0/mesh/0");
    const bool found = std::filesystem::exists(addresses);
    EXPECT_EQ(found, !token) << addresses;
    int files = 0;
    for (const auto& f : std::filesystem::directory_iterator(dir)) {
      ++files;
      struct stat st {};
      ASSERT_EQ(::stat(f.path().c_str(), &st), 0);
      EXPECT_EQ(st.st_mode & 0777, 0600u) << f.path() << ": others could read it";
    }
    EXPECT_GT(files, 4);
  }
}

// With a password on the server the stranger gets nothing at all, while the
// ranks (given it in EPLB_REDIS_PASSWORD) run.
TEST(StoreStranger, RedisAuthKeepsAStrangerOut) {
  test::RedisServer server({"s3cret-of-the-run", "", ""});
  test::GroupOptions o = test::Ranks("store_stranger_group", 2);
  o.store_spec = server.spec();
  o.env.push_back({"EPLB_REDIS_PASSWORD", "s3cret-of-the-run"});
  test::RankGroup group(o);
  auto exits = group.Wait(DeadlineAfter(60s));
  for (const auto& e : exits) ASSERT_TRUE(e.status.ok()) << test::Describe(exits);
  redisContext* c = redisConnect(server.host().c_str(), server.port());
  ASSERT_TRUE(c != nullptr && c->err == 0);
  for (const char* command : {"KEYS *", "GET x"}) {
    auto* reply = static_cast<redisReply*>(redisCommand(c, command));
    ASSERT_NE(reply, nullptr);
    EXPECT_EQ(reply->type, REDIS_REPLY_ERROR) << command;
    if (reply->type == REDIS_REPLY_ERROR) {
      EXPECT_EQ(std::string(reply->str).rfind("NOAUTH", 0), 0u) << reply->str;
    }
    freeReplyObject(reply);
  }
  redisFree(c);
  EXPECT_FALSE(server.Keys("eplb/" + group.run_id() + "/*").empty()) << "the ranks wrote no keys";
}

}  // namespace
}  // namespace eplb
