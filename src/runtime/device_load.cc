#include "runtime/device_load.h"

#if EPLB_HAVE_CUDA

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "eplb/error.h"

namespace eplb::runtime {

DeviceLoad::DeviceLoad(int device, const Placement& initial, Deadline deadline)
    : device_(device),
      layers_(initial.num_layers),
      experts_(initial.num_experts),
      slots_(initial.num_slots),
      width_(initial.num_slots - initial.num_experts + 1) {
  const auto available = cuda::Probe();
  if (device < 0 || device >= available.devices)
    throw InvalidArgument(fmt::format("balancer: CUDA device {} for top-k counting: {}", device,
                                      available.devices == 0 ? available.reason
                                                             : "no such device"));
  const size_t cells = static_cast<size_t>(layers_) * experts_;
  log2phy_ = cuda::DeviceBuffer(device, cells * width_ * sizeof(int32_t));
  logcnt_ = cuda::DeviceBuffer(device, cells * sizeof(int32_t));
  counters_ = cuda::DeviceBuffer(device, cells * sizeof(int64_t));
  mirror_ = cuda::PinnedBuffer(cells * (width_ + 1) * sizeof(int32_t));
  for (auto& slot : ring_) slot = cuda::PinnedBuffer(cells * sizeof(int64_t));
  for (int i = 0; i < kSlots; ++i) ring_done_.emplace_back(device);
  for (int l = 0; l < layers_; ++l) uploaded_.emplace_back(device);
  upload_pending_.assign(layers_, false);
  cuda::DeviceGuard guard(device);
  for (int l = 0; l < layers_; ++l) WriteMirror(l, initial.layer_phy2log(l));
  // On a stream of its own, waited for under the deadline (the mirror is
  // pinned, so the copies are asynchronous).
  cuda::Stream init(device);
  cuda::Check(cudaMemcpyAsync(log2phy_.data(), mirror_.data(), log2phy_.bytes(), cudaMemcpyHostToDevice,
                              init.get()),
              "cudaMemcpyAsync (log2phy)");
  cuda::Check(cudaMemcpyAsync(logcnt_.data(), mirror_.as<int32_t>() + cells * width_, logcnt_.bytes(),
                              cudaMemcpyHostToDevice, init.get()),
              "cudaMemcpyAsync (logcnt)");
  cuda::Check(cudaMemsetAsync(counters_.data(), 0, counters_.bytes(), init.get()),
              "cudaMemsetAsync (load counters)");
  init.Synchronize(deadline, "balancer: upload of the initial device maps");
}

DeviceExpertMap DeviceLoad::map(int layer) const {
  DeviceExpertMap m;
  m.log2phy = log2phy_.as<int32_t>() + static_cast<size_t>(layer) * experts_ * width_;
  m.logcnt = logcnt_.as<int32_t>() + static_cast<size_t>(layer) * experts_;
  m.num_experts = experts_;
  m.max_replicas = width_;
  m.num_slots = slots_;
  return m;
}

// The layer's logcnt and log2phy (slots ascending, -1 padded to width_),
// derived from its phy2log as Placement::Derive does.
void DeviceLoad::WriteMirror(int layer, std::span<const int32_t> phy2log) {
  const size_t cells = static_cast<size_t>(layers_) * experts_;
  int32_t* l2p = mirror_.as<int32_t>() + static_cast<size_t>(layer) * experts_ * width_;
  int32_t* cnt = mirror_.as<int32_t>() + cells * width_ + static_cast<size_t>(layer) * experts_;
  std::fill(l2p, l2p + static_cast<size_t>(experts_) * width_, -1);
  std::fill(cnt, cnt + experts_, 0);
  for (int p = 0; p < static_cast<int>(phy2log.size()); ++p) {
    const int e = phy2log[p];
    if (e < 0 || e >= experts_) continue;
    if (cnt[e] < width_) l2p[static_cast<size_t>(e) * width_ + cnt[e]] = p;
    ++cnt[e];
  }
}

void DeviceLoad::Record(int layer, const TopkIds& topk, void* stream, int32_t* physical_ids) {
  if (layer < 0 || layer >= layers_)
    throw InvalidArgument(fmt::format("RecordTopK: layer {} outside [0, {})", layer, layers_));
  cuda::DeviceGuard guard(device_);
  stream_ = static_cast<cudaStream_t>(stream);
  CountExpertLoad(topk, map(layer), counters_.as<int64_t>() + static_cast<size_t>(layer) * experts_,
                  nullptr, physical_ids, stream);
  recorded_ = true;
}

void DeviceLoad::FoldOldest(LoadWindow& window) {
  const int64_t* counts = ring_[oldest_].as<int64_t>();
  for (int l = 0; l < layers_; ++l)
    window.Add(l, std::span<const int64_t>(counts + static_cast<size_t>(l) * experts_, experts_));
  oldest_ = (oldest_ + 1) % kSlots;
  --in_flight_;
}

void DeviceLoad::EndStep(LoadWindow& window, Deadline deadline) {
  cuda::DeviceGuard guard(device_);
  // Steps the GPU has finished, oldest first.
  while (in_flight_ > 0 && ring_done_[oldest_].Query()) FoldOldest(window);
  if (!recorded_) return;
  if (in_flight_ == kSlots) {
    // Every slot is in flight: the GPU is kSlots steps behind. Wait for the oldest.
    ring_done_[oldest_].Wait(deadline, "balancer", "read the GPU's load counters");
    FoldOldest(window);
  }
  const int slot = (oldest_ + in_flight_) % kSlots;
  cuda::Check(cudaMemcpyAsync(ring_[slot].data(), counters_.data(), counters_.bytes(),
                              cudaMemcpyDeviceToHost, stream_),
              "cudaMemcpyAsync (load counters)");
  cuda::Check(cudaMemsetAsync(counters_.data(), 0, counters_.bytes(), stream_),
              "cudaMemsetAsync (load counters)");
  ring_done_[slot].Record(stream_);
  ++in_flight_;
  recorded_ = false;
}

void DeviceLoad::Upload(int layer, std::span<const int32_t> phy2log, Deadline deadline) {
  cuda::DeviceGuard guard(device_);
  // The mirror of this layer may still be the source of its previous upload.
  if (upload_pending_[layer])
    uploaded_[layer].Wait(deadline, "balancer", "upload of the device maps");
  WriteMirror(layer, phy2log);
  const size_t cells = static_cast<size_t>(layers_) * experts_;
  const size_t l2p_off = static_cast<size_t>(layer) * experts_ * width_;
  const size_t cnt_off = static_cast<size_t>(layer) * experts_;
  cuda::Check(cudaMemcpyAsync(log2phy_.as<int32_t>() + l2p_off, mirror_.as<int32_t>() + l2p_off,
                              static_cast<size_t>(experts_) * width_ * sizeof(int32_t),
                              cudaMemcpyHostToDevice, stream_),
              "cudaMemcpyAsync (log2phy)");
  cuda::Check(cudaMemcpyAsync(logcnt_.as<int32_t>() + cnt_off,
                              mirror_.as<int32_t>() + cells * width_ + cnt_off,
                              static_cast<size_t>(experts_) * sizeof(int32_t), cudaMemcpyHostToDevice,
                              stream_),
              "cudaMemcpyAsync (logcnt)");
  uploaded_[layer].Record(stream_);
  upload_pending_[layer] = true;
}

void DeviceLoad::Synchronize(Deadline deadline) {
  cuda::DeviceGuard guard(device_);
  for (int l = 0; l < layers_; ++l)
    if (upload_pending_[l]) uploaded_[l].Wait(deadline, "balancer", "upload of the device maps");
  for (int i = 0; i < in_flight_; ++i)
    ring_done_[(oldest_ + i) % kSlots].Wait(deadline, "balancer", "read the GPU's load counters");
}

}  // namespace eplb::runtime

#endif  // EPLB_HAVE_CUDA
