// The rule a cycle's handshake applies to every rank's state (RankState,
// balancer_messages.h), as a pure function so the protocol's cases are
// tested in one process (tests/balancer_resolve_test.cc): a layer left in
// doubt on a rank rolls forward when a peer committed it and is dropped
// when none did; a rank behind on a layer with nothing staged to catch up
// with, or two ranks holding different placements of a layer, end the
// handshake with an Error naming the rank.
#pragma once

#include <vector>

#include "runtime/balancer_messages.h"

namespace eplb::balancer_internal {

enum class DoubtOutcome {
  kNone,         // this rank has no layer in doubt
  kDrop,         // no rank committed it: it keeps its placement
  kRollForward,  // a peer committed it: commit it here too
};

// `states` is indexed by rank; `me` is this rank. Throws Error (layer
// "balancer", operation "handshake", peer = the rank that differs).
DoubtOutcome ResolveHandshake(const std::vector<RankState>& states, int me, int num_layers);

}  // namespace eplb::balancer_internal
