// `eplb demo --gpu` through the real binary on 2 GPUs: weights in device
// memory, cuda_ipc (the selection rule's choice there) moving them, commits
// queued on each engine's busy stream, every routed slot and every committed
// layer checked by kernels on that stream, every byte at the end. And the
// fingerprint kernels themselves, against the host functions: the same
// bytes, and a wrong word is counted.
#include <gtest/gtest.h>

#include <climits>
#include <nlohmann/json.hpp>
#include <vector>

#include "demo/engine_kernels.h"
#include "cuda/runtime.h"
#include "gpu/support/gpus.h"
#include "demo/fingerprint.h"
#include "support/run_command.h"

namespace eplb {
namespace {

using nlohmann::json;

TEST(EngineKernels, FingerprintsMatchTheHostAndAWrongWordIsCounted) {
  EPLB_REQUIRE_GPUS(1);
  cuda::DeviceGuard guard(0);
  cuda::Stream stream(0);
  const uint64_t bytes = 1 << 20;
  cuda::DeviceBuffer data(0, bytes);
  ASSERT_EQ(cuda::LaunchFillFingerprint(data.data(), bytes, 3, 17, 2, stream.get()), cudaSuccess);
  std::vector<uint8_t> host(bytes);
  cuda::Check(cudaMemcpyAsync(host.data(), data.data(), bytes, cudaMemcpyDeviceToHost, stream.get()), "read");
  stream.Synchronize(DeadlineAfter(std::chrono::seconds(10)), "test");
  EXPECT_EQ(runtime::FindFingerprintMismatch(host.data(), bytes, 3, 17, 2), -1);

  // One wrong word in the second half; a check of the right expert finds
  // exactly it, a check naming another expert finds every word.
  const uint64_t wrong = 0x0123456789abcdefull;
  cuda::Check(cudaMemcpy(data.as<uint8_t>() + bytes - 64, &wrong, 8, cudaMemcpyHostToDevice), "corrupt");
  const uint64_t words = bytes / 8;
  std::vector<cuda::FingerprintCheck> checks = {
      {data.as<uint64_t>(), 0, words / 2, 3, 17, 2, 7},            // first half: clean
      {data.as<uint64_t>(), words / 2, words / 2, 3, 17, 2, 5},    // second half: one word
      {data.as<uint64_t>(), 0, 16, 3, 18, 2, 9}};                  // another expert: 16 words
  cuda::DeviceBuffer table(0, checks.size() * sizeof(cuda::FingerprintCheck));
  cuda::DeviceBuffer counters(0, 16);
  const int32_t none = INT32_MAX;
  cuda::Check(cudaMemcpy(table.data(), checks.data(), table.bytes(), cudaMemcpyHostToDevice), "table");
  cuda::Check(cudaMemset(counters.data(), 0, 8), "zero");
  cuda::Check(cudaMemcpy(counters.as<uint8_t>() + 8, &none, 4, cudaMemcpyHostToDevice), "tag");
  ASSERT_EQ(cuda::LaunchCheckFingerprints(table.as<cuda::FingerprintCheck>(), 3, counters.as<unsigned long long>(),
                                          reinterpret_cast<int32_t*>(counters.as<uint8_t>() + 8), stream.get()),
            cudaSuccess);
  stream.Synchronize(DeadlineAfter(std::chrono::seconds(10)), "test");
  uint64_t found = 0;
  int32_t tag = 0;
  cuda::Check(cudaMemcpy(&found, counters.data(), 8, cudaMemcpyDeviceToHost), "count");
  cuda::Check(cudaMemcpy(&tag, counters.as<uint8_t>() + 8, 4, cudaMemcpyDeviceToHost), "tag");
  EXPECT_EQ(found, 1u + 16u);
  EXPECT_EQ(tag, 5);
}

TEST(DemoGpu, TwoGpusBusyStreamsVerifyEveryCommit) {
  EPLB_REQUIRE_GPUS(2);
  auto r = test::RunCli({"demo", "--gpu", "--ranks", "2", "--layers", "6", "--experts", "16", "--slots", "20",
                         "--groups", "4", "--expert-bytes", "3145728", "--steps", "300", "--interval", "60",
                         "--window", "40", "--step-ms", "3", "--json"},
                        std::chrono::seconds(240));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  json j = json::parse(r.out);
  EXPECT_TRUE(j["ok"].get<bool>()) << r.out;
  EXPECT_EQ(j["memory"], "cuda");
  EXPECT_EQ(j["mismatches"], 0);
  int64_t moved = 0, committed = 0;
  for (const auto& c : j["rebalances"]) {
    moved += c["experts_moved"].get<int64_t>();
    committed += c["layers_committed"].get<int64_t>();
  }
  EXPECT_GT(moved, 0) << r.out;
  EXPECT_GT(committed, 0) << r.out;
  EXPECT_GT(j["step_ms"]["during_migration"]["count"].get<int64_t>(), 0) << r.out;
}

}  // namespace
}  // namespace eplb
