#include "gpu/support/communicators.h"

#include <cstdlib>
#include <sstream>

#include "comm/cuda_ipc/cuda_ipc.h"

namespace eplb::test {

std::unique_ptr<Communicator> MakeTestCommunicator(const std::string& name,
                                                   std::shared_ptr<Store> store, int rank, int size,
                                                   int device, Deadline deadline,
                                                   std::string* unavailable) {
  if (name == "cuda_ipc") {
    CudaIpcOptions options;
    options.store = std::move(store);
    options.rank = rank;
    options.size = size;
    options.device = device;
    options.key_prefix = "test/cuda_ipc";
    return MakeCudaIpcCommunicator(options, deadline);
  }
  *unavailable = "communicator '" + name + "' is not built into this eplb";
  return nullptr;
}

void CloseTestCommunicator(Communicator& communicator, Deadline deadline) {
  if (communicator.name() == "cuda_ipc") CloseCudaIpcCommunicator(communicator, deadline);
}

std::vector<std::string> TestCommunicatorNames() {
  const char* env = std::getenv("EPLB_GPU_COMMUNICATORS");
  std::vector<std::string> names;
  std::stringstream in(env && *env ? env : "cuda_ipc");
  for (std::string name; std::getline(in, name, ',');) {
    if (!name.empty()) names.push_back(name);
  }
  return names;
}

}  // namespace eplb::test
