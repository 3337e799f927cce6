// Errors raised by eplb. Every error says where it happened: the layer
// (policy, plan, gloo, nccl, store, ...), the operation, and where ranks are
// involved, this rank and the peer, so a log line alone is enough to act on.
#pragma once

#include <stdexcept>
#include <string>

#include "eplb/export.h"

namespace eplb {

// Bad user input (a malformed load file, inconsistent sizes). Tools map it to
// exit status 2.
class EPLB_EXPORT InvalidArgument : public std::invalid_argument {
 public:
  explicit InvalidArgument(const std::string& what) : std::invalid_argument(what) {}
};

// A failure in a layer that talks to other ranks or devices.
class EPLB_EXPORT Error : public std::runtime_error {
 public:
  // rank/peer are -1 when not applicable.
  Error(std::string layer, std::string operation, std::string detail, int rank = -1,
        int peer = -1);

  const std::string& layer() const { return layer_; }
  const std::string& operation() const { return operation_; }
  int rank() const { return rank_; }
  int peer() const { return peer_; }

 private:
  std::string layer_;
  std::string operation_;
  int rank_;
  int peer_;
};

// A deadline passed while waiting on a peer, a store or a device.
class EPLB_EXPORT TimeoutError : public Error {
 public:
  using Error::Error;
};

}  // namespace eplb
