// The gloo communicator across real processes: every rank is a copy of this
// test binary started by RankGroup, talking real Gloo TCP over loopback, meeting
// through a real file store (or a real redis-server).
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstring>
#include <random>
#include <thread>

#include "eplb/bootstrap.h"
#include "eplb/error.h"
#include "eplb/gloo.h"
#include "support/multiprocess.h"
#include "support/paths.h"
#include "support/redis_server.h"
#include "support/random_transfers.h"
#include "support/transfer_pattern.h"
#include "support/worker_util.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;
using test::RankExit;
using test::MsSince;
using test::RankGroup;
using test::ReportedMs;

using test::Buffers;
using test::kDstBytes;
using test::RandomTransfers;

// One verified Execute. Returns "" or what went wrong.
std::string ExchangeRound(Communicator& comm, Buffers& buf, const std::vector<Transfer>& list,
                          Deadline deadline, uint64_t* received) {
  buf.Prepare(comm.rank());
  comm.Execute(list, deadline);
  return buf.Verify(list, comm.rank(), received);
}

// args: seed transfers rounds
EPLB_TEST_WORKER(exchange) {
  auto w = test::JoinRun();
  const uint64_t seed = std::stoull(args.at(0));
  const int count = std::stoi(args.at(1)), rounds = std::stoi(args.at(2));
  auto comm = ConnectGlooCommunicator(w.Gloo("ep"), DeadlineAfter(20s));
  if (comm->name() != "gloo" || comm->rank() != w.env.rank || comm->size() != w.env.world_size) {
    std::fprintf(stderr, "wrong identity\n");
    return 1;
  }
  Buffers buf;
  if (!buf.Register(*comm)) return 1;
  uint64_t received = 0;
  for (int round = 1; round <= rounds; ++round) {
    auto list = RandomTransfers(w.env.world_size, seed * 1000 + round, count);
    std::string problem = ExchangeRound(*comm, buf, list, DeadlineAfter(20s), &received);
    if (!problem.empty()) {
      std::fprintf(stderr, "round %d: %s\n", round, problem.c_str());
      return 1;
    }
  }
  std::fprintf(stderr, "exchange ok rank=%d bytes_in=%llu\n", w.env.rank, (unsigned long long)received);
  return 0;
}

void ExpectAllOk(const std::vector<RankExit>& exits) {
  for (const auto& e : exits) {
    EXPECT_TRUE(e.status.ok()) << test::Describe(exits);
    EXPECT_NE(e.stderr_text.find("exchange ok rank=" + std::to_string(e.rank)), std::string::npos)
        << test::Describe(exits);
  }
}

TEST(GlooCommunicator, RandomTransfersTwoRanks) {
  RankGroup group(test::Ranks("exchange", 2, {"1", "200", "3"}));
  ExpectAllOk(group.Wait(DeadlineAfter(60s)));
}

TEST(GlooCommunicator, RandomTransfersFourRanks) {
  RankGroup group(test::Ranks("exchange", 4, {"2", "300", "3"}));
  ExpectAllOk(group.Wait(DeadlineAfter(60s)));
}

TEST(GlooCommunicator, RedisBootstrapWithARealServer) {
  test::RedisServer server;
  auto options = test::Ranks("exchange", 3, {"3", "100", "2"});
  options.store_spec = server.spec();
  RankGroup group(options);
  ExpectAllOk(group.Wait(DeadlineAfter(60s)));
}

TEST(GlooCommunicator, MasterAddrAndPortNameTheRedisStore) {
  test::RedisServer server;
  auto options = test::Ranks("exchange", 2, {"4", "50", "1"});
  options.set_store_env = false;
  options.env = {{"MASTER_ADDR", server.host()}, {"MASTER_PORT", std::to_string(server.port())}};
  RankGroup group(options);
  ExpectAllOk(group.Wait(DeadlineAfter(60s)));
}

// args: deadline_ms. Joins, and reports how the rendezvous ended.
EPLB_TEST_WORKER(join) {
  auto w = test::JoinRun();
  const int ms = std::stoi(args.at(0));
  auto start = Clock::now();
  try {
    auto comm = ConnectGlooCommunicator(w.Gloo("ep"), DeadlineAfter(std::chrono::milliseconds(ms)));
    std::fprintf(stderr, "connected\n");
    return 0;
  } catch (const std::exception& e) {
    test::ReportError(e, MsSince(start));
    return 3;
  }
}

TEST(GlooCommunicator, RankThatNeverArrivesFailsTheRendezvousAtItsDeadline) {
  constexpr int kDeadlineMs = 2000;
  auto options = test::Ranks("join", 3, {std::to_string(kDeadlineMs)});
  options.ranks = {0, 1};  // rank 2 never starts
  RankGroup group(options);
  auto exits = group.Wait(DeadlineAfter(15s));
  for (const auto& e : exits) {
    ASSERT_EQ(e.status.code, 3) << test::Describe(exits);
    EXPECT_NE(e.stderr_text.find("kind=timeout rank=" + std::to_string(e.rank) + " peer=2 layer=gloo op=rendezvous"),
              std::string::npos)
        << e.stderr_text;
    EXPECT_NE(e.stderr_text.find("rank 2 did not arrive"), std::string::npos) << e.stderr_text;
    double ms = ReportedMs(e.stderr_text);
    EXPECT_GE(ms, kDeadlineMs - 20) << e.stderr_text;
    EXPECT_LE(ms, kDeadlineMs + 1000) << e.stderr_text;
  }
}

// args: deadline_ms. All-to-all exchanges of 4 MiB per pair, over and over,
// until one fails; reports the failure and exits 3.
EPLB_TEST_WORKER(exchange_forever) {
  auto w = test::JoinRun();
  const auto deadline_ms = std::chrono::milliseconds(std::stoi(args.at(0)));
  const int n = w.env.world_size, me = w.env.rank;
  constexpr uint64_t kPiece = 4 << 20;
  auto comm = ConnectGlooCommunicator(w.Gloo("ep"), DeadlineAfter(20s));
  std::vector<uint8_t> src(kPiece, static_cast<uint8_t>(me)), dst(kPiece * (n - 1));
  comm->RegisterRegion({src.data(), src.size(), MemoryKind::kHost}, DeadlineAfter(10s));
  comm->RegisterRegion({dst.data(), dst.size(), MemoryKind::kHost}, DeadlineAfter(10s));
  std::vector<Transfer> list;
  for (int s = 0; s < n; ++s) {
    for (int d = 0; d < n; ++d) {
      if (s != d) list.push_back({s, 0, 0, d, 1, uint64_t(s < d ? s : s - 1) * kPiece, kPiece});
    }
  }
  auto stop = Clock::now() + 60s;
  for (int round = 1; Clock::now() < stop; ++round) {
    auto start = Clock::now();
    try {
      comm->Execute(list, start + deadline_ms);
    } catch (const std::exception& e) {
      test::ReportError(e, MsSince(start));
      return 3;
    }
    for (int s = 0, k = 0; s < n; ++s) {
      if (s == me) continue;
      if (dst[uint64_t(k++) * kPiece] != static_cast<uint8_t>(s)) return 1;
    }
    std::fprintf(stderr, "round %d done\n", round);
  }
  return 0;
}

TEST(GlooCommunicator, PeerKilledMidExecuteFailsTheOthersNamingIt) {
  constexpr int kDeadlineMs = 3000;
  constexpr int kVictim = 2;
  RankGroup group(test::Ranks("exchange_forever", 4, {std::to_string(kDeadlineMs)}));
  ASSERT_TRUE(group.WaitForText(kVictim, "round 3 done", DeadlineAfter(30s))) << group.Stderr(kVictim);
  group.Kill(kVictim);
  auto exits = group.Wait(group.killed_at(kVictim) + std::chrono::milliseconds(kDeadlineMs) + 5s);
  for (const auto& e : exits) {
    if (e.rank == kVictim) {
      EXPECT_EQ(e.status.signal, SIGKILL);
      continue;
    }
    EXPECT_EQ(e.status.code, 3) << test::Describe(exits);
    EXPECT_NE(e.stderr_text.find("rank=" + std::to_string(e.rank) + " peer=" + std::to_string(kVictim) +
                                 " layer=gloo op=execute"),
              std::string::npos)
        << test::Describe(exits);
    auto took = e.ended - group.killed_at(kVictim);
    EXPECT_LE(took, std::chrono::milliseconds(kDeadlineMs) + 1s)
        << "rank " << e.rank << " took " << std::chrono::duration<double>(took).count() << " s\n"
        << test::Describe(exits);
  }
}

// args: deadline_ms kill_after_ms. Rank 1 sends rank 0 one transfer of
// 1 GiB and kills itself kill_after_ms into it: rank 0 is then inside a
// receive Gloo is already filling, which Gloo itself fails only at the
// deadline. Rank 0 reports how its Execute ended.
EPLB_TEST_WORKER(die_mid_transfer) {
  auto w = test::JoinRun();
  const auto deadline = std::chrono::milliseconds(std::stoi(args.at(0)));
  const auto kill_after = std::chrono::milliseconds(std::stoi(args.at(1)));
  constexpr uint64_t kBytes = uint64_t{1} << 30;
  auto comm = ConnectGlooCommunicator(w.Gloo("ep"), DeadlineAfter(20s));
  std::vector<uint8_t> memory(kBytes, static_cast<uint8_t>(w.env.rank));
  comm->RegisterRegion({memory.data(), memory.size(), MemoryKind::kHost}, DeadlineAfter(10s));
  const std::vector<Transfer> list = {{1, 0, 0, 0, 0, 0, kBytes}};
  if (w.env.rank == 1) {
    std::thread([kill_after] {
      std::this_thread::sleep_for(kill_after);
      ::raise(SIGKILL);
    }).detach();
  }
  auto start = Clock::now();
  try {
    comm->Execute(list, start + deadline);
  } catch (const std::exception& e) {
    test::ReportError(e, MsSince(start));
    return 3;
  }
  std::fprintf(stderr, "the transfer completed before the kill\n");
  return 1;
}

TEST(GlooCommunicator, PeerKilledMidTransferIsNoticedWithinASecondNotAtTheDeadline) {
  constexpr int kDeadlineMs = 30000, kKillAfterMs = 150;
  RankGroup group(test::Ranks("die_mid_transfer", 2, {std::to_string(kDeadlineMs), std::to_string(kKillAfterMs)}));
  auto exits = group.Wait(DeadlineAfter(60s));
  ASSERT_EQ(exits.size(), 2u);
  for (const auto& e : exits) {
    if (e.rank == 1) {
      EXPECT_EQ(e.status.signal, SIGKILL) << test::Describe(exits);
      continue;
    }
    ASSERT_EQ(e.status.code, 3) << test::Describe(exits);
    EXPECT_NE(e.stderr_text.find("rank=0 peer=1 layer=gloo op=execute"), std::string::npos) << e.stderr_text;
    // Inside the transfer's receive, not waiting for the step's sync token.
    EXPECT_NE(e.stderr_text.find("the receive of 1073741824 B from rank 1 (transfer"), std::string::npos)
        << e.stderr_text;
    EXPECT_NE(e.stderr_text.find("rank 1's process (pid"), std::string::npos) << e.stderr_text;
    EXPECT_LE(ReportedMs(e.stderr_text), kKillAfterMs + 1000) << e.stderr_text;
  }
}

// Rank 2 never comes to the first Execute and dies 600 ms in; ranks 0 and 1
// time out of it at 300 ms (leaving their generation), so the second Execute
// starts with a rendezvous, at which rank 2 never arrives. Ranks 0 and 1
// report how the second Execute ended.
EPLB_TEST_WORKER(die_before_rendezvous) {
  auto w = test::JoinRun();
  auto comm = ConnectGlooCommunicator(w.Gloo("ep"), DeadlineAfter(20s));
  Buffers buf;
  if (!buf.Register(*comm)) return 1;
  uint64_t received = 0;
  if (w.env.rank == 2) {
    std::this_thread::sleep_for(600ms);
    ::raise(SIGKILL);
  }
  const auto list = RandomTransfers(3, 5, 20);
  try {
    ExchangeRound(*comm, buf, list, DeadlineAfter(300ms), &received);
    std::fprintf(stderr, "the first Execute unexpectedly succeeded\n");
    return 1;
  } catch (const TimeoutError&) {
  }
  auto start = Clock::now();
  try {
    ExchangeRound(*comm, buf, list, start + 20s, &received);
  } catch (const std::exception& e) {
    test::ReportError(e, MsSince(start));
    return 3;
  }
  std::fprintf(stderr, "the second Execute unexpectedly succeeded\n");
  return 1;
}

TEST(GlooCommunicator, RankThatDiedBeforeTheRendezvousIsNamedAtOnceNotAtTheDeadline) {
  RankGroup group(test::Ranks("die_before_rendezvous", 3));
  auto exits = group.Wait(DeadlineAfter(60s));
  for (const auto& e : exits) {
    if (e.rank == 2) {
      EXPECT_EQ(e.status.signal, SIGKILL) << test::Describe(exits);
      continue;
    }
    ASSERT_EQ(e.status.code, 3) << test::Describe(exits);
    EXPECT_NE(e.stderr_text.find("kind=error rank=" + std::to_string(e.rank) + " peer=2 layer=gloo op=execute"),
              std::string::npos)
        << e.stderr_text;
    EXPECT_NE(e.stderr_text.find("rendezvous: rank 2 did not arrive"), std::string::npos) << e.stderr_text;
    EXPECT_NE(e.stderr_text.find("the process of rank 2 is gone"), std::string::npos) << e.stderr_text;
    // Rank 2 died about 300 ms into the second Execute: noticed within a
    // second of that, not at its 20 s deadline.
    EXPECT_LE(ReportedMs(e.stderr_text), 1300) << e.stderr_text;
  }
}

// args: deadline_ms. Rank 1 comes to the first Execute too late; both ranks
// fail it; the second and third Execute rebuild the group and move the bytes.
EPLB_TEST_WORKER(stall_then_recover) {
  auto w = test::JoinRun();
  const auto deadline = std::chrono::milliseconds(std::stoi(args.at(0)));
  auto comm = ConnectGlooCommunicator(w.Gloo("ep"), DeadlineAfter(20s));
  Buffers buf;
  if (!buf.Register(*comm)) return 1;
  uint64_t received = 0;
  auto list = RandomTransfers(2, 77, 50);
  if (w.env.rank == 1) std::this_thread::sleep_for(deadline + 700ms);
  auto start = Clock::now();
  try {
    ExchangeRound(*comm, buf, list, start + deadline, &received);
    std::fprintf(stderr, "round 1 unexpectedly succeeded\n");
    return 1;
  } catch (const Error& e) {
    test::ReportError(e, MsSince(start));
  }
  for (int round = 2; round <= 3; ++round) {
    list = RandomTransfers(2, 77 + round, 50);
    std::string problem = ExchangeRound(*comm, buf, list, DeadlineAfter(10s), &received);
    if (!problem.empty()) {
      std::fprintf(stderr, "round %d: %s\n", round, problem.c_str());
      return 1;
    }
  }
  std::fprintf(stderr, "recovered rank=%d bytes_in=%llu\n", w.env.rank, (unsigned long long)received);
  return 0;
}

TEST(GlooCommunicator, TimeoutClosesTheGroupAndTheNextExecuteRebuildsIt) {
  constexpr int kDeadlineMs = 1500;
  RankGroup group(test::Ranks("stall_then_recover", 2, {std::to_string(kDeadlineMs)}));
  auto exits = group.Wait(DeadlineAfter(40s));
  for (const auto& e : exits) {
    ASSERT_TRUE(e.status.ok()) << test::Describe(exits);
    EXPECT_NE(e.stderr_text.find("recovered rank=" + std::to_string(e.rank)), std::string::npos);
  }
  // Rank 0 waited for rank 1 and timed out at its deadline, naming it.
  const std::string& r0 = exits[0].stderr_text;
  EXPECT_NE(r0.find("kind=timeout rank=0 peer=1 layer=gloo op=execute"), std::string::npos) << r0;
  EXPECT_GE(ReportedMs(r0), kDeadlineMs - 20) << r0;
  EXPECT_LE(ReportedMs(r0), kDeadlineMs + 1000) << r0;
  // Rank 1 came late to a group rank 0 had left, and was told so at once.
  const std::string& r1 = exits[1].stderr_text;
  EXPECT_NE(r1.find("kind=error rank=1 peer=0 layer=gloo op=execute"), std::string::npos) << r1;
  EXPECT_NE(r1.find("rank 0 left the group: timed out waiting for rank 1"), std::string::npos) << r1;
  EXPECT_LE(ReportedMs(r1), 1000) << r1;
  EXPECT_NE(r1.find("rebuilt group 'ep'"), std::string::npos) << r1;
}

// Three ranks. Step 1 moves bytes between ranks 1 and 2 only; rank 2 comes
// 2 s late; rank 1 gives up after 1 s; rank 0 has nothing to move and waits
// long enough to see rank 2 arrive, so it completes step 1 while the others
// fail it. At the next step rank 0 finds rank 1 gone, reads why, and rebuilds in
// place: the group meets again and every later step works.
EPLB_TEST_WORKER(partial_failure) {
  auto w = test::JoinRun();
  const int me = w.env.rank;
  auto comm = ConnectGlooCommunicator(w.Gloo("ep"), DeadlineAfter(20s));
  Buffers buf;
  if (!buf.Register(*comm)) return 1;
  uint64_t received = 0;
  auto step1 = RandomTransfers(3, 5, 20, {1, 2});
  if (me == 2) std::this_thread::sleep_for(2s);
  auto start = Clock::now();
  bool failed1 = false;
  try {
    std::string problem = ExchangeRound(*comm, buf, step1, start + (me == 1 ? 1s : 8s), &received);
    if (!problem.empty()) {
      std::fprintf(stderr, "step 1: %s\n", problem.c_str());
      return 1;
    }
    std::fprintf(stderr, "step 1 ok\n");
  } catch (const Error& e) {
    failed1 = true;
    test::ReportError(e, MsSince(start));
  }
  if (failed1 != (me != 0)) {
    std::fprintf(stderr, "step 1 outcome not as planned\n");
    return 2;
  }
  for (int round = 2; round <= 4; ++round) {
    auto list = RandomTransfers(3, 5 + round, 60);
    std::string problem = ExchangeRound(*comm, buf, list, DeadlineAfter(10s), &received);
    if (!problem.empty()) {
      std::fprintf(stderr, "step %d: %s\n", round, problem.c_str());
      return 1;
    }
  }
  std::fprintf(stderr, "healed rank=%d\n", me);
  return 0;
}

TEST(GlooCommunicator, RankThatCompletedAStepOthersFailedRejoinsThemAtTheNext) {
  RankGroup group(test::Ranks("partial_failure", 3));
  auto exits = group.Wait(DeadlineAfter(60s));
  for (const auto& e : exits) {
    ASSERT_TRUE(e.status.ok()) << test::Describe(exits);
    EXPECT_NE(e.stderr_text.find("healed rank=" + std::to_string(e.rank)), std::string::npos);
  }
  EXPECT_NE(exits[0].stderr_text.find("step 1 ok"), std::string::npos);
  // Steps 1 and 2 registered the regions; step 3 was the first Execute.
  EXPECT_NE(exits[0].stderr_text.find("rank 0 rejoins group 'ep' at step 4"), std::string::npos)
      << exits[0].stderr_text;
  EXPECT_NE(exits[1].stderr_text.find("kind=timeout rank=1 peer=2 layer=gloo op=execute"), std::string::npos)
      << exits[1].stderr_text;
  EXPECT_NE(exits[2].stderr_text.find("kind=error rank=2 peer=1 layer=gloo op=execute"), std::string::npos)
      << exits[2].stderr_text;
}

// Arguments that differ between ranks fail every rank with an error instead of
// moving the wrong bytes, and leave the group usable.
EPLB_TEST_WORKER(misuse) {
  auto w = test::JoinRun();
  const int me = w.env.rank;
  auto comm = ConnectGlooCommunicator(w.Gloo("ep"), DeadlineAfter(20s));
  Buffers buf;
  if (!buf.Register(*comm)) return 1;
  uint64_t received = 0;
  int failures = 0;
  // 1. Rank 0 passes another list.
  auto list = RandomTransfers(2, 9, 30);
  auto mine = list;
  if (me == 0) mine[3].bytes += 1;
  try {
    comm->Execute(mine, DeadlineAfter(5s));
  } catch (const Error& e) {
    test::ReportError(e, 0);
    failures += std::string(e.what()).find("different arguments") != std::string::npos;
  }
  // 2. A transfer outside the registered memory: refused before any I/O.
  auto bad = list;
  bad[0].dst_offset = kDstBytes;
  bad[0].bytes = 1;
  try {
    comm->Execute(bad, DeadlineAfter(5s));
  } catch (const InvalidArgument& e) {
    test::ReportError(e, 0);
    failures += std::string(e.what()).find("transfer #0: destination bytes") != std::string::npos;
  }
  // 3. Device memory that rank 1 cannot stage (no CUDA build, or a device
  // that is not visible: 999 on any machine) is refused on every rank,
  // naming the rank that gave it.
  try {
    MemoryRegion cuda{buf.src.data(), 64, me == 1 ? MemoryKind::kCuda : MemoryKind::kHost, 999};
    comm->RegisterRegion(cuda, DeadlineAfter(5s));
  } catch (const InvalidArgument& e) {
    test::ReportError(e, 0);
    failures += std::string(e.what()).find("rank 1 registered CUDA device memory") != std::string::npos;
  }
  // 4. Still works.
  std::string problem = ExchangeRound(*comm, buf, list, DeadlineAfter(10s), &received);
  if (!problem.empty() || failures != 3) {
    std::fprintf(stderr, "failures=%d problem=%s\n", failures, problem.c_str());
    return 1;
  }
  std::fprintf(stderr, "misuse ok rank=%d\n", me);
  return 0;
}

TEST(GlooCommunicator, MismatchedArgumentsFailEveryRankAndLeaveTheGroupUsable) {
  RankGroup group(test::Ranks("misuse", 2));
  auto exits = group.Wait(DeadlineAfter(40s));
  for (const auto& e : exits) {
    EXPECT_TRUE(e.status.ok()) << test::Describe(exits);
    EXPECT_NE(e.stderr_text.find("peer=" + std::to_string(1 - e.rank) + " layer=gloo op=execute"),
              std::string::npos)
        << e.stderr_text;
  }
}

TEST(GlooCommunicator, OptionsAreChecked) {
  GlooOptions o;
  EXPECT_THROW(ConnectGlooCommunicator(o, DeadlineAfter(1s)), InvalidArgument);  // no store
  o.store = MakeFileStore(test::MakeTempDir("eplb-gloo-"));
  o.world_size = 2;
  o.rank = 2;
  EXPECT_THROW(ConnectGlooCommunicator(o, DeadlineAfter(1s)), InvalidArgument);
  o.rank = 0;
  o.iface = "no-such-interface0";
  try {
    ConnectGlooCommunicator(o, DeadlineAfter(1s));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.operation(), "open_device");
    EXPECT_NE(std::string(e.what()).find("no-such-interface0"), std::string::npos) << e.what();
  }
}

TEST(GlooCommunicator, OneRankNeedsNoPeers) {
  GlooOptions o;
  o.store = MakeFileStore(test::MakeTempDir("eplb-gloo-"));
  o.rank = 0;
  o.world_size = 1;
  auto comm = ConnectGlooCommunicator(o, DeadlineAfter(5s));
  std::vector<uint8_t> mem(16);
  EXPECT_EQ(comm->RegisterRegion({mem.data(), mem.size(), MemoryKind::kHost}, DeadlineAfter(1s)), 0);
  comm->Execute({}, DeadlineAfter(1s));
  std::vector<Transfer> self = {{0, 0, 0, 0, 0, 8, 8}};
  EXPECT_THROW(comm->Execute(self, DeadlineAfter(1s)), InvalidArgument);
}

}  // namespace
}  // namespace eplb
