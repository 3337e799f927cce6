// Key-value store through which ranks find each other (bootstrap layer).
//
// Values are write-once per key in practice (rendezvous data, NCCL unique ids,
// IPC handles, NIXL metadata). Get blocks until the key exists or the deadline
// passes, so "wait for rank r's address" is one call with one deadline.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "eplb/export.h"
#include "eplb/deadline.h"

namespace eplb {

class EPLB_EXPORT Store {
 public:
  virtual ~Store() = default;
  virtual std::string_view kind() const = 0;  // "file", "redis", ...
  virtual void Set(const std::string& key, std::span<const uint8_t> value) = 0;
  // Throws TimeoutError (layer "store") naming the key when the deadline passes.
  virtual std::vector<uint8_t> Get(const std::string& key, Deadline deadline) = 0;

  // Sets `key` to `value` unless a writer got there first, atomically across
  // processes, and returns the value that stands (first writer wins). The
  // balancer decides each layer's commit with it: ranks that saw different
  // outcomes of a failed collective propose different decisions, and all of
  // them follow the one that stands, so no rank commits a layer that another
  // survivor drops. A plain register (Set/Get) cannot do that.
  virtual std::vector<uint8_t> SetIfAbsent(const std::string& key, std::span<const uint8_t> value) = 0;

  // A 32-byte key for `purpose`, derived from the run's job token, with
  // which ranks authenticate what they send each other outside the store
  // (the Gloo connections: a stranger that connects to a rank's port cannot
  // pass for a peer). nullopt when the store holds no token: any Store but
  // the run store of a run with a token (OpenRunStore, MakeTokenStore, and
  // prefixed views of them).
  virtual std::optional<std::array<uint8_t, 32>> RunKey(std::string_view purpose) const {
    (void)purpose;
    return std::nullopt;
  }

  void SetString(const std::string& key, std::string_view value) {
    Set(key, {reinterpret_cast<const uint8_t*>(value.data()), value.size()});
  }
  std::string GetString(const std::string& key, Deadline deadline) {
    auto v = Get(key, deadline);
    return std::string(v.begin(), v.end());
  }
};

}  // namespace eplb
