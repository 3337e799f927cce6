#include "eplb/load_counter.h"

#include <string>

#include <fmt/format.h>

#include "cuda/load_counter_kernel.h"
#include "cuda/runtime.h"
#include "eplb/error.h"

namespace eplb {

namespace {

void ValidateShapes(const TopkIds& topk, const DeviceExpertMap& map) {
  if (topk.num_tokens < 0 || topk.top_k < 0) {
    throw InvalidArgument(fmt::format("count expert load: bad top-k shape [{}][{}]", topk.num_tokens,
                                      topk.top_k));
  }
  if (map.num_experts <= 0 || map.max_replicas <= 0 || map.num_slots <= 0) {
    throw InvalidArgument(fmt::format(
        "count expert load: bad map shape (experts {}, max replicas {}, slots {})", map.num_experts,
        map.max_replicas, map.num_slots));
  }
  if (topk.num_tokens > 0 && topk.top_k > 0 &&
      (topk.ids == nullptr || map.log2phy == nullptr || map.logcnt == nullptr)) {
    throw InvalidArgument("count expert load: null top-k ids or maps");
  }
}

}  // namespace

#if EPLB_HAVE_CUDA

void CountExpertLoad(const TopkIds& topk, const DeviceExpertMap& map, int64_t* logical_counts,
                     int64_t* physical_counts, int32_t* physical_ids, void* stream) {
  ValidateShapes(topk, map);
  int device = 0;
  cuda::Check(cudaGetDevice(&device), "cudaGetDevice");
  cuda::Check(cuda::LaunchCountExpertLoad(
                  topk.ids, topk.type == IndexType::kInt64, topk.num_tokens * topk.top_k,
                  map.log2phy, map.logcnt, map.num_experts, map.max_replicas, map.num_slots,
                  logical_counts, physical_counts, physical_ids, cuda::MultiprocessorCount(device),
                  static_cast<cudaStream_t>(stream)),
              "launch count-expert-load kernel");
}

struct DeviceLoadCounter::State {
  int device;
  int layers;
  int experts;
  int slots;
  cuda::DeviceBuffer counters;  // [L][E] logical, then [L][R] physical
  cuda::PinnedBuffer host;      // staging for Read
  cuda::Event copied;

  int64_t* logical() const { return counters.as<int64_t>(); }
  int64_t* physical() const { return counters.as<int64_t>() + static_cast<size_t>(layers) * experts; }
  size_t count() const { return static_cast<size_t>(layers) * (experts + slots); }
};

DeviceLoadCounter::DeviceLoadCounter(int device, int num_layers, int num_experts, int num_slots,
                                     Deadline ready_by) {
  if (num_layers <= 0 || num_experts <= 0 || num_slots <= 0) {
    throw InvalidArgument(fmt::format("load counter: bad shape (layers {}, experts {}, slots {})",
                                      num_layers, num_experts, num_slots));
  }
  auto available = cuda::Probe();
  if (device < 0 || device >= available.devices) {
    throw Error("cuda", "create load counter",
                available.devices == 0 ? available.reason
                                       : fmt::format("device {} does not exist", device));
  }
  const size_t count = static_cast<size_t>(num_layers) * (num_experts + num_slots);
  state_.reset(new State{device, num_layers, num_experts, num_slots,
                         cuda::DeviceBuffer(device, count * sizeof(int64_t)),
                         cuda::PinnedBuffer(count * sizeof(int64_t)), cuda::Event(device)});
  cuda::DeviceGuard guard(device);
  cuda::Stream zero(device);
  cuda::Check(cudaMemsetAsync(state_->counters.data(), 0, count * sizeof(int64_t), zero.get()),
              "cudaMemsetAsync (counters)");
  zero.Synchronize(ready_by, "zero the load counters");
}

DeviceLoadCounter::~DeviceLoadCounter() = default;

int DeviceLoadCounter::device() const { return state_->device; }
int DeviceLoadCounter::num_layers() const { return state_->layers; }
int DeviceLoadCounter::num_experts() const { return state_->experts; }
int DeviceLoadCounter::num_slots() const { return state_->slots; }

void DeviceLoadCounter::Record(int layer, const TopkIds& topk, const DeviceExpertMap& map,
                               void* stream, int32_t* physical_ids) {
  if (layer < 0 || layer >= state_->layers) {
    throw InvalidArgument(fmt::format("load counter: layer {} out of range [0, {})", layer, state_->layers));
  }
  if (map.num_experts != state_->experts || map.num_slots != state_->slots) {
    throw InvalidArgument(fmt::format(
        "load counter: map has {} experts and {} slots, counter {} and {}", map.num_experts,
        map.num_slots, state_->experts, state_->slots));
  }
  cuda::DeviceGuard guard(state_->device);
  CountExpertLoad(topk, map, state_->logical() + static_cast<size_t>(layer) * state_->experts,
                  state_->physical() + static_cast<size_t>(layer) * state_->slots, physical_ids,
                  stream);
}

void DeviceLoadCounter::Read(std::span<int64_t> logical, std::span<int64_t> physical, void* stream,
                             bool reset, Deadline deadline) {
  State& s = *state_;
  const size_t logical_count = static_cast<size_t>(s.layers) * s.experts;
  const size_t physical_count = static_cast<size_t>(s.layers) * s.slots;
  if (!logical.empty() && logical.size() != logical_count) {
    throw InvalidArgument(fmt::format("load counter: logical output has {} values, expected {}",
                                      logical.size(), logical_count));
  }
  if (!physical.empty() && physical.size() != physical_count) {
    throw InvalidArgument(fmt::format("load counter: physical output has {} values, expected {}",
                                      physical.size(), physical_count));
  }
  cuda::DeviceGuard guard(s.device);
  auto st = static_cast<cudaStream_t>(stream);
  cuda::Check(cudaMemcpyAsync(s.host.data(), s.counters.data(), s.count() * sizeof(int64_t),
                              cudaMemcpyDeviceToHost, st),
              "cudaMemcpyAsync (read load counters)");
  if (reset) {
    cuda::Check(cudaMemsetAsync(s.counters.data(), 0, s.count() * sizeof(int64_t), st),
                "cudaMemsetAsync (reset load counters)");
  }
  s.copied.Record(st);
  s.copied.Wait(deadline, "cuda", "read load counters");
  const auto* values = s.host.as<int64_t>();
  std::copy(values, values + (logical.empty() ? 0 : logical_count), logical.begin());
  std::copy(values + logical_count, values + (physical.empty() ? logical_count : s.count()),
            physical.begin());
}

void DeviceLoadCounter::Reset(void* stream) {
  cuda::DeviceGuard guard(state_->device);
  cuda::Check(cudaMemsetAsync(state_->counters.data(), 0, state_->count() * sizeof(int64_t),
                              static_cast<cudaStream_t>(stream)),
              "cudaMemsetAsync (reset load counters)");
}

#else  // !EPLB_HAVE_CUDA

namespace {
[[noreturn]] void NoCuda(const char* operation) {
  throw Error("cuda", operation, "eplb was built without CUDA");
}
}  // namespace

void CountExpertLoad(const TopkIds& topk, const DeviceExpertMap& map, int64_t*, int64_t*, int32_t*,
                     void*) {
  ValidateShapes(topk, map);
  NoCuda("count expert load");
}

struct DeviceLoadCounter::State {};

DeviceLoadCounter::DeviceLoadCounter(int, int, int, int) { NoCuda("create load counter"); }
DeviceLoadCounter::~DeviceLoadCounter() = default;
int DeviceLoadCounter::device() const { return -1; }
int DeviceLoadCounter::num_layers() const { return 0; }
int DeviceLoadCounter::num_experts() const { return 0; }
int DeviceLoadCounter::num_slots() const { return 0; }
void DeviceLoadCounter::Record(int, const TopkIds&, const DeviceExpertMap&, void*, int32_t*) {
  NoCuda("count expert load");
}
void DeviceLoadCounter::Read(std::span<int64_t>, std::span<int64_t>, void*, bool, Deadline) {
  NoCuda("read load counters");
}
void DeviceLoadCounter::Reset(void*) { NoCuda("reset load counters"); }

#endif  // EPLB_HAVE_CUDA

}  // namespace eplb
