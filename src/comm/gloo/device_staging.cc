#include "comm/gloo/device_staging.h"

#include <cstdlib>
#include <exception>
#include <thread>
#include <vector>

#include "cuda/runtime.h"
#include "eplb/error.h"

namespace eplb::gloo_backend {
namespace {

[[maybe_unused]] size_t EnvSize(const char* name, size_t fallback, size_t lo, size_t hi) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  unsigned long long x = std::strtoull(v, &end, 10);
  if (end == v || *end != '\0' || x < lo || x > hi) {
    throw InvalidArgument(std::string(name) + "=" + v + ": expected an integer in [" + std::to_string(lo) + ", " +
                          std::to_string(hi) + "]");
  }
  return static_cast<size_t>(x);
}

// A transfer's bytes cut into chunks (the same cut on both ranks: it depends
// only on the transfer's size and the chunk size).
struct Chunk {
  const StagedItem* item;
  size_t offset;
  size_t bytes;
};

[[maybe_unused]] std::vector<Chunk> Cut(std::span<const StagedItem> items, size_t chunk_bytes) {
  std::vector<Chunk> chunks;
  for (const auto& item : items)
    for (size_t off = 0; off < item.bytes; off += chunk_bytes)
      chunks.push_back({&item, off, std::min(chunk_bytes, item.bytes - off)});
  return chunks;
}

}  // namespace

#if EPLB_HAVE_CUDA

struct DeviceStaging::Impl {
  Impl(int device, int rank)
      : device(device),
        rank(rank),
        chunk_bytes(EnvSize("EPLB_GLOO_CHUNK_BYTES", kDefaultChunkBytes, 4096, size_t{1} << 30)),
        chunks(static_cast<int>(EnvSize("EPLB_GLOO_CHUNKS", kDefaultChunks, 1, 64))),
        send_stream(device),
        recv_stream(device) {
    for (int i = 0; i < chunks; ++i) {
      send_done.emplace_back(device);
      recv_done.emplace_back(device);
    }
    // Pinned buffers now, at registration, not while kernels run (page-locked
    // allocation can stall behind device work on some drivers).
    EnsureBuffers();
  }
  ~Impl() {
    // Copies of a failed exchange may still use the pinned buffers: waited
    // for as long as that exchange had; past it (a hung device) the buffers
    // are left allocated rather than freed under the copies.
    try {
      cuda::DeviceGuard guard(device);
      const Deadline by = DeadlineAfter(last_budget);
      send_stream.Synchronize(by, "gloo staging: wait for copies at close");
      recv_stream.Synchronize(by, "gloo staging: wait for copies at close");
    } catch (const std::exception&) {
      static_cast<void>(new std::vector<cuda::PinnedBuffer>(std::move(send_buffers)));  // left allocated on purpose
      static_cast<void>(new std::vector<cuda::PinnedBuffer>(std::move(recv_buffers)));
    }
  }

  void EnsureBuffers() {
    if (!send_buffers.empty()) return;
    for (int i = 0; i < chunks; ++i) {
      send_buffers.emplace_back(chunk_bytes);
      recv_buffers.emplace_back(chunk_bytes);
    }
  }

  // Device -> pinned -> Gloo, in order; runs on its own thread.
  void Send(Ops& ops, const std::vector<Chunk>& list, Deadline deadline) {
    cuda::DeviceGuard guard(device);
    const size_t n = list.size();
    const size_t k = static_cast<size_t>(chunks);
    std::vector<size_t> handle(n);
    size_t issued = 0, posted = 0, completed = 0;
    while (completed < n) {
      // Fill every free buffer with the next chunks.
      while (issued < n && issued - completed < k) {
        const Chunk& c = list[issued];
        const size_t b = issued % k;
        cuda::Check(cudaMemcpyAsync(send_buffers[b].data(), static_cast<const uint8_t*>(c.item->device) + c.offset,
                                    c.bytes, cudaMemcpyDeviceToHost, send_stream.get()),
                    "cudaMemcpyAsync (gloo staging, device to host)");
        send_done[b].Record(send_stream.get());
        ++issued;
      }
      if (posted < issued) {
        // Post the oldest filled chunk as soon as its copy is done.
        const Chunk& c = list[posted];
        const size_t b = posted % k;
        send_done[b].Wait(deadline, "gloo", "device-to-host staging of transfer #" + std::to_string(c.item->index),
                          rank, c.item->peer);
        handle[posted] = ops.Send(c.item->peer, c.item->slot, send_buffers[b].data(), c.bytes, "transfer",
                                  c.item->index);
        ++posted;
        continue;
      }
      // Every buffer is on the wire: free the oldest.
      ops.WaitOne(handle[completed], deadline);
      ++completed;
    }
  }

  // Gloo -> pinned -> device, in order; on the caller's thread.
  void Receive(Ops& ops, const std::vector<Chunk>& list, Deadline deadline) {
    cuda::DeviceGuard guard(device);
    const size_t n = list.size();
    const size_t k = static_cast<size_t>(chunks);
    std::vector<size_t> handle(n);
    size_t posted = 0, received = 0, done = 0;
    while (done < n) {
      while (done < received && recv_done[done % k].Query()) ++done;  // finished copies free buffers
      while (posted < n && posted - done < k) {
        const Chunk& c = list[posted];
        handle[posted] = ops.Recv(c.item->peer, c.item->slot, recv_buffers[posted % k].data(), c.bytes, "transfer",
                                  c.item->index);
        ++posted;
      }
      if (received < posted) {
        ops.WaitOne(handle[received], deadline);
        const Chunk& c = list[received];
        const size_t b = received % k;
        cuda::Check(cudaMemcpyAsync(static_cast<uint8_t*>(c.item->device) + c.offset, recv_buffers[b].data(), c.bytes,
                                    cudaMemcpyHostToDevice, recv_stream.get()),
                    "cudaMemcpyAsync (gloo staging, host to device)");
        recv_done[b].Record(recv_stream.get());
        ++received;
        continue;
      }
      if (done == received) continue;  // the retiring above may have finished every chunk
      const Chunk& c = list[done];
      recv_done[done % k].Wait(deadline, "gloo",
                               "host-to-device staging of transfer #" + std::to_string(c.item->index), rank,
                               c.item->peer);
      ++done;
    }
  }

  int device;
  int rank;
  size_t chunk_bytes;
  int chunks;
  cuda::Stream send_stream;
  cuda::Stream recv_stream;
  std::vector<cuda::Event> send_done;  // per send buffer: its device-to-host copy
  std::vector<cuda::Event> recv_done;  // per receive buffer: its host-to-device copy
  std::vector<cuda::PinnedBuffer> send_buffers;
  std::vector<cuda::PinnedBuffer> recv_buffers;
  // The budget of the last exchange (the destructor's wait for its copies).
  std::chrono::milliseconds last_budget{1000};
};

bool DeviceStaging::Available(std::string* why) {
  (void)why;
  return true;
}

DeviceStaging::DeviceStaging(int device, int rank) {
  const auto available = cuda::Probe();
  if (device < 0 || device >= available.devices) {
    throw Error("gloo", "stage device memory",
                available.devices == 0 ? available.reason
                                       : "device " + std::to_string(device) + " does not exist (" +
                                             std::to_string(available.devices) + " visible)",
                rank);
  }
  impl_ = std::make_unique<Impl>(device, rank);
}

DeviceStaging::~DeviceStaging() = default;

size_t DeviceStaging::chunk_bytes() const { return impl_->chunk_bytes; }
int DeviceStaging::chunks() const { return impl_->chunks; }

void DeviceStaging::Run(Ops& ops, std::span<const StagedItem> sends, std::span<const StagedItem> recvs,
                        Deadline deadline) {
  Impl& s = *impl_;
  const auto send_list = Cut(sends, s.chunk_bytes);
  const auto recv_list = Cut(recvs, s.chunk_bytes);
  if (send_list.empty() && recv_list.empty()) return;
  s.last_budget = std::max(TimeLeft(deadline), std::chrono::milliseconds(1000));
  {
    // Copies a failed exchange left in flight must finish before the pinned
    // buffers are reused.
    cuda::DeviceGuard guard(s.device);
    s.send_stream.Synchronize(deadline, "gloo staging: wait for an earlier exchange's copies");
    s.recv_stream.Synchronize(deadline, "gloo staging: wait for an earlier exchange's copies");
  }
  std::exception_ptr send_failure;
  std::thread sender;
  if (!send_list.empty()) {
    sender = std::thread([&] {
      try {
        s.Send(ops, send_list, deadline);
      } catch (...) {
        send_failure = std::current_exception();
      }
    });
  }
  std::exception_ptr recv_failure;
  try {
    s.Receive(ops, recv_list, deadline);
  } catch (...) {
    recv_failure = std::current_exception();
  }
  if (sender.joinable()) sender.join();  // its waits end by the deadline
  if (recv_failure) std::rethrow_exception(recv_failure);
  if (send_failure) std::rethrow_exception(send_failure);
}

#else  // !EPLB_HAVE_CUDA

struct DeviceStaging::Impl {};

bool DeviceStaging::Available(std::string* why) {
  if (why) *why = "eplb was built without CUDA";
  return false;
}

DeviceStaging::DeviceStaging(int, int rank) {
  throw Error("gloo", "stage device memory", "eplb was built without CUDA", rank);
}

DeviceStaging::~DeviceStaging() = default;
size_t DeviceStaging::chunk_bytes() const { return 0; }
int DeviceStaging::chunks() const { return 0; }

void DeviceStaging::Run(Ops&, std::span<const StagedItem>, std::span<const StagedItem>, Deadline) {
  throw Error("gloo", "stage device memory", "eplb was built without CUDA");
}

#endif  // EPLB_HAVE_CUDA

}  // namespace eplb::gloo_backend
