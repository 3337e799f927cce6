// The nixl communicator across real processes: every rank is a copy of this
// test binary started by RankGroup, with NIXL's UCX backend moving host
// memory between them (CMA for the READs, TCP on loopback for control),
// meeting through a real file store. Needs NIXL installed (scripts/setup.sh
// puts its wheel in .deps/nixl); skipped with the reason otherwise, and a
// failure instead of a skip when EPLB_REQUIRE_NIXL is set (scripts/test.sh
// sets it where setup installed NIXL, so CI never skips these silently).
#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>

#include "eplb/bootstrap.h"
#include "eplb/communicator_factory.h"
#include "eplb/detect.h"
#include "select/detection.h"
#include "comm/nixl/ucx_transports.h"
#include "eplb/error.h"
#include "support/multiprocess.h"
#include "support/nixl_required.h"
#include "support/random_transfers.h"
#include "support/worker_util.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;
using test::RankExit;
using test::MsSince;
using test::RankGroup;
using test::ReportedMs;


std::unique_ptr<Communicator> ConnectNixl(const test::WorkerRank& w) {
  CommunicatorOptions o;
  o.rank = w.env.rank;
  o.world_size = w.env.world_size;
  o.store = w.store;
  o.key_prefix = "ep";
  o.connect_timeout = 20s;
  return MakeCommunicator("nixl", o);
}

// args: seed transfers rounds [skip]. With "skip", a rank calls Execute only
// for the rounds whose list has transfers of its own (every other round
// moves between ranks 0 and 1 only): the pairs' epochs must stay in step.
EPLB_TEST_WORKER(nixl_exchange) {
  auto w = test::JoinRun();
  const uint64_t seed = std::stoull(args.at(0));
  const int count = std::stoi(args.at(1)), rounds = std::stoi(args.at(2));
  const bool skip = args.size() > 3 && args[3] == "skip";
  auto comm = ConnectNixl(w);
  if (comm->name() != "nixl" || comm->rank() != w.env.rank || comm->size() != w.env.world_size) return 1;
  test::Buffers buf;
  if (!buf.Register(*comm)) return 1;
  uint64_t received = 0;
  for (int round = 1; round <= rounds; ++round) {
    const bool pair_only = skip && round % 2 == 0;
    std::vector<int> ranks;
    if (pair_only) ranks = {0, 1};
    auto list = test::RandomTransfers(w.env.world_size, seed * 1000 + round, count, ranks);
    const bool mine = std::any_of(list.begin(), list.end(), [&](const Transfer& t) {
      return t.bytes > 0 && (t.src_rank == w.env.rank || t.dst_rank == w.env.rank);
    });
    buf.Prepare(w.env.rank);
    if (skip && !mine) continue;
    comm->Execute(list, DeadlineAfter(20s));
    std::string problem = buf.Verify(list, w.env.rank, &received);
    if (!problem.empty()) {
      std::fprintf(stderr, "round %d: %s\n", round, problem.c_str());
      return 1;
    }
  }
  std::fprintf(stderr, "exchange ok rank=%d bytes_in=%llu\n", w.env.rank, (unsigned long long)received);
  return 0;  // a normal exit: NIXL and UCX tear down in exit handlers
}

void ExpectAllOk(const std::vector<RankExit>& exits) {
  for (const auto& e : exits) {
    EXPECT_TRUE(e.status.ok()) << test::Describe(exits);
    EXPECT_NE(e.stderr_text.find("exchange ok rank=" + std::to_string(e.rank)), std::string::npos)
        << test::Describe(exits);
  }
}

TEST(NixlCommunicator, RandomTransfersTwoRanks) {
  EPLB_SKIP_WITHOUT_NIXL();
  RankGroup group(test::Ranks("nixl_exchange", 2, {"1", "200", "4"}));
  ExpectAllOk(group.Wait(DeadlineAfter(60s)));
}

TEST(NixlCommunicator, RandomTransfersFourRanks) {
  EPLB_SKIP_WITHOUT_NIXL();
  RankGroup group(test::Ranks("nixl_exchange", 4, {"2", "300", "4"}));
  ExpectAllOk(group.Wait(DeadlineAfter(60s)));
}

TEST(NixlCommunicator, RanksWithNothingToMoveSkipCallsAndThePairsStayInStep) {
  EPLB_SKIP_WITHOUT_NIXL();
  RankGroup group(test::Ranks("nixl_exchange", 3, {"3", "60", "8", "skip"}));
  ExpectAllOk(group.Wait(DeadlineAfter(60s)));
}

// The fence, both ways. Rank 1 owns 64 MiB that rank 0 reads every round.
// Rank 1 writes round k's bytes, waits a random while, calls Execute, and
// scribbles over the bytes the moment Execute returns; rank 0 calls Execute
// at once and checks it got round k's bytes. Reading before the owner was
// ready would see round k-1's or the scribble; the owner returning while the
// reader still reads would let the scribble in.
EPLB_TEST_WORKER(nixl_fence) {
  auto w = test::JoinRun();
  constexpr uint64_t kBytes = 64 << 20;
  constexpr int kRounds = 12;
  auto comm = ConnectNixl(w);
  std::vector<uint8_t> memory(kBytes, 0);
  comm->RegisterRegion({memory.data(), memory.size(), MemoryKind::kHost, -1}, DeadlineAfter(10s));
  const std::vector<Transfer> list = {{1, 0, 0, 0, 0, 0, kBytes}};
  std::mt19937 rng(42);
  for (int round = 1; round <= kRounds; ++round) {
    const auto pause = std::chrono::milliseconds(rng() % 40);
    if (w.env.rank == 1) {
      std::memset(memory.data(), round, kBytes);
      std::this_thread::sleep_for(pause);
      comm->Execute(list, DeadlineAfter(20s));
      std::memset(memory.data(), 0xEE, kBytes);
    } else {
      comm->Execute(list, DeadlineAfter(20s));
      for (uint64_t i = 0; i < kBytes; i += 4093) {
        if (memory[i] != static_cast<uint8_t>(round)) {
          std::fprintf(stderr, "round %d: byte %llu is 0x%02x\n", round, (unsigned long long)i, memory[i]);
          return 1;
        }
      }
      if (memory[kBytes - 1] != static_cast<uint8_t>(round)) return 1;
    }
  }
  std::fprintf(stderr, "exchange ok rank=%d\n", w.env.rank);
  return 0;
}

TEST(NixlCommunicator, NoReadBeforeTheOwnerIsReadyAndNoReturnWhileAPeerReads) {
  EPLB_SKIP_WITHOUT_NIXL();
  RankGroup group(test::Ranks("nixl_fence", 2));
  ExpectAllOk(group.Wait(DeadlineAfter(120s)));
}

// args: victim mode. mode "before_ready": the victim (rank 1, the owner of
// the bytes) kills itself before it calls Execute, so rank 0 waits for its
// "ready". mode "mid_read": the victim is rank 0, the reader of 2 GiB, and
// dies 100 ms into the READs, so rank 1 waits for its "done". The survivor
// reports how its Execute (deadline 30 s) ended.
EPLB_TEST_WORKER(nixl_die) {
  auto w = test::JoinRun();
  const int victim = std::stoi(args.at(0));
  const std::string mode = args.at(1);
  const uint64_t bytes = mode == "mid_read" ? uint64_t{2} << 30 : uint64_t{1} << 20;
  auto comm = ConnectNixl(w);
  std::vector<uint8_t> memory(bytes, static_cast<uint8_t>(w.env.rank));
  comm->RegisterRegion({memory.data(), memory.size(), MemoryKind::kHost, -1}, DeadlineAfter(10s));
  const std::vector<Transfer> list = {{1, 0, 0, 0, 0, 0, bytes}};
  const std::vector<Transfer> first = {{1, 0, 0, 0, 0, 0, 4096}};
  comm->Execute(first, DeadlineAfter(20s));  // connected
  if (w.env.rank == victim) {
    if (mode == "before_ready") {
      std::this_thread::sleep_for(300ms);
      ::raise(SIGKILL);
    }
    std::thread([] {
      std::this_thread::sleep_for(100ms);
      ::raise(SIGKILL);
    }).detach();
  }
  auto start = Clock::now();
  try {
    comm->Execute(list, start + 30s);
  } catch (const std::exception& e) {
    test::ReportError(e, MsSince(start));
    return 3;
  }
  std::fprintf(stderr, "the transfer completed before the kill\n");
  return 1;
}

void ExpectSurvivorNamedTheVictim(const std::vector<RankExit>& exits, int victim, double within_ms) {
  ASSERT_EQ(exits.size(), 2u);
  for (const auto& e : exits) {
    if (e.rank == victim) {
      EXPECT_EQ(e.status.signal, SIGKILL) << test::Describe(exits);
      continue;
    }
    ASSERT_EQ(e.status.code, 3) << test::Describe(exits);
    EXPECT_NE(e.stderr_text.find("rank=" + std::to_string(e.rank) + " peer=" + std::to_string(victim) +
                                 " layer=nixl"),
              std::string::npos)
        << e.stderr_text;
    EXPECT_NE(e.stderr_text.find("rank " + std::to_string(victim) + "'s process (pid"), std::string::npos)
        << e.stderr_text;
    EXPECT_LE(ReportedMs(e.stderr_text), within_ms) << e.stderr_text;
  }
}

TEST(NixlCommunicator, OwnerThatDiedBeforeItWasReadyIsNamedWithinASecondNotAtTheDeadline) {
  EPLB_SKIP_WITHOUT_NIXL();
  RankGroup group(test::Ranks("nixl_die", 2, {"1", "before_ready"}));
  // Killed 300 ms in; the 30 s deadline is far.
  ExpectSurvivorNamedTheVictim(group.Wait(DeadlineAfter(60s)), 1, 300 + 1000);
}

TEST(NixlCommunicator, ReaderKilledMidTransferIsNamedByTheOwnerWithinASecond) {
  EPLB_SKIP_WITHOUT_NIXL();
  RankGroup group(test::Ranks("nixl_die", 2, {"0", "mid_read"}));
  ExpectSurvivorNamedTheVictim(group.Wait(DeadlineAfter(60s)), 0, 100 + 1000);
}

// Rank 1 is alive but never executes: rank 0 times out at its deadline,
// naming rank 1 and the step it waited in.
EPLB_TEST_WORKER(nixl_silent_peer) {
  auto w = test::JoinRun();
  auto comm = ConnectNixl(w);
  test::Buffers buf;
  if (!buf.Register(*comm)) return 1;
  comm->Execute(test::RandomTransfers(2, 9, 20), DeadlineAfter(20s));  // connected
  if (w.env.rank == 1) {
    w.store->Get("rank0/done", DeadlineAfter(60s));
    return 0;
  }
  auto start = Clock::now();
  int code = 1;
  try {
    comm->Execute(test::RandomTransfers(2, 10, 20), start + 1500ms);
    std::fprintf(stderr, "Execute returned although rank 1 never took part\n");
  } catch (const TimeoutError& e) {
    test::ReportError(e, MsSince(start));
    code = 3;
  }
  w.store->SetString("rank0/done", "1");
  return code;
}

TEST(NixlCommunicator, PeerThatNeverExecutesTimesOutAtTheDeadlineNamingIt) {
  EPLB_SKIP_WITHOUT_NIXL();
  RankGroup group(test::Ranks("nixl_silent_peer", 2));
  auto exits = group.Wait(DeadlineAfter(60s));
  ASSERT_EQ(exits.size(), 2u);
  EXPECT_TRUE(exits[1].status.ok()) << test::Describe(exits);
  ASSERT_EQ(exits[0].status.code, 3) << test::Describe(exits);
  EXPECT_NE(exits[0].stderr_text.find("kind=timeout rank=0 peer=1 layer=nixl"), std::string::npos)
      << exits[0].stderr_text;
  const double ms = ReportedMs(exits[0].stderr_text);
  EXPECT_GE(ms, 1500 - 5) << exits[0].stderr_text;
  EXPECT_LE(ms, 1500 + 1000) << exits[0].stderr_text;
}

TEST(UcxParams, ParsesKeyValueListsAndRefusesTheRest) {
  using Params = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(comm::ParseUcxParams(""), Params{});
  EXPECT_EQ(comm::ParseUcxParams("num_threads=2"), (Params{{"num_threads", "2"}}));
  EXPECT_EQ(comm::ParseUcxParams("ucx_error_handling_mode=none,ucx_devices="),
            (Params{{"ucx_error_handling_mode", "none"}, {"ucx_devices", ""}}));
  for (const std::string& bad : std::vector<std::string>{"num_threads", "=2", "a=1,,b=2",
                                                         std::string(300, 'k') + "=1", "k=" + std::string(300, 'v')}) {
    EXPECT_THROW(comm::ParseUcxParams(bad), InvalidArgument) << bad;
  }
  std::string many;
  for (int i = 0; i < 33; ++i) many += (i ? ",k" : "k") + std::to_string(i) + "=1";
  EXPECT_THROW(comm::ParseUcxParams(many), InvalidArgument);
  try {
    comm::ParseUcxParams("oops");
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("EPLB_NIXL_UCX_PARAMS='oops'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace eplb
