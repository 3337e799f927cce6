// Membership changes with device weights (elastic.h): three processes on the
// machine's GPUs (all three on one GPU where there is one), expert weights in
// device memory. Rank 2's process is gone; ranks 0 and 1 fill every slot of
// the new placement from surviving replicas over the communicator under test
// and from a weight source that writes the expert's pattern into device
// memory; every slot of every tensor is read back and checked byte for byte.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>

#include "cuda/runtime.h"
#include "demo/fingerprint.h"
#include "eplb/elastic.h"
#include "eplb/error.h"
#include "eplb/placement.h"
#include "gpu/support/gpus.h"
#include "gpu/support/workers.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;
using test::Require;

constexpr int kLayers = 3;
constexpr int kExperts = 8;
constexpr int kSlotsPerRank = 4;
const std::vector<uint64_t> kTensorBytes = {(1u << 20) + 24, 4096 + 7};

// The expert's fingerprint (demo/fingerprint.h), as host bytes to upload.
std::vector<uint8_t> Pattern(int layer, int tensor, int expert) {
  std::vector<uint8_t> host(kTensorBytes[tensor]);
  runtime::FillFingerprint(host.data(), host.size(), layer, expert, tensor);
  return host;
}

// The placement in force: rank 2 holds experts 6 and 7 alone (they come
// back from the source) and replicas of 2 and 3 (they come over the wire
// from rank 0). Identity would give rank 2 replicas only.
Placement Before() {
  const std::vector<int32_t> layer = {0, 1, 2, 3, /*rank 1*/ 4, 5, 0, 1, /*rank 2*/ 6, 7, 2, 3};
  std::vector<int32_t> phy2log;
  for (int l = 0; l < kLayers; ++l) phy2log.insert(phy2log.end(), layer.begin(), layer.end());
  return Placement::FromPhy2Log(kLayers, kExperts, 3, std::move(phy2log));
}

int ElasticWorker(const test::WorkerContext& ctx) {
  const int me = ctx.rank, device = me % cuda::Probe().devices;
  if (me == 2) return 0;  // this process is gone before the change
  cuda::DeviceGuard guard(device);
  std::vector<std::vector<cuda::DeviceBuffer>> buffers(kLayers);
  std::vector<LayerWeights> weights(kLayers);
  const Placement before = Before();
  for (int l = 0; l < kLayers; ++l)
    for (int t = 0; t < static_cast<int>(kTensorBytes.size()); ++t) {
      buffers[l].emplace_back(device, kTensorBytes[t] * kSlotsPerRank);
      weights[l].tensors.push_back(
          {MemoryRegion{buffers[l].back().data(), buffers[l].back().bytes(), MemoryKind::kCuda, device},
           kTensorBytes[t], 0});
      for (int j = 0; j < kSlotsPerRank; ++j) {
        const auto host = Pattern(l, t, before.expert_at(l, me * kSlotsPerRank + j));
        cuda::Check(cudaMemcpy(static_cast<uint8_t*>(buffers[l][t].data()) + j * kTensorBytes[t], host.data(),
                               host.size(), cudaMemcpyHostToDevice),
                    "upload an expert");
      }
    }
  int64_t from_source = 0;
  WeightSource source = [&](int l, int e, int t, const MemoryRegion& dst) {
    Require(dst.kind == MemoryKind::kCuda && dst.bytes == kTensorBytes[t], "the source's destination");
    const auto host = Pattern(l, t, e);
    cuda::Check(cudaMemcpy(dst.base, host.data(), host.size(), cudaMemcpyHostToDevice), "the weight source");
    ++from_source;
  };
  MembershipChangeOptions opt;
  opt.capacity = 3;
  opt.slots_per_rank = kSlotsPerRank;
  opt.communicator.communicator = ctx.Param("communicator");
  opt.deadline = 60s;
  LoadMatrix load(kLayers, kExperts);
  for (int l = 0; l < kLayers; ++l)
    for (int e = 0; e < kExperts; ++e) load.at(l, e) = 1 + (e * 7 + l) % 5;
  MembershipChangeResult r;
  try {
    r = ChangeMembership(ctx.store, me, Membership::All(3), before, load, {{2}, {}, {}}, weights, source, opt);
  } catch (const InvalidArgument& e) {
    ctx.WriteResult({{"unavailable", opt.communicator.communicator + ": " + e.what()}});
    return 0;
  }
  Require(r.serves && r.after.size() == 2, "rank " + std::to_string(me) + " does not serve after the change");
  const int index = r.after.index_of(me);
  for (int l = 0; l < kLayers; ++l)
    for (int t = 0; t < static_cast<int>(kTensorBytes.size()); ++t) {
      std::vector<uint8_t> host(buffers[l][t].bytes());
      cuda::Check(cudaMemcpy(host.data(), buffers[l][t].data(), host.size(), cudaMemcpyDeviceToHost),
                  "download weights");
      for (int j = 0; j < kSlotsPerRank; ++j) {
        const int e = r.placement.expert_at(l, index * kSlotsPerRank + j);
        const int64_t bad =
            runtime::FindFingerprintMismatch(host.data() + j * kTensorBytes[t], kTensorBytes[t], l, e, t);
        Require(bad < 0, "layer " + std::to_string(l) + " tensor " + std::to_string(t) + " slot " +
                             std::to_string(j) + " does not hold expert " + std::to_string(e) + " (byte " +
                             std::to_string(bad) + ")");
      }
    }
  ctx.WriteResult({{"over_wire", r.experts_over_wire},
                   {"from_source", r.experts_from_source},
                   {"source_calls", from_source},
                   {"communicator", r.communicator},
                   {"seconds", r.seconds}});
  return 0;
}
EPLB_TEST_WORKER(elastic_gpu) { return ElasticWorker(test::GpuWorkerContext(args)); }

class ElasticGpu : public ::testing::TestWithParam<std::string> {};

TEST_P(ElasticGpu, ALostRanksDeviceExpertsComeBackVerified) {
  EPLB_REQUIRE_GPUS(1);
  auto outcomes = test::RunWorkers("elastic_gpu", 3, {{"communicator", GetParam()}}, 300s);
  for (const auto& o : outcomes) ASSERT_EQ(o.exit_code, 0) << test::Describe(outcomes);
  if (outcomes[0].result.contains("unavailable")) GTEST_SKIP() << outcomes[0].result["unavailable"].get<std::string>();
  for (int r : {0, 1}) {
    EXPECT_EQ(outcomes[r].result["communicator"], GetParam()) << test::Describe(outcomes);
    EXPECT_EQ(outcomes[r].result["from_source"], outcomes[0].result["from_source"]) << test::Describe(outcomes);
  }
  // Experts 6 and 7 of every layer existed only on rank 2: each comes back
  // from the source (from_source counts every process's, each call one
  // tensor of one slot).
  const int64_t from_source = outcomes[0].result["from_source"].get<int64_t>();
  EXPECT_GE(from_source, 2 * kLayers) << test::Describe(outcomes);
  EXPECT_EQ(outcomes[0].result["source_calls"].get<int64_t>() + outcomes[1].result["source_calls"].get<int64_t>(),
            from_source * static_cast<int64_t>(kTensorBytes.size()))
      << test::Describe(outcomes);
  std::printf("elastic/%s: %s\n", GetParam().c_str(), test::Describe(outcomes).c_str());
}

INSTANTIATE_TEST_SUITE_P(Communicators, ElasticGpu, ::testing::Values("gloo", "cuda_ipc", "nixl"));

}  // namespace
}  // namespace eplb
