#include "comm/gloo/gloo_errors.h"

#include <array>

namespace eplb::gloo_backend {

bool IsGlooTimeout(std::string_view message) {
  // Gloo 0.5 (Debian 12): UnboundBuffer's waits ("Timed out waiting 50ms for
  // recv operation to complete"), Pair's connect, read and write ("Connect
  // timeout", "Read timeout", "Write timeout") and the rendezvous store's
  // wait ("Wait timeout for key(s)").
  constexpr std::array<std::string_view, 5> kTimeouts = {"Timed out waiting", "Connect timeout", "Read timeout",
                                                         "Write timeout", "Wait timeout"};
  for (std::string_view t : kTimeouts)
    if (message.find(t) != std::string_view::npos) return true;
  return false;
}

bool IsGlooTimeout(const std::exception& e) { return IsGlooTimeout(std::string_view(e.what())); }

}  // namespace eplb::gloo_backend
