// The scenario behind the default-communicator rule (DESIGN.md, "Why NCCL is
// not the default"): on 2 GPUs, rank 0 runs the migration and then launches
// a kernel that needs every SM and waits for its peer GPU (the shape of
// DeepEP's low-latency all-to-all); rank 1 launches that kernel first and
// then migrates. A communicator whose transfers need SMs on the peer
// (NCCL's send/recv kernels) can deadlock: rank 1's SMs are all held by a
// kernel waiting for rank 0's, which waits behind the migration. Copy-engine
// transfers (cuda_ipc) need no SMs and must complete every time.
//
// The kernel has its own time budget (20 s) and reports "gave up" when it
// runs out, so every run ends. The communicator is a parameter
// ($EPLB_GPU_COMMUNICATORS, default cuda_ipc): nccl can be run through the
// same scenario, where the outcome is reported rather than required.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>

#include "comm/execute_timing.h"
#include "cuda/runtime.h"
#include "gpu/support/gpus.h"
#include "eplb/error.h"
#include "gpu/support/communicators.h"
#include "gpu/support/experts.h"
#include "gpu/support/kernels.h"
#include "gpu/support/workers.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;
using test::Require;

constexpr int kExperts = 4;
constexpr size_t kExpertBytes = 32 << 20;

int AdversarialWorker(const test::WorkerContext& ctx) {
  const int device = ctx.rank;
  const int peer = 1 - ctx.rank;
  const std::string name = ctx.Param("communicator");
  const int runs = ctx.IntParam("runs", 20);
  const auto budget = std::chrono::seconds(ctx.IntParam("budget_s", 20));
  const auto deadline = std::chrono::milliseconds(ctx.IntParam("deadline_ms", 10000));
  auto [store, comm] = test::OpenWorkerCommunicator(ctx, device);
  if (!comm) return 0;
  cuda::DeviceGuard guard(device);
  cuda::Stream compute(device);
  cuda::Stream work(device);
  const int sms = cuda::MultiprocessorCount(device);
  const size_t shared = test::PrepareHandshakeKernel();
  Require(shared > 0, "cannot size the handshake kernel");

  // Handshake flags: each GPU's blocks write into the peer GPU's flags.
  cuda::DeviceBuffer flags(device, sms * sizeof(unsigned long long));
  cuda::Check(cudaMemset(flags.data(), 0, flags.bytes()), "zero flags");
  cuda::Check(cudaDeviceSynchronize(), "zero flags");
  cudaIpcMemHandle_t handle{};
  cuda::Check(cudaIpcGetMemHandle(&handle, flags.data()), "export flags");
  store->Set("handshake/" + std::to_string(ctx.rank),
             {reinterpret_cast<const uint8_t*>(&handle), sizeof(handle)});
  auto theirs = store->Get("handshake/" + std::to_string(peer), DeadlineAfter(60s));
  Require(theirs.size() == sizeof(handle), "bad handshake handle");
  std::memcpy(&handle, theirs.data(), sizeof(handle));
  void* peer_flags = nullptr;
  cuda::Check(cudaIpcOpenMemHandle(&peer_flags, handle, cudaIpcMemLazyEnablePeerAccess), "open peer flags");
  cuda::DeviceBuffer outcome(device, sms * sizeof(int));
  std::vector<int> outcome_host(sms);

  test::ExpertSlots slots(device, kExperts, kExpertBytes);
  if (!test::RegisterDeviceSlots(slots, *comm, ctx)) return 0;
  const auto transfers = BulkExchange(ctx.size, kExperts, kExpertBytes, /*one_way=*/false);

  nlohmann::json records = nlohmann::json::array();
  int completed = 0;
  for (int run = 0; run < runs; ++run) {
    slots.Prepare(ctx.rank, run, work.get(), DeadlineAfter(30s));
    cuda::Check(cudaMemsetAsync(outcome.data(), 0, outcome.bytes(), compute.get()), "zero outcome");
    const unsigned long long token = run + 1;
    std::string execute = "ok";
    double execute_s = 0;
    auto migrate = [&] {
      const auto start = Clock::now();
      try {
        comm->Execute(transfers, DeadlineAfter(deadline));
      } catch (const Error& e) {
        execute = e.what();
      }
      execute_s = std::chrono::duration<double>(Clock::now() - start).count();
    };
    auto launch = [&] {
      cuda::Check(test::LaunchPeerHandshake(flags.as<unsigned long long>(),
                                            static_cast<unsigned long long*>(peer_flags), token,
                                            std::chrono::nanoseconds(budget).count(),
                                            outcome.as<int>(), sms, shared, compute.get()),
                  "launch handshake kernel");
    };
    const auto start = Clock::now();
    if (ctx.rank == 0) {
      migrate();
      launch();
    } else {
      launch();
      migrate();
    }
    cuda::Event kernel_done(device);
    kernel_done.Record(compute.get());
    kernel_done.Wait(DeadlineAfter(budget + 30s), "test", "handshake kernel");
    const double total_s = std::chrono::duration<double>(Clock::now() - start).count();
    cuda::Check(cudaMemcpy(outcome_host.data(), outcome.data(), outcome.bytes(), cudaMemcpyDeviceToHost),
                "read outcome");
    const int gave_up = static_cast<int>(std::count(outcome_host.begin(), outcome_host.end(), 2));
    const int met = static_cast<int>(std::count(outcome_host.begin(), outcome_host.end(), 1));
    int64_t wrong = -1;
    if (execute == "ok") {
      wrong = static_cast<int64_t>(slots.CountWrong(transfers, ctx.rank, run, work.get(), DeadlineAfter(30s)));
    }
    const bool ok = execute == "ok" && wrong == 0 && gave_up == 0 && met == sms;
    completed += ok;
    records.push_back({{"run", run}, {"execute", execute}, {"execute_s", execute_s},
                       {"total_s", total_s}, {"blocks_met", met}, {"blocks_gave_up", gave_up},
                       {"wrong_words", wrong}, {"completed", ok}});
    std::printf("[%s rank %d run %d] execute %s in %.4f s, kernel: %d/%d blocks met, %d gave up, "
                "run %.4f s, wrong words %lld\n",
                name.c_str(), ctx.rank, run, execute.c_str(), execute_s, met, sms, gave_up, total_s,
                static_cast<long long>(wrong));
    std::fflush(stdout);
  }
  cuda::Check(cudaIpcCloseMemHandle(peer_flags), "close peer flags");
  test::CloseTestCommunicator(*comm, DeadlineAfter(60s));
  ctx.WriteResult({{"device", cuda::DeviceName(device)}, {"sms", sms}, {"completed", completed},
                   {"runs", records}});
  return 0;
}
EPLB_TEST_WORKER(adversarial) { return AdversarialWorker(test::GpuWorkerContext(args)); }

// Communicators that must never deadlock with kernels: one-sided copy-engine
// or NIC transfers, or host threads. NCCL's kernels can.
bool MustComplete(const std::string& name) { return name.rfind("nccl", 0) != 0; }

class Adversarial : public ::testing::TestWithParam<std::string> {};

TEST_P(Adversarial, MigrationAndAllSmKernelInOppositeOrders) {
  EPLB_REQUIRE_GPUS(2);
  const std::string name = GetParam();
  // 20 runs; 3 for NCCL, where a run can last until the deadline and the
  // kernel's budget ($EPLB_ADVERSARIAL_RUNS overrides both).
  const char* runs_env = std::getenv("EPLB_ADVERSARIAL_RUNS");
  const int runs = runs_env ? std::atoi(runs_env) : MustComplete(name) ? 20 : 3;
  auto outcomes = test::RunWorkers(
      "adversarial", 2,
      {{"communicator", name}, {"runs", std::to_string(runs)}, {"budget_s", "20"}, {"deadline_ms", "10000"}},
      600s);
  for (const auto& o : outcomes) {
    ASSERT_FALSE(o.timed_out) << "hung past the test's own limit\n" << test::Describe(outcomes);
    ASSERT_EQ(o.exit_code, 0) << test::Describe(outcomes);
  }
  if (outcomes[0].result.contains("unavailable")) {
    GTEST_SKIP() << outcomes[0].result["unavailable"].get<std::string>();
  }
  for (const auto& o : outcomes) {
    double worst = 0;
    for (const auto& r : o.result["runs"]) worst = std::max(worst, r["execute_s"].get<double>());
    std::printf("%s rank %d on %s: %d/%d runs completed, slowest migration %.4f s\n", name.c_str(),
                o.rank, o.result["device"].get<std::string>().c_str(), o.result["completed"].get<int>(),
                runs, worst);
    if (MustComplete(name)) {
      EXPECT_EQ(o.result["completed"].get<int>(), runs) << o.result.dump(2);
    } else {
      // Report exactly what happened in each run.
      for (const auto& r : o.result["runs"]) {
        std::printf("  %s rank %d run %d: execute %.3f s: %s; kernel: %d blocks met, %d gave up; run %.3f s\n",
                    name.c_str(), o.rank, r["run"].get<int>(), r["execute_s"].get<double>(),
                    r["execute"].get<std::string>().c_str(), r["blocks_met"].get<int>(),
                    r["blocks_gave_up"].get<int>(), r["total_s"].get<double>());
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Communicators, Adversarial, ::testing::ValuesIn(test::TestCommunicatorNames()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace eplb
