// Bootstrap: launch environment parsing, store specs, the file, prefix and
// Redis stores (against a real redis-server started by the test), and the
// process utility the multi-process tests stand on.
#include <gtest/gtest.h>

#include <map>
#include <sstream>
#include <thread>

#include "bootstrap/gloo_store.h"
#include "eplb/bootstrap.h"
#include "eplb/error.h"
#include "io/process.h"
#include "support/decision_race.h"
#include "support/error_text.h"
#include "support/multiprocess.h"
#include "support/paths.h"
#include "support/redis_server.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;

EnvLookup Env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(LaunchEnv, NothingSetIsOneProcess) {
  LaunchEnv env = ParseLaunchEnv(Env({}));
  EXPECT_EQ(env.rank, 0);
  EXPECT_EQ(env.world_size, 1);
  EXPECT_EQ(env.local_rank, 0);
  EXPECT_FALSE(env.from_launcher);
  EXPECT_EQ(env.run_id, "default");
  EXPECT_TRUE(env.master_addr.empty());
}

TEST(LaunchEnv, TorchrunVariables) {
  LaunchEnv env = ParseLaunchEnv(Env({{"RANK", "5"},
                                      {"WORLD_SIZE", "8"},
                                      {"LOCAL_RANK", "1"},
                                      {"LOCAL_WORLD_SIZE", "4"},
                                      {"MASTER_ADDR", "10.0.0.7"},
                                      {"MASTER_PORT", "29500"},
                                      {"TORCHELASTIC_RUN_ID", "job-42"}}));
  EXPECT_TRUE(env.from_launcher);
  EXPECT_EQ(env.rank, 5);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_world_size, 4);
  EXPECT_EQ(env.master_addr, "10.0.0.7");
  EXPECT_EQ(env.master_port, 29500);
  EXPECT_EQ(env.run_id, "job-42");
  // MASTER_ADDR/PORT name a Redis server when no store is given.
  EXPECT_EQ(ResolveStoreSpec("", env), "redis://10.0.0.7:29500");
  EXPECT_EQ(ResolveStoreSpec("file:/x", env), "file:/x");
}

TEST(LaunchEnv, LocalRankDefaultsToOneNode) {
  LaunchEnv env = ParseLaunchEnv(Env({{"RANK", "3"}, {"WORLD_SIZE", "4"}}));
  EXPECT_EQ(env.local_rank, 3);
  EXPECT_EQ(env.local_world_size, 4);
}

TEST(LaunchEnv, EplbVariablesWin) {
  LaunchEnv env = ParseLaunchEnv(Env({{"RANK", "0"},
                                      {"WORLD_SIZE", "2"},
                                      {"EPLB_STORE", "file:/tmp/s"},
                                      {"EPLB_RUN_ID", "mine"},
                                      {"TORCHELASTIC_RUN_ID", "theirs"},
                                      {"MASTER_ADDR", "h"},
                                      {"MASTER_PORT", "1"}}));
  EXPECT_EQ(env.run_id, "mine");
  EXPECT_EQ(ResolveStoreSpec("", env), "file:/tmp/s");
}

TEST(LaunchEnv, BadValuesNameTheVariable) {
  auto bad = [](std::map<std::string, std::string> vars) {
    return test::ErrorOf([&] { ParseLaunchEnv(Env(vars)); });
  };
  EXPECT_NE(bad({{"RANK", "1"}}).find("WORLD_SIZE is not"), std::string::npos);
  EXPECT_NE(bad({{"WORLD_SIZE", "2"}}).find("RANK is not"), std::string::npos);
  EXPECT_NE(bad({{"RANK", "x"}, {"WORLD_SIZE", "2"}}).find("RANK='x' is not an integer"), std::string::npos);
  EXPECT_NE(bad({{"RANK", "2"}, {"WORLD_SIZE", "2"}}).find("RANK=2 is out of range [0, 1]"), std::string::npos);
  EXPECT_NE(bad({{"RANK", "0"}, {"WORLD_SIZE", "0"}}).find("WORLD_SIZE=0"), std::string::npos);
  EXPECT_NE(bad({{"RANK", "-1"}, {"WORLD_SIZE", "2"}}).find("RANK=-1"), std::string::npos);
  EXPECT_NE(bad({{"RANK", "1 "}, {"WORLD_SIZE", "2"}}).find("not an integer"), std::string::npos);
  EXPECT_NE(bad({{"MASTER_PORT", "80"}}).find("MASTER_ADDR is not"), std::string::npos);
  EXPECT_NE(bad({{"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}}).find("MASTER_PORT=70000"), std::string::npos);
  EXPECT_NE(bad({{"EPLB_RUN_ID", "a/b"}}).find("run id 'a/b'"), std::string::npos);
  EXPECT_NE(bad({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "2"}, {"LOCAL_WORLD_SIZE", "2"}})
                .find("LOCAL_RANK=2"),
            std::string::npos);
  EXPECT_THROW(ParseLaunchEnv(Env({{"RANK", "9"}, {"WORLD_SIZE", "2"}})), InvalidArgument);
}

TEST(StoreSpec, NoStoreSaysHowToNameOne) {
  std::string msg = test::ErrorOf([] { ResolveStoreSpec("", LaunchEnv{}); });
  EXPECT_NE(msg.find("EPLB_STORE"), std::string::npos) << msg;
  EXPECT_NE(msg.find("MASTER_ADDR"), std::string::npos) << msg;
}

TEST(StoreSpec, MalformedSpecs) {
  for (const char* spec : {"", "tcp://x", "file:", "redis://", "redis://:6379", "redis://h:", "redis://h:0",
                           "redis://h:99999", "redis://h:12x", "redis://[::1", "redis://[::1]x"}) {
    EXPECT_THROW(OpenStore(spec), InvalidArgument) << spec;
  }
}

TEST(FileStore, SetGetAndWriteOnce) {
  auto store = OpenStore("file:" + test::MakeTempDir("eplb-fs-") + "/nested/dir");
  EXPECT_EQ(store->kind(), "file");
  store->SetString("a", "hello");
  store->SetString("empty", "");
  EXPECT_EQ(store->GetString("a", DeadlineAfter(1s)), "hello");
  EXPECT_EQ(store->GetString("empty", DeadlineAfter(1s)), "");
  std::string msg = test::ErrorOf([&] { store->SetString("a", "again"); });
  EXPECT_NE(msg.find("already set"), std::string::npos) << msg;
  // An expired deadline still finds a key that is there.
  EXPECT_EQ(store->GetString("a", Clock::now() - 1s), "hello");
}

TEST(FileStore, GetWaitsForTheKeyAndTimesOutAtTheDeadline) {
  auto store = MakeFileStore(test::MakeTempDir("eplb-fs-"));
  std::thread writer([store] {
    std::this_thread::sleep_for(100ms);
    store->SetString("late", "v");
  });
  EXPECT_EQ(store->GetString("late", DeadlineAfter(5s)), "v");
  writer.join();

  auto start = Clock::now();
  try {
    store->Get("never", DeadlineAfter(300ms));
    FAIL() << "Get returned a key nobody set";
  } catch (const TimeoutError& e) {
    EXPECT_EQ(e.layer(), "store");
    EXPECT_EQ(e.operation(), "get");
    EXPECT_NE(std::string(e.what()).find("'never'"), std::string::npos) << e.what();
  }
  auto took = Clock::now() - start;
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 600ms);
}

TEST(PrefixStore, KeysLiveUnderThePrefix) {
  auto base = MakeFileStore(test::MakeTempDir("eplb-fs-"));
  auto run1 = MakePrefixStore(base, "eplb/run1/");
  auto run2 = MakePrefixStore(base, "eplb/run2/");
  run1->SetString("k", "one");
  run2->SetString("k", "two");
  EXPECT_EQ(run1->GetString("k", DeadlineAfter(1s)), "one");
  EXPECT_EQ(run2->GetString("k", DeadlineAfter(1s)), "two");
  EXPECT_EQ(base->GetString("eplb/run1/k", DeadlineAfter(1s)), "one");
  EXPECT_EQ(run1->kind(), "file");
  EXPECT_THROW(run2->Get("other", DeadlineAfter(10ms)), TimeoutError);
}

TEST(PrefixStore, RunStoreUsesTheRunId) {
  std::string dir = test::MakeTempDir("eplb-fs-");
  LaunchEnv env;
  env.run_id = "r7";
  env.store_spec = "file:" + dir;
  auto store = OpenRunStore("", env);
  store->SetString("x", "1");
  EXPECT_EQ(MakeFileStore(dir)->GetString("eplb/r7/x", DeadlineAfter(1s)), "1");
}

TEST(GlooStoreAdapter, GlooRendezvousKeysGoThroughAnyStoreUnderOneDeadline) {
  auto store = MakeFileStore(test::MakeTempDir("eplb-adapter-"));
  bootstrap::GlooStoreAdapter adapter(*store, "ctx/", DeadlineAfter(3s));
  adapter.set("rank_0", {'a', 'b'});
  EXPECT_EQ(store->GetString("ctx/rank_0", DeadlineAfter(1s)), "ab");
  EXPECT_EQ(adapter.get("rank_0"), (std::vector<char>{'a', 'b'}));
  // Gloo's own short timeout does not cut a wait that the deadline allows.
  std::thread writer([&] {
    std::this_thread::sleep_for(200ms);
    store->SetString("ctx/1", "addr");
  });
  EXPECT_NO_THROW(adapter.wait({"1"}, std::chrono::milliseconds(10)));
  writer.join();
  // A key that never comes fails at the deadline, naming it.
  bootstrap::GlooStoreAdapter soon(*store, "ctx/", DeadlineAfter(200ms));
  auto start = Clock::now();
  try {
    soon.get("2");
    FAIL() << "got a key nobody set";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("'ctx/2'"), std::string::npos) << e.what();
  }
  EXPECT_LT(Clock::now() - start, 1s);
}

TEST(RedisStore, RealServer) {
  test::RedisServer server;
  auto store = OpenStore(server.spec());
  EXPECT_EQ(store->kind(), "redis");
  store->SetString("a", "hello");
  store->SetString("empty", "");
  std::string binary("\0\x01\xff", 3);
  store->SetString("bin", binary);
  EXPECT_EQ(store->GetString("a", DeadlineAfter(1s)), "hello");
  EXPECT_EQ(store->GetString("empty", DeadlineAfter(1s)), "");
  EXPECT_EQ(store->GetString("bin", DeadlineAfter(1s)), binary);
  std::string msg = test::ErrorOf([&] { store->SetString("a", "again"); });
  EXPECT_NE(msg.find("already set"), std::string::npos) << msg;

  // A second client (another rank) sees the keys, and Get waits for new ones.
  auto other = MakeRedisStore(server.host(), server.port());
  std::thread writer([&] {
    std::this_thread::sleep_for(100ms);
    other->SetString("late", "v");
  });
  EXPECT_EQ(store->GetString("late", DeadlineAfter(5s)), "v");
  writer.join();

  auto start = Clock::now();
  EXPECT_THROW(store->Get("never", DeadlineAfter(300ms)), TimeoutError);
  EXPECT_LT(Clock::now() - start, 600ms);
}

TEST(RedisStore, ServerGoneIsAnErrorNotAHang) {
  auto server = std::make_unique<test::RedisServer>();
  auto store = OpenStore(server->spec());
  store->SetString("a", "1");
  int port = server->port();
  server.reset();  // stopped
  auto start = Clock::now();
  try {
    store->Get("b", DeadlineAfter(2s));
    FAIL() << "Get succeeded with the server stopped";
  } catch (const TimeoutError& e) {
    FAIL() << "expected a connection error, got a timeout: " << e.what();
  } catch (const Error& e) {
    EXPECT_EQ(e.layer(), "store");
    EXPECT_NE(std::string(e.what()).find(std::to_string(port)), std::string::npos) << e.what();
  }
  EXPECT_LT(Clock::now() - start, 1s);
  // Nothing listens there now: connecting fails at once, naming the address.
  std::string msg = test::ErrorOf([&] { MakeRedisStore("127.0.0.1", port); });
  EXPECT_NE(msg.find("cannot reach redis server at redis://127.0.0.1:" + std::to_string(port)), std::string::npos)
      << msg;
}

// A rank racing the others to record a decision per key; prints what stands.
EPLB_TEST_WORKER(race_set_if_absent) {
  LaunchEnv env = ReadLaunchEnv();
  auto store = OpenStore(env.store_spec);
  std::fprintf(stderr, "%s", test::RaceForDecisions(*store, env.rank, std::stoi(args.at(0))).c_str());
  return 0;
}

// Every rank of a race sees the same value stand for each key, and it is one
// that some rank wrote: the property the balancer's commit decision needs.
void ExpectOneValueStandsPerKey(const std::string& store_spec) {
  constexpr int kKeys = 40;
  test::GroupOptions options = test::Ranks("race_set_if_absent", 4, {std::to_string(kKeys)});
  options.store_spec = store_spec;
  test::RankGroup group(options);
  auto exits = group.Wait(DeadlineAfter(30s));
  std::vector<std::string> first;
  for (const auto& e : exits) {
    ASSERT_TRUE(e.status.ok()) << test::Describe(exits);
    std::vector<std::string> lines;
    std::istringstream in(e.stderr_text);
    for (std::string line; std::getline(in, line);)
      if (line.find('=') != std::string::npos) lines.push_back(line);
    ASSERT_EQ(lines.size(), static_cast<size_t>(kKeys)) << e.stderr_text;
    for (const auto& l : lines) {
      const std::string v = l.substr(l.find('=') + 1);
      EXPECT_TRUE(v == "rank 0" || v == "rank 1" || v == "rank 2" || v == "rank 3") << l;
    }
    if (first.empty()) first = lines;
    EXPECT_EQ(lines, first) << "rank " << e.rank << " saw other values stand";
  }
}

TEST(FileStore, SetIfAbsentFirstWriterWinsAcrossProcesses) {
  auto store = MakeFileStore(test::MakeTempDir("eplb-fs-"));
  const std::string a = "a", b = "b";
  auto as = [](const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); };
  EXPECT_EQ(as(store->SetIfAbsent("k", {reinterpret_cast<const uint8_t*>(a.data()), a.size()})), "a");
  EXPECT_EQ(as(store->SetIfAbsent("k", {reinterpret_cast<const uint8_t*>(b.data()), b.size()})), "a");
  EXPECT_EQ(store->GetString("k", DeadlineAfter(1s)), "a");
  ExpectOneValueStandsPerKey("file:" + test::MakeTempDir("eplb-fs-race-"));
}

TEST(RedisStore, SetIfAbsentFirstWriterWinsAcrossProcesses) {
  test::RedisServer server;
  auto store = OpenStore(server.spec());
  store->SetString("k", "a");
  const std::string b = "b";
  auto stands = store->SetIfAbsent("k", {reinterpret_cast<const uint8_t*>(b.data()), b.size()});
  EXPECT_EQ(std::string(stands.begin(), stands.end()), "a");
  ExpectOneValueStandsPerKey(server.spec());
}

TEST(Process, ExitCodesSignalsAndDeadlines) {
  io::SpawnOptions ok;
  ok.argv = {"/bin/sh", "-c", "echo out; echo err >&2; exit 3"};
  std::string dir = test::MakeTempDir("eplb-proc-");
  ok.stdout_path = dir + "/out";
  ok.stderr_path = dir + "/err";
  ok.env = {{"EPLB_PROCESS_TEST", "yes"}};
  auto p = io::Process::Spawn(ok);
  auto status = p.Wait(DeadlineAfter(5s));
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->exited);
  EXPECT_EQ(status->code, 3);

  io::SpawnOptions sleeper;
  sleeper.argv = {"/bin/sleep", "30"};
  auto s = io::Process::Spawn(sleeper);
  auto start = Clock::now();
  EXPECT_FALSE(s.Wait(DeadlineAfter(100ms)));
  EXPECT_LT(Clock::now() - start, 500ms);
  EXPECT_TRUE(s.Running());
  auto killed = s.Kill();
  EXPECT_FALSE(killed.exited);
  EXPECT_EQ(killed.signal, SIGKILL);
  EXPECT_NE(killed.Describe().find("signal 9"), std::string::npos);

  io::SpawnOptions missing;
  missing.argv = {"/nonexistent/binary"};
  EXPECT_THROW(io::Process::Spawn(missing), Error);
}

// A worker that reports what the launcher told it.
EPLB_TEST_WORKER(report_env) {
  LaunchEnv env = ReadLaunchEnv();
  std::fprintf(stderr, "rank=%d world=%d local=%d run=%s store=%s args=%zu\n", env.rank, env.world_size,
               env.local_rank, env.run_id.c_str(), env.store_spec.c_str(), args.size());
  return 10 + env.rank;
}

TEST(RankGroup, StartsRanksWithTheLaunchEnvironment) {
  test::RankGroup group(test::Ranks("report_env", 3, {"a", "b"}));
  auto exits = group.Wait(DeadlineAfter(20s));
  ASSERT_EQ(exits.size(), 3u);
  for (int r = 0; r < 3; ++r) {
    EXPECT_TRUE(exits[r].status.exited) << test::Describe(exits);
    EXPECT_EQ(exits[r].status.code, 10 + r) << test::Describe(exits);
    EXPECT_NE(exits[r].stderr_text.find("rank=" + std::to_string(r) + " world=3 local=" + std::to_string(r) +
                                        " run=" + group.run_id() + " store=" + group.store_spec() + " args=2"),
              std::string::npos)
        << exits[r].stderr_text;
  }
}

}  // namespace
}  // namespace eplb
