// The store round of a cycle's handshake: every rank writes its state under
// the cycle's key and reads everyone's. A rank still waiting when the next
// trigger comes joins that cycle too, keeping its earlier joins; the cycle
// run is the smallest one every rank joined. Joins are made in increasing
// order, so once a cycle is complete no smaller one can complete later, and
// every rank picks the same cycle without another round.
//
// Only the store: the balancer (balancer_cycle.cc) decides when to join the
// next cycle and when to give up, so the rule is tested in one process over
// an in-memory store (tests/balancer_protocol_test.cc).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "eplb/deadline.h"
#include "eplb/store.h"
#include "runtime/balancer_messages.h"

namespace eplb::balancer_internal {

class HandshakeRound {
 public:
  // Joins older than the latest kMaxJoins are no longer polled.
  static constexpr size_t kMaxJoins = 8;

  // Keys go under "<name>/cycle/<cycle>/<rank>".
  HandshakeRound(Store& store, std::string name, int me, int world, int num_layers);

  // Publishes `mine` (its cycle set to `cycle`) and polls that cycle from now on.
  void Join(int64_t cycle, RankState mine);

  struct Complete {
    int64_t cycle = 0;
    std::vector<RankState> states;  // [rank]
  };
  // One pass over the joins, oldest first, reading each missing state with
  // `read_by` as its deadline; the first cycle every rank joined, if any.
  // Throws Error on a state that cannot be decoded (naming its rank).
  std::optional<Complete> Poll(Deadline read_by);

  int64_t last_cycle() const { return joins_.back().cycle; }
  size_t joins() const { return joins_.size(); }  // cycles polled (at most kMaxJoins)
  // Ranks whose state for the last cycle joined has not been read yet.
  std::vector<int> MissingFromLast() const;
  // Ranks with no state read for any cycle joined: the ones that stalled or
  // died (a rank one trigger behind has joined an earlier cycle). Empty when
  // every rank joined some cycle (out of phase, not gone).
  std::vector<int> MissingFromAll() const;

 private:
  struct Joined {
    int64_t cycle;
    std::vector<std::optional<RankState>> states;
  };
  std::string Key(int64_t cycle, int rank) const;

  Store& store_;
  std::string name_;
  int me_, world_, num_layers_;
  std::vector<Joined> joins_;
};

}  // namespace eplb::balancer_internal
