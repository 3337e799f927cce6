#include "runtime/blame.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>

#include "eplb/error.h"
#include "util/text.h"
#include "wire/codec.h"

namespace eplb::runtime {
namespace {

std::string Key(const std::string& prefix, int r) { return prefix + "/" + std::to_string(r); }

// Rank r's note: whom it blames (-1: no one); nullopt when there is none by
// `by` (or it cannot be read: then the chain ends at r, which wrote it).
std::optional<int> ReadNote(Store& store, const std::string& prefix, int me, int world, int r,
                            Deadline by) {
  try {
    auto note = store.Get(Key(prefix, r), by);
    wire::Reader reader(note, wire::Kind::kBlame, {"balancer", "following the blame", me, r});
    const int next = reader.Get<int32_t>();
    reader.Finish();
    return next >= 0 && next < world ? next : -1;
  } catch (const TimeoutError&) {
    return std::nullopt;  // no note: this one is stalled or dead (or did not fail)
  } catch (const std::exception& e) {
    spdlog::warn("eplb: rank {}: {}", me, e.what());
    return std::nullopt;
  }
}

// The order in which the ranks noted their blame: slot k of
// "<prefix>/order/" holds the k-th rank to note (first writer stands).
std::string OrderKey(const std::string& prefix, int k) { return prefix + "/order/" + std::to_string(k); }

void ClaimOrder(Store& store, const std::string& prefix, int me, int world) {
  const auto mine = wire::Writer(wire::Kind::kBlame).Put(int32_t{me}).Take();
  for (int k = 0; k < world; ++k) {
    auto stands = store.SetIfAbsent(OrderKey(prefix, k), mine);
    if (stands == mine) return;
  }
}

// Where rank r is in that order; `world` when it has not noted (yet).
int OrderOf(Store& store, const std::string& prefix, int me, int world, int r) {
  for (int k = 0; k < world; ++k) {
    try {
      auto v = store.Get(OrderKey(prefix, k), Clock::now());
      wire::Reader reader(v, wire::Kind::kBlame, {"balancer", "the order of the blame notes", me, -1});
      const int who = reader.Get<int32_t>();
      reader.Finish();
      if (who == r) return k;
    } catch (const std::exception&) {
      return world;  // slots fill in order: none after an empty one
    }
  }
  return world;
}

}  // namespace

std::vector<std::pair<int, int>> NotesNow(Store& store, const std::string& prefix, int me, int world) {
  std::vector<std::pair<int, int>> notes;
  for (int r = 0; r < world; ++r) {
    if (r == me) continue;
    if (auto next = ReadNote(store, prefix, me, world, r, Clock::now())) notes.emplace_back(r, *next);
  }
  return notes;
}

void NoteBlame(Store& store, const std::string& prefix, int me, int world, int blamed) {
  if (blamed == me || blamed >= world) blamed = -1;
  try {
    store.Set(Key(prefix, me), wire::Writer(wire::Kind::kBlame).Put(int32_t{blamed}).Take());
    ClaimOrder(store, prefix, me, world);
  } catch (const std::exception& e) {
    spdlog::debug("eplb: rank {}: could not note whom it blames: {}", me, e.what());
  }
}

BlameVerdict FollowBlame(Store& store, const std::string& prefix, int me, int world, int blamed,
                         std::chrono::milliseconds budget) {
  if (blamed == me || blamed >= world) blamed = -1;
  NoteBlame(store, prefix, me, world, blamed);
  const Deadline by = DeadlineAfter(budget);
  BlameVerdict v;
  std::vector<bool> seen(world, false);
  seen[me] = true;
  int root = blamed;
  // Every rank but `root` has noted whom it blames: root, the one without a
  // note, is the one stalled or dead; no need to wait out the budget.
  auto others_noted = [&](int root) {
    for (int r = 0; r < world; ++r)
      if (r != me && r != root && !ReadNote(store, prefix, me, world, r, Clock::now())) return false;
    return true;
  };
  std::vector<int> path;  // the ranks followed, from `blamed` on
  while (root >= 0 && !seen[root]) {
    seen[root] = true;
    path.push_back(root);
    std::optional<int> next;
    for (;;) {
      next = ReadNote(store, prefix, me, world, root, std::min(by, DeadlineAfter(std::chrono::milliseconds(10))));
      if (next || Expired(by) || others_noted(root)) break;
    }
    if (!next || *next < 0) break;  // no note, or it blames no one: it is the one
    if (seen[*next]) {
      // A cycle of notes: ranks that waited for each other. The stalled one
      // noted last (it resumed to find the others gone, and blamed one of
      // them); so does a rank left behind that this one follows late.
      std::vector<int> cycle;
      if (*next == me) {
        cycle = path;
        cycle.push_back(me);
      } else {
        cycle.assign(std::find(path.begin(), path.end(), *next), path.end());
      }
      int latest = cycle.front(), latest_order = -1;
      for (int r : cycle) {
        const int order = OrderOf(store, prefix, me, world, r);
        if (order > latest_order) latest = r, latest_order = order;
      }
      if (latest == me) {
        v.left_behind = true;
      } else if (latest != root) {
        v.chain += fmt::format(", and rank {} gave up last of those that waited for each other", latest);
        root = latest;
      }
      break;
    }
    v.chain += fmt::format(", which waited for rank {}", *next);
    root = *next;
  }
  // The peers that blame this rank: the ones it held up when it was left
  // behind, or, when its own error names no peer (it failed on its own),
  // those that waited for it: it is the one to blame either way.
  // A peer blames it directly, or through the peers it waited for.
  std::vector<int> noted(world, -2);  // -2: no note
  for (const auto& [r, who] : NotesNow(store, prefix, me, world)) noted[r] = who;
  std::vector<int> accusers;
  for (int r = 0; r < world; ++r) {
    int at = noted[r];
    for (int hops = 0; at >= 0 && at != me && hops < world; ++hops) at = noted[at];
    if (r != me && noted[r] != -2 && at == me) accusers.push_back(r);
  }
  if (v.left_behind || (blamed < 0 && !accusers.empty())) {
    v.accusers = std::move(accusers);
    v.rank = me;
    v.chain.clear();
  } else {
    v.rank = root;
  }
  return v;
}

std::string BlameVerdict::Describe(int me, int direct) const {
  const std::string who = accusers.empty() ? std::string("its peers")
                                           : fmt::format("{} {}", accusers.size() > 1 ? "ranks" : "rank",
                                                         util::RankList(accusers));
  if (left_behind) return fmt::format("this rank was stalled or left behind: {} blamed rank {} (this rank)", who, me);
  if (rank == me) return fmt::format("rank {} (this rank) is to blame: {} waited for it", me, who);
  if (rank < 0 || rank == direct) return "";
  if (direct < 0) return fmt::format("rank {} is to blame", rank);
  return fmt::format("rank {} is to blame: this rank waited for rank {}{}", rank, direct, chain);
}

}  // namespace eplb::runtime
