#include "comm/process_liveness.h"

#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <optional>
#include <sstream>

#include "comm/host_identity.h"
#include "wire/codec.h"

namespace eplb::comm {
namespace {


std::string PidNamespace() {
  char buf[128] = {};
  const ssize_t n = ::readlink("/proc/self/ns/pid", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

struct Stat {
  char state = '?';
  uint64_t start_ticks = 0;
};

// /proc/<pid>/stat: "pid (comm) state ppid ... starttime(22) ...". The
// command name may hold spaces and parentheses, so fields are counted from
// the last ')'.
std::optional<Stat> ReadStat(int32_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!in || !std::getline(in, text)) return std::nullopt;
  const auto close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(text.substr(close + 1));
  Stat s;
  fields >> s.state;
  std::string skip;
  for (int field = 4; field < 22 && fields >> skip; ++field) {
  }
  if (!(fields >> s.start_ticks)) return std::nullopt;
  return s;
}

}  // namespace

std::vector<uint8_t> ProcessIdentity::Encode() const {
  return wire::Writer(wire::Kind::kLiveness)
      .PutString(host)
      .PutString(boot_id)
      .PutString(pid_namespace)
      .Put(pid)
      .Put(start_ticks)
      .Take();
}

ProcessIdentity ProcessIdentity::Decode(std::span<const uint8_t> bytes, const std::string& layer,
                                        const std::string& operation, int rank, int peer) {
  wire::Reader r(bytes, wire::Kind::kLiveness, {layer, operation, rank, peer});
  ProcessIdentity p;
  p.host = r.GetString(wire::kMaxNameBytes);
  p.boot_id = r.GetString(wire::kMaxNameBytes);
  p.pid_namespace = r.GetString(wire::kMaxNameBytes);
  p.pid = r.Get<int32_t>();
  p.start_ticks = r.Get<uint64_t>();
  r.Finish();
  if (p.pid <= 0) r.Fail("process id " + std::to_string(p.pid));
  return p;
}

ProcessIdentity ThisProcess() {
  ProcessIdentity p;
  p.host = HostName();
  p.boot_id = BootId();
  p.pid_namespace = PidNamespace();
  p.pid = static_cast<int32_t>(::getpid());
  if (auto s = ReadStat(p.pid)) p.start_ticks = s->start_ticks;
  return p;
}

Liveness CheckProcess(const ProcessIdentity& process) {
  static const ProcessIdentity self = ThisProcess();
  if (process.host != self.host || process.boot_id.empty() || process.boot_id != self.boot_id ||
      process.pid_namespace.empty() || process.pid_namespace != self.pid_namespace || process.start_ticks == 0)
    return Liveness::kUnknown;
  const auto stat = ReadStat(process.pid);
  if (!stat) {
    // No /proc entry: gone, unless /proc itself cannot be read here.
    return ::access("/proc/self/stat", R_OK) == 0 ? Liveness::kGone : Liveness::kUnknown;
  }
  if (stat->start_ticks != process.start_ticks) return Liveness::kGone;  // the PID was reused
  if (stat->state == 'Z' || stat->state == 'X' || stat->state == 'x') return Liveness::kGone;
  return Liveness::kAlive;
}

const char* LivenessName(Liveness liveness) {
  switch (liveness) {
    case Liveness::kAlive: return "alive";
    case Liveness::kGone: return "gone";
    case Liveness::kUnknown: return "unknown";
  }
  return "unknown";
}

}  // namespace eplb::comm
