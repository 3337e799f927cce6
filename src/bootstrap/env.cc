// Torchrun-style launch environment -> LaunchEnv.
#include <charconv>
#include <cstdlib>

#include "eplb/bootstrap.h"
#include "eplb/error.h"

namespace eplb {
namespace {

int ParseInt(const char* name, const std::string& text, long lo, long hi) {
  long value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end) {
    throw InvalidArgument(std::string(name) + "='" + text + "' is not an integer");
  }
  if (value < lo || value > hi) {
    throw InvalidArgument(std::string(name) + "=" + text + " is out of range [" +
                          std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return static_cast<int>(value);
}

}  // namespace

LaunchEnv ParseLaunchEnv(const EnvLookup& lookup) {
  LaunchEnv env;
  auto rank = lookup("RANK");
  auto world = lookup("WORLD_SIZE");
  if (rank.has_value() != world.has_value()) {
    throw InvalidArgument(std::string(rank ? "RANK" : "WORLD_SIZE") + " is set but " +
                          (rank ? "WORLD_SIZE" : "RANK") + " is not; a launcher sets both");
  }
  if (rank) {
    env.world_size = ParseInt("WORLD_SIZE", *world, 1, 1 << 20);
    env.rank = ParseInt("RANK", *rank, 0, env.world_size - 1);
    env.from_launcher = true;
  }
  env.local_world_size = env.world_size;
  if (auto v = lookup("LOCAL_WORLD_SIZE")) {
    env.local_world_size = ParseInt("LOCAL_WORLD_SIZE", *v, 1, env.world_size);
  }
  env.local_rank = env.rank % env.local_world_size;
  if (auto v = lookup("LOCAL_RANK")) {
    env.local_rank = ParseInt("LOCAL_RANK", *v, 0, env.local_world_size - 1);
  }
  auto addr = lookup("MASTER_ADDR");
  auto port = lookup("MASTER_PORT");
  if (port && !addr) throw InvalidArgument("MASTER_PORT is set but MASTER_ADDR is not");
  if (addr) {
    if (addr->empty()) throw InvalidArgument("MASTER_ADDR is empty");
    env.master_addr = *addr;
  }
  if (port) env.master_port = ParseInt("MASTER_PORT", *port, 1, 65535);
  if (auto v = lookup("EPLB_STORE")) env.store_spec = *v;
  auto run = lookup("EPLB_RUN_ID");
  if (!run) run = lookup("TORCHELASTIC_RUN_ID");
  if (run) {
    if (run->empty()) throw InvalidArgument("EPLB_RUN_ID / TORCHELASTIC_RUN_ID is empty");
    for (char c : *run) {
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '.' || c == '_' || c == '-';
      if (!ok) {
        throw InvalidArgument("run id '" + *run +
                              "' may only hold letters, digits, '.', '_' and '-'");
      }
    }
    env.run_id = *run;
  }
  if (auto v = lookup("EPLB_JOB_TOKEN")) {
    CheckJobToken(*v, "EPLB_JOB_TOKEN");
    env.job_token = *v;
  }
  return env;
}

LaunchEnv ReadLaunchEnv() {
  return ParseLaunchEnv([](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  });
}

}  // namespace eplb
