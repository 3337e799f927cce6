#include "eplb/communicator_factory.h"

#include "eplb/error.h"
#include "eplb/selection.h"

namespace eplb {

std::unique_ptr<Communicator> MakeCommunicator(std::string_view name,
                                               const CommunicatorOptions& options) {
  const std::string n = CanonicalCommunicatorName(name);
  if (options.world_size < 1)
    throw InvalidArgument("communicator " + n + ": world_size must be >= 1 (got " +
                          std::to_string(options.world_size) + ")");
  if (options.rank < 0 || options.rank >= options.world_size)
    throw InvalidArgument("communicator " + n + ": rank " + std::to_string(options.rank) +
                          " is outside [0, " + std::to_string(options.world_size) + ")");
  if (options.connect_timeout.count() <= 0)
    throw InvalidArgument("communicator " + n + ": connect_timeout must be positive");
  // Only nccl can do without a store: the engine's communicator is already
  // connected.
  if (n != "nccl" && !options.store)
    throw InvalidArgument("communicator " + n + " needs a store to find its peers");
  if (n == "nccl") return MakeNcclCommunicator(options);
  if (n == "nccl_stateless") return MakeNcclStatelessCommunicator(options);
  if (n == "nixl") return MakeNixlCommunicator(options);
  if (n == "cuda_ipc") return MakeCudaIpcCommunicator(options);
  return MakeGlooCommunicator(options);
}

}  // namespace eplb
