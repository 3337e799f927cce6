// A key-value store over a directory, for tests that fork ranks: each key is
// a file written atomically (temporary file + rename); Get polls until the
// file appears or the deadline passes. Test-only: the product's stores live
// in src/bootstrap (file / Redis, over Gloo).
#pragma once

#include <memory>
#include <string>

#include "eplb/store.h"

namespace eplb::test {

std::shared_ptr<Store> MakeDirStore(const std::string& dir);

}  // namespace eplb::test
