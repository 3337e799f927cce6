// The communicators the GPU suite runs its scenarios with, by name, so a
// scenario is written once and run for each (cuda_ipc, and nccl / nixl / gloo
// once their device paths are built in).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "eplb/communicator.h"
#include "eplb/store.h"
#include "gpu/support/experts.h"
#include "gpu/support/workers.h"

namespace eplb::test {

// Builds communicator `name` for this rank, or returns null and says why in
// `*unavailable` when that communicator is not built into eplb or cannot run
// here. Collective.
std::unique_ptr<Communicator> MakeTestCommunicator(const std::string& name,
                                                   std::shared_ptr<Store> store, int rank, int size,
                                                   int device, Deadline deadline,
                                                   std::string* unavailable);

// Lets every rank free its registered memory safely afterwards (cuda_ipc
// unmaps its peers' memory and waits for them to do the same). Collective.
void CloseTestCommunicator(Communicator& communicator, Deadline deadline);

// For a worker: the store of its run and communicator
// ctx.Param("communicator") on `device`. When that communicator is not
// available, records {"unavailable": why} as the worker's result and leaves
// `communicator` null.
struct WorkerCommunicator {
  std::shared_ptr<Store> store;
  std::unique_ptr<Communicator> communicator;
};
WorkerCommunicator OpenWorkerCommunicator(const WorkerContext& ctx, int device);

// Registers `slots` (device memory) with the worker's communicator. False,
// with {"unavailable": why} recorded as the worker's result, when the backend
// refuses device memory (InvalidArgument: e.g. gloo in a build without CUDA).
bool RegisterDeviceSlots(ExpertSlots& slots, Communicator& communicator, const WorkerContext& ctx);

// Names from $EPLB_GPU_COMMUNICATORS (comma-separated) at build time (ctest
// lists the tests then), else cuda_ipc, nccl_stateless, nixl and gloo.
std::vector<std::string> TestCommunicatorNames();

}  // namespace eplb::test
