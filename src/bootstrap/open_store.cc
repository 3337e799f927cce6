// Store specs ("file:DIR", "redis://HOST[:PORT]") and the run's store.
#include <charconv>

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
      "no store to bootstrap through: pass a store spec (file:DIR or redis://HOST:PORT), "
      "set EPLB_STORE, or set MASTER_ADDR and MASTER_PORT to a redis-server");
}

namespace bootstrap {

std::optional<RedisAddress> ParseRedisSpec(std::string_view spec) {
  if (spec.substr(0, kRedis.size()) != kRedis) return std::nullopt;
  std::string_view rest = spec.substr(kRedis.size());
  while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  RedisAddress out;
  std::string_view port_text;
  bool has_port = false;
  if (!rest.empty() && rest.front() == '[') {
    auto close = rest.find(']');
    if (close == std::string_view::npos) {
      throw InvalidArgument("store spec '" + std::string(spec) + "': unclosed '[' in host");
    }
    out.host = std::string(rest.substr(1, close - 1));
    rest = rest.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        throw InvalidArgument("store spec '" + std::string(spec) + "': expected ':PORT' after ']'");
      }
      has_port = true;
      port_text = rest.substr(1);
    }
  } else {
    auto colon = rest.rfind(':');
    out.host = std::string(rest.substr(0, colon));
    if (colon != std::string_view::npos) {
      has_port = true;
      port_text = rest.substr(colon + 1);
    }
  }
  if (out.host.empty()) throw InvalidArgument("store spec '" + std::string(spec) + "': no host");
  if (has_port) {
    const char* end = port_text.data() + port_text.size();
    auto [ptr, ec] = std::from_chars(port_text.data(), end, out.port);
    if (port_text.empty() || ec != std::errc() || ptr != end || out.port < 1 || out.port > 65535) {
      throw InvalidArgument("store spec '" + std::string(spec) + "': bad port '" +
                            std::string(port_text) + "'");
    }
  }
  return out;
}

}  // namespace bootstrap

std::shared_ptr<Store> OpenStore(std::string_view spec) {
  if (spec.substr(0, kFile.size()) == kFile) {
    std::string dir(spec.substr(kFile.size()));
    if (dir.empty()) throw InvalidArgument("store spec '" + std::string(spec) + "': no directory");
    return MakeFileStore(dir);
  }
  if (auto redis = bootstrap::ParseRedisSpec(spec)) return MakeRedisStore(redis->host, redis->port);
  throw InvalidArgument("store spec '" + std::string(spec) +
                        "': expected file:DIR or redis://HOST[:PORT]");
}

std::shared_ptr<Store> OpenRunStore(std::string_view spec, const LaunchEnv& env) {
  return MakePrefixStore(OpenStore(ResolveStoreSpec(spec, env)), "eplb/" + env.run_id + "/");
}

}  // namespace eplb
