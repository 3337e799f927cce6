// The load-counting kernel against a CPU computation of the same rule, on
// random routing (with padding ids) and random placements with replicas.
#include "eplb/load_counter.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/runtime.h"
#include "gpu/support/gpus.h"
#include "eplb/error.h"
#include "eplb/placement.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;

struct Expected {
  std::vector<int64_t> logical, physical;
  std::vector<int32_t> slots;
};

// The rule, written out plainly: choice i = t * k + j of expert e goes to
// log2phy[e][i % logcnt[e]].
Expected CountOnCpu(const std::vector<int64_t>& ids, const Placement& p) {
  Expected x{std::vector<int64_t>(p.num_experts), std::vector<int64_t>(p.num_slots),
             std::vector<int32_t>(ids.size(), -1)};
  for (size_t i = 0; i < ids.size(); ++i) {
    const int64_t e = ids[i];
    if (e < 0 || e >= p.num_experts) continue;
    ++x.logical[e];
    const int32_t slot = p.log2phy[e * p.max_replicas + static_cast<int>(i % p.logcnt[e])];
    ++x.physical[slot];
    x.slots[i] = slot;
  }
  return x;
}

Placement RandomPlacement(std::mt19937_64& rng, int experts, int slots, int ranks) {
  std::vector<int32_t> phy2log(slots);
  for (int s = 0; s < slots; ++s) phy2log[s] = s < experts ? s : static_cast<int32_t>(rng() % experts);
  std::shuffle(phy2log.begin(), phy2log.end(), rng);
  return Placement::FromPhy2Log(1, experts, ranks, phy2log);
}

template <typename T>
cuda::DeviceBuffer Upload(const std::vector<T>& values) {
  cuda::DeviceBuffer buffer(0, values.size() * sizeof(T));
  if (!values.empty()) cuda::Check(cudaMemcpy(buffer.data(), values.data(), buffer.bytes(), cudaMemcpyHostToDevice), "upload");
  return buffer;
}

void CheckAgainstCpu(int experts, int slots, int64_t tokens, int k, IndexType type, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Placement p = RandomPlacement(rng, experts, slots, 8);
  std::vector<int64_t> ids(tokens * k);
  // Skewed routing (hot experts) plus ~2% padding (-1) and out-of-range ids.
  for (auto& id : ids) {
    const uint64_t r = rng() % 1000;
    id = r < 10 ? -1 : r < 20 ? experts + static_cast<int64_t>(rng() % 5)
                              : static_cast<int64_t>((rng() % experts) * (rng() % experts) / experts);
  }
  Expected want = CountOnCpu(ids, p);

  cuda::DeviceGuard guard(0);
  cuda::Stream stream(0);
  cuda::DeviceBuffer ids_device = type == IndexType::kInt64
                                      ? Upload(ids)
                                      : Upload(std::vector<int32_t>(ids.begin(), ids.end()));
  cuda::DeviceBuffer log2phy = Upload(p.log2phy);
  cuda::DeviceBuffer logcnt = Upload(p.logcnt);
  cuda::DeviceBuffer slot_ids(0, ids.size() * sizeof(int32_t));
  if (!ids.empty()) cuda::Check(cudaMemset(slot_ids.data(), 0x7f, slot_ids.bytes()), "poison");

  DeviceLoadCounter counter(0, 2, experts, slots, DeadlineAfter(std::chrono::seconds(10)));
  DeviceExpertMap map{log2phy.as<int32_t>(), logcnt.as<int32_t>(), experts, p.max_replicas, slots};
  TopkIds topk{ids_device.data(), type, tokens, k};
  counter.Record(1, topk, map, stream.get(), slot_ids.as<int32_t>());
  counter.Record(1, topk, map, stream.get());  // counts add up: twice the load

  std::vector<int64_t> logical(2 * experts, -7), physical(2 * slots, -7);
  counter.Read(logical, physical, stream.get(), /*reset=*/true, DeadlineAfter(10s));
  for (int e = 0; e < experts; ++e) {
    ASSERT_EQ(logical[e], 0) << "layer 0 expert " << e;
    ASSERT_EQ(logical[experts + e], 2 * want.logical[e]) << "expert " << e;
  }
  for (int s = 0; s < slots; ++s) {
    ASSERT_EQ(physical[s], 0) << "layer 0 slot " << s;
    ASSERT_EQ(physical[slots + s], 2 * want.physical[s]) << "slot " << s;
  }
  std::vector<int32_t> slots_seen(ids.size());
  if (!ids.empty()) {
    cuda::Check(cudaMemcpy(slots_seen.data(), slot_ids.data(), slot_ids.bytes(), cudaMemcpyDeviceToHost),
                "download");
  }
  ASSERT_EQ(slots_seen, want.slots);

  // Reset took effect.
  counter.Read(logical, {}, stream.get(), false, DeadlineAfter(10s));
  for (int64_t v : logical) ASSERT_EQ(v, 0);
}

TEST(LoadCounter, DeepSeekShapeInt64) {
  EPLB_REQUIRE_GPUS(1);
  CheckAgainstCpu(256, 288, 8192, 8, IndexType::kInt64, 1);
}

TEST(LoadCounter, DeepSeekShapeInt32) {
  EPLB_REQUIRE_GPUS(1);
  CheckAgainstCpu(256, 288, 4099, 8, IndexType::kInt32, 2);
}

// Too many experts for the shared-memory histogram: the global-atomics path.
TEST(LoadCounter, ManyExpertsUseGlobalCounters) {
  EPLB_REQUIRE_GPUS(1);
  CheckAgainstCpu(8000, 9600, 3000, 6, IndexType::kInt64, 3);
}

TEST(LoadCounter, ZeroTokensCountNothing) {
  EPLB_REQUIRE_GPUS(1);
  CheckAgainstCpu(16, 32, 0, 4, IndexType::kInt32, 4);
}

TEST(LoadCounter, RejectsMismatchedMaps) {
  EPLB_REQUIRE_GPUS(1);
  DeviceLoadCounter counter(0, 1, 16, 32, DeadlineAfter(std::chrono::seconds(10)));
  DeviceExpertMap map{nullptr, nullptr, 17, 2, 32};
  TopkIds topk{nullptr, IndexType::kInt32, 0, 1};
  EXPECT_THROW(counter.Record(0, topk, map, nullptr), InvalidArgument);
  map.num_experts = 16;
  EXPECT_THROW(counter.Record(1, topk, map, nullptr), InvalidArgument);
}

}  // namespace
}  // namespace eplb
