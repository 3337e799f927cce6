// The messages of the balancer's cycle protocol: what a rank tells the
// others at a cycle's handshake, its votes in a commit agreement, and the
// decision recorded in the store. Encoded with the wire codec
// (src/wire/codec.h): a short or foreign message is an error naming the peer.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "eplb/error.h"
#include "wire/codec.h"

namespace eplb::balancer_internal {

inline constexpr size_t kMaxLabelBytes = 4096;

// What a rank tells the others at the start of a cycle.
struct RankState {
  int32_t rank = -1;
  int64_t cycle = -1;
  uint8_t failed = 0;    // a cycle failed here since the groups were last (re)built
  std::string label;     // name of the groups in use
  int32_t doubt_layer = -1;
  uint32_t doubt_version = 0;
  uint64_t doubt_hash = 0;
  std::vector<uint32_t> versions;  // commits per layer
  std::vector<uint64_t> hashes;    // phy2log hash per layer

  std::vector<uint8_t> Encode() const {
    wire::Writer w(wire::Kind::kHandshake);
    w.Put(rank).Put(cycle).Put(failed).PutString(label);
    w.Put(doubt_layer).Put(doubt_version).Put(doubt_hash);
    w.Put(static_cast<uint32_t>(versions.size()));
    for (uint32_t v : versions) w.Put(v);
    for (uint64_t h : hashes) w.Put(h);
    return w.Take();
  }
  static RankState Decode(std::span<const uint8_t> b, int me, int from, int num_layers) {
    wire::Reader r(b, wire::Kind::kHandshake, {"balancer", "handshake", me, from});
    RankState s;
    s.rank = r.Get<int32_t>();
    s.cycle = r.Get<int64_t>();
    s.failed = r.Get<uint8_t>();
    s.label = r.GetString(kMaxLabelBytes);
    s.doubt_layer = r.Get<int32_t>();
    s.doubt_version = r.Get<uint32_t>();
    s.doubt_hash = r.Get<uint64_t>();
    const uint32_t n = r.Get<uint32_t>();
    if (static_cast<int64_t>(n) != num_layers)
      throw Error("balancer", "handshake",
                  "rank " + std::to_string(from) + " balances " + std::to_string(n) +
                      " layers, this rank " + std::to_string(num_layers),
                  me, from);
    s.versions.resize(n);
    s.hashes.resize(n);
    for (auto& v : s.versions) v = r.Get<uint32_t>();
    for (auto& h : s.hashes) h = r.Get<uint64_t>();
    r.Finish();
    if (s.rank != from) r.Fail("it says it is rank " + std::to_string(s.rank));
    if (s.doubt_layer < -1 || s.doubt_layer >= num_layers)
      r.Fail("a layer in doubt outside [0, " + std::to_string(num_layers) + ")");
    return s;
  }
};

// One rank's vote in a commit agreement.
struct Vote {
  int32_t ok = 0;
  int32_t rank = -1;
  int64_t proposal = 0;  // the earliest step this rank can commit at

  std::vector<uint8_t> Encode() const {
    return wire::Writer(wire::Kind::kVote).Put(ok).Put(rank).Put(proposal).Take();
  }
  static Vote Decode(std::span<const uint8_t> b, const wire::Origin& origin) {
    wire::Reader r(b, wire::Kind::kVote, origin);
    Vote v;
    v.ok = r.Get<int32_t>();
    v.rank = r.Get<int32_t>();
    v.proposal = r.Get<int64_t>();
    r.Finish();
    if (v.rank != origin.peer) r.Fail("it says it is rank " + std::to_string(v.rank));
    if (v.ok != 0 && v.ok != 1) r.Fail("a vote that is neither yes nor no");
    if (v.proposal < 0) r.Fail("a negative commit step");
    return v;
  }
};

// The outcome of a layer's agreement recorded in the store: commit at a
// step, or abandon (no step).
inline std::vector<uint8_t> EncodeDecision(std::optional<int64_t> step) {
  return wire::Writer(wire::Kind::kDecision).Put(uint8_t{step ? uint8_t{1} : uint8_t{0}}).Put(step.value_or(0)).Take();
}
inline std::optional<int64_t> DecodeDecision(std::span<const uint8_t> b, const wire::Origin& origin) {
  wire::Reader r(b, wire::Kind::kDecision, origin);
  const auto commit = r.Get<uint8_t>();
  const auto step = r.Get<int64_t>();
  r.Finish();
  if (commit > 1 || step < 0) r.Fail("neither commit at a step nor abandon");
  if (!commit) return std::nullopt;
  return step;
}
}  // namespace eplb::balancer_internal
