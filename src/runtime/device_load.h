// The Balancer's GPU side (built only with EPLB_HAVE_CUDA): the routing maps
// in device memory, kept in step with the commits, and the per-step load
// counted on the GPU from the router's top-k ids (load_counter.h), brought
// to the host window without ever synchronizing the engine's stream.
//
// Counting: Record enqueues the counting kernel for a layer on the engine's
// stream into [layers][experts] device counters. EndStep enqueues, on the
// same stream, a copy of the counters into one of a few pinned host slots
// and a reset, and records an event; slots whose event has completed are
// folded into the window (so a step's counts arrive once the GPU has run
// it, typically a step or two later). Only when every slot is still in
// flight (the GPU is that many steps behind) does EndStep wait, for the
// oldest, until the deadline.
//
// Maps: log2phy [layers][experts][width] and logcnt [layers][experts],
// width = slots - experts + 1 (the most replicas an expert can have), -1
// padded. Upload enqueues a layer's new maps on the engine's stream, so
// kernels queued after it route with them.
#pragma once

#if EPLB_HAVE_CUDA

#include <array>
#include <cstdint>
#include <span>

#include "cuda/runtime.h"
#include "eplb/deadline.h"
#include "eplb/load_counter.h"
#include "eplb/placement.h"
#include "runtime/load_window.h"

namespace eplb::runtime {

class DeviceLoad {
 public:
  // Allocates on `device` and uploads `initial`, waiting for it until
  // `deadline` (TimeoutError past it).
  DeviceLoad(int device, const Placement& initial, Deadline deadline);

  int device() const { return device_; }
  DeviceExpertMap map(int layer) const;

  // Counts one layer's choices on `stream`; writes the chosen slots to
  // physical_ids ([tokens][top_k] int32, device) when given.
  void Record(int layer, const TopkIds& topk, void* stream, int32_t* physical_ids);
  // Closes the step on the GPU side and adds every finished step's counts to
  // the window's open step. Throws TimeoutError past `deadline` when it must wait.
  void EndStep(LoadWindow& window, Deadline deadline);
  // Enqueues the maps of `layer` holding `phy2log` (its slots' experts) as
  // the layer's device maps on the stream of the last Record (the default
  // stream before any). May wait for the layer's previous upload, until
  // `deadline` (TimeoutError past it).
  void Upload(int layer, std::span<const int32_t> phy2log, Deadline deadline);
  // Waits for everything enqueued here (tests, shutdown).
  void Synchronize(Deadline deadline);

 private:
  static constexpr int kSlots = 4;
  void FoldOldest(LoadWindow& window);
  void WriteMirror(int layer, std::span<const int32_t> phy2log);

  int device_;
  int layers_, experts_, slots_, width_;
  cuda::DeviceBuffer log2phy_, logcnt_, counters_;
  cuda::PinnedBuffer mirror_;  // host copy of the maps, the upload source
  std::vector<cuda::Event> uploaded_;  // [layer]: the last upload of its maps
  std::vector<bool> upload_pending_;
  std::array<cuda::PinnedBuffer, kSlots> ring_;
  std::vector<cuda::Event> ring_done_;
  int oldest_ = 0;     // the oldest slot in flight
  int in_flight_ = 0;  // slots in flight, from oldest_ on
  bool recorded_ = false;
  cudaStream_t stream_ = nullptr;
};

}  // namespace eplb::runtime

#endif  // EPLB_HAVE_CUDA
