// The migration executor over device memory: 2 processes (one rank per GPU,
// or both on the only GPU), expert weights in device memory, staging and local
// copies on a CUDA stream (MakeCudaCopier), wire transfers through the
// communicator under test (cuda_ipc; gloo staging through pinned host
// buffers). Several rounds of random placements with redundancy, one and two
// staging layers; after each round every slot of every tensor is read back and
// checked byte for byte against its expert's pattern.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <ostream>
#include <random>

#include "cuda/runtime.h"
#include "eplb/error.h"
#include "eplb/gloo.h"
#include "eplb/migration.h"
#include "eplb/placement.h"
#include "gpu/support/communicators.h"
#include "gpu/support/gpus.h"
#include "gpu/support/workers.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;
using test::Require;

constexpr int kLayers = 3;
constexpr int kExperts = 6;
constexpr int kSlotsPerRank = 4;  // 8 slots on 2 ranks: 2 redundant
constexpr int kRounds = 4;
// Three tensors per expert, odd sizes, the second one strided (padding
// between experts that must never be touched).
const std::vector<uint64_t> kTensorBytes = {(1u << 20) + 24, 256u << 10, 4096 + 7};
constexpr uint64_t kPad = 512;

int DeviceOf(int rank) { return rank % cuda::Probe().devices; }

uint8_t PatternByte(int layer, int tensor, int expert, uint64_t i) {
  return static_cast<uint8_t>(i * 13 + i / 253 + expert * 37 + tensor * 71 + layer * 101 + 1);
}

// Same sequence on every rank (same seed): every expert once, the rest random.
Placement RandomPlacement(std::mt19937& rng, int world) {
  const int slots = world * kSlotsPerRank;
  std::vector<int32_t> p2l;
  for (int l = 0; l < kLayers; ++l) {
    std::vector<int32_t> p(slots);
    for (int i = 0; i < slots; ++i)
      p[i] = i < kExperts ? i : std::uniform_int_distribution<int>(0, kExperts - 1)(rng);
    std::shuffle(p.begin(), p.end(), rng);
    p2l.insert(p2l.end(), p.begin(), p.end());
  }
  return Placement::FromPhy2Log(kLayers, kExperts, world, std::move(p2l));
}

int ExecutorWorker(const test::WorkerContext& ctx) {
  const int device = DeviceOf(ctx.rank);
  const int me = ctx.rank;
  auto [store, comm] = test::OpenWorkerCommunicator(ctx, device);
  if (!comm) return 0;
  GlooOptions control_options;
  control_options.store = store;
  control_options.rank = ctx.rank;
  control_options.world_size = ctx.size;
  control_options.name = "test/control";
  auto control = ConnectGlooControlGroup(control_options, DeadlineAfter(60s));
  cuda::DeviceGuard guard(device);

  // Weights: [layer][tensor] device buffers of kSlotsPerRank experts.
  auto stride = [](int t) { return t == 1 ? kTensorBytes[t] + kPad : kTensorBytes[t]; };
  std::vector<std::vector<cuda::DeviceBuffer>> buffers(kLayers);
  std::vector<LayerWeights> weights(kLayers);
  for (int l = 0; l < kLayers; ++l)
    for (int t = 0; t < static_cast<int>(kTensorBytes.size()); ++t) {
      buffers[l].emplace_back(device, stride(t) * kSlotsPerRank);
      weights[l].tensors.push_back({MemoryRegion{buffers[l].back().data(), buffers[l].back().bytes(),
                                                 MemoryKind::kCuda, device},
                                    kTensorBytes[t], stride(t)});
    }
  const int staging_layers = ctx.IntParam("staging_layers", 1);
  MigrationOptions options;
  options.staging_layers = staging_layers;
  std::unique_ptr<MigrationExecutor> ex;
  try {
    ex = std::make_unique<MigrationExecutor>(*comm, *control, weights, kSlotsPerRank, MakeCudaCopier(device),
                                             options, DeadlineAfter(60s));
  } catch (const InvalidArgument& e) {
    ctx.WriteResult({{"unavailable", std::string(comm->name()) + " refuses device memory: " + e.what()}});
    return 0;
  }

  // Host images of each slot, uploaded/downloaded whole.
  auto upload = [&](const Placement& p) {
    for (int l = 0; l < kLayers; ++l)
      for (int t = 0; t < static_cast<int>(kTensorBytes.size()); ++t) {
        std::vector<uint8_t> host(buffers[l][t].bytes(), 0xEE);  // padding: 0xEE
        for (int i = 0; i < kSlotsPerRank; ++i) {
          const int e = p.expert_at(l, me * kSlotsPerRank + i);
          for (uint64_t b = 0; b < kTensorBytes[t]; ++b) host[i * stride(t) + b] = PatternByte(l, t, e, b);
        }
        cuda::Check(cudaMemcpy(buffers[l][t].data(), host.data(), host.size(), cudaMemcpyHostToDevice),
                    "upload weights");
      }
  };
  // Empty when every slot holds its expert of `p` (and padding is intact).
  auto verify = [&](const Placement& p, int round) -> std::string {
    for (int l = 0; l < kLayers; ++l)
      for (int t = 0; t < static_cast<int>(kTensorBytes.size()); ++t) {
        std::vector<uint8_t> host(buffers[l][t].bytes());
        cuda::Check(cudaMemcpy(host.data(), buffers[l][t].data(), host.size(), cudaMemcpyDeviceToHost),
                    "download weights");
        for (int i = 0; i < kSlotsPerRank; ++i) {
          const int e = p.expert_at(l, me * kSlotsPerRank + i);
          for (uint64_t b = 0; b < stride(t); ++b) {
            const uint8_t want = b < kTensorBytes[t] ? PatternByte(l, t, e, b) : 0xEE;
            if (host[i * stride(t) + b] != want)
              return "round " + std::to_string(round) + " layer " + std::to_string(l) + " tensor " +
                     std::to_string(t) + " slot " + std::to_string(me * kSlotsPerRank + i) + " (expert " +
                     std::to_string(e) + ") byte " + std::to_string(b) + ": got " +
                     std::to_string(host[i * stride(t) + b]) + ", expected " + std::to_string(want);
          }
        }
      }
    return "";
  };

  std::mt19937 rng(1234);
  Placement cur = RandomPlacement(rng, ctx.size);
  upload(cur);
  uint64_t received = 0, sent = 0;
  double seconds = 0;
  for (int round = 0; round < kRounds; ++round) {
    Placement next = RandomPlacement(rng, ctx.size);
    auto reports = ex->Migrate(cur, next, DeadlineAfter(60s));
    Require(static_cast<int>(reports.size()) == kLayers, "reports for " + std::to_string(reports.size()) + " layers");
    for (const auto& r : reports) {
      received += r.rank.bytes_received;
      sent += r.rank.bytes_sent;
      seconds += r.seconds();
    }
    const std::string bad = verify(next, round);
    Require(bad.empty(), bad);
    cur = next;
  }
  Require(received > 0 && sent > 0, "nothing moved over the wire in " + std::to_string(kRounds) + " rounds");
  // Peers unmap this rank's memory (cuda_ipc) before the staging is freed.
  test::CloseTestCommunicator(*comm, DeadlineAfter(30s));
  ex.reset();
  ctx.WriteResult({{"rounds", kRounds},
                   {"bytes_received", received},
                   {"bytes_sent", sent},
                   {"seconds", seconds},
                   {"device", cuda::DeviceName(device)}});
  return 0;
}
EPLB_TEST_WORKER(executor) { return ExecutorWorker(test::GpuWorkerContext(args)); }

struct Case {
  std::string communicator;
  int staging_layers;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.communicator << ", " << c.staging_layers << " staging layer(s)"; }

class MigrationExecutorGpu : public ::testing::TestWithParam<Case> {};

TEST_P(MigrationExecutorGpu, MovesDeviceExpertsVerifiedPerExpert) {
  EPLB_REQUIRE_GPUS(1);
  const Case c = GetParam();
  auto outcomes = test::RunWorkers(
      "executor", 2, {{"communicator", c.communicator}, {"staging_layers", std::to_string(c.staging_layers)}},
      300s);
  for (const auto& o : outcomes) ASSERT_EQ(o.exit_code, 0) << test::Describe(outcomes);
  if (outcomes[0].result.contains("unavailable")) {
    GTEST_SKIP() << outcomes[0].result["unavailable"].get<std::string>();
  }
  for (const auto& o : outcomes) EXPECT_EQ(o.result["rounds"], kRounds) << test::Describe(outcomes);
  std::printf("executor/%s/staging%d on %d GPU(s): %s\n", c.communicator.c_str(), c.staging_layers,
              cuda::Probe().devices, test::Describe(outcomes).c_str());
}

INSTANTIATE_TEST_SUITE_P(Communicators, MigrationExecutorGpu,
                         ::testing::Values(Case{"cuda_ipc", 1}, Case{"cuda_ipc", 2}, Case{"gloo", 1},
                                           Case{"gloo", 2}, Case{"nixl", 1}, Case{"nixl", 2}),
                         [](const auto& info) {
                           return info.param.communicator + "_staging" + std::to_string(info.param.staging_layers);
                         });

}  // namespace
}  // namespace eplb
