#include "eplb/error.h"

namespace eplb {
namespace {

std::string Describe(const std::string& layer, const std::string& operation,
                     const std::string& detail, int rank, int peer) {
  std::string s = "eplb " + layer + ": " + operation;
  if (rank >= 0) s += " on rank " + std::to_string(rank);
  if (peer >= 0) s += " with peer " + std::to_string(peer);
  s += ": " + detail;
  return s;
}

}  // namespace

Error::Error(std::string layer, std::string operation, std::string detail, int rank, int peer)
    : std::runtime_error(Describe(layer, operation, detail, rank, peer)),
      layer_(std::move(layer)),
      operation_(std::move(operation)),
      rank_(rank),
      peer_(peer) {}

}  // namespace eplb
