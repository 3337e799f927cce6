// The job token: making one, checking one.
#include "eplb/bootstrap.h"
#include "eplb/error.h"
#include "util/mac.h"

namespace eplb {

std::string GenerateJobToken() { return util::Hex(util::RandomBytes(32)); }

void CheckJobToken(std::string_view token, std::string_view source) {
  const std::string how = " (a job token is " + std::to_string(kMinJobTokenChars) + " to " +
                          std::to_string(kMaxJobTokenChars) +
                          " characters from [A-Za-z0-9._~+/=-], e.g. `openssl rand -hex 32`)";
  if (token.size() < kMinJobTokenChars || token.size() > kMaxJobTokenChars) {
    throw InvalidArgument(std::string(source) + " has " + std::to_string(token.size()) + " characters" + how);
  }
  for (size_t i = 0; i < token.size(); ++i) {
    const char c = token[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '~' || c == '+' || c == '/' || c == '=' || c == '-';
    if (!ok) {
      throw InvalidArgument(std::string(source) + ": character " + std::to_string(i + 1) +
                            " is not allowed" + how);
    }
  }
}

}  // namespace eplb
