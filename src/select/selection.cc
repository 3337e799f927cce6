#include "eplb/selection.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>

#include "comm/backends.h"
#include "eplb/error.h"
#include "eplb/store.h"
#include "select/detection.h"

namespace eplb {
namespace {

std::string Join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

std::string AsyncRefusal(const std::string& what) {
  return what +
         " cannot be used in async mode: NCCL send/recv are GPU kernels that spin until the "
         "peer's matching kernel runs and can deadlock with the model's kernels; use one of: " +
         Join(AsyncSafeCommunicators());
}

}  // namespace

// Names, aliases and the async-safe set come from the backend table
// (src/comm/backends.h).
const std::vector<std::string>& CommunicatorNames() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const comm::Backend& b : comm::Backends()) v.emplace_back(b.name);
    return v;
  }();
  return names;
}

const std::vector<std::string>& AsyncSafeCommunicators() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const comm::Backend& b : comm::Backends())
      if (b.async_safe) v.emplace_back(b.name);
    return v;
  }();
  return names;
}

bool IsNcclFamily(std::string_view name) {
  const comm::Backend* b = comm::FindBackend(name);
  return b != nullptr && !b->async_safe;
}

std::string CanonicalCommunicatorName(std::string_view name) {
  std::string n(name);
  for (auto& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string aliases;
  for (const comm::Backend& b : comm::Backends()) {
    if (b.name == n) return n;
    for (std::string_view a : b.aliases) {
      if (a == n) return std::string(b.name);
      aliases += "; " + std::string(a) + " = " + std::string(b.name);
    }
  }
  throw InvalidArgument("unknown communicator '" + std::string(name) + "' (valid: " +
                        Join(CommunicatorNames()) + aliases + ")");
}

SelectionFacts DetectSelectionFacts(const SearchEnvironment& env) {
  SelectionFacts f;
  NixlDetection nixl = DetectNixl(env);
  f.nixl_available = nixl.available;
  f.nixl_reason = nixl.reason;
  return f;
}

Selection SelectCommunicator(const SelectionRequest& request, const SelectionFacts& facts) {
  if (!request.communicator.empty()) {
    std::string name = CanonicalCommunicatorName(request.communicator);
    if (request.async && IsNcclFamily(name)) throw InvalidArgument(AsyncRefusal("communicator " + name));
    std::string reason = "requested";
    if (name == "nixl" && !facts.nixl_available) reason += "; " + facts.nixl_reason;
    return {name, reason};
  }
  if (request.elastic) {
    if (!request.async) return {"nccl_stateless", "elastic EP"};
    // Elastic EP in async mode, where NCCL is refused: nixl (vLLM's rule
    // since PR #45013), else gloo, whose groups are rebuilt for each
    // membership like nccl_stateless's; cuda_ipc is not taken, since a rank
    // that joins from another node would make it unusable mid-run.
    if (facts.nixl_available) return {"nixl", "elastic EP, async; " + facts.nixl_reason};
    return {"gloo", "elastic EP, async; " + facts.nixl_reason};
  }
  if (facts.nixl_available) return {"nixl", facts.nixl_reason};
  std::string reason = facts.nixl_reason;
  if (facts.cuda_ipc_check) {
    CudaIpcCheck ipc = facts.cuda_ipc_check();
    if (ipc.usable) return {"cuda_ipc", reason + "; " + ipc.reason};
    reason += "; cuda_ipc unusable: " + ipc.reason;
  }
  return {"gloo", reason};
}

std::string DescribeSelection(const Selection& s) {
  return "communicator " + s.name + " (" + s.reason + ")";
}

void LogSelection(const Selection& s) { spdlog::info("eplb: {}", DescribeSelection(s)); }

void AgreeOnSelection(Store& store, const std::string& key_prefix, int rank, int world_size,
                      const Selection& mine, Deadline deadline) {
  if (rank < 0 || rank >= world_size)
    throw InvalidArgument("AgreeOnSelection: rank " + std::to_string(rank) +
                          " outside world of size " + std::to_string(world_size));
  auto key = [&](int r) { return key_prefix + "/communicator/" + std::to_string(r); };
  store.SetString(key(rank), mine.name);
  for (int r = 0; r < world_size; ++r) {
    if (r == rank) continue;
    std::string theirs;
    try {
      theirs = store.GetString(key(r), deadline);
    } catch (const TimeoutError& e) {
      throw TimeoutError("select", "agree on communicator",
                         "rank " + std::to_string(r) + " never published its choice (" + e.what() + ")",
                         rank, r);
    }
    if (theirs != mine.name)
      throw Error("select", "agree on communicator",
                  "this rank chose " + mine.name + " (" + mine.reason + ") but rank " +
                      std::to_string(r) + " chose " + theirs +
                      "; name the communicator explicitly or install the same libraries on every node",
                  rank, r);
  }
}

}  // namespace eplb
