// Store specs ("file:DIR", "redis://...": redis_spec.h) and the run's store.
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <mutex>

#include "bootstrap/redis_spec.h"
#include "bootstrap/store_spec.h"
#include "eplb/bootstrap.h"
#include "eplb/error.h"

namespace eplb {
namespace {

constexpr std::string_view kFile = bootstrap::kFileScheme;
constexpr std::string_view kRedis = bootstrap::kRedisScheme;

std::string FormatRedis(const std::string& host, int port) {
  bool v6 = host.find(':') != std::string::npos;
  return std::string(kRedis) + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

}  // namespace

std::string ResolveStoreSpec(std::string_view spec, const LaunchEnv& env) {
  if (!spec.empty()) return std::string(spec);
  if (!env.store_spec.empty()) return env.store_spec;
  if (!env.master_addr.empty() && env.master_port != 0) {
    return FormatRedis(env.master_addr, env.master_port);
  }
  throw InvalidArgument(
      "no store to bootstrap through: pass a store spec (file:DIR or redis://[user[:password]@]HOST:PORT), "
      "set EPLB_STORE, or set MASTER_ADDR and MASTER_PORT to a redis-server");
}

namespace bootstrap {

std::optional<RedisAddress> ParseRedisSpec(std::string_view spec) {
  if (!IsRedisSpec(spec)) return std::nullopt;
  // The server's address only: credentials are not looked up here.
  const RedisSpec r = ParseRedisSpec(spec, [](const char*) -> std::optional<std::string> { return std::nullopt; });
  return RedisAddress{r.host, r.port};
}

}  // namespace bootstrap

std::shared_ptr<Store> OpenStore(std::string_view spec) {
  if (spec.substr(0, kFile.size()) == kFile) {
    std::string dir(spec.substr(kFile.size()));
    if (dir.empty()) throw InvalidArgument("store spec '" + std::string(spec) + "': no directory");
    return MakeFileStore(dir);
  }
  if (bootstrap::IsRedisSpec(spec)) {
    const auto redis = bootstrap::ParseRedisSpec(spec, [](const char* name) -> std::optional<std::string> {
      const char* v = std::getenv(name);
      if (v == nullptr) return std::nullopt;
      return std::string(v);
    });
    return MakeRedisStore(redis.host, redis.port, redis.auth);
  }
  throw InvalidArgument("store spec '" + bootstrap::RedactSpec(spec) +
                        "': expected file:DIR or redis://[user[:password]@]HOST[:PORT]");
}

std::shared_ptr<Store> OpenRunStore(std::string_view spec, const LaunchEnv& env) {
  std::shared_ptr<Store> base = OpenStore(ResolveStoreSpec(spec, env));
  const std::string prefix = "eplb/" + env.run_id + "/";
  if (!env.job_token.empty()) return MakeTokenStore(std::move(base), prefix, env.job_token);
  // An engine launched as before keeps working; that the run is open is
  // said once per process.
  static std::once_flag warned;
  std::call_once(warned, [&] {
    spdlog::warn("eplb: no EPLB_JOB_TOKEN: this run's {} store keys and Gloo connections are open to any "
                 "process that can reach them (read the ranks' addresses, write the balancer's decisions, "
                 "connect as a peer); give every rank the same secret in EPLB_JOB_TOKEN, e.g. "
                 "`openssl rand -hex 32` (README \"Security\")",
                 base->kind());
  });
  return MakePrefixStore(std::move(base), prefix);
}

}  // namespace eplb
