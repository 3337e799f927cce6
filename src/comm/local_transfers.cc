#include "comm/local_transfers.h"

#include <fmt/format.h>

#include <set>

#include "eplb/error.h"

namespace eplb::comm {

std::vector<LocalOp> SelectLocalOps(const std::string& layer, int rank, int size,
                                    const std::vector<MemoryRegion>& regions,
                                    std::span<const Transfer> transfers) {
  std::vector<LocalOp> ops;
  for (size_t i = 0; i < transfers.size(); ++i) {
    const Transfer& t = transfers[i];
    if (t.src_rank != rank && t.dst_rank != rank) continue;
    auto bad = [&](const std::string& why) {
      return InvalidArgument(fmt::format("{}: transfer {} (rank {} region {} +{} -> rank {} region {} +{}, {} bytes): {}",
                                         layer, i, t.src_rank, t.src_region, t.src_offset, t.dst_rank,
                                         t.dst_region, t.dst_offset, t.bytes, why));
    };
    if (t.src_rank < 0 || t.src_rank >= size || t.dst_rank < 0 || t.dst_rank >= size)
      throw bad(fmt::format("rank outside [0, {})", size));
    if (t.src_rank == t.dst_rank) throw bad("source and destination rank are the same");
    if (t.bytes == 0) continue;
    LocalOp op;
    op.index = i;
    op.send = t.src_rank == rank;
    op.peer = op.send ? t.dst_rank : t.src_rank;
    RegionId local_region = op.send ? t.src_region : t.dst_region;
    uint64_t local_offset = op.send ? t.src_offset : t.dst_offset;
    op.peer_region = op.send ? t.dst_region : t.src_region;
    op.peer_offset = op.send ? t.dst_offset : t.src_offset;
    if (local_region < 0 || static_cast<size_t>(local_region) >= regions.size())
      throw bad(fmt::format("region {} is not registered on rank {} ({} registered)", local_region, rank,
                            regions.size()));
    const MemoryRegion& r = regions[local_region];
    if (local_offset > r.bytes || t.bytes > r.bytes - local_offset)
      throw bad(fmt::format("range past the end of region {} ({} bytes)", local_region, r.bytes));
    if (op.peer_region < 0) throw bad(fmt::format("peer region {} is invalid", op.peer_region));
    op.local = static_cast<uint8_t*>(r.base) + local_offset;
    op.bytes = t.bytes;
    ops.push_back(op);
  }
  return ops;
}

std::string DescribeOps(const std::vector<LocalOp>& ops) {
  size_t sends = 0, recvs = 0;
  uint64_t bytes = 0;
  std::set<int> peers;
  for (const auto& op : ops) {
    (op.send ? sends : recvs)++;
    bytes += op.bytes;
    peers.insert(op.peer);
  }
  std::string p;
  for (int x : peers) p += (p.empty() ? "" : ", ") + std::to_string(x);
  return fmt::format("{} sends and {} receives ({:.1f} MiB) with peer{} {}", sends, recvs,
                     bytes / 1048576.0, peers.size() == 1 ? "" : "s", p);
}

}  // namespace eplb::comm
