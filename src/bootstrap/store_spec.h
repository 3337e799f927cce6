// The parts of a store spec ("file:DIR", "redis://HOST[:PORT]") that more
// than the store needs: the Redis server's address, for the listen address
// (a rank listens on the interface that routes to the store's host).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace eplb::bootstrap {

constexpr std::string_view kFileScheme = "file:";
constexpr std::string_view kRedisScheme = "redis://";

struct RedisAddress {
  std::string host;  // a name or an address; IPv6 without brackets
  int port = 6379;
};

// The server of a "redis://" spec; nullopt for any other scheme. Throws
// InvalidArgument naming the spec when it is malformed (no host, a bad port,
// an unclosed '[').
std::optional<RedisAddress> ParseRedisSpec(std::string_view spec);

}  // namespace eplb::bootstrap
