// The one table of communicator backends: each backend's name and aliases,
// what it can do, what it needs, and its constructor. Selection names
// (CommunicatorNames, AsyncSafeCommunicators, CanonicalCommunicatorName),
// MakeCommunicator's validation and dispatch, and the default
// Communicator::Capabilities() all read it, so a new backend is one row here
// plus its folder src/comm/<backend>/ (docs/architecture.md).
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "eplb/communicator.h"
#include "eplb/communicator_factory.h"
#include "eplb/deadline.h"
#include "eplb/selection.h"
#include "eplb/store.h"

namespace eplb::comm {

struct Backend {
  std::string_view name;                  // canonical
  std::vector<std::string_view> aliases;  // other names accepted (any case)
  // Safe for async migration: not GPU kernels that spin until the peer's
  // matching kernel runs (selection.h).
  bool async_safe = false;
  bool needs_store = true;  // finds its peers through CommunicatorOptions::store
  CommunicatorCapabilities capabilities;
  std::unique_ptr<Communicator> (*make)(const CommunicatorOptions&) = nullptr;
  // Whether the backend really works among these ranks, where the selection
  // rule asks (collective); null for backends the rule does not check.
  CudaIpcCheck (*usable)(Store& store, int rank, int size, int device, const std::string& key_prefix,
                         Deadline deadline) = nullptr;
};

// Every backend, in the selection rule's order: nixl, cuda_ipc, gloo, nccl,
// nccl_stateless.
std::span<const Backend> Backends();
// The backend of a canonical name; null when there is none.
const Backend* FindBackend(std::string_view name);

}  // namespace eplb::comm
