// Mesh::SilentPeers: after a step failed, which ranks are lost -- those
// that left no leave note within kSilentGrace (a host cut off or killed
// takes all its ranks; the others of this side time out too and leave notes).
#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "comm/gloo/mesh.h"
#include "eplb/error.h"
#include "util/text.h"

namespace eplb::gloo_backend {

std::string Mesh::SilentPeers() {
  if (!name_lost_peers_ || size_ <= 2) return "";  // off, or the peer named is the only other rank
  std::vector<int> noted, silent;
  std::vector<bool> seen(size_, false);
  seen[rank_] = true;
  const Deadline until = DeadlineAfter(kSilentGrace);
  for (;;) {
    for (int p = 0; p < size_; ++p) {
      if (seen[p]) continue;
      try {
        store_->Get(Keys(generation_) + "left/" + std::to_string(p), Clock::now());
        seen[p] = true;
        noted.push_back(p);
      } catch (const TimeoutError&) {
      } catch (const std::exception& e) {
        return std::string("; the store could not be read to tell which ranks are lost: ") + e.what();
      }
    }
    if (std::all_of(seen.begin(), seen.end(), [](bool b) { return b; }) || Expired(until)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (int p = 0; p < size_; ++p)
    if (!seen[p]) silent.push_back(p);
  std::string out = "; within " + std::to_string(kSilentGrace.count()) + " ms ";
  if (!noted.empty()) out += "rank" + std::string(noted.size() > 1 ? "s " : " ") + util::RankList(noted) + " gave up too, ";
  if (silent.empty()) return out + "every other rank gave up too";
  return out + "rank" + (silent.size() > 1 ? "s " : " ") + util::RankList(silent) +
         " did not (stalled, cut off or gone: the rank" + (silent.size() > 1 ? "s" : "") + " lost)";
}

}  // namespace eplb::gloo_backend
