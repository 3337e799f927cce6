// The Balancer's GPU side on a real GPU: RecordTopK counts the router's top-k
// ids with the load-counting kernel, the counts reach the window without the
// engine synchronizing, the balancer rebalances on them, and every step's
// chosen slots follow the maps in force at that step (the device maps follow
// each commit on the engine's stream). One rank over real Gloo.
#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <thread>
#include <vector>

#include "cuda/runtime.h"
#include "eplb/balancer.h"
#include "eplb/bootstrap.h"
#include "eplb/error.h"
#include "gpu/support/gpus.h"
#include "support/paths.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;

TEST(BalancerTopK, CountsOnTheGpuAndRoutesWithTheCommittedMaps) {
  EPLB_REQUIRE_GPUS(1);
  const int L = 3, E = 16, R = 20, T = 512, K = 4, steps = 150;
  auto store = MakeFileStore(test::MakeTempDir("balancer-topk") + "/store");
  SelectionRequest request;
  request.communicator = "gloo";
  request.async = true;
  BalancerLinks links = MakeBalancerLinks(store, 0, 1, request, DeadlineAfter(20s));

  std::vector<std::vector<uint8_t>> memory(L, std::vector<uint8_t>(R * 256));
  std::vector<LayerWeights> weights(L);
  for (int l = 0; l < L; ++l)
    weights[l].tensors.push_back({MemoryRegion{memory[l].data(), memory[l].size(), MemoryKind::kHost, -1}, 256, 0});
  BalancerConfig cfg;
  cfg.num_layers = L;
  cfg.num_experts = E;
  cfg.num_slots = R;
  cfg.window_steps = 1000;  // longer than the run: the window holds every count
  cfg.step_interval = 40;
  cfg.first_rebalance_step = 30;
  cfg.device = 0;
  Balancer balancer(links, weights, cfg, Placement::Identity(L, E, R, 1));

  cuda::DeviceGuard guard(0);
  cuda::Stream stream(0);
  cuda::DeviceBuffer ids(0, static_cast<size_t>(L) * T * K * sizeof(int32_t));
  cuda::DeviceBuffer slots(0, static_cast<size_t>(L) * T * K * sizeof(int32_t));
  std::vector<int32_t> host_ids(static_cast<size_t>(L) * T * K), host_slots(host_ids.size());
  std::vector<int64_t> expected(static_cast<size_t>(L) * E, 0);
  std::mt19937_64 rng(7);
  int64_t routed_after_commit = 0;
  for (int step = 0; step < steps; ++step) {
    // Skewed ids whose hot experts move with time, ~1% padding.
    for (size_t i = 0; i < host_ids.size(); ++i) {
      const uint64_t r = rng() % 1000;
      const int hot = static_cast<int>((rng() % E) * (rng() % E) / E);
      host_ids[i] = r < 10 ? -1 : (hot + step / 20) % E;
    }
    cuda::Check(cudaMemcpyAsync(ids.data(), host_ids.data(), ids.bytes(), cudaMemcpyHostToDevice, stream.get()),
                "upload ids");
    auto maps = balancer.placement();
    for (int l = 0; l < L; ++l) {
      const size_t off = static_cast<size_t>(l) * T * K;
      balancer.RecordTopK(l, TopkIds{ids.as<int32_t>() + off, IndexType::kInt32, T, K}, stream.get(),
                          slots.as<int32_t>() + off);
    }
    cuda::Check(cudaMemcpyAsync(host_slots.data(), slots.data(), slots.bytes(), cudaMemcpyDeviceToHost, stream.get()),
                "download slots");
    stream.Synchronize(DeadlineAfter(10s), "test step");
    // Every choice went to the replica the maps in force named.
    for (int l = 0; l < L; ++l)
      for (int i = 0; i < T * K; ++i) {
        const size_t at = static_cast<size_t>(l) * T * K + i;
        const int e = host_ids[at];
        if (e < 0) {
          ASSERT_EQ(host_slots[at], -1);
          continue;
        }
        ++expected[static_cast<size_t>(l) * E + e];
        const int n = maps->replicas(l, e);
        const int32_t want = maps->log2phy[(static_cast<size_t>(l) * E + e) * maps->max_replicas + i % n];
        ASSERT_EQ(host_slots[at], want) << "step " << step << " layer " << l << " choice " << i;
      }
    if (balancer.metrics().layers_committed > 0) ++routed_after_commit;
    balancer.Step();
  }
  // Let the last steps' counts arrive, and any running cycle end.
  stream.Synchronize(DeadlineAfter(10s), "test drain");
  for (int i = 0; i < 200 && (!balancer.idle() || i < 3); ++i) {
    balancer.Step();
    std::this_thread::sleep_for(1ms);
  }
  const LoadMatrix window = balancer.window_load();
  for (int l = 0; l < L; ++l)
    for (int e = 0; e < E; ++e)
      ASSERT_EQ(window.at(l, e), static_cast<double>(expected[static_cast<size_t>(l) * E + e]))
          << "layer " << l << " expert " << e;
  const BalancerMetrics m = balancer.metrics();
  EXPECT_GE(m.cycles_completed, 2) << FormatMetricsLine(m);
  EXPECT_GT(m.layers_committed, 0);
  EXPECT_GT(routed_after_commit, 0) << "no step routed with committed maps";
  EXPECT_GT(m.balancedness, 0.9) << FormatMetricsLine(m);
  // The device maps are the published ones.
  auto maps = balancer.placement();
  for (int l = 0; l < L; ++l) {
    const DeviceExpertMap dm = balancer.device_map(l);
    std::vector<int32_t> cnt(E), l2p(static_cast<size_t>(E) * dm.max_replicas);
    cuda::Check(cudaMemcpy(cnt.data(), dm.logcnt, cnt.size() * sizeof(int32_t), cudaMemcpyDeviceToHost), "logcnt");
    cuda::Check(cudaMemcpy(l2p.data(), dm.log2phy, l2p.size() * sizeof(int32_t), cudaMemcpyDeviceToHost), "log2phy");
    for (int e = 0; e < E; ++e) {
      ASSERT_EQ(cnt[e], maps->replicas(l, e));
      for (int k = 0; k < dm.max_replicas; ++k)
        ASSERT_EQ(l2p[static_cast<size_t>(e) * dm.max_replicas + k],
                  k < cnt[e] ? maps->log2phy[(static_cast<size_t>(l) * E + e) * maps->max_replicas + k] : -1);
    }
  }
}

TEST(BalancerTopK, RefusesWithoutADevice) {
  EPLB_REQUIRE_GPUS(1);
  auto store = MakeFileStore(test::MakeTempDir("balancer-topk-nodev") + "/store");
  SelectionRequest request;
  request.communicator = "gloo";
  BalancerLinks links = MakeBalancerLinks(store, 0, 1, request, DeadlineAfter(20s));
  std::vector<uint8_t> memory(4 * 64);
  std::vector<LayerWeights> weights(1);
  weights[0].tensors.push_back({MemoryRegion{memory.data(), memory.size(), MemoryKind::kHost, -1}, 64, 0});
  BalancerConfig cfg;
  cfg.num_layers = 1;
  cfg.num_experts = 4;
  cfg.num_slots = 4;
  Balancer balancer(links, weights, cfg, Placement::Identity(1, 4, 4, 1));
  EXPECT_THROW(balancer.RecordTopK(0, TopkIds{}, nullptr), InvalidArgument);
  cfg.device = cuda::Probe().devices;  // one past the last
  EXPECT_THROW(Balancer(links, weights, cfg, Placement::Identity(1, 4, 4, 1)), InvalidArgument);
}

}  // namespace
}  // namespace eplb
