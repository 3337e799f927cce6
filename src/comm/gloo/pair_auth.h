// Proof that the process at the other end of each Gloo connection holds the
// run's job token.
//
// Gloo 0.0~git20220518 (Debian 12) builds no TLS transport, and each pair
// accepts the first connection made to its listening port, from anyone: a
// stranger on the machine that connects to a rank's port while the group
// rendezvouses takes the place of the peer, and could then feed the rank
// bytes as if they were the peer's (it sees the sync tokens the rank sends,
// so it can echo them). So right after Gloo's rendezvous, every pair of ranks
// proves to each other that they hold the run's key (Store::RunKey): each
// sends a fresh random challenge, and answers the other's with an
// HMAC-SHA256 over the group, the generation, both ranks (in order) and both
// challenges. A connection whose other end cannot answer is not the peer's;
// the rendezvous fails, naming it, before any byte it sent is used.
//
// What this does not stop: a stranger's frame is read by Gloo's I/O thread
// as soon as it arrives, before any check of eplb's can run, and a frame
// Gloo does not expect aborts the process (README "Security").
#pragma once

#include <gloo/context.h>

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "eplb/deadline.h"

namespace eplb::gloo_backend {

// The slots the proof travels in (step numbers start at 1, so slots 1 and 2
// belong to no step; slot 0 carries the steps' sync tokens).
constexpr uint64_t kChallengeSlot = 1;
constexpr uint64_t kAnswerSlot = 2;

// Why a peer's proof will not come (its rendezvous failed, its process is
// gone), or nullopt while it may; asked every 100 ms while a peer is awaited.
using PeerFailure = std::function<std::optional<std::string>(int peer)>;

// Runs the proof with every peer of `context` (collective). Throws
// Error (layer "gloo", operation `operation`) naming the peer whose answer is
// wrong or will not come (`failure`), and TimeoutError when one does not come
// by `deadline`.
void ProvePairs(gloo::Context& context, const std::array<uint8_t, 32>& key, const std::string& group,
                uint64_t generation, Deadline deadline, const char* operation, const PeerFailure& failure);

}  // namespace eplb::gloo_backend
