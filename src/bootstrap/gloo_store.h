// Lets Gloo's rendezvous (gloo::rendezvous::Context::connectFullMesh) run over
// any eplb::Store: the file store, Redis, or an engine's own store.
#pragma once

#include <gloo/rendezvous/store.h>

#include <string>

#include "eplb/deadline.h"
#include "eplb/store.h"

namespace eplb::bootstrap {

// Gloo's store interface over an eplb::Store, every key under `prefix`. Gloo
// calls get() and wait() without a deadline of its own (or with a relative
// timeout, which is ignored); the adapter bounds every one of them by
// `deadline`, so a rendezvous cannot outlive it, and a slow but timely peer
// cannot fail it early. Missing keys surface as eplb::TimeoutError.
class GlooStoreAdapter : public gloo::rendezvous::Store {
 public:
  GlooStoreAdapter(eplb::Store& store, std::string prefix, Deadline deadline)
      : store_(store), prefix_(std::move(prefix)), deadline_(deadline) {}

  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override;

 private:
  eplb::Store& store_;
  std::string prefix_;
  Deadline deadline_;
};

}  // namespace eplb::bootstrap
