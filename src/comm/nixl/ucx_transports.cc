#include "comm/nixl/ucx_transports.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "eplb/error.h"
#include "util/mutex.h"

namespace eplb::comm {

int YamaPtraceScope() {
  std::ifstream in("/proc/sys/kernel/yama/ptrace_scope");
  int scope = -1;
  if (!(in >> scope)) return -1;
  return scope;
}

std::vector<std::pair<std::string, std::string>> ParseUcxParams(const std::string& text) {
  constexpr size_t kMaxEntries = 32, kMaxChars = 256;
  std::vector<std::pair<std::string, std::string>> out;
  auto bad = [&](const std::string& why) {
    return InvalidArgument("EPLB_NIXL_UCX_PARAMS='" + text.substr(0, kMaxChars) + "': " + why +
                           " (expected key=value[,key=value...])");
  };
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    const std::string entry = text.substr(start, end - start);
    const size_t eq = entry.find('=');
    if (eq == std::string::npos || eq == 0) throw bad("entry '" + entry.substr(0, kMaxChars) + "' has no key=");
    if (eq > kMaxChars || entry.size() - eq - 1 > kMaxChars)
      throw bad("a key or value is longer than 256 characters");
    out.emplace_back(entry.substr(0, eq), entry.substr(eq + 1));
    if (out.size() > kMaxEntries) throw bad("more than 32 entries");
    start = end + 1;
  }
  return out;
}

namespace {

bool HasNvidiaDriver() {
  struct stat st;
  return ::stat("/dev/nvidiactl", &st) == 0;
}

}  // namespace

std::string DescribeUcxTransports() {
  std::string host;
  if (const char* tls = std::getenv("UCX_TLS"); tls != nullptr && *tls != '\0') {
    host = std::string("UCX_TLS=") + tls + " (set by the user)";
  } else if (const int scope = YamaPtraceScope(); scope >= 1) {
    host = "host memory: cma excluded (Yama ptrace_scope=" + std::to_string(scope) +
           " refuses it between sibling processes), READs and control over tcp";
  } else {
    host = "host memory: READs over cma (zero-copy), control over tcp (shared memory is excluded by "
           "NIXL's peer-failure mode)";
  }
  if (!HasNvidiaDriver()) return host;
  const char* get = std::getenv("UCX_CUDA_IPC_ENABLE_GET_ZCOPY");
  return host + "; GPU memory: READs over cuda_ipc" +
         (get == nullptr ? " (UCX_CUDA_IPC_ENABLE_GET_ZCOPY=y)" : std::string(" (UCX_CUDA_IPC_ENABLE_GET_ZCOPY=") + get + ")");
}

std::string ChooseUcxTransports() {
  static const std::string choice = [] {
    const std::string description = DescribeUcxTransports();
    // UCX turns cuda_ipc's get (a READ of a peer's GPU memory) off where it
    // sees no NVLink, e.g. two ranks on one GPU, and then emulates the READ
    // in software over TCP: measured on an H200, 0.2 GB/s instead of
    // 360-910 GB/s. Our protocol is READs only, so it is turned on.
    // Only where a GPU driver is: without one UCX loads no CUDA module and
    // warns, on stdout, about a variable nothing reads.
    if (HasNvidiaDriver()) ::setenv("UCX_CUDA_IPC_ENABLE_GET_ZCOPY", "y", /*overwrite=*/0);
    // UCX logs to stdout by default, which is the engine's (and `eplb demo
    // --json`'s) output: a teardown warning after a peer was killed ("object
    // ... was not returned to mpool") broke the demo's JSON report. Logs go
    // to stderr, with everything else's, unless the user says otherwise.
    ::setenv("UCX_LOG_FILE", "stderr", /*overwrite=*/0);
    const char* tls = std::getenv("UCX_TLS");
    if ((tls == nullptr || *tls == '\0') && YamaPtraceScope() >= 1) ::setenv("UCX_TLS", "^cma", /*overwrite=*/0);
    return description;
  }();
  return choice;
}

std::string UcxNetDevices(const ListenAddress& listen) {
  if (listen.interface.empty()) return "";
  std::vector<std::string> rdma;
  std::error_code ec;
  for (const auto& dev : std::filesystem::directory_iterator("/sys/class/infiniband", ec)) {
    std::error_code port_ec;
    for (const auto& port : std::filesystem::directory_iterator(dev.path() / "ports", port_ec))
      rdma.push_back(dev.path().filename().string() + ":" + port.path().filename().string());
  }
  std::sort(rdma.begin(), rdma.end());
  std::string out = listen.interface;
  for (const auto& d : rdma) out += "," + d;
  return out;
}

std::string ChooseUcxNetDevices(const ListenAddress& listen) {
  // The value eplb set last: replaced when the listen address changes (a
  // value the user set is never touched).
  struct Ours {
    util::Mutex mu;
    std::string value GUARDED_BY(mu);
  };
  static Ours state;
  util::MutexLock lock(&state.mu);
  std::string& ours = state.value;
  const char* current = std::getenv("UCX_NET_DEVICES");
  if (current != nullptr && *current != '\0' && ours != current)
    return std::string("UCX_NET_DEVICES=") + current + " (set by the user)";
  const std::string devices = UcxNetDevices(listen);
  if (devices.empty()) {
    if (!ours.empty()) ::unsetenv("UCX_NET_DEVICES");
    ours.clear();
    return "every interface (" + listen.address + " is on none)";
  }
  ::setenv("UCX_NET_DEVICES", devices.c_str(), /*overwrite=*/1);
  ours = devices;
  return devices + " (" + listen.interface + ": the listen interface" +
         (devices != listen.interface ? "; RDMA ports" : "") + ")";
}

}  // namespace eplb::comm
