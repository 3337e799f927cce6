#include "support/decision_race.h"

namespace eplb::test {

std::string RaceForDecisions(Store& store, int rank, int keys) {
  const std::string mine = "rank " + std::to_string(rank);
  std::string out;
  for (int k = 0; k < keys; ++k) {
    auto stands = store.SetIfAbsent("decision/" + std::to_string(k),
                                    {reinterpret_cast<const uint8_t*>(mine.data()), mine.size()});
    out += std::to_string(k) + "=" + std::string(stands.begin(), stands.end()) + "\n";
  }
  return out;
}

}  // namespace eplb::test
