// eplb demo: the ranks' hosts (demo_hosts.h).
#include "demo_hosts.h"

#include <fmt/format.h>

#include <set>

#include "comm/host_identity.h"
#include "eplb/error.h"
#include "eplb/listen_address.h"

namespace eplb::cli::demo {

DemoHosts ExchangeHosts(Store& store, int rank, int world, int nodes, Deadline deadline) {
  DemoHosts h;
  h.nodes = nodes;
  h.ranks_per_node = world / nodes;
  const nlohmann::json mine{{"host", comm::HostName()},
                            {"boot_id", comm::BootId()},
                            {"listen", ChooseListenAddress().Describe()}};
  store.SetString("demo/host/" + std::to_string(rank), mine.dump());
  std::vector<std::string> identity(world);
  for (int r = 0; r < world; ++r) {
    const auto j = nlohmann::json::parse(store.GetString("demo/host/" + std::to_string(r), deadline));
    h.host.push_back(j.at("host").get<std::string>());
    h.listen.push_back(j.at("listen").get<std::string>());
    identity[r] = h.host.back() + "/" + j.at("boot_id").get<std::string>();
  }
  h.distinct = static_cast<int>(std::set<std::string>(identity.begin(), identity.end()).size());
  h.simulated = h.distinct == 1;
  if (h.simulated) return h;
  // Real hosts: node i must be one host, and the nodes distinct hosts.
  std::set<std::string> seen;
  for (int node = 0; node < nodes; ++node) {
    const int first = node * h.ranks_per_node;
    for (int r = first + 1; r < first + h.ranks_per_node; ++r)
      if (identity[r] != identity[first])
        throw InvalidArgument(fmt::format(
            "demo: --nodes {} puts ranks {} and {} on node {}, but they run on hosts {} and {}; start "
            "{} ranks per host, host i with ranks {}*i..", nodes, first, r, node, h.host[first], h.host[r],
            h.ranks_per_node, h.ranks_per_node));
    if (!seen.insert(identity[first]).second)
      throw InvalidArgument(fmt::format("demo: rank {} (node {}) runs on host {}, as an earlier node does; "
                                        "--nodes {} should be the number of hosts ({})",
                                        first, node, h.host[first], nodes, h.distinct));
  }
  return h;
}

std::string DemoHosts::Describe() const {
  std::string s;
  for (int node = 0; node < nodes; ++node) {
    const int first = node * ranks_per_node, last = first + ranks_per_node - 1;
    if (simulated) {
      s = fmt::format("{} (ranks 0-{}, listening on {})", host[0], host.size() - 1, listen[0]);
      break;
    }
    s += fmt::format("{}{} (ranks {}-{}, listening on {})", s.empty() ? "" : "; ", host[first], first, last,
                     listen[first]);
  }
  if (simulated && nodes == 1) return "one host: " + s;
  if (simulated)
    return fmt::format("one host: {}; {} nodes of {} ranks simulated for the policy and the plan", s, nodes,
                       ranks_per_node);
  return fmt::format("{} hosts: {}", distinct, s);
}

nlohmann::json DemoHosts::ToJson() const {
  return {{"distinct", distinct}, {"simulated", simulated}, {"nodes", nodes},
          {"ranks_per_node", ranks_per_node}, {"host", host}, {"listen", listen}};
}

}  // namespace eplb::cli::demo
