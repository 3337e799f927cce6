// INTEGRATION POINT (temporary): the cuda_ipc backend is written on branch
// `gpu`, which defines this function in src/comm/cuda_ipc/. Delete this whole
// file when merging it; if it is forgotten, the duplicate symbol fails the
// link. (MakeGlooCommunicator lives in src/comm/gloo/communicator.cc.)
#include "eplb/communicator_factory.h"
#include "eplb/error.h"

namespace eplb {

std::unique_ptr<Communicator> MakeCudaIpcCommunicator(const CommunicatorOptions& options) {
  throw Error("factory", "make cuda_ipc communicator",
              "this build does not contain the cuda_ipc backend (branch gpu not merged)",
              options.rank);
}

}  // namespace eplb
