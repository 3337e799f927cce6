#include "comm/backends.h"

#include "comm/cuda_ipc/cuda_ipc.h"

namespace eplb::comm {

std::span<const Backend> Backends() {
  //                         host   cuda   one-sided
  static const std::vector<Backend> table = {
      {"nixl", {}, true, true, {true, true, true}, &MakeNixlCommunicator, nullptr},
      {"cuda_ipc", {}, true, true, {false, true, true}, &MakeCudaIpcCommunicator, &CudaIpcUsable},
      {"gloo", {}, true, true, {true, true, false}, &MakeGlooCommunicator, nullptr},
      // nccl can do without a store: the engine's communicator is already connected.
      {"nccl", {}, false, false, {false, true, false}, &MakeNcclCommunicator, nullptr},
      {"nccl_stateless", {"pynccl"}, false, true, {false, true, false}, &MakeNcclStatelessCommunicator,
       nullptr},
  };
  return table;
}

const Backend* FindBackend(std::string_view name) {
  for (const Backend& b : Backends())
    if (b.name == name) return &b;
  return nullptr;
}

}  // namespace eplb::comm

namespace eplb {

CommunicatorCapabilities Communicator::Capabilities() const {
  // A communicator of an engine's own, named otherwise, is taken to accept
  // both memory kinds (its RegisterRegion has the last word).
  const comm::Backend* b = comm::FindBackend(name());
  return b ? b->capabilities : CommunicatorCapabilities{true, true, false};
}

}  // namespace eplb
