// libFuzzer target for the parsers of the files eplb reads: load files
// (io::ParseLoadText) and placements (io::ParsePlacementText), on the same
// bytes. Refusal (InvalidArgument) is the normal outcome for bad input, as
// long as its message stays short (a message that grows with the input
// echoes it). Anything else is a finding: another exception type (it escapes
// and aborts), a crash, a sanitizer report (ASan, UBSan), a timeout.
//
//   bash scripts/fuzz.sh [SECONDS]
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "eplb/error.h"
#include "io/files.h"

namespace {

// Longer than any message eplb writes for a bad file named "fuzz".
constexpr size_t kMaxMessage = 1024;

template <typename F>
void ExpectParsedOrRefused(const char* parser, F&& parse) {
  try {
    parse();
  } catch (const eplb::InvalidArgument& e) {
    if (std::strlen(e.what()) > kMaxMessage) {
      std::fprintf(stderr, "%s: a refusal's message is %zu bytes (at most %zu): it echoes the "
                   "input\n", parser, std::strlen(e.what()), kMaxMessage);
      std::abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  ExpectParsedOrRefused("ParseLoadText", [&] { eplb::io::ParseLoadText(text, "fuzz"); });
  ExpectParsedOrRefused("ParsePlacementText",
                        [&] { eplb::io::ParsePlacementText(text, "fuzz", std::nullopt); });
  return 0;
}
