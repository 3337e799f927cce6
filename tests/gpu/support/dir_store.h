// A minimal eplb::Store over a directory (one file per key), for the GPU
// suite's multi-process tests on one machine. Test-only: the library's own
// stores (Gloo FileStore, Redis) come from the bootstrap layer.
#pragma once

#include <string>

#include "eplb/store.h"

namespace eplb::test {

class DirStore : public Store {
 public:
  explicit DirStore(std::string dir);
  std::string_view kind() const override { return "test-dir"; }
  // Writes to a temporary file, then renames it into place: a reader sees the
  // whole value or nothing.
  void Set(const std::string& key, std::span<const uint8_t> value) override;
  // Polls for the file; TimeoutError (layer "store") naming the key.
  std::vector<uint8_t> Get(const std::string& key, Deadline deadline) override;

 private:
  std::string PathOf(const std::string& key) const;
  std::string dir_;
};

}  // namespace eplb::test
