// eplb demo: one membership event while serving (elastic EP, elastic.h).
//
//   --kill-rank R --kill-at S   rank R announces step S; the launcher kills
//                               its process (SIGKILL) and records the loss.
//                               The others' engine step fails naming R; they
//                               read the launcher's record (the control plane
//                               says who is gone) and change the membership:
//                               R's experts come back from surviving replicas
//                               or, where R held the only one, from the
//                               weight source (the fingerprints regenerated).
//   --leave-rank R --leave-at S at the first step >= S with no migration in
//                               flight every rank changes the membership
//                               together; R sends the experts only it holds
//                               and exits.
//   --join-at S                 as for a leave, rank 0 announces the step; the
//                               launcher starts a new process (rank
//                               --ranks), which joins with empty slots and
//                               serves after the change.
//
// After the change every member checks each of its slots against the new
// placement, byte for byte, and serves on under a new Balancer and a new
// engine group over the new members (group rank = position in the
// membership). The report says how long from the event to every expert
// served again, how many experts came from the source and how many over
// the wire, and the balancedness before, just after and after the next
// rebalance.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "eplb/deadline.h"
#include "eplb/elastic.h"
#include "eplb/store.h"
#include "demo_options.h"

namespace eplb::cli::demo {

struct ElasticEvent {
  enum class Kind { kNone, kKill, kLeave, kJoin };
  Kind kind = Kind::kNone;
  int rank = -1;    // the rank killed, leaving or joining
  int64_t at = -1;  // the step it happens at (or after: leave and join wait for no migration in flight)

  static ElasticEvent From(const DemoOptions& o);
  const char* name() const;  // "kill", "leave", "join", "none"
  // The rank that announces reaching the step: the victim of a kill, rank 0 otherwise.
  int announcer() const { return kind == Kind::kKill ? rank : 0; }
};

// What the launcher did, as the ranks read it.
struct EventRecord {
  int64_t step = -1;          // the step announced
  int64_t when_ns = 0;        // steady clock (CLOCK_MONOTONIC: one machine), when it acted
};

// The announcer reached the event's step (once).
void AnnounceReached(Store& store, int64_t step);
// The launcher: the step announced, if it was (never waits).
std::optional<int64_t> PollReached(Store& store);
// The launcher acted (killed the rank, started the joiner) at `when`.
void RecordEvent(Store& store, int64_t step, Clock::time_point when);
// A rank: the launcher's record, waited for until `deadline` (TimeoutError
// naming the launcher).
EventRecord WaitEvent(Store& store, int me, Deadline deadline);

int64_t SteadyNs(Clock::time_point t);

// The change's options for the demo: its policy and groups, the run's
// capacity, slots per rank fixed, the communicator request, `deadline` for
// the whole change (a joiner's start and every layer's weights).
MembershipChangeOptions DemoChangeOptions(const DemoOptions& o, int capacity, int slots_per_rank,
                                          const SelectionRequest& communicator, std::chrono::milliseconds deadline);
// The demo's weight source: the expert's fingerprint (demo/fingerprint.h),
// as an engine would read the expert from its checkpoint. Host memory.
WeightSource FingerprintSource();
// The report's "membership": the event, the new members and what the change
// moved; `before_event` is the Balancer's balancedness before it.
nlohmann::json DescribeChange(const ElasticEvent& event, int64_t step, const MembershipChangeResult& r,
                              double before_event);

}  // namespace eplb::cli::demo
