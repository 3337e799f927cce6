#include "gpu/support/communicators.h"

#include <cstdlib>
#include <sstream>

#include "comm/cuda_ipc/cuda_ipc.h"
#include "eplb/communicator_factory.h"
#include "eplb/error.h"

namespace eplb::test {

std::unique_ptr<Communicator> MakeTestCommunicator(const std::string& name,
                                                   std::shared_ptr<Store> store, int rank, int size,
                                                   int device, Deadline deadline,
                                                   std::string* unavailable) {
  if (name == "nccl") {
    // The engine's own communicator, which a test does not have.
    *unavailable = "nccl needs the engine's ncclComm_t; run nccl_stateless (its own NCCL communicator)";
    return nullptr;
  }
  CommunicatorOptions options;
  options.rank = rank;
  options.world_size = size;
  options.store = std::move(store);
  options.key_prefix = "test/" + name;
  options.device = device;
  options.connect_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(TimeLeft(deadline));
  try {
    return MakeCommunicator(name, options);
  } catch (const InvalidArgument& e) {
    // Two NCCL ranks cannot share a GPU (one GPU on this machine).
    if (std::string(e.what()).find("NCCL needs a GPU of its own") != std::string::npos) {
      *unavailable = e.what();
      return nullptr;
    }
    throw;
  } catch (const Error& e) {
    // Backends missing from this build or this machine (no NCCL library, no
    // NIXL) say so in their construction error.
    if (e.layer() == "factory" || e.operation().find("load") != std::string::npos) {
      *unavailable = e.what();
      return nullptr;
    }
    throw;
  }
}

void CloseTestCommunicator(Communicator& communicator, Deadline deadline) {
  if (communicator.name() == "cuda_ipc") CloseCudaIpcCommunicator(communicator, deadline);
}

WorkerCommunicator OpenWorkerCommunicator(const WorkerContext& ctx, int device) {
  WorkerCommunicator w;
  w.store = ctx.store;
  std::string unavailable;
  w.communicator = MakeTestCommunicator(ctx.Param("communicator"), w.store, ctx.rank, ctx.size, device,
                                        DeadlineAfter(std::chrono::seconds(60)), &unavailable);
  if (!w.communicator) ctx.WriteResult({{"unavailable", unavailable}});
  return w;
}

bool RegisterDeviceSlots(ExpertSlots& slots, Communicator& communicator, const WorkerContext& ctx) {
  try {
    slots.Register(communicator, DeadlineAfter(std::chrono::seconds(60)));
    return true;
  } catch (const InvalidArgument& e) {
    ctx.WriteResult({{"unavailable", std::string(communicator.name()) + " refuses device memory: " + e.what()}});
    return false;
  }
}

std::vector<std::string> TestCommunicatorNames() {
  const char* env = std::getenv("EPLB_GPU_COMMUNICATORS");
  std::vector<std::string> names;
  // Every communicator that can move device memory without the engine's own
  // NCCL communicator; each test skips those absent from this build or machine.
  std::stringstream in(env && *env ? env : "cuda_ipc,nccl_stateless,nixl,gloo");
  for (std::string name; std::getline(in, name, ',');) {
    if (!name.empty()) names.push_back(name);
  }
  return names;
}

}  // namespace eplb::test
