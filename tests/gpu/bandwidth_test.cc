// cuda_ipc migration bandwidth against the copy-engine limit, both measured
// in this run on the same 2 GPUs: a DeepSeek-V3-sized layer, 8 experts of
// 44 MiB pulled by each GPU (both ways at once) and by one GPU (one way).
// Target: cuda_ipc reaches at least 90% of plain cudaMemcpyPeerAsync.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>

#include "comm/cuda_ipc/cuda_ipc.h"
#include "comm/execute_timing.h"
#include "cuda/peer_copy.h"
#include "cuda/runtime.h"
#include "gpu/support/gpus.h"
#include "gpu/support/experts.h"
#include "gpu/support/workers.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;
using test::Require;

constexpr int kExperts = 8;
constexpr size_t kExpertBytes = 44ull << 20;
constexpr int kIterations = 20;
const int kStreamChoices[] = {1, 2, 4};

int BandwidthWorker(const test::WorkerContext& ctx) {
  const int device = ctx.rank;
  auto store = ctx.store;
  cuda::DeviceGuard guard(device);
  cuda::Stream stream(device);
  test::ExpertSlots slots(device, kExperts, kExpertBytes);
  nlohmann::json result = {{"device", cuda::DeviceName(device)}};
  for (int streams : kStreamChoices) {
    CommunicatorOptions options;
    options.store = store;
    options.rank = ctx.rank;
    options.world_size = ctx.size;
    options.device = device;
    options.key_prefix = "bw/" + std::to_string(streams);
    auto comm = MakeCudaIpcCommunicator(options, streams);
    slots.Register(*comm, DeadlineAfter(60s));
    for (bool one_way : {false, true}) {
      const auto transfers = BulkExchange(ctx.size, kExperts, kExpertBytes, one_way);
      slots.Prepare(ctx.rank, streams, stream.get(), DeadlineAfter(30s));
      auto times = TimeExecutes(*comm, transfers, 3, kIterations, 10s);
      const uint64_t wrong = slots.CountWrong(transfers, ctx.rank, streams, stream.get(), DeadlineAfter(30s));
      Require(wrong == 0, std::to_string(wrong) + " wrong words after the timed exchanges");
      const uint64_t bytes = BytesInto(transfers, ctx.rank);
      result[one_way ? "one_way" : "both_ways"][std::to_string(streams)] = {
          {"median_s", times.median()}, {"min_s", times.min()}, {"bytes_in", bytes},
          {"gbps", bytes ? bytes / times.median() / 1e9 : 0.0}};
    }
    CloseCudaIpcCommunicator(*comm, DeadlineAfter(30s));
  }
  ctx.WriteResult(result);
  return 0;
}
EPLB_TEST_WORKER(bandwidth) { return BandwidthWorker(test::GpuWorkerContext(args)); }

TEST(CudaIpcBandwidth, ReachesTheCopyEngineLimit) {
  EPLB_REQUIRE_GPUS(2);
  std::string log;
  const double limit_both = cuda::PeerCopyLimit(0, 1, kExpertBytes, kExperts, true, kIterations, 60s, &log);
  const double limit_one = cuda::PeerCopyLimit(0, 1, kExpertBytes, kExperts, false, kIterations, 60s, &log);
  std::printf("%s", log.c_str());
  auto outcomes = test::RunWorkers("bandwidth", 2, {}, 300s);
  for (const auto& o : outcomes) ASSERT_EQ(o.exit_code, 0) << test::Describe(outcomes);
  const std::string default_streams = std::to_string(kDefaultCudaIpcCopyStreams);
  for (int streams : kStreamChoices) {
    const std::string key = std::to_string(streams);
    const double both = std::min(outcomes[0].result["both_ways"][key]["gbps"].get<double>(),
                                 outcomes[1].result["both_ways"][key]["gbps"].get<double>());
    const double one = outcomes[0].result["one_way"][key]["gbps"].get<double>();
    std::printf("cuda_ipc, %d copy stream(s): both ways %.1f GB/s per GPU (%.0f%% of %.1f), "
                "one way %.1f GB/s (%.0f%% of %.1f)%s\n",
                streams, both, 100 * both / limit_both, limit_both, one, 100 * one / limit_one,
                limit_one, key == default_streams ? "  <- default" : "");
    if (key == default_streams) {
      EXPECT_GE(both / limit_both, 0.9);
      EXPECT_GE(one / limit_one, 0.9);
    }
  }
  std::printf("GPUs: %s / %s\n", outcomes[0].result["device"].get<std::string>().c_str(),
              outcomes[1].result["device"].get<std::string>().c_str());
}

}  // namespace
}  // namespace eplb
