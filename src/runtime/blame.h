// Following the blame to the rank that stalled or died.
//
// A rank that times out blames the peer it was waiting for, but that peer may
// itself have been waiting for a third: a stalled rank holds up its
// neighbours first, and they hold up theirs. So every rank that fails an
// operation notes whom it blames in the store, under a key of that operation
// ("<prefix>/<rank>"), and follows the notes from the peer it blames to a
// rank that has none (the one stalled or dead), waiting a little for peers
// that fail at about the same time.
//
// A rank that was stalled itself (SIGSTOP, a long pause of its process) and
// resumes after its peers gave up sees their closed connections and would
// blame the first peer it fails to hear from, a healthy one. The notes say
// otherwise: the peers blamed it. When the chain leads back to this rank it
// was the one left behind, and says so instead of blaming a healthy peer;
// when its own error names no peer and a peer's note blames it, it is the
// one to blame too. Ranks that blame each other (a rank that resumed blamed
// a peer that had given up on it) are told apart by the order in which they
// noted, kept in the store (first writer stands): the one stalled noted
// last, so a peer slow to follow the notes does not mistake itself for it.
//
// Used by the balancer (one prefix per cycle) and by `eplb demo` (its
// engine step's all-reduce).
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "eplb/store.h"

namespace eplb::runtime {

struct BlameVerdict {
  int rank = -1;             // the rank to blame: the end of the chain (-1: none stands out)
  bool left_behind = false;  // the chain leads back to this rank: it was the one stalled
  // When this rank is the one to blame (left behind, or failed on its own):
  // the peers whose notes blame it, directly or through the peers they waited for.
  std::vector<int> accusers;
  // ", which waited for rank 3" links, each a note followed (empty: none).
  std::string chain;

  // What to put before the error this rank saw, so that the rank named is
  // the one to blame: "this rank was stalled or left behind: peers 0, 1
  // blamed rank 2 (this rank)", or "rank 3 is to blame: this rank waited for
  // rank 1, which waited for rank 3"; empty when the error's own peer
  // (`direct`) is the one to blame.
  std::string Describe(int me, int direct) const;
};

// Notes that this rank (`me` of `world`) blames `blamed` (-1: no one) under
// "<prefix>/<me>", then follows the notes from `blamed`, waiting at most
// `budget` in all for notes not written yet. Store failures are logged and
// end the chain where it is.
BlameVerdict FollowBlame(Store& store, const std::string& prefix, int me, int world, int blamed,
                         std::chrono::milliseconds budget);

// Only the note: this rank (`me`) blames `blamed` under "<prefix>/<me>"
// (store failures logged). FollowBlame begins with it.
void NoteBlame(Store& store, const std::string& prefix, int me, int world, int blamed);

// The peers that have a note under `prefix` now, and whom each blames
// (pairs of rank, blamed), read without waiting.
std::vector<std::pair<int, int>> NotesNow(Store& store, const std::string& prefix, int me, int world);

// How long FollowBlame waits for notes: half the deadline, at most 500 ms
// (a peer that failed at about the same time writes its note within that).
inline std::chrono::milliseconds BlameBudget(std::chrono::milliseconds deadline) {
  return std::min<std::chrono::milliseconds>(deadline / 2, std::chrono::milliseconds(500));
}

}  // namespace eplb::runtime
