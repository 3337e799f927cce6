// In-process fakes of eplb::ControlGroup and eplb::Communicator, for the
// balancer's cycle protocol tested in one process: every rank is a thread,
// each rank's groups are views of one InProcessFabric, and the fabric
// injects faults at exact points (the n-th AllGather of a rank; a rank cut
// off from every group from a moment on) so that a late vote or a dead voter
// has one outcome, not one that depends on timing. Real processes over real
// Gloo are tested elsewhere (balancer_test.cc, migration_processes_test.cc).
//
// Semantics follow the real backends: a collective completes when every rank
// contributed, or throws TimeoutError at the caller's deadline naming the
// first rank that did not; after a failure the group is closed (every later
// call throws Error), so the balancer rebuilds it under a fresh name, as it
// does with Gloo. Transfers are one-sided: the receiver copies from the
// sender's registered region, and the sender's Execute returns once every
// transfer out of it has been copied.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "eplb/communicator.h"
#include "eplb/control_group.h"
#include "util/mutex.h"

namespace eplb::test {

// What happens at one AllGather of one rank.
enum class GatherFault {
  kNone,
  // The rank contributes, its peers complete, and the rank itself learns
  // nothing: its call throws TimeoutError `late` after its deadline (the
  // collective that completed on some ranks and not on others).
  kLate,
};

class InProcessFabric {
 public:
  explicit InProcessFabric(int world_size);
  ~InProcessFabric();
  InProcessFabric(const InProcessFabric&) = delete;
  InProcessFabric& operator=(const InProcessFabric&) = delete;

  int world_size() const { return world_; }

  std::unique_ptr<ControlGroup> MakeControlGroup(const std::string& group, int rank);
  std::unique_ptr<Communicator> MakeCommunicator(const std::string& group, int rank);

  // Called with (rank, n) at each rank's n-th AllGather (1-based, counted
  // over every group the rank was given). Set before the ranks start.
  void set_gather_fault(std::function<GatherFault(int rank, int64_t n)> f, std::chrono::milliseconds late);

  // A rank cut off from its peers (its link down, its process frozen): from
  // now on it contributes to no collective and no transfer, its own calls
  // throw Error at once, and its peers time out waiting for it. Cut(r, false)
  // reconnects it; groups made after that work again.
  void Cut(int rank, bool cut = true);
  bool IsCut(int rank);

  // AllGathers each rank has made so far.
  int64_t gathers(int rank);

 private:
  class Group;
  class Comm;
  struct Round;
  struct Region {
    uint8_t* data = nullptr;
    uint64_t bytes = 0;
  };

  // One collective call of a group: contributions by rank, and which ranks
  // have collected the result.
  std::vector<std::vector<uint8_t>> Collect(const std::string& group, int rank, int64_t seq,
                                           std::vector<uint8_t> mine, Deadline deadline,
                                           const std::string& op);

  const int world_;
  util::Mutex mu_;
  util::CondVar changed_;
  std::map<std::pair<std::string, int64_t>, std::shared_ptr<Round>> rounds_ GUARDED_BY(mu_);
  std::map<std::string, std::vector<std::vector<Region>>> regions_ GUARDED_BY(mu_);
  // Per group and ordered pair "group/src->dst": the epoch the sender
  // published ([0]) and the one the receiver consumed ([1]).
  std::map<std::string, std::array<int64_t, 2>> epochs_ GUARDED_BY(mu_);
  std::vector<bool> cut_ GUARDED_BY(mu_);
  std::vector<int64_t> gathers_ GUARDED_BY(mu_);
  std::function<GatherFault(int, int64_t)> gather_fault_;
  std::chrono::milliseconds late_{0};
};

}  // namespace eplb::test
