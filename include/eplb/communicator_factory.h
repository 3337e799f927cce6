// Builds a communicator by name: the one place the runtime, the CLI demo and
// the tests turn "gloo" / "nixl" / "nccl" / ... into a Communicator.
//
// Each backend defines its own Make*Communicator below in its own folder
// (src/comm/<backend>/) and has one row in the backend table
// (src/comm/backends.h: names, aliases, async safety, whether it needs a
// store, capabilities, constructor); MakeCommunicator validates against the
// row and calls its constructor.
// Construction is collective: every rank of the group calls it with the same
// name, key_prefix and world_size, and it returns once the group is connected
// (or throws TimeoutError at options.connect_timeout).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "eplb/export.h"
#include "eplb/communicator.h"
#include "eplb/deadline.h"
#include "eplb/store.h"

namespace eplb {

struct EPLB_EXPORT CommunicatorOptions {
  int rank = -1;
  int world_size = 0;
  // Where ranks exchange addresses, NCCL unique ids, NIXL metadata, IPC
  // handles. Shared: the communicator may keep using it (nixl publishes new
  // metadata after registrations; nccl_stateless rebuilds through it).
  std::shared_ptr<Store> store;
  // Namespaces every key this communicator writes, so several communicators
  // (and generations of one) can share a store.
  std::string key_prefix = "eplb";
  // CUDA device ordinal of this rank (device-memory backends); -1 = none.
  int device = -1;
  // Budget for construction (rendezvous, NCCL init, metadata exchange).
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(60)};
  // nccl only: the engine's communicator (an ncclComm_t), shared, not owned:
  // eplb never destroys it, but aborts it when a transfer misses its deadline
  // (the engine must then make a new one).
  void* nccl_comm = nullptr;
  // nccl_stateless: membership generation. Ranks agree on it out of band
  // (elastic EP bumps it when ranks join or leave); keys are per generation.
  uint64_t generation = 0;
  // Library overrides; empty = search (detect.h). EPLB_NCCL_LIBRARY also works.
  std::string nccl_library;
  std::string nixl_capi_library;
};

// Validates the name (CanonicalCommunicatorName: unknown -> InvalidArgument
// listing the valid ones) and the options (rank inside world_size, a store
// where the backend needs one), then builds the backend.
EPLB_EXPORT std::unique_ptr<Communicator> MakeCommunicator(std::string_view name,
                                               const CommunicatorOptions& options);

// A communicator whose group can change (elastic EP): Rebuild tears the
// backend's group down and joins the group of `world_size` ranks of the
// next generation (collective among the new group). nccl_stateless
// implements it; reach it with dynamic_cast.
class EPLB_EXPORT ElasticCommunicator : public Communicator {
 public:
  virtual void Rebuild(int rank, int world_size, uint64_t generation, Deadline deadline) = 0;
  virtual uint64_t generation() const = 0;
};

// --- Backend constructors (one per src/comm/<backend>/) -------------------
// Each is defined in its backend's folder and reached through
// MakeCommunicator. Backends that need CUDA (cuda_ipc) or a library loaded at
// run time (nccl, nixl) throw Error naming what is missing where it is absent.
EPLB_EXPORT std::unique_ptr<Communicator> MakeGlooCommunicator(const CommunicatorOptions& options);
EPLB_EXPORT std::unique_ptr<Communicator> MakeCudaIpcCommunicator(const CommunicatorOptions& options);
EPLB_EXPORT std::unique_ptr<Communicator> MakeNcclCommunicator(const CommunicatorOptions& options);
EPLB_EXPORT std::unique_ptr<Communicator> MakeNcclStatelessCommunicator(const CommunicatorOptions& options);
EPLB_EXPORT std::unique_ptr<Communicator> MakeNixlCommunicator(const CommunicatorOptions& options);

}  // namespace eplb
