// The message of what `f` throws ("" when it throws nothing), for tests that
// check what an error says.
#pragma once

#include <exception>
#include <functional>
#include <string>

namespace eplb::test {

inline std::string ErrorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace eplb::test
