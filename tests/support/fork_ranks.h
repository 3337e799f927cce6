// Runs ranks as forked child processes, for tests of communicators that need
// real peers. The parent must not have initialised CUDA (or started threads)
// before forking; each child runs `rank_main(rank)` and reports the returned
// text (empty = success; an escaping exception is reported as its message).
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace eplb::test {

struct RankOutcome {
  bool ok = false;       // exited 0
  bool timed_out = false;  // killed at the deadline
  int signal = 0;        // terminating signal, if any
  std::string message;   // what rank_main returned or threw
};

// Waits for every child up to `timeout`, then SIGKILLs the rest.
std::vector<RankOutcome> ForkRanks(int n, const std::function<std::string(int)>& rank_main,
                                   std::chrono::milliseconds timeout);

// "rank 0: ok; rank 1: <message>" for assertion messages.
std::string Describe(const std::vector<RankOutcome>& outcomes);

}  // namespace eplb::test
