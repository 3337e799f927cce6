// What a change of placement costs on the wire. An expert "moves" when a
// rank gains an expert it did not hold: its weights must arrive from another
// rank. A rank that keeps an expert (in any slot) or adds a second copy of an
// expert it already holds copies locally, for free. The same count as the
// wire moves of the migration plan (transfer_plan.h, experts_received), without
// planning senders: what policies and simulations compare.
#pragma once

#include <cstdint>
#include <vector>

#include "eplb/placement.h"

namespace eplb {

// Per layer, the (rank, expert) pairs held in `after` and not in `before`:
// expert weight sets sent between ranks. Throws InvalidArgument unless both
// placements have the same shape.
std::vector<int64_t> CountTransfersPerLayer(const Placement& before, const Placement& after);

// Sum over layers of CountTransfersPerLayer.
int64_t CountTransfers(const Placement& before, const Placement& after);

}  // namespace eplb
