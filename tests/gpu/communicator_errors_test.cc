// GPU suite: the bad-input table of support/bad_input_checks.h over device
// memory, for every communicator that moves it (cuda_ipc, nccl_stateless,
// nixl, gloo): InvalidArgument naming the backend on every rank, and the
// communicator still works afterwards. Two real processes; on one GPU they
// share it. And nccl_stateless with two ranks on one GPU: refused before NCCL
// starts, naming both ranks (NCCL needs a GPU per rank).
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <list>

#include "cuda/runtime.h"
#include "eplb/communicator_factory.h"
#include "eplb/error.h"
#include "gpu/support/communicators.h"
#include "gpu/support/gpus.h"
#include "gpu/support/workers.h"
#include "support/bad_input_checks.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;
using test::Require;

int DeviceOf(int rank) { return rank % cuda::Probe().devices; }

int BadInputWorker(const test::WorkerContext& ctx) {
  const int device = DeviceOf(ctx.rank);
  auto w = test::OpenWorkerCommunicator(ctx, device);
  if (!w.communicator) return 0;
  Communicator& comm = *w.communicator;
  std::list<cuda::DeviceBuffer> owned;
  static std::vector<uint8_t> host(64);
  test::BadInputMemory memory;
  memory.make = [&](size_t bytes) {
    owned.emplace_back(device, bytes);
    return MemoryRegion{owned.back().data(), bytes, MemoryKind::kCuda, device};
  };
  // Backends that move device memory only refuse host memory.
  if (comm.name() == "cuda_ipc" || comm.name() == "nccl_stateless")
    memory.refused = MemoryRegion{host.data(), host.size(), MemoryKind::kHost};
  memory.fill = [&](const MemoryRegion& r, const std::string& text) {
    std::vector<uint8_t> bytes(r.bytes);
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(text[i % text.size()]);
    Require(cudaMemcpy(r.base, bytes.data(), bytes.size(), cudaMemcpyHostToDevice) == cudaSuccess,
            "cudaMemcpy to the device");
  };
  memory.read = [&](const MemoryRegion& r, size_t bytes) {
    std::string out(bytes, '\0');
    Require(cudaMemcpy(out.data(), r.base, bytes, cudaMemcpyDeviceToHost) == cudaSuccess,
            "cudaMemcpy from the device");
    return out;
  };
  const std::string problem = test::CheckBadInputIsRefused(comm, memory);
  test::CloseTestCommunicator(comm, DeadlineAfter(30s));
  ctx.WriteResult({{"problem", problem}});
  return problem.empty() ? 0 : 1;
}
EPLB_TEST_WORKER(bad_input) { return BadInputWorker(test::GpuWorkerContext(args)); }

class CommunicatorErrorsGpu : public ::testing::TestWithParam<std::string> {};

TEST_P(CommunicatorErrorsGpu, BadRegionsAndTransfersAreInvalidArgumentOnEveryRank) {
  EPLB_REQUIRE_GPUS(1);
  auto outcomes = test::RunWorkers("bad_input", 2, {{"communicator", GetParam()}}, 180s);
  if (outcomes[0].result.contains("unavailable"))
    GTEST_SKIP() << outcomes[0].result["unavailable"].get<std::string>();
  for (const auto& o : outcomes) EXPECT_EQ(o.exit_code, 0) << test::Describe(outcomes);
}

INSTANTIATE_TEST_SUITE_P(Communicators, CommunicatorErrorsGpu,
                         ::testing::ValuesIn(test::TestCommunicatorNames()),
                         [](const auto& info) { return info.param; });

// Both ranks on GPU 0, whatever the machine has.
int SharedGpuWorker(const test::WorkerContext& ctx) {
  CommunicatorOptions o;
  o.rank = ctx.rank;
  o.world_size = ctx.size;
  o.store = ctx.store;
  o.device = 0;
  o.connect_timeout = 30s;
  try {
    auto comm = MakeCommunicator("nccl_stateless", o);
    ctx.WriteResult({{"error", ""}});
  } catch (const InvalidArgument& e) {
    ctx.WriteResult({{"error", e.what()}, {"invalid_argument", true}});
  } catch (const Error& e) {
    // NCCL's library missing: reported as such, not as this test's subject.
    ctx.WriteResult({{"error", e.what()}, {"layer", e.layer()}, {"operation", e.operation()}});
  }
  return 0;
}
EPLB_TEST_WORKER(shared_gpu) { return SharedGpuWorker(test::GpuWorkerContext(args)); }

TEST(NcclStateless, TwoRanksOnOneGpuAreRefusedNamingBoth) {
  EPLB_REQUIRE_GPUS(1);
  auto outcomes = test::RunWorkers("shared_gpu", 2, {}, 120s);
  for (const auto& o : outcomes) {
    ASSERT_EQ(o.exit_code, 0) << test::Describe(outcomes);
    const std::string error = o.result["error"].get<std::string>();
    if (o.result.value("operation", "").find("load") != std::string::npos) GTEST_SKIP() << error;
    EXPECT_TRUE(o.result.value("invalid_argument", false)) << error;
    EXPECT_NE(error.find("rank 0 and rank 1 both use GPU"), std::string::npos) << error;
    EXPECT_NE(error.find("NCCL needs a GPU of its own for every rank"), std::string::npos) << error;
  }
}

}  // namespace
}  // namespace eplb
