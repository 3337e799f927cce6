// What a failure reported by Gloo means. Gloo reports a timeout and a broken
// connection with the same exception type (gloo::IoException) and tells them
// apart only in its message, so the messages of the linked Gloo are matched
// here and nowhere else; tests/gloo_errors_test.cc pins them by making the
// real library time out.
#pragma once

#include <exception>
#include <string_view>

namespace eplb::gloo_backend {

// True when Gloo's message says a wait ran out of time (a receive or send
// wait, a connect, a socket read or write, a store wait), false for every
// other failure (a connection closed by the peer, a refused connect).
bool IsGlooTimeout(std::string_view message);
bool IsGlooTimeout(const std::exception& e);

}  // namespace eplb::gloo_backend
