// MakeBalancerLinks: the store, the selection rule's communicator and the
// copier a Balancer is built from.
#include "runtime/balancer_state.h"

namespace eplb {
using namespace balancer_internal;

BalancerLinks MakeBalancerLinks(std::shared_ptr<Store> store, int rank, int world_size,
                                const SelectionRequest& request, Deadline deadline, int device) {
  if (!store) throw InvalidArgument("balancer links: no store");
  if (rank < 0 || rank >= world_size)
    throw InvalidArgument("balancer links: rank " + std::to_string(rank) + " outside [0, " +
                          std::to_string(world_size) + ")");
  BalancerLinks links;
  links.store = store;
  links.rank = rank;
  links.world_size = world_size;
  SelectionFacts facts = SelectionFacts::Detect();
  if (device >= 0)
    facts.cuda_ipc_check = [&] {
      return comm::FindBackend("cuda_ipc")->usable(*store, rank, world_size, device,
                                                   "balancer-links/cuda_ipc", deadline);
    };
  links.selection = SelectCommunicator(request, facts);
  LogSelection(links.selection);
  AgreeOnSelection(*store, "balancer-links", rank, world_size, links.selection, deadline);
  const std::string name = links.selection.name;
  links.make_communicator = [store, rank, world_size, name, device](const std::string& group,
                                                                     Deadline d) {
    CommunicatorOptions o;
    o.rank = rank;
    o.world_size = world_size;
    o.store = store;
    o.key_prefix = group;
    o.device = device;
    o.connect_timeout = std::max(TimeLeft(d), std::chrono::milliseconds(1));
    return MakeCommunicator(name, o);
  };
  links.make_control_group = [store, rank, world_size](const std::string& group, Deadline d) {
    GlooOptions o;
    o.store = store;
    o.rank = rank;
    o.world_size = world_size;
    o.name = group;
    return ConnectGlooControlGroup(o, d);
  };
  if (device >= 0) {
    links.make_copier = [device] { return MakeCudaCopier(device); };
  } else {
    links.make_copier = [] { return MakeHostCopier(); };
  }
  return links;
}

}  // namespace eplb
