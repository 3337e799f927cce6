// Migration of device weights between processes (one rank per GPU, or two
// ranks sharing the only GPU), for each communicator under test; and, for
// cuda_ipc, the start-up check, deadlines with a stalled peer, and a peer
// process that dies.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "comm/cuda_ipc/cuda_ipc.h"
#include "comm/execute_timing.h"
#include "cuda/runtime.h"
#include "gpu/support/gpus.h"
#include "eplb/error.h"
#include "gpu/support/communicators.h"
#include "gpu/support/experts.h"
#include "gpu/support/workers.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;
using test::Require;

constexpr int kExperts = 8;
constexpr size_t kExpertBytes = 4 << 20;
constexpr size_t kLeadBytes = (1 << 20) + 256;
constexpr int kRounds = 4;

int DeviceOf(int rank) { return rank % cuda::Probe().devices; }

// --- workers (run in child processes) ---------------------------------------

int CheckWorker(const test::WorkerContext& ctx) {
  auto store = ctx.store;
  auto check = CudaIpcUsable(*store, ctx.rank, ctx.size, DeviceOf(ctx.rank), "test", DeadlineAfter(60s));
  ctx.WriteResult({{"usable", check.usable}, {"reason", check.reason}});
  return 0;
}
EPLB_TEST_WORKER(check) { return CheckWorker(test::GpuWorkerContext(args)); }

int MigrationWorker(const test::WorkerContext& ctx) {
  const int device = DeviceOf(ctx.rank);
  const std::string name = ctx.Param("communicator");
  auto [store, comm] = test::OpenWorkerCommunicator(ctx, device);
  if (!comm) return 0;
  cuda::DeviceGuard guard(device);
  cuda::Stream stream(device);
  test::ExpertSlots slots(device, kExperts, kExpertBytes, kLeadBytes);
  if (!test::RegisterDeviceSlots(slots, *comm, ctx)) return 0;
  nlohmann::json result = {{"device", cuda::DeviceName(device)}};

  // Host memory is refused, without breaking the communicator.
  if (name == "cuda_ipc") {
    std::vector<char> host(64);
    try {
      comm->RegisterRegion({host.data(), host.size(), MemoryKind::kHost, -1}, DeadlineAfter(1s));
      Require(false, "cuda_ipc registered host memory");
    } catch (const InvalidArgument& e) {
      Require(std::string(e.what()).rfind("cuda_ipc: rank ", 0) == 0,
              std::string("does not name cuda_ipc and the rank: ") + e.what());
    }
  }

  for (int round = 0; round < kRounds; ++round) {
    auto transfers = test::ExchangeTransfers(ctx.size, kExperts, kExpertBytes, 4, round, true);
    slots.Prepare(ctx.rank, round, stream.get(), DeadlineAfter(30s));
    comm->Execute(transfers, DeadlineAfter(30s));
    uint64_t wrong = slots.CountWrong(transfers, ctx.rank, round, stream.get(), DeadlineAfter(30s));
    Require(wrong == 0, "round " + std::to_string(round) + ": " + std::to_string(wrong) + " wrong words");
  }
  result["rounds"] = kRounds;

  if (ctx.Param("stall") == "1" && ctx.size == 2) {
    // Rank 1 stalls past rank 0's deadline: rank 0 must fail at its deadline
    // naming rank 1; rank 1, arriving late, must fail at once naming rank 0
    // (it abandoned the exchange); then both recover with the next one.
    auto transfers = test::ExchangeTransfers(ctx.size, kExperts, kExpertBytes, 4, 50, false);
    const auto start = Clock::now();
    std::string seen;
    if (ctx.rank == 1) std::this_thread::sleep_for(1500ms);
    try {
      comm->Execute(transfers, DeadlineAfter(ctx.rank == 0 ? 300ms : 5000ms));
      seen = "completed";
    } catch (const TimeoutError& e) {
      seen = std::string("timeout: ") + e.what();
      Require(ctx.rank == 0 && e.peer() == 1 && e.layer() == "cuda_ipc", "unexpected " + seen);
    } catch (const Error& e) {
      seen = std::string("error: ") + e.what();
      Require(ctx.rank == 1 && e.peer() == 0 && e.layer() == "cuda_ipc", "unexpected " + seen);
    }
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    Require(seen != "completed", "the stalled exchange completed");
    if (ctx.rank == 0) Require(waited < 1.0, "rank 0 waited " + std::to_string(waited) + " s");
    if (ctx.rank == 1) Require(waited < 1.5 + 1.0, "rank 1 waited " + std::to_string(waited) + " s");
    result["stall"] = {{"outcome", seen}, {"seconds", waited}};

    const int round = kRounds;
    auto again = test::ExchangeTransfers(ctx.size, kExperts, kExpertBytes, 4, round, true);
    slots.Prepare(ctx.rank, round, stream.get(), DeadlineAfter(30s));
    comm->Execute(again, DeadlineAfter(30s));
    uint64_t wrong = slots.CountWrong(again, ctx.rank, round, stream.get(), DeadlineAfter(30s));
    Require(wrong == 0, "after recovery: " + std::to_string(wrong) + " wrong words");
    result["recovered"] = true;
  }
  test::CloseTestCommunicator(*comm, DeadlineAfter(30s));
  ctx.WriteResult(result);
  return 0;
}
EPLB_TEST_WORKER(migration) { return MigrationWorker(test::GpuWorkerContext(args)); }

// Rank 1 exits after registering; rank 0, pulling from it, must fail well
// before its 20 s deadline with an error naming rank 1.
int PeerExitWorker(const test::WorkerContext& ctx) {
  const int device = DeviceOf(ctx.rank);
  auto store = ctx.store;
  CommunicatorOptions options;
  options.store = store;
  options.rank = ctx.rank;
  options.world_size = ctx.size;
  options.device = device;
  auto comm = MakeCommunicator("cuda_ipc", options);
  test::ExpertSlots slots(device, 2, 1 << 20);
  slots.Register(*comm, DeadlineAfter(60s));
  if (ctx.rank == 1) std::_Exit(3);
  auto transfers = BulkExchange(ctx.size, 2, 1 << 20, /*one_way=*/true);
  const auto start = Clock::now();
  try {
    comm->Execute(transfers, DeadlineAfter(20s));
    Require(false, "pulled from a dead peer");
  } catch (const Error& e) {
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    ctx.WriteResult({{"error", e.what()}, {"seconds", waited}});
    Require(e.peer() == 1, std::string("error does not name rank 1: ") + e.what());
    Require(waited < 5.0, "took " + std::to_string(waited) + " s to notice");
  }
  return 0;
}
EPLB_TEST_WORKER(peer_exit) { return PeerExitWorker(test::GpuWorkerContext(args)); }

// --- tests (the parent process) ---------------------------------------------

TEST(CudaIpc, StartupCheckOpensPeerHandles) {
  EPLB_REQUIRE_GPUS(1);
  auto outcomes = test::RunWorkers("check", 2, {}, 120s);
  for (const auto& o : outcomes) {
    ASSERT_EQ(o.exit_code, 0) << test::Describe(outcomes);
    EXPECT_TRUE(o.result["usable"].get<bool>()) << test::Describe(outcomes);
  }
  EXPECT_EQ(outcomes[0].result, outcomes[1].result);
  std::printf("cuda_ipc check: %s\n", outcomes[0].result.dump().c_str());
}

class Migration : public ::testing::TestWithParam<std::string> {};

TEST_P(Migration, MovesDeviceWeightsBetweenProcesses) {
  EPLB_REQUIRE_GPUS(1);
  const std::string name = GetParam();
  auto outcomes = test::RunWorkers("migration", 2,
                                   {{"communicator", name}, {"stall", name == "cuda_ipc" ? "1" : "0"}},
                                   300s);
  for (const auto& o : outcomes) ASSERT_EQ(o.exit_code, 0) << test::Describe(outcomes);
  if (outcomes[0].result.contains("unavailable")) {
    GTEST_SKIP() << outcomes[0].result["unavailable"].get<std::string>();
  }
  for (const auto& o : outcomes) EXPECT_EQ(o.result["rounds"], kRounds);
  std::printf("%s on %d GPU(s): %s\n", name.c_str(), cuda::Probe().devices,
              test::Describe(outcomes).c_str());
}

INSTANTIATE_TEST_SUITE_P(Communicators, Migration, ::testing::ValuesIn(test::TestCommunicatorNames()),
                         [](const auto& info) { return info.param; });

TEST(CudaIpc, DeadPeerIsReportedBeforeTheDeadline) {
  EPLB_REQUIRE_GPUS(1);
  auto outcomes = test::RunWorkers("peer_exit", 2, {}, 120s);
  EXPECT_EQ(outcomes[1].exit_code, 3) << test::Describe(outcomes);
  ASSERT_EQ(outcomes[0].exit_code, 0) << test::Describe(outcomes);
  std::printf("dead peer: %s\n", outcomes[0].result.dump().c_str());
}

}  // namespace
}  // namespace eplb
