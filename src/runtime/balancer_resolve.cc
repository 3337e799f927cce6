#include "runtime/balancer_resolve.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <optional>

#include "eplb/error.h"

namespace eplb::balancer_internal {

DoubtOutcome ResolveHandshake(const std::vector<RankState>& states, int me, int num_layers) {
  const int L = num_layers;
  auto rolls_forward = [&](const RankState& s, int l, uint32_t maxv) {
    return s.versions[l] < maxv && s.doubt_layer == l && s.doubt_version == maxv;
  };
  std::vector<uint32_t> maxv(L, 0);
  for (const RankState& s : states)
    for (int l = 0; l < L; ++l) maxv[l] = std::max(maxv[l], s.versions[l]);
  for (const RankState& s : states)
    for (int l = 0; l < L; ++l)
      if (s.versions[l] < maxv[l] && !rolls_forward(s, l, maxv[l]))
        throw Error("balancer", "handshake",
                    fmt::format("MoE layer {}: rank {} holds version {} but version {} was "
                                "committed and it has nothing staged to catch up with",
                                l, s.rank, s.versions[l], maxv[l]),
                    me, s.rank);
  for (int l = 0; l < L; ++l) {
    std::optional<uint64_t> agreed;
    for (const RankState& s : states) {
      const uint64_t h = rolls_forward(s, l, maxv[l]) ? s.doubt_hash : s.hashes[l];
      if (agreed && *agreed != h)
        throw Error("balancer", "handshake",
                    fmt::format("MoE layer {}: rank {} holds another placement than rank {}", l,
                                s.rank, states[0].rank),
                    me, s.rank);
      agreed = h;
    }
  }
  const RankState& mine = states[me];
  if (mine.doubt_layer < 0) return DoubtOutcome::kNone;
  const int l = mine.doubt_layer;
  return rolls_forward(mine, l, maxv[l]) ? DoubtOutcome::kRollForward : DoubtOutcome::kDrop;
}

}  // namespace eplb::balancer_internal
