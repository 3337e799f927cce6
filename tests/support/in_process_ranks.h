// Balancers of three ranks in one process, for the cycle protocol's tests
// (balancer_in_process_test.cc, balancer_stall_in_process_test.cc): each
// rank is a thread with its own Balancer over the in-process control group
// and communicator (in_process_group.h) and one in-memory store
// (in_memory_store.h), both in-process fakes for protocol logic. The engines
// step in lockstep, as an engine's ranks do (every step's all-to-all waits
// for every rank), with fingerprinted expert weights checked at every
// commit, at every cycle's end and at the end of the run. The same protocol
// over real processes and real Gloo: balancer_test.cc.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "eplb/balancer.h"
#include "eplb/store.h"
#include "support/in_process_group.h"

namespace eplb::test {

inline constexpr int kInProcessWorld = 3;

struct InProcessRun {
  int steps = 500;
  int interval = 100;
  int first = 40;
  int layers = 3;
  std::chrono::milliseconds deadline{250};
  std::chrono::microseconds step_period{500};
  // Called on each rank's engine thread before each step (rank, step).
  std::function<void(int rank, int64_t step)> on_step;
  // The store a rank's balancer uses, made from the run's shared one (to
  // wrap it with a fault); unset: the shared one.
  std::function<std::shared_ptr<Store>(int rank, std::shared_ptr<Store> shared)> store_of;
};

struct RankOutcome {
  int mismatches = 0;
  std::vector<CommitEvent> commits;
  std::vector<CycleReport> cycles;
  BalancerMetrics metrics;
  std::vector<int32_t> phy2log;
  double longest_step_gap_ms = 0;  // wall time between two Step() calls
  std::string error;               // what the rank's thread threw, if anything
};

// Runs every rank's engine loop in its own thread, in lockstep, until
// `run.steps` steps and every balancer idle.
std::vector<RankOutcome> RunRanks(InProcessFabric& fabric, const InProcessRun& run);

// (cycle, layer) -> step, every commit of a rank.
std::map<std::pair<int64_t, int>, int64_t> Commits(const RankOutcome& r);
const CommitEvent* FindCommit(const RankOutcome& r, int64_t cycle, int layer);
const CycleReport* FindCycle(const RankOutcome& r, int64_t cycle);

// Every rank holds what its maps say, all ranks end on the same maps, and
// every layer was committed at the same step everywhere (gtest checks).
void ExpectConsistent(const std::vector<RankOutcome>& out);
// A cycle after `cycle` completed on every rank and committed something.
void ExpectRecovered(const std::vector<RankOutcome>& out, int64_t cycle);

}  // namespace eplb::test
