#include "runtime/handshake_round.h"

#include "eplb/error.h"

namespace eplb::balancer_internal {

HandshakeRound::HandshakeRound(Store& store, std::string name, int me, int world, int num_layers)
    : store_(store), name_(std::move(name)), me_(me), world_(world), num_layers_(num_layers) {}

std::string HandshakeRound::Key(int64_t cycle, int rank) const {
  return name_ + "/cycle/" + std::to_string(cycle) + "/" + std::to_string(rank);
}

void HandshakeRound::Join(int64_t cycle, RankState mine) {
  mine.cycle = cycle;
  store_.Set(Key(cycle, me_), mine.Encode());
  Joined j{cycle, std::vector<std::optional<RankState>>(world_)};
  j.states[me_] = std::move(mine);
  joins_.push_back(std::move(j));
  if (joins_.size() > kMaxJoins) joins_.erase(joins_.begin());  // stop polling old joins
}

std::optional<HandshakeRound::Complete> HandshakeRound::Poll(Deadline read_by) {
  for (Joined& j : joins_) {
    bool complete = true;
    for (int r = 0; r < world_; ++r) {
      if (j.states[r]) continue;
      try {
        j.states[r] = RankState::Decode(store_.Get(Key(j.cycle, r), read_by), me_, r, num_layers_);
      } catch (const TimeoutError&) {
        complete = false;
      }
    }
    if (!complete) continue;
    Complete c{j.cycle, {}};
    for (auto& s : j.states) c.states.push_back(std::move(*s));
    return c;
  }
  return std::nullopt;
}

std::vector<int> HandshakeRound::MissingFromLast() const {
  std::vector<int> missing;
  for (int r = 0; r < world_; ++r)
    if (!joins_.back().states[r]) missing.push_back(r);
  return missing;
}

std::vector<int> HandshakeRound::MissingFromAll() const {
  std::vector<int> missing;
  for (int r = 0; r < world_; ++r) {
    bool seen = false;
    for (const Joined& j : joins_) seen |= j.states[r].has_value();
    if (!seen) missing.push_back(r);
  }
  return missing;
}

}  // namespace eplb::balancer_internal
