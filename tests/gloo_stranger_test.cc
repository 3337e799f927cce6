// Strangers at the Gloo ports of a real run: a local process that is not part
// of the run connects to the ranks' listening sockets while they rendezvous
// (support/stranger.h), then holds the connection, writes garbage, or plays
// the peer (echoing the rank's own bytes, which its sync tokens accept). Each
// rank reads its peer's address a second late (its store view waits before
// that one read), so both ranks' listening ports are open long enough for
// the stranger to find them: the rank that listens accepts the stranger, the
// one that connects is refused. With the run's job token the ranks either finish
// with every value right or fail within moments naming what happened: never
// a wait to the deadline, never a value from the stranger. (A crafted frame
// for a slot nobody posted aborts the rank inside Gloo's I/O thread: README
// "Security"; no test pretends otherwise.)
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "eplb/gloo.h"
#include "io/process.h"
#include "support/multiprocess.h"
#include "support/paths.h"
#include "support/stranger.h"
#include "support/worker_util.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;

// The stranger as its own process: root=PID mode=frame|garbage|hold|echo ms=N.
EPLB_TEST_WORKER(stranger) {
  test::WorkerArgs kv(args);
  std::string mode = "frame";
  long root = 0, ms = 10000;
  kv.Read("mode", mode);
  kv.Read("root", root);
  kv.Read("ms", ms);
  const auto report = test::RunStranger(static_cast<pid_t>(root), test::ParseStrangerMode(mode),
                                        DeadlineAfter(std::chrono::milliseconds(ms)),
                                        std::chrono::microseconds(200), [](const std::string& line) {
                                          std::printf("%s\n", line.c_str());
                                          std::fflush(stdout);
                                        });
  std::printf("%s\n", report.Describe().c_str());
  return 0;
}

constexpr auto kConnectDeadline = 20s;

// The run's store, with one read made late: the first Get of a key ending in
// `slow_key` waits `delay` first. Everything else passes straight through,
// the run's token too.
class LateRead final : public Store {
 public:
  LateRead(std::shared_ptr<Store> base, std::string slow_key, std::chrono::milliseconds delay)
      : base_(std::move(base)), slow_key_(std::move(slow_key)), delay_(delay) {}
  std::string_view kind() const override { return base_->kind(); }
  void Set(const std::string& key, std::span<const uint8_t> value) override { base_->Set(key, value); }
  std::vector<uint8_t> SetIfAbsent(const std::string& key, std::span<const uint8_t> value) override {
    return base_->SetIfAbsent(key, value);
  }
  std::vector<uint8_t> Get(const std::string& key, Deadline deadline) override {
    if (!delayed_ && key.size() >= slow_key_.size() &&
        key.compare(key.size() - slow_key_.size(), slow_key_.size(), slow_key_) == 0) {
      delayed_ = true;
      std::this_thread::sleep_for(delay_);
    }
    return base_->Get(key, deadline);
  }
  std::optional<std::array<uint8_t, 32>> RunKey(std::string_view purpose) const override {
    return base_->RunKey(purpose);
  }

 private:
  std::shared_ptr<Store> base_;
  std::string slow_key_;
  std::chrono::milliseconds delay_;
  bool delayed_ = false;  // one thread (the rendezvous) reads through it
};

// A rank of a Gloo control group of two that reads its peer's address
// `delay_ms` late; three rounds of AllGather, every value checked. A rank
// that fails stays alive `linger_ms` before it exits, as an engine's rank
// carries on serving after a failed rebalance: its peer cannot learn of the
// failure from its process ending.
EPLB_TEST_WORKER(gloo_group) {
  test::WorkerArgs kv(args);
  long delay_ms = 0, linger_ms = 0;
  kv.Read("delay_ms", delay_ms);
  kv.Read("linger_ms", linger_ms);
  test::WorkerRank w = test::JoinRun();
  w.store = std::make_shared<LateRead>(w.store, "/mesh/" + std::to_string(1 - w.env.rank),
                                       std::chrono::milliseconds(delay_ms));
  const auto start = Clock::now();
  try {
    auto group = ConnectGlooControlGroup(w.Gloo("strangers"), DeadlineAfter(kConnectDeadline));
    for (int round = 0; round < 3; ++round) {
      auto text = [&](int r) { return "rank " + std::to_string(r) + " round " + std::to_string(round); };
      const std::string mine = text(w.env.rank);
      auto all = group->AllGather({reinterpret_cast<const uint8_t*>(mine.data()), mine.size()}, DeadlineAfter(10s));
      for (int r = 0; r < w.env.world_size; ++r) {
        if (std::string(all[r].begin(), all[r].end()) != text(r)) {
          std::fprintf(stderr, "EPLB-WRONG-DATA from rank %d in round %d\n", r, round);
          return 3;
        }
      }
    }
    std::fprintf(stderr, "EPLB-VALUES-OK\n");
    return 0;
  } catch (const std::exception& e) {
    test::ReportError(e, std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    std::this_thread::sleep_for(std::chrono::milliseconds(linger_ms));
    return 1;
  }
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Two ranks of a run with a job token, and a stranger in `mode` watching
// this test's processes (the ranks are its children).
void RunWithStranger(const std::string& mode) {
  const std::string dir = test::MakeTempDir("eplb-stranger-");
  io::SpawnOptions so;
  so.argv = {io::SelfExecutable(), "--eplb-worker=stranger", "root=" + std::to_string(::getpid()), "mode=" + mode,
             "ms=15000"};
  so.stdout_path = dir + "/stranger.out";
  so.stderr_path = dir + "/stranger.err";
  io::Process stranger = io::Process::Spawn(so);
  std::this_thread::sleep_for(300ms);  // its first look at the process tree
  const auto start = Clock::now();
  test::RankGroup group(test::Ranks("gloo_group", 2, {"delay_ms=1000", "linger_ms=3000"}));
  ASSERT_FALSE(group.job_token().empty());
  auto exits = group.Wait(DeadlineAfter(60s));
  stranger.Signal(SIGTERM);
  stranger.Wait(DeadlineAfter(5s));
  const std::string seen = ReadFile(dir + "/stranger.out");
  ASSERT_NE(seen.find(": connected"), std::string::npos)
      << "the stranger never connected: the test proves nothing\n" << seen << ReadFile(dir + "/stranger.err");
  std::printf("stranger (%s):\n%s%s", mode.c_str(), seen.c_str(), test::Describe(exits).c_str());
  for (const auto& e : exits) {
    SCOPED_TRACE("rank " + std::to_string(e.rank) + "\n" + test::Describe(exits) + "\nstranger:\n" + seen);
    EXPECT_FALSE(e.timed_out);
    EXPECT_TRUE(e.status.exited) << "the rank was killed by a signal";
    EXPECT_EQ(e.stderr_text.find("EPLB-WRONG-DATA"), std::string::npos) << "a value came from the stranger";
    EXPECT_LT(e.ended - start, 10s);
    if (e.status.ok()) {
      EXPECT_NE(e.stderr_text.find("EPLB-VALUES-OK"), std::string::npos);
    } else {
      // A read 1 s late, then a rendezvous that fails at once: not a wait
      // to a deadline (the group's 10 s) on a stranger.
      const size_t at = e.stderr_text.find("EPLB-ERROR");
      ASSERT_NE(at, std::string::npos);
      const size_t ms = e.stderr_text.find(" ms=", at);
      ASSERT_NE(ms, std::string::npos);
      EXPECT_LT(std::stol(e.stderr_text.substr(ms + 4)), 2500) << "a rank waited for the stranger";
      const bool named = e.stderr_text.find("does not hold the run's job token") != std::string::npos ||
                         e.stderr_text.find("rendezvous failed") != std::string::npos ||
                         e.stderr_text.find("Connection refused") != std::string::npos ||
                         e.stderr_text.find("is not rank") != std::string::npos;
      EXPECT_TRUE(named) << "the error does not say what happened";
    }
  }
  std::filesystem::remove_all(dir);
}

TEST(GlooStranger, HoldingARanksPortCostsMomentsNotTheDeadline) { RunWithStranger("hold"); }

TEST(GlooStranger, GarbageOnARanksPortIsNeverTakenForThePeer) { RunWithStranger("garbage"); }

TEST(GlooStranger, AStrangerPlayingThePeerIsFoundOutBeforeItsBytesAreUsed) { RunWithStranger("echo"); }

}  // namespace
}  // namespace eplb
