// eplb demo: which host every rank runs on, as eplb tells hosts apart (host
// name and boot id, comm/host_identity.h: the check cuda_ipc makes before it
// is chosen), and where it listens. The policy's --nodes and the plan's
// ranks_per_node (world / nodes) describe the same layout: ranks
// [i * ranks_per_node, (i + 1) * ranks_per_node) on node i. Where the ranks
// run on more than one host the hosts must be that layout; on one host the
// nodes are simulated.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eplb/deadline.h"
#include "eplb/store.h"

namespace eplb::cli::demo {

struct DemoHosts {
  std::vector<std::string> host;    // [rank] host name
  std::vector<std::string> listen;  // [rank] ListenAddress::Describe()
  int nodes = 1;
  int ranks_per_node = 1;
  int distinct = 1;        // hosts seen
  bool simulated = true;   // one host: the nodes exist only for the policy and plan

  // "hosts: eplb-host0 (ranks 0-1, listening on 10.231.7.1), eplb-host1 (...)"
  std::string Describe() const;
  nlohmann::json ToJson() const;
  // "hosts" where they are real, "nodes" where simulated.
  const char* unit() const { return simulated ? "nodes" : "hosts"; }
};

// Collective: every rank publishes its host identity and listen address and
// reads everyone's. Throws InvalidArgument (the same on every rank) when the
// ranks run on several hosts that are not `nodes` blocks of consecutive ranks.
DemoHosts ExchangeHosts(Store& store, int rank, int world, int nodes, Deadline deadline);

}  // namespace eplb::cli::demo
