#include "bootstrap/redis_spec.h"

#include <charconv>

#include "eplb/error.h"

namespace eplb::bootstrap {
namespace {

constexpr std::string_view kRedis = "redis://";
constexpr std::string_view kRedisTls = "rediss://";

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decodes one part of the URL's user information; `what` names it
// ("user", "password") in errors, which never show the text.
std::string Decode(std::string_view text, const char* what, size_t max_bytes, const std::string& shown) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '%') {
      if (i + 2 >= text.size() || HexDigit(text[i + 1]) < 0 || HexDigit(text[i + 2]) < 0) {
        throw InvalidArgument("store spec '" + shown + "': the " + what + " has a bad %-escape at character " +
                              std::to_string(i + 1) + " (write %XX with two hex digits)");
      }
      c = static_cast<char>(HexDigit(text[i + 1]) * 16 + HexDigit(text[i + 2]));
      i += 2;
    }
    if (c == '\0') throw InvalidArgument("store spec '" + shown + "': the " + what + " holds a NUL byte");
    out.push_back(c);
  }
  if (out.size() > max_bytes) {
    throw InvalidArgument("store spec '" + shown + "': the " + what + " has " + std::to_string(out.size()) +
                          " bytes, more than " + std::to_string(max_bytes));
  }
  return out;
}

void CheckCredential(const std::string& value, const char* name, size_t max_bytes) {
  if (value.size() > max_bytes)
    throw InvalidArgument(std::string(name) + " has " + std::to_string(value.size()) + " bytes, more than " +
                          std::to_string(max_bytes));
}

}  // namespace

bool IsRedisSpec(std::string_view spec) {
  return spec.substr(0, kRedis.size()) == kRedis || spec.substr(0, kRedisTls.size()) == kRedisTls;
}

std::string RedactSpec(std::string_view spec) {
  const size_t scheme = spec.find("://");
  if (scheme == std::string_view::npos) return std::string(spec);
  const size_t at = spec.rfind('@');
  if (at == std::string_view::npos || at < scheme) return std::string(spec);
  const std::string_view info = spec.substr(scheme + 3, at - scheme - 3);
  const size_t colon = info.find(':');
  if (colon == std::string_view::npos) return std::string(spec);  // a user alone
  return std::string(spec.substr(0, scheme + 3)) + std::string(info.substr(0, colon)) + ":***" +
         std::string(spec.substr(at));
}

RedisSpec ParseRedisSpec(std::string_view spec, const EnvLookup& lookup) {
  if (spec.size() > kMaxSpecChars)
    throw InvalidArgument("store spec has " + std::to_string(spec.size()) + " characters, more than " +
                          std::to_string(kMaxSpecChars));
  const std::string shown = RedactSpec(spec);
  if (spec.substr(0, kRedisTls.size()) == kRedisTls) {
    throw InvalidArgument("store spec '" + shown +
                          "': TLS to Redis (rediss://) is not supported: Debian 12's hiredis (0.14.1) has no TLS "
                          "(hiredis_ssl came with hiredis 1.0), and eplb carries no TLS client of its own. Reach "
                          "the server over loopback or a private network with AUTH (redis://user:password@host), "
                          "or through a TLS tunnel that listens on loopback (stunnel, spiped)");
  }
  if (spec.substr(0, kRedis.size()) != kRedis)
    throw InvalidArgument("store spec '" + shown + "': expected redis://[user[:password]@]HOST[:PORT]");
  std::string_view rest = spec.substr(kRedis.size());
  while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  RedisSpec out;
  std::optional<std::string> user, password;
  // The last '@' ends the user information: a host holds none.
  if (const size_t at = rest.rfind('@'); at != std::string_view::npos) {
    const std::string_view info = rest.substr(0, at);
    rest = rest.substr(at + 1);
    const size_t colon = info.find(':');
    user = Decode(info.substr(0, colon), "user", kMaxRedisUserBytes, shown);
    if (colon != std::string_view::npos) password = Decode(info.substr(colon + 1), "password", kMaxRedisPasswordBytes, shown);
    if (user->empty()) user.reset();  // redis://:password@host: the default user
  }
  if (!user) {
    if (auto v = lookup("EPLB_REDIS_USER"); v && !v->empty()) {
      CheckCredential(*v, "EPLB_REDIS_USER", kMaxRedisUserBytes);
      user = *v;
    }
  }
  if (!password) {
    if (auto v = lookup("EPLB_REDIS_PASSWORD"); v && !v->empty()) {
      CheckCredential(*v, "EPLB_REDIS_PASSWORD", kMaxRedisPasswordBytes);
      password = *v;
    }
  }
  if (user && !password) {
    throw InvalidArgument("store spec '" + shown + "': Redis user '" + *user +
                          "' has no password (give it in the URL or in EPLB_REDIS_PASSWORD)");
  }
  if (password && password->empty())
    throw InvalidArgument("store spec '" + shown + "': the Redis password is empty");
  out.auth.user = user.value_or("");
  out.auth.password = password.value_or("");

  std::string_view port_text;
  bool has_port = false;
  if (!rest.empty() && rest.front() == '[') {
    const size_t close = rest.find(']');
    if (close == std::string_view::npos) throw InvalidArgument("store spec '" + shown + "': unclosed '[' in host");
    out.host = std::string(rest.substr(1, close - 1));
    rest = rest.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') throw InvalidArgument("store spec '" + shown + "': expected ':PORT' after ']'");
      has_port = true;
      port_text = rest.substr(1);
    }
  } else {
    const size_t colon = rest.rfind(':');
    out.host = std::string(rest.substr(0, colon));
    if (colon != std::string_view::npos) {
      has_port = true;
      port_text = rest.substr(colon + 1);
    }
  }
  if (out.host.empty()) throw InvalidArgument("store spec '" + shown + "': no host");
  if (has_port) {
    const char* end = port_text.data() + port_text.size();
    auto [ptr, ec] = std::from_chars(port_text.data(), end, out.port);
    if (port_text.empty() || ec != std::errc() || ptr != end || out.port < 1 || out.port > 65535)
      throw InvalidArgument("store spec '" + shown + "': bad port '" + std::string(port_text) + "'");
  }
  return out;
}

}  // namespace eplb::bootstrap
