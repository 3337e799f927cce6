// Device memory over Gloo: bytes of CUDA device regions travel through pinned
// host buffers, in chunks, so that device-to-host copies, TCP and
// host-to-device copies of different chunks overlap.
//
// Sending: up to `chunks` pinned buffers are filled by cudaMemcpyAsync on the
// staging's send stream; each is posted to Gloo as soon as its copy is done,
// and refilled with the next chunk once Gloo has sent it. Receiving: up to
// `chunks` receives are posted into pinned buffers; each arrived chunk is
// copied to the device on the receive stream, and its buffer is posted again
// once that copy is done. Sends run on a thread of their own, receives on the
// caller's, each in the order of the global transfer list (the same on every
// rank), so the earliest unfinished chunk of the whole exchange can always
// progress: no cycle of waits between ranks. Every wait (Gloo op, CUDA event)
// is bounded by the step's deadline.
//
// Only with CUDA (EPLB_HAVE_CUDA); otherwise Available() says why not and the
// communicator refuses device regions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "comm/gloo/mesh.h"
#include "eplb/deadline.h"

namespace eplb::gloo_backend {

// One transfer's bytes in device memory on this rank, moved with one peer in
// one Gloo slot (as a series of chunk-sized ops).
struct StagedItem {
  int peer = -1;
  uint64_t slot = 0;
  void* device = nullptr;  // source (send) or destination (receive)
  size_t bytes = 0;
  int64_t index = -1;  // the transfer's index, for errors
};

class DeviceStaging {
 public:
  // Default pipeline: 4 pinned chunks of 4 MiB per direction
  // (EPLB_GLOO_CHUNK_BYTES, EPLB_GLOO_CHUNKS override).
  static constexpr size_t kDefaultChunkBytes = size_t{4} << 20;
  static constexpr int kDefaultChunks = 4;

  // True when this build can stage device memory; else `*why` says why not.
  static bool Available(std::string* why);

  // Streams, events and pinned buffers (2 x chunks x chunk_bytes) on `device`. Throws
  // Error (layer "gloo") without CUDA or the device.
  DeviceStaging(int device, int rank);
  ~DeviceStaging();
  DeviceStaging(const DeviceStaging&) = delete;
  DeviceStaging& operator=(const DeviceStaging&) = delete;

  // Moves `sends` (device -> peers) and `recvs` (peers -> device) through
  // `ops`; returns when every chunk was sent and every received chunk is in
  // device memory. Throws what Ops throws, TimeoutError (layer "gloo") when a
  // staging copy misses the deadline, Error on a CUDA failure.
  void Run(Ops& ops, std::span<const StagedItem> sends, std::span<const StagedItem> recvs, Deadline deadline);

  size_t chunk_bytes() const;
  int chunks() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace eplb::gloo_backend
