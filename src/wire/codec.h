// The one encoder and decoder of everything ranks send each other: through
// the store (handshakes, votes, decisions, region descriptors, NCCL's unique
// id, probes) and over Gloo (sync tokens). Every message starts with a
// header (magic, wire version, kind), so a message from another program,
// another eplb version or another protocol step is an error naming the peer,
// and every read is size-checked, so a short message is an error too, never
// read as zeros.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace eplb::wire {

static_assert(std::endian::native == std::endian::little,
              "the wire format is little-endian; ranks on a big-endian host would need byte swaps");

constexpr uint32_t kMagic = 0x77706c65;  // "eplw" in memory
// Bumped when any message's layout changes: ranks of different versions
// refuse each other's messages instead of misreading them.
constexpr uint16_t kVersion = 1;
constexpr size_t kHeaderBytes = 8;
// No message is larger (NIXL's metadata, the largest, is a few KiB).
constexpr size_t kMaxMessageBytes = size_t{64} << 20;
// Host names, boot ids, PID namespaces and PCI bus ids are short: a longer
// one in a message is malformed.
constexpr size_t kMaxNameBytes = 1024;

enum class Kind : uint16_t {
  kHandshake = 1,     // balancer: a rank's state at the start of a cycle
  kVote = 2,          // balancer: a commit-agreement vote
  kDecision = 3,      // balancer: the recorded outcome of a layer's agreement
  kBlame = 4,         // balancer: whom a failing rank waited for
  kSyncToken = 5,     // gloo: the token that opens every collective step
  kLeaveNote = 6,     // gloo: why a rank left its generation, where it rejoins
  kNcclUniqueId = 7,  // nccl_stateless: rank 0's unique id
  kGpuIdentity = 8,   // nccl_stateless: the host and GPU a rank uses
  kRegion = 9,        // cuda_ipc: a registered region's IPC descriptor
  kIpcProbe = 10,     // cuda_ipc: the usability probe's exported buffer
  kNixlMetadata = 11, // nixl: an agent's region table and metadata
  kLiveness = 12,     // gloo, nixl: how peers can tell this rank's process is alive
  kFailureNote = 13,  // nixl: why a rank gave up on a call with a peer, whom it blames
  kMembership = 20,   // elastic: a generation's record (old and new members, the lost)
  kPlacement = 21,    // elastic: the placement in force, for processes that join
};
const char* KindName(Kind kind);

// Where a message is read, for errors: the layer and operation reading it,
// this rank and the peer that sent it.
struct Origin {
  std::string layer;
  std::string operation;
  int rank = -1;
  int peer = -1;
};

class Writer {
 public:
  explicit Writer(Kind kind);
  template <typename T>
    requires(std::is_integral_v<T> || std::is_enum_v<T>)
  Writer& Put(T value) {
    Raw(&value, sizeof(T));
    return *this;
  }
  // A length (u32) and the bytes.
  Writer& PutString(std::string_view s);
  Writer& PutBytes(std::span<const uint8_t> bytes);
  // Exactly `bytes` bytes, no length (opaque fixed-size handles).
  Writer& PutFixed(const void* data, size_t bytes) {
    Raw(data, bytes);
    return *this;
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }
  std::vector<uint8_t> Take() { return std::move(bytes_); }

 private:
  void Raw(const void* data, size_t n);
  std::vector<uint8_t> bytes_;
};

// Reads one message of an expected kind. The constructor checks the header;
// every Get checks that the bytes are there; Finish checks that nothing is
// left over. Each failure throws eplb::Error naming the origin's layer,
// operation, rank and peer.
class Reader {
 public:
  Reader(std::span<const uint8_t> bytes, Kind expected, Origin origin);
  template <typename T>
    requires(std::is_integral_v<T> || std::is_enum_v<T>)
  T Get() {
    T v;
    std::memcpy(&v, Take(sizeof(T)), sizeof(T));
    return v;
  }
  // A length-prefixed string or byte string of at most `max` bytes.
  std::string GetString(size_t max);
  std::vector<uint8_t> GetBytes(size_t max);
  void GetFixed(void* out, size_t bytes) { std::memcpy(out, Take(bytes), bytes); }
  size_t remaining() const { return bytes_.size() - pos_; }
  void Finish() const;
  // The error for a value that decoded but makes no sense ("layer -3").
  [[noreturn]] void Fail(const std::string& problem) const;

 private:
  const uint8_t* Take(size_t n);
  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
  Kind kind_;
  Origin origin_;
};

inline std::span<const uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace eplb::wire
