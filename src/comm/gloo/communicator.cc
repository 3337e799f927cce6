// The `gloo` communicator: registered memory moved with Gloo unbound buffers
// over TCP, one send/receive pair per transfer of host memory; CUDA device
// memory is staged through pinned host buffers in chunks (device_staging.h),
// with CUDA builds only.
#include <spdlog/spdlog.h>

#include "comm/gloo/device_staging.h"
#include "comm/gloo/mesh.h"
#include "util/hash.h"
#include "cuda/runtime.h"
#include "eplb/communicator_factory.h"
#include "eplb/error.h"
#include "eplb/gloo.h"

namespace eplb {
namespace {

using gloo_backend::Mesh;
using gloo_backend::Ops;
using gloo_backend::Slot;

enum OpCode : uint32_t { kRegister = 1, kExecute = 2 };

// What every rank learns about a region at registration.
struct RegionInfo {
  uint64_t bytes = 0;
  uint32_t kind = 0;     // MemoryKind
  uint32_t valid = 0;    // base set (or empty region)
  uint32_t staging = 0;  // this rank can stage device memory (built with CUDA)
  uint32_t reserved = 0;
};

class GlooCommunicator final : public Communicator {
 public:
  GlooCommunicator(const GlooOptions& options, Deadline deadline) : mesh_(options, deadline) {}

  std::string_view name() const override { return "gloo"; }
  int rank() const override { return mesh_.rank(); }
  int size() const override { return mesh_.size(); }

  RegionId RegisterRegion(const MemoryRegion& region, Deadline deadline) override {
    const int n = size();
    std::vector<RegionInfo> all(n);
    // Can this rank stage this region? (Built with CUDA, and the device is
    // visible here.) Every rank learns every rank's answer and refuses together.
    std::string no_staging;
    bool staging = gloo_backend::DeviceStaging::Available(&no_staging);
    if (staging && region.kind == MemoryKind::kCuda && region.device >= cuda::Probe().devices) {
      staging = false;
      no_staging = "device " + std::to_string(region.device) + " is not visible (" + cuda::Probe().reason + ")";
    }
    all[rank()] = {region.bytes, static_cast<uint32_t>(region.kind),
                   (region.base != nullptr || region.bytes == 0) ? 1u : 0u, staging ? 1u : 0u, 0};
    // Collective first, checks after: every rank then refuses the same region
    // with the same message instead of leaving its peers waiting.
    mesh_.Step("register_region", kRegister, regions_.size(), deadline, [&](Ops& ops, uint64_t seq) {
      for (int p = 0; p < n; ++p) {
        if (p == rank()) continue;
        ops.Recv(p, Slot(seq, 0), &all[p], sizeof(RegionInfo), "region info", -1);
        ops.Send(p, Slot(seq, 0), &all[rank()], sizeof(RegionInfo), "region info", -1);
      }
    });
    const RegionId id = static_cast<RegionId>(regions_.size());
    for (int r = 0; r < n; ++r) {
      const bool cuda = all[r].kind == static_cast<uint32_t>(MemoryKind::kCuda);
      if (cuda && all[r].staging == 0) {
        throw InvalidArgument("gloo communicator: rank " + std::to_string(r) + " registered CUDA device memory as region " +
                              std::to_string(id) + ", but cannot stage it through pinned host buffers (" +
                              (r == rank() ? no_staging : std::string("eplb built without CUDA there, or the device not visible")) +
                              "): build with a CUDA toolkit, use a visible device, or register host memory");
      }
      if (!cuda && all[r].kind != static_cast<uint32_t>(MemoryKind::kHost)) {
        throw InvalidArgument("gloo communicator: rank " + std::to_string(r) + " registered region " +
                              std::to_string(id) + " of unknown memory kind " + std::to_string(all[r].kind));
      }
      if (all[r].valid == 0) {
        throw InvalidArgument("gloo communicator: rank " + std::to_string(r) + " registered region " +
                              std::to_string(id) + " of " + std::to_string(all[r].bytes) +
                              " B with a null base");
      }
    }
    if (region.kind == MemoryKind::kCuda && !staging_) {
      // Streams and events on the device of the first device region (copies
      // of other devices' memory go through it too, by unified addressing).
      staging_ = std::make_unique<gloo_backend::DeviceStaging>(region.device < 0 ? 0 : region.device, rank());
    }
    Region entry;
    entry.local = region;
    for (const auto& info : all) entry.bytes.push_back(info.bytes);
    regions_.push_back(std::move(entry));
    return id;
  }

  void Execute(std::span<const Transfer> transfers, Deadline deadline) override {
    if (transfers.size() >= gloo_backend::kMaxItems) {
      throw InvalidArgument("gloo communicator: " + std::to_string(transfers.size()) +
                            " transfers in one call; at most " + std::to_string(gloo_backend::kMaxItems - 1));
    }
    for (size_t i = 0; i < transfers.size(); ++i) Check(transfers[i], i);
    // Every rank must pass the same list: its hash travels in the sync token.
    const uint64_t check = util::Fnv1a(transfers.data(), transfers.size_bytes());
    const int me = rank();
    mesh_.Step("execute", kExecute, check, deadline, [&](Ops& ops, uint64_t seq) {
      // Host memory is read and written in place; device memory is staged
      // through pinned host buffers (device_staging.h).
      //
      // Every receive is posted before any send. Gloo writes a send's bytes
      // once the receiver's "ready to receive" note has arrived, and each
      // connection writes in order. A rank that posted its sends first, with
      // the peer's notes already in, would queue all their bytes on the
      // connection ahead of the notes of its own receives: the peer could not
      // start sending back until this rank had written everything, and the
      // two directions of a pair would take turns instead of running at once.
      std::vector<gloo_backend::StagedItem> staged_sends, staged_recvs;
      auto post = [&](bool receive) {
        for (size_t i = 0; i < transfers.size(); ++i) {
          const Transfer& t = transfers[i];
          if (t.bytes == 0 || (receive ? t.dst_rank : t.src_rank) != me) continue;
          const MemoryRegion& r = regions_[receive ? t.dst_region : t.src_region].local;
          auto* bytes = static_cast<uint8_t*>(r.base) + (receive ? t.dst_offset : t.src_offset);
          const int peer = receive ? t.src_rank : t.dst_rank;
          const auto index = static_cast<int64_t>(i);
          if (r.kind == MemoryKind::kCuda) {
            (receive ? staged_recvs : staged_sends).push_back({peer, Slot(seq, i), bytes, t.bytes, index});
          } else if (receive) {
            ops.Recv(peer, Slot(seq, i), bytes, t.bytes, "transfer", index);
          } else {
            ops.Send(peer, Slot(seq, i), bytes, t.bytes, "transfer", index);
          }
        }
      };
      post(true);
      post(false);
      if (!staged_sends.empty() || !staged_recvs.empty()) staging_->Run(ops, staged_sends, staged_recvs, deadline);
    });
  }

 private:
  struct Region {
    MemoryRegion local;
    std::vector<uint64_t> bytes;  // size of this region on every rank
  };

  void Check(const Transfer& t, size_t i) const {
    auto fail = [&](const std::string& why) {
      throw InvalidArgument("gloo communicator: transfer #" + std::to_string(i) + ": " + why);
    };
    const int n = size();
    if (t.src_rank < 0 || t.src_rank >= n || t.dst_rank < 0 || t.dst_rank >= n) {
      fail("rank outside [0, " + std::to_string(n) + ") (src " + std::to_string(t.src_rank) + ", dst " +
           std::to_string(t.dst_rank) + ")");
    }
    if (t.src_rank == t.dst_rank) fail("source and destination are both rank " + std::to_string(t.src_rank));
    const auto regions = static_cast<RegionId>(regions_.size());
    if (t.src_region < 0 || t.src_region >= regions || t.dst_region < 0 || t.dst_region >= regions) {
      fail("region outside the " + std::to_string(regions) + " registered (src " + std::to_string(t.src_region) +
           ", dst " + std::to_string(t.dst_region) + ")");
    }
    uint64_t src_size = regions_[t.src_region].bytes[t.src_rank];
    uint64_t dst_size = regions_[t.dst_region].bytes[t.dst_rank];
    if (t.src_offset > src_size || t.bytes > src_size - t.src_offset) {
      fail("source bytes [" + std::to_string(t.src_offset) + ", +" + std::to_string(t.bytes) + ") outside region " +
           std::to_string(t.src_region) + " of rank " + std::to_string(t.src_rank) + " (" +
           std::to_string(src_size) + " B)");
    }
    if (t.dst_offset > dst_size || t.bytes > dst_size - t.dst_offset) {
      fail("destination bytes [" + std::to_string(t.dst_offset) + ", +" + std::to_string(t.bytes) +
           ") outside region " + std::to_string(t.dst_region) + " of rank " + std::to_string(t.dst_rank) + " (" +
           std::to_string(dst_size) + " B)");
    }
  }

  Mesh mesh_;
  std::vector<Region> regions_;
  std::unique_ptr<gloo_backend::DeviceStaging> staging_;  // with the first device region
};

}  // namespace

std::unique_ptr<Communicator> ConnectGlooCommunicator(const GlooOptions& options, Deadline deadline) {
  return std::make_unique<GlooCommunicator>(options, deadline);
}

// The factory's entry (communicator_factory.h): keys under
// "<key_prefix>/gloo/", connected within connect_timeout.
std::unique_ptr<Communicator> MakeGlooCommunicator(const CommunicatorOptions& options) {
  GlooOptions o;
  o.store = options.store;
  o.rank = options.rank;
  o.world_size = options.world_size;
  o.name = options.key_prefix + "/gloo";
  return ConnectGlooCommunicator(o, DeadlineAfter(options.connect_timeout));
}

}  // namespace eplb
