#include "comm/nixl/ucx_transports.h"

#include <cstdlib>
#include <fstream>

namespace eplb::comm {

int YamaPtraceScope() {
  std::ifstream in("/proc/sys/kernel/yama/ptrace_scope");
  int scope = -1;
  if (!(in >> scope)) return -1;
  return scope;
}

std::string ChooseUcxTransports() {
  static const std::string choice = [] {
    if (const char* tls = std::getenv("UCX_TLS"); tls != nullptr && *tls != '\0')
      return std::string("UCX_TLS=") + tls + " (set by the user)";
    const int scope = YamaPtraceScope();
    if (scope >= 1) {
      ::setenv("UCX_TLS", "^cma", /*overwrite=*/0);
      return "cma excluded (Yama ptrace_scope=" + std::to_string(scope) +
             " refuses it between sibling processes): READs and control over tcp";
    }
    return std::string(
        "UCX's choice: READs over cma (zero-copy), control over tcp (shared memory is excluded by "
        "NIXL's peer-failure mode)");
  }();
  return choice;
}

}  // namespace eplb::comm
