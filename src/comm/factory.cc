#include "eplb/communicator_factory.h"

#include "comm/backends.h"
#include "eplb/error.h"
#include "eplb/selection.h"

namespace eplb {

std::unique_ptr<Communicator> MakeCommunicator(std::string_view name,
                                               const CommunicatorOptions& options) {
  const std::string n = CanonicalCommunicatorName(name);
  const comm::Backend& backend = *comm::FindBackend(n);  // canonical names are the table's
  if (options.world_size < 1)
    throw InvalidArgument("communicator " + n + ": world_size must be >= 1 (got " +
                          std::to_string(options.world_size) + ")");
  if (options.rank < 0 || options.rank >= options.world_size)
    throw InvalidArgument("communicator " + n + ": rank " + std::to_string(options.rank) +
                          " is outside [0, " + std::to_string(options.world_size) + ")");
  if (options.connect_timeout.count() <= 0)
    throw InvalidArgument("communicator " + n + ": connect_timeout must be positive");
  if (backend.needs_store && !options.store)
    throw InvalidArgument("communicator " + n + " needs a store to find its peers");
  return backend.make(options);
}

}  // namespace eplb
