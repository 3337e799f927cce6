// The `gloo` communicator: registered host memory moved with Gloo unbound
// buffers over TCP, one send/receive pair per transfer.
#include <spdlog/spdlog.h>

#include "comm/gloo/mesh.h"
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
  uint32_t kind = 0;   // MemoryKind
  uint32_t valid = 0;  // base set (or empty region)
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
    all[rank()] = {region.bytes, static_cast<uint32_t>(region.kind),
                   (region.base != nullptr || region.bytes == 0) ? 1u : 0u};
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
      if (all[r].kind == static_cast<uint32_t>(MemoryKind::kCuda)) {
        throw InvalidArgument("gloo communicator: rank " + std::to_string(r) + " registered CUDA device memory as region " +
                              std::to_string(id) +
                              "; the gloo communicator moves host memory only (staging device memory "
                              "through pinned host buffers is not built yet): register host memory or "
                              "use a device-memory communicator such as cuda_ipc");
      }
      if (all[r].kind != static_cast<uint32_t>(MemoryKind::kHost)) {
        throw InvalidArgument("gloo communicator: rank " + std::to_string(r) + " registered region " +
                              std::to_string(id) + " of unknown memory kind " + std::to_string(all[r].kind));
      }
      if (all[r].valid == 0) {
        throw InvalidArgument("gloo communicator: rank " + std::to_string(r) + " registered region " +
                              std::to_string(id) + " of " + std::to_string(all[r].bytes) +
                              " B with a null base");
      }
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
    const uint64_t check = gloo_backend::Fnv1a(transfers.data(), transfers.size_bytes());
    const int me = rank();
    mesh_.Step("execute", kExecute, check, deadline, [&](Ops& ops, uint64_t seq) {
      // Host memory is read and written in place. Device memory (kCuda) will
      // stage here: copy sources to pinned host buffers before posting, and
      // received bytes to the device after the waits.
      for (size_t i = 0; i < transfers.size(); ++i) {
        const Transfer& t = transfers[i];
        if (t.bytes == 0) continue;
        if (t.src_rank == me) {
          auto* src = static_cast<const uint8_t*>(regions_[t.src_region].local.base) + t.src_offset;
          ops.Send(t.dst_rank, Slot(seq, i), src, t.bytes, "transfer", static_cast<int64_t>(i));
        } else if (t.dst_rank == me) {
          auto* dst = static_cast<uint8_t*>(regions_[t.dst_region].local.base) + t.dst_offset;
          ops.Recv(t.src_rank, Slot(seq, i), dst, t.bytes, "transfer", static_cast<int64_t>(i));
        }
      }
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
