// The CUDA RAII layer on a real GPU: buffers, streams, events, and waits
// that end at their deadline with an error naming the operation.
#include "cuda/runtime.h"
#include "gpu/support/gpus.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <vector>

#include "eplb/error.h"
#include "gpu/support/kernels.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;

TEST(CudaRuntime, ReportsDevices) {
  EPLB_REQUIRE_GPUS(1);
  auto available = cuda::Probe();
  EXPECT_GT(available.devices, 0);
  EXPECT_TRUE(available.reason.empty());
  EXPECT_FALSE(cuda::DeviceName(0).empty());
  EXPECT_GT(cuda::MultiprocessorCount(0), 0);
  std::printf("GPU 0: %s, %d SMs, %d device(s)\n", cuda::DeviceName(0).c_str(),
              cuda::MultiprocessorCount(0), available.devices);
}

TEST(CudaRuntime, CopiesThroughPinnedAndDeviceBuffers) {
  EPLB_REQUIRE_GPUS(1);
  const size_t words = 3 << 20;
  cuda::DeviceBuffer device(0, words * 4);
  cuda::PinnedBuffer host(words * 4);
  cuda::Stream stream(0);
  cuda::DeviceGuard guard(0);
  ASSERT_EQ(test::FillPattern(device.as<uint32_t>(), words, 42, stream.get()), cudaSuccess);
  cuda::Check(cudaMemcpyAsync(host.data(), device.data(), words * 4, cudaMemcpyDeviceToHost, stream.get()),
              "copy back");
  stream.Synchronize(DeadlineAfter(10s), "copy back");
  for (size_t i = 0; i < words; i += 997) ASSERT_EQ(host.as<uint32_t>()[i], test::PatternWord(42, i)) << i;

  cuda::DeviceBuffer moved = std::move(device);
  EXPECT_EQ(device.data(), nullptr);
  EXPECT_EQ(moved.bytes(), words * 4);
}

TEST(CudaRuntime, ErrorsNameTheOperation) {
  EPLB_REQUIRE_GPUS(1);
  try {
    cuda::DeviceBuffer huge(0, size_t{1} << 50);  // a petabyte
    FAIL() << "allocated a petabyte";
  } catch (const Error& e) {
    EXPECT_EQ(e.layer(), "cuda");
    EXPECT_NE(std::string(e.what()).find("cudaMalloc"), std::string::npos) << e.what();
  }
  EXPECT_THROW(cuda::DeviceGuard(cuda::Probe().devices + 5), Error);
}

// A kernel that spins for ~300 ms (a handshake no peer answers) must make
// Event::Wait end at its 50 ms deadline with TimeoutError, and a later wait
// with time to spare succeed.
TEST(CudaRuntime, EventWaitEndsAtDeadline) {
  EPLB_REQUIRE_GPUS(1);
  cuda::DeviceGuard guard(0);
  cuda::Stream stream(0);
  cuda::DeviceBuffer flags(0, 2 * sizeof(unsigned long long));
  cuda::DeviceBuffer outcome(0, sizeof(int));
  cuda::Check(cudaMemset(flags.data(), 0, flags.bytes()), "memset");
  auto* local = flags.as<unsigned long long>();
  ASSERT_EQ(test::LaunchPeerHandshake(local, local + 1, 1, 300'000'000ULL, outcome.as<int>(), 1, 0,
                                      stream.get()),
            cudaSuccess);
  cuda::Event done(0);
  done.Record(stream.get());
  const auto start = Clock::now();
  try {
    done.Wait(DeadlineAfter(50ms), "test", "spin kernel", 3, 4);
    FAIL() << "the spinning kernel finished within 50 ms";
  } catch (const TimeoutError& e) {
    EXPECT_EQ(e.layer(), "test");
    EXPECT_EQ(e.operation(), "spin kernel");
    EXPECT_EQ(e.rank(), 3);
    EXPECT_EQ(e.peer(), 4);
  }
  EXPECT_LT(Clock::now() - start, 250ms);
  done.Wait(DeadlineAfter(10s), "test", "spin kernel");
  int result = 0;
  cuda::Check(cudaMemcpy(&result, outcome.data(), sizeof(int), cudaMemcpyDeviceToHost), "outcome");
  EXPECT_EQ(result, 2);  // gave up: nobody answered
}

}  // namespace
}  // namespace eplb
