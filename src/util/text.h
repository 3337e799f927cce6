// Small pieces of the text in eplb's messages.
#pragma once

#include <string>
#include <vector>

namespace eplb::util {

// "1, 2, 5": the ranks an error names.
inline std::string RankList(const std::vector<int>& ranks) {
  std::string s;
  for (size_t i = 0; i < ranks.size(); ++i) s += (i ? ", " : "") + std::to_string(ranks[i]);
  return s;
}

}  // namespace eplb::util
