#include "comm/cuda_ipc/cuda_ipc.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "comm/cuda_ipc/node_flags.h"
#include "util/backoff.h"
#include "cuda/runtime.h"
#include "eplb/error.h"
#include "wire/codec.h"

namespace eplb {

namespace {

constexpr const char* kLayer = "cuda_ipc";

}  // namespace

#if EPLB_HAVE_CUDA

namespace {

using cuda::Check;
using cuda::DeviceGuard;
using cuda_ipc::NodeFlags;

// cuMemGetAddressRange, reached through the runtime's driver entry point so
// nothing links libcuda (the runtime loads it, or reports it missing).
using DevicePointer = unsigned long long;
using GetAddressRangeFn = int (*)(DevicePointer* base, size_t* bytes, DevicePointer pointer);

struct Allocation {
  char* base = nullptr;
  size_t bytes = 0;
};

// The cudaMalloc allocation that holds `pointer`: IPC handles are taken of
// whole allocations, and a region (a tensor) may start anywhere inside one.
Allocation FindAllocation(const void* pointer, int rank) {
  static const GetAddressRangeFn get_range = []() -> GetAddressRangeFn {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &fn, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return nullptr;
    }
    return reinterpret_cast<GetAddressRangeFn>(fn);
  }();
  if (get_range == nullptr) {
    throw Error(kLayer, "register region", "the CUDA driver has no cuMemGetAddressRange", rank);
  }
  DevicePointer base = 0;
  size_t bytes = 0;
  int status = get_range(&base, &bytes, reinterpret_cast<DevicePointer>(pointer));
  if (status != 0) {
    throw Error(kLayer, "register region",
                fmt::format("{} is not CUDA device memory (cuMemGetAddressRange: CUresult {})",
                            pointer, status),
                rank);
  }
  return {reinterpret_cast<char*>(base), bytes};
}

// What a rank publishes for each registered region.
// What a rank publishes for each region it registers.
struct RegionDescriptor {
  uint8_t has_memory = 0;  // 0 for an empty region
  uint64_t offset = 0;     // region start - allocation start
  uint64_t bytes = 0;
  int32_t device = -1;
  int32_t pid = 0;
  cudaIpcMemHandle_t handle{};

  std::vector<uint8_t> Encode() const {
    return wire::Writer(wire::Kind::kRegion)
        .Put(has_memory)
        .Put(offset)
        .Put(bytes)
        .Put(device)
        .Put(pid)
        .PutFixed(&handle, sizeof handle)
        .Take();
  }
  static RegionDescriptor Decode(std::span<const uint8_t> b, const wire::Origin& origin) {
    wire::Reader r(b, wire::Kind::kRegion, origin);
    RegionDescriptor d;
    d.has_memory = r.Get<uint8_t>();
    d.offset = r.Get<uint64_t>();
    d.bytes = r.Get<uint64_t>();
    d.device = r.Get<int32_t>();
    d.pid = r.Get<int32_t>();
    r.GetFixed(&d.handle, sizeof d.handle);
    r.Finish();
    if (d.has_memory > 1) r.Fail("neither with memory nor empty");
    if (!d.has_memory && d.bytes != 0) r.Fail("an empty region of " + std::to_string(d.bytes) + " bytes");
    return d;
  }
};

std::string HandleKey(int peer, const cudaIpcMemHandle_t& handle) {
  return std::to_string(peer) + ":" +
         std::string(reinterpret_cast<const char*>(&handle), sizeof(handle));
}

bool InRange(uint64_t offset, uint64_t bytes, uint64_t size) {
  return offset <= size && bytes <= size - offset;
}

class CudaIpcCommunicator final : public Communicator {
 public:
  CudaIpcCommunicator(const CommunicatorOptions& options, int copy_streams, Deadline deadline)
      : store_(options.store),
        rank_(options.rank),
        size_(options.world_size),
        device_(options.device),
        prefix_(options.key_prefix + "/cuda_ipc"),
        close_budget_(options.connect_timeout) {
    if (!store_) throw Error(kLayer, "create", "no store given", rank_);
    if (size_ < 1 || rank_ < 0 || rank_ >= size_) {
      throw Error(kLayer, "create", fmt::format("bad rank {} of {}", rank_, size_), rank_);
    }
    if (copy_streams < 1) throw Error(kLayer, "create", "copy_streams must be >= 1", rank_);
    auto available = cuda::Probe();
    if (device_ < 0 || device_ >= available.devices) {
      throw Error(kLayer, "create",
                  available.devices == 0
                      ? available.reason
                      : fmt::format("device {} does not exist ({} visible)", device_, available.devices),
                  rank_);
    }
    DeviceGuard guard(device_);
    for (int s = 0; s < copy_streams; ++s) streams_.emplace_back(device_);
    events_.resize(size_);
    for (int p = 0; p < size_; ++p) {
      for (int s = 0; s < copy_streams; ++s) events_[p].emplace_back(device_);
    }
    flags_ = NodeFlags::Join(*store_, prefix_, rank_, size_, deadline);
  }

  ~CudaIpcCommunicator() override {
    if (!closed_) {
      // Copies still reading a peer's memory must end before it is unmapped;
      // past the budget (a hung device) the mappings are left in place.
      try {
        DeviceGuard guard(device_);
        const Deadline by = DeadlineAfter(close_budget_);
        for (auto& stream : streams_) stream.Synchronize(by, "destroy: wait for copies");
      } catch (const std::exception& e) {
        spdlog::error("cuda_ipc rank {}: {}; peers' memory stays mapped", rank_, e.what());
        return;
      }
      Unmap();
    }
  }

  std::string_view name() const override { return "cuda_ipc"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  RegionId RegisterRegion(const MemoryRegion& region, Deadline deadline) override {
    CheckUsable("register region");
    const RegionId id = static_cast<RegionId>(local_.size());
    if (region.kind != MemoryKind::kCuda) {
      throw BadInput("register region",
                     fmt::format("region {} is {} memory; cuda_ipc moves CUDA device memory only",
                                 id, MemoryKindName(region.kind)));
    }
    if (region.device != device_) {
      throw BadInput("register region",
                     fmt::format("region {} is on device {}, this communicator on device {}", id,
                                 region.device, device_));
    }
    if (region.bytes > 0 && region.base == nullptr) {
      throw BadInput("register region", fmt::format("region {} has no address", id));
    }
    DeviceGuard guard(device_);
    RegionDescriptor mine;
    mine.bytes = region.bytes;
    mine.device = device_;
    mine.pid = static_cast<int32_t>(getpid());
    if (region.bytes > 0) {
      Allocation allocation = FindAllocation(region.base, rank_);
      const char* base = static_cast<const char*>(region.base);
      mine.offset = static_cast<uint64_t>(base - allocation.base);
      if (!InRange(mine.offset, region.bytes, allocation.bytes)) {
        throw BadInput("register region",
                       fmt::format("region {} ({} bytes) runs past the end of its allocation", id,
                                   region.bytes));
      }
      Check(cudaIpcGetMemHandle(&mine.handle, allocation.base), "cudaIpcGetMemHandle");
      mine.has_memory = 1;
    }
    broken_ = true;  // until every peer's descriptor is in: ids would disagree
    store_->Set(RegionKey(id, rank_), mine.Encode());
    std::vector<Remote> remotes(size_);
    for (int peer = 0; peer < size_; ++peer) {
      if (peer == rank_) continue;
      std::vector<uint8_t> bytes;
      try {
        bytes = store_->Get(RegionKey(id, peer), deadline);
      } catch (const TimeoutError& e) {
        throw TimeoutError(kLayer, "register region",
                           fmt::format("peer did not register region {}: {}", id, e.what()), rank_,
                           peer);
      }
      const RegionDescriptor theirs = RegionDescriptor::Decode(
          bytes, {kLayer, fmt::format("register region {}", id), rank_, peer});
      remotes[peer].bytes = theirs.bytes;
      if (theirs.has_memory) remotes[peer].base = Map(peer, theirs.handle) + theirs.offset;
    }
    local_.push_back({static_cast<char*>(region.base), region.bytes});
    remote_.push_back(std::move(remotes));
    broken_ = false;
    spdlog::debug("cuda_ipc rank {}: registered region {} ({} bytes) and mapped {} peers", rank_, id,
                  region.bytes, size_ - 1);
    return id;
  }

  void Execute(std::span<const Transfer> transfers, Deadline deadline) override {
    CheckUsable("execute");
    DeviceGuard guard(device_);
    // Each pair of ranks numbers the Executes in which it exchanges anything;
    // both sides see the same list, so they agree on the number without
    // talking, and ranks with nothing to exchange never wait for each other.
    std::vector<uint64_t> epoch(size_, 0);
    auto pair_with = [&](int peer) {
      if (peer >= 0 && peer < size_ && peer != rank_ && epoch[peer] == 0) epoch[peer] = ++pair_epoch_[peer];
    };
    for (const Transfer& t : transfers) {
      if (t.src_rank == rank_) pair_with(t.dst_rank);
      if (t.dst_rank == rank_) pair_with(t.src_rank);
    }
    try {
      Run(transfers, epoch, deadline);
    } catch (...) {
      // Peers waiting on this rank stop at once instead of at their deadline.
      for (int peer = 0; peer < size_; ++peer) {
        if (epoch[peer] != 0) flags_->Set(NodeFlags::kFailed, peer, epoch[peer]);
      }
      throw;
    }
  }

  void Close(Deadline deadline) {
    if (closed_) return;
    DeviceGuard guard(device_);
    for (auto& stream : streams_) stream.Synchronize(deadline, "close: wait for copies");
    Unmap();
    closed_ = true;
    flags_->Set(NodeFlags::kClosed, rank_, 1);
    for (int peer = 0; peer < size_; ++peer) {
      if (peer == rank_) continue;
      bool closed =
          util::PollUntil([&] { return flags_->Get(peer, NodeFlags::kClosed, peer) >= 1; }, deadline);
      if (!closed) {
        throw TimeoutError(kLayer, "close", "peer did not unmap this rank's memory in time", rank_,
                           peer);
      }
    }
  }

 private:
  struct Remote {
    char* base = nullptr;
    uint64_t bytes = 0;
  };
  struct Local {
    char* base = nullptr;
    uint64_t bytes = 0;
  };

  std::string RegionKey(RegionId id, int rank) const {
    return fmt::format("{}/region/{}/{}", prefix_, id, rank);
  }

  // Bad input from the caller: InvalidArgument (exit 2 in the tools), worded
  // like every other error of this layer.
  InvalidArgument BadInput(const char* operation, const std::string& detail) const {
    return InvalidArgument(fmt::format("cuda_ipc: rank {}: {}: {}", rank_, operation, detail));
  }

  void CheckUsable(const char* operation) const {
    if (closed_) throw Error(kLayer, operation, "communicator is closed", rank_);
    if (broken_) {
      throw Error(kLayer, operation, "an earlier region registration failed; rebuild the communicator",
                  rank_);
    }
  }

  // Maps a peer's allocation once, however many regions it holds.
  char* Map(int peer, const cudaIpcMemHandle_t& handle) {
    const std::string key = HandleKey(peer, handle);
    auto it = mapped_.find(key);
    if (it != mapped_.end()) return it->second;
    void* pointer = nullptr;
    cudaError_t status = cudaIpcOpenMemHandle(&pointer, handle, cudaIpcMemLazyEnablePeerAccess);
    if (status != cudaSuccess) {
      cudaGetLastError();
      throw Error(kLayer, "open IPC handle",
                  fmt::format("cudaIpcOpenMemHandle: {}: {}", cudaGetErrorName(status),
                              cudaGetErrorString(status)),
                  rank_, peer);
    }
    mapped_[key] = static_cast<char*>(pointer);
    return static_cast<char*>(pointer);
  }

  void Unmap() noexcept {
    int previous = -1;
    cudaGetDevice(&previous);
    cudaSetDevice(device_);
    for (auto& [key, pointer] : mapped_) {
      cudaError_t status = cudaIpcCloseMemHandle(pointer);
      if (status != cudaSuccess) {
        spdlog::warn("cuda_ipc rank {}: cudaIpcCloseMemHandle: {}", rank_, cudaGetErrorString(status));
      }
    }
    mapped_.clear();
    if (previous >= 0) cudaSetDevice(previous);
  }

  void Validate(const Transfer& t) const {
    auto bad = [&](const std::string& why) {
      return BadInput("execute",
                      fmt::format("bad transfer (rank {} region {} +{} -> rank {} region {} +{}, "
                                  "{} bytes): {}",
                                  t.src_rank, t.src_region, t.src_offset, t.dst_rank, t.dst_region,
                                  t.dst_offset, t.bytes, why));
    };
    const auto regions = static_cast<RegionId>(local_.size());
    if (t.src_rank < 0 || t.src_rank >= size_ || t.dst_rank < 0 || t.dst_rank >= size_) {
      throw bad("rank out of range");
    }
    if (t.src_rank == t.dst_rank) throw bad("source and destination rank are the same");
    if (t.src_region < 0 || t.src_region >= regions || t.dst_region < 0 || t.dst_region >= regions) {
      throw bad(fmt::format("region out of range ({} registered)", regions));
    }
    auto bytes_of = [&](int rank, RegionId region) {
      return rank == rank_ ? local_[region].bytes : remote_[region][rank].bytes;
    };
    if (!InRange(t.src_offset, t.bytes, bytes_of(t.src_rank, t.src_region))) {
      throw bad("source range outside the region");
    }
    if (!InRange(t.dst_offset, t.bytes, bytes_of(t.dst_rank, t.dst_region))) {
      throw bad("destination range outside the region");
    }
  }

  // This rank's part of one Execute; `epoch[p]` is this Execute's number
  // with peer p (0: nothing to exchange with p).
  void Run(std::span<const Transfer> transfers, const std::vector<uint64_t>& epoch,
           Deadline deadline) {
    std::vector<std::vector<const Transfer*>> pulls(size_);  // by source peer
    std::vector<char> is_reader(size_, 0);
    for (const Transfer& t : transfers) {
      if (t.dst_rank != rank_ && t.src_rank != rank_) continue;
      Validate(t);
      if (t.bytes == 0) continue;
      if (t.dst_rank == rank_) {
        pulls[t.src_rank].push_back(&t);
      } else {
        is_reader[t.dst_rank] = 1;
      }
    }
    // Copies an abandoned Execute left in flight must end before this one
    // writes into the same destinations or reports them landed.
    for (auto& stream : streams_) stream.Synchronize(deadline, "wait for copies of an abandoned execute");

    std::vector<int> waiting, copying, readers;
    for (int p = 0; p < size_; ++p) {
      if (epoch[p] == 0) continue;
      flags_->Set(NodeFlags::kReady, p, epoch[p]);  // this rank's sources are final
      if (pulls[p].empty()) {
        flags_->Set(NodeFlags::kDone, p, epoch[p]);  // nothing to read from p
      } else {
        waiting.push_back(p);
      }
      if (is_reader[p]) readers.push_back(p);
    }
    auto failed = [&](int peer) { return flags_->Get(peer, NodeFlags::kFailed, rank_) >= epoch[peer]; };
    std::vector<std::vector<char>> used(size_, std::vector<char>(streams_.size(), 0));
    size_t next_stream = 0;
    util::Backoff backoff = util::FastBackoff();
    auto last_liveness_check = Clock::now();

    for (;;) {
      // Sources: pull from each peer as soon as it has entered this epoch.
      for (auto it = waiting.begin(); it != waiting.end();) {
        const int peer = *it;
        if (failed(peer)) {
          throw Error(kLayer, "wait for peer to enter execute",
                      fmt::format("peer abandoned transfer epoch {}", epoch[peer]), rank_, peer);
        }
        if (flags_->Get(peer, NodeFlags::kReady, rank_) < epoch[peer]) {
          ++it;
          continue;
        }
        for (const Transfer* t : pulls[peer]) {
          const size_t s = next_stream++ % streams_.size();
          Check(cudaMemcpyAsync(local_[t->dst_region].base + t->dst_offset,
                                remote_[t->src_region][peer].base + t->src_offset, t->bytes,
                                cudaMemcpyDefault, streams_[s].get()),
                "cudaMemcpyAsync (pull from peer)");
          used[peer][s] = 1;
        }
        for (size_t s = 0; s < streams_.size(); ++s) {
          if (used[peer][s]) events_[peer][s].Record(streams_[s].get());
        }
        copying.push_back(peer);
        it = waiting.erase(it);
      }
      for (auto it = copying.begin(); it != copying.end();) {
        const int peer = *it;
        if (failed(peer)) {
          throw Error(kLayer, "pull from peer",
                      fmt::format("peer abandoned transfer epoch {} while being read", epoch[peer]),
                      rank_, peer);
        }
        bool landed = true;
        for (size_t s = 0; s < streams_.size() && landed; ++s) {
          if (!used[peer][s]) continue;
          cudaError_t status = cudaEventQuery(events_[peer][s].get());
          if (status == cudaErrorNotReady) {
            landed = false;
          } else if (status != cudaSuccess) {
            throw Error(kLayer, "pull from peer",
                        fmt::format("{}: {}", cudaGetErrorName(status), cudaGetErrorString(status)),
                        rank_, peer);
          }
        }
        if (landed) {
          flags_->Set(NodeFlags::kDone, peer, epoch[peer]);
          it = copying.erase(it);
        } else {
          ++it;
        }
      }
      // Fence: every rank reading from this one has finished reading.
      for (auto it = readers.begin(); it != readers.end();) {
        const int peer = *it;
        if (flags_->Get(peer, NodeFlags::kDone, rank_) >= epoch[peer]) {
          it = readers.erase(it);
        } else if (failed(peer)) {
          throw Error(kLayer, "wait for peer to finish reading",
                      fmt::format("peer abandoned transfer epoch {}", epoch[peer]), rank_, peer);
        } else {
          ++it;
        }
      }
      if (waiting.empty() && copying.empty() && readers.empty()) return;

      const auto now = Clock::now();
      if (now >= deadline) {
        if (!waiting.empty()) {
          const int peer = waiting.front();
          throw TimeoutError(kLayer, "wait for peer to enter execute",
                             fmt::format("peer did not start transfer epoch {} in time", epoch[peer]),
                             rank_, peer);
        }
        if (!copying.empty()) {
          const int peer = copying.front();
          throw TimeoutError(kLayer, "pull from peer",
                             fmt::format("copies of transfer epoch {} did not land in time", epoch[peer]),
                             rank_, peer);
        }
        const int peer = readers.front();
        throw TimeoutError(kLayer, "wait for peer to finish reading",
                           fmt::format("peer did not finish reading epoch {} in time", epoch[peer]),
                           rank_, peer);
      }
      if (now - last_liveness_check > std::chrono::milliseconds(100)) {
        last_liveness_check = now;
        for (const auto* group : {&waiting, &copying, &readers}) {
          for (int peer : *group) {
            if (flags_->PeerExited(peer)) {
              throw Error(kLayer, "execute",
                          fmt::format("peer process exited during transfer epoch {}", epoch[peer]),
                          rank_, peer);
            }
          }
        }
      }
      backoff.Sleep();
    }
  }

  std::shared_ptr<Store> store_;
  int rank_;
  int size_;
  int device_;
  std::string prefix_;
  std::chrono::milliseconds close_budget_;  // the destructor's wait for copies in flight
  std::vector<cuda::Stream> streams_;
  std::vector<std::vector<cuda::Event>> events_;  // [peer][stream]
  std::unique_ptr<NodeFlags> flags_;
  std::vector<Local> local_;                 // [region]
  std::vector<std::vector<Remote>> remote_;  // [region][peer]
  std::map<std::string, char*> mapped_;      // peer + handle -> mapped allocation
  std::vector<uint64_t> pair_epoch_ = std::vector<uint64_t>(size_, 0);  // Executes with each peer
  bool broken_ = false;
  bool closed_ = false;
};

}  // namespace

std::unique_ptr<Communicator> MakeCudaIpcCommunicator(const CommunicatorOptions& options,
                                                      int copy_streams) {
  return std::make_unique<CudaIpcCommunicator>(options, copy_streams,
                                               DeadlineAfter(options.connect_timeout));
}

std::unique_ptr<Communicator> MakeCudaIpcCommunicator(const CommunicatorOptions& options) {
  return MakeCudaIpcCommunicator(options, kDefaultCudaIpcCopyStreams);
}

void CloseCudaIpcCommunicator(Communicator& communicator, Deadline deadline) {
  auto* ipc = dynamic_cast<CudaIpcCommunicator*>(&communicator);
  if (ipc == nullptr) {
    throw Error(kLayer, "close", fmt::format("communicator {} is not cuda_ipc", communicator.name()));
  }
  ipc->Close(deadline);
}

#else  // !EPLB_HAVE_CUDA

std::unique_ptr<Communicator> MakeCudaIpcCommunicator(const CommunicatorOptions& options, int) {
  throw Error(kLayer, "create", "eplb was built without CUDA", options.rank);
}

std::unique_ptr<Communicator> MakeCudaIpcCommunicator(const CommunicatorOptions& options) {
  return MakeCudaIpcCommunicator(options, kDefaultCudaIpcCopyStreams);
}

void CloseCudaIpcCommunicator(Communicator& communicator, Deadline) {
  throw Error(kLayer, "close", "eplb was built without CUDA", communicator.rank());
}

#endif  // EPLB_HAVE_CUDA

}  // namespace eplb
