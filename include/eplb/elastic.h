// Elastic EP: changing which processes serve while the model keeps its
// weights -- a rank lost (its process died or its host is cut off), a rank
// leaving gracefully, a new process joining with empty slots.
//
// The engine decides when the membership changes (its control plane scales
// the group, or its own collectives fail naming a rank; the Balancer's
// failed cycles name the rank too, CycleReport::blamed_rank) and calls
// ChangeMembership at the same point on every process concerned: the
// members that stay, the ones that leave, and the ones that join. The
// processes agree through the store on what changes (the first record of the
// next generation stands: a survivor that named another set follows it, and
// one that the record declares lost learns so), then every expert slot of
// the new membership is filled -- from a surviving replica over the wire
// where one exists, else from the engine's WeightSource (for example the
// checkpoint) -- and the call returns the placement to serve with. The
// engine then builds its EP group, and a new Balancer, over the new members
// (group rank = position in Membership::ranks); a process that does not
// serve any more returns with serves = false.
//
// Until the call returns, RouteAroundLost (membership.h) gives maps that
// never name a lost rank's slots.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "eplb/deadline.h"
#include "eplb/export.h"
#include "eplb/load.h"
#include "eplb/membership.h"
#include "eplb/migration.h"
#include "eplb/placement.h"
#include "eplb/selection.h"

namespace eplb {

class Store;

// Writes expert `expert` of `layer`, tensor `tensor`, into `dst` (memory of
// the weights' kind, bytes_per_expert bytes). Called on the calling thread
// of ChangeMembership; throws to fail the change. Device memory: the writes
// are done when it returns, or queued on the default stream (ChangeMembership
// orders its next copies after that stream's work).
using WeightSource = std::function<void(int layer, int expert, int tensor, const MemoryRegion& dst)>;

struct EPLB_EXPORT MembershipChangeRequest {
  std::vector<int> lost;     // members whose process is gone
  std::vector<int> leaving;  // members that leave after sending their experts
  std::vector<int> joining;  // processes that join (they call with the same request)
};

struct EPLB_EXPORT MembershipChangeOptions {
  std::string name = "elastic";  // keys in the run's store
  std::string policy = "deepseek";
  int capacity = 0;              // process ranks [0, capacity); required
  int slots_per_rank = 0;        // fixed for the run; required
  int num_groups = 1;            // expert groups, for the policy
  int ranks_per_node = 0;        // for the policy's nodes and the plan's senders; 0: one node
  SelectionRequest communicator; // how the weights move (the rule of selection.h)
  std::chrono::milliseconds deadline{30000};  // for the whole change
};

struct EPLB_EXPORT MembershipChangeResult {
  bool serves = false;           // this process is a member of `after`
  Membership before, after;
  std::vector<int> lost;         // as recorded (may differ from this process's request)
  Placement placement;           // of `after`; empty when !serves
  int64_t experts_over_wire = 0; // every process, all layers
  int64_t experts_from_source = 0;
  uint64_t bytes_over_wire = 0;
  uint64_t bytes_from_source = 0;
  double balancedness_before = 0;  // of the placement in force, live slots only, under `load`
  double balancedness_after = 0;
  double seconds = 0;
  std::string communicator;
};

// Collective over every process of before + joining (lost ones excepted).
//
// Members pass the membership in force, the placement in force (over it:
// the map their own slots' bytes follow) and their load window (summed over
// the processes for the policy). Members' maps may differ where a commit
// reached some of them only (a rank lost at the step a layer commits): each
// member's slots are taken as its own map says, and an expert that is then
// in no readable slot comes from `source`. A joining process passes an
// empty membership and placement and a load of the right shape (zeros), and
// learns both from the store. `weights` are this
// process's slots_per_rank slots of every layer, as for the Balancer; they
// hold the new placement's experts when the call returns (a joining process:
// from the first call). Throws InvalidArgument on a bad request, Error /
// TimeoutError naming the rank and operation when the change fails (the
// weights of layers not yet switched are unchanged, those switched hold the
// new experts: a failed change is retried with the same request, or the
// process stops serving).
EPLB_EXPORT MembershipChangeResult ChangeMembership(std::shared_ptr<Store> store, int process_rank,
                                                    const Membership& before, const Placement& in_force,
                                                    const LoadMatrix& load, const MembershipChangeRequest& request,
                                                    const std::vector<LayerWeights>& weights,
                                                    const WeightSource& source,
                                                    const MembershipChangeOptions& options);

}  // namespace eplb
