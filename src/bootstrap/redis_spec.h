// "redis://[user[:password]@]HOST[:PORT]": where the Redis server is and
// what to AUTH with. Credentials come from the URL or, where it has none,
// from EPLB_REDIS_USER / EPLB_REDIS_PASSWORD, so a password can stay out of
// command lines and logs. "rediss://" (TLS) is refused: Debian 12's hiredis
// (0.14.1) has no TLS support (hiredis_ssl came with hiredis 1.0).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "eplb/bootstrap.h"

namespace eplb::bootstrap {

constexpr size_t kMaxRedisUserBytes = 256;
constexpr size_t kMaxRedisPasswordBytes = 1024;
constexpr size_t kMaxSpecChars = 4096;

struct RedisSpec {
  std::string host;
  int port = 6379;
  RedisAuth auth;
};

// True when `spec` names a Redis server (redis:// or rediss://).
bool IsRedisSpec(std::string_view spec);

// Parses a Redis spec; `lookup` reads the environment fallbacks. Throws
// InvalidArgument naming the problem, with the spec redacted (RedactSpec).
RedisSpec ParseRedisSpec(std::string_view spec, const EnvLookup& lookup);

// The spec with its password replaced by "***", for messages.
std::string RedactSpec(std::string_view spec);

}  // namespace eplb::bootstrap
