// What rank processes racing for the same decisions see: each records
// "rank R" under decision/0 .. decision/keys-1 with SetIfAbsent and returns
// "k=<what stands>" lines, for tests that every rank follows the first
// record (the balancer's commit decisions rely on it).
#pragma once

#include <string>

#include "eplb/store.h"

namespace eplb::test {

std::string RaceForDecisions(Store& store, int rank, int keys);

}  // namespace eplb::test
