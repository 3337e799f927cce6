// Slot preservation, as vLLM applies it after its policy: a placement is only
// a multiset of experts per rank until slots are chosen, and choosing them
// well means nothing moves that need not.
#pragma once

#include "eplb/placement.h"

namespace eplb {

// Reorders `next` inside each rank of each layer so that an expert that `previous`
// already had on that rank keeps its old slot there (each old slot, in order,
// takes the first unclaimed new copy of its expert); the experts that arrive
// fill the remaining slots, both in slot order. The multiset of experts on
// every rank is unchanged, so balance is too.
// Throws InvalidArgument unless both placements have the same layers,
// experts, slots and ranks.
Placement PreserveSlots(const Placement& previous, const Placement& next);

}  // namespace eplb
