#include "wire/codec.h"

#include <fmt/format.h>

#include "eplb/error.h"

namespace eplb::wire {

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kHandshake: return "handshake";
    case Kind::kVote: return "vote";
    case Kind::kDecision: return "decision";
    case Kind::kBlame: return "blame note";
    case Kind::kSyncToken: return "sync token";
    case Kind::kLeaveNote: return "leave note";
    case Kind::kNcclUniqueId: return "NCCL unique id";
    case Kind::kGpuIdentity: return "GPU identity";
    case Kind::kRegion: return "region descriptor";
    case Kind::kIpcProbe: return "IPC probe";
    case Kind::kNixlMetadata: return "NIXL metadata";
    case Kind::kLiveness: return "liveness record";
    case Kind::kFailureNote: return "failure note";
    case Kind::kMembership: return "membership record";
    case Kind::kPlacement: return "placement";
  }
  return "unknown message";
}

Writer::Writer(Kind kind) {
  Put(kMagic);
  Put(kVersion);
  Put(static_cast<uint16_t>(kind));
}

void Writer::Raw(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  bytes_.insert(bytes_.end(), p, p + n);
}

Writer& Writer::PutString(std::string_view s) { return PutBytes(AsBytes(s)); }

Writer& Writer::PutBytes(std::span<const uint8_t> bytes) {
  if (bytes.size() > kMaxMessageBytes)
    throw InvalidArgument(fmt::format("wire: a field of {} bytes is larger than any message may be ({} bytes)",
                                      bytes.size(), kMaxMessageBytes));
  Put(static_cast<uint32_t>(bytes.size()));
  Raw(bytes.data(), bytes.size());
  return *this;
}

Reader::Reader(std::span<const uint8_t> bytes, Kind expected, Origin origin)
    : bytes_(bytes), kind_(expected), origin_(std::move(origin)) {
  if (bytes_.size() > kMaxMessageBytes)
    Fail(fmt::format("{} bytes, more than any message may be ({})", bytes_.size(), kMaxMessageBytes));
  if (bytes_.size() < kHeaderBytes || Get<uint32_t>() != kMagic)
    Fail(fmt::format("not an eplb message ({} bytes)", bytes_.size()));
  const auto version = Get<uint16_t>();
  if (version != kVersion)
    Fail(fmt::format("wire version {}, this rank speaks version {}: every rank must run the same eplb", version,
                     kVersion));
  const auto kind = static_cast<Kind>(Get<uint16_t>());
  if (kind != expected) Fail(fmt::format("a {} where a {} belongs", KindName(kind), KindName(expected)));
}

const uint8_t* Reader::Take(size_t n) {
  if (n > bytes_.size() - pos_)
    Fail(fmt::format("truncated: {} bytes, {} more needed at byte {}", bytes_.size(), n - (bytes_.size() - pos_),
                     pos_));
  const uint8_t* p = bytes_.data() + pos_;
  pos_ += n;
  return p;
}

std::string Reader::GetString(size_t max) {
  std::vector<uint8_t> b = GetBytes(max);
  return std::string(b.begin(), b.end());
}

std::vector<uint8_t> Reader::GetBytes(size_t max) {
  const auto n = Get<uint32_t>();
  if (n > max) Fail(fmt::format("a field of {} bytes where at most {} belong", n, max));
  const uint8_t* p = Take(n);
  return std::vector<uint8_t>(p, p + n);
}

void Reader::Finish() const {
  if (pos_ != bytes_.size()) Fail(fmt::format("{} bytes left over after the message", bytes_.size() - pos_));
}

void Reader::Fail(const std::string& problem) const {
  const std::string who = origin_.peer >= 0 ? fmt::format("rank {}", origin_.peer) : std::string("a peer");
  throw Error(origin_.layer, origin_.operation,
              fmt::format("{} sent a malformed {}: {}", who, KindName(kind_), problem), origin_.rank,
              origin_.peer);
}

}  // namespace eplb::wire
