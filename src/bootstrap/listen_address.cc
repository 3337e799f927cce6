// ChooseListenAddress (listen_address.h): an explicit address or interface,
// the interface that routes to a remote store, or loopback.
#include "eplb/listen_address.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "bootstrap/store_spec.h"
#include "eplb/error.h"
#include "util/mutex.h"

namespace eplb {
namespace {

constexpr const char* kLayer = "bootstrap";
constexpr const char* kOperation = "listen address";

struct Interface {
  std::string name;
  std::string address;  // numeric
  int family;
  bool link_local;
};

std::string Numeric(const sockaddr* sa) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (sa->sa_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, buf, sizeof buf);
  } else if (sa->sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, buf, sizeof buf);
  }
  return buf;
}

// This host's interface addresses (IPv4 and IPv6), in getifaddrs' order.
std::vector<Interface> Interfaces() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0)
    throw Error(kLayer, kOperation, std::string("getifaddrs: ") + std::strerror(errno));
  std::unique_ptr<ifaddrs, void (*)(ifaddrs*)> guard(list, freeifaddrs);
  std::vector<Interface> out;
  for (const ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    const int family = i->ifa_addr->sa_family;
    if (family != AF_INET && family != AF_INET6) continue;
    const bool link_local =
        family == AF_INET6 && IN6_IS_ADDR_LINKLOCAL(&reinterpret_cast<const sockaddr_in6*>(i->ifa_addr)->sin6_addr);
    out.push_back({i->ifa_name, Numeric(i->ifa_addr), family, link_local});
  }
  return out;
}

std::string ListInterfaces(const std::vector<Interface>& all) {
  std::string s;
  for (const Interface& i : all) s += (s.empty() ? "" : ", ") + i.name + " " + i.address;
  return s.empty() ? "none" : s;
}

std::string InterfaceOf(const std::string& address) {
  for (const Interface& i : Interfaces())
    if (i.address == address) return i.name;
  return "";
}

ListenAddress Loopback(std::string reason) { return {"127.0.0.1", InterfaceOf("127.0.0.1"), std::move(reason)}; }

// The explicit setting: an address of this host or one of its interfaces.
ListenAddress Explicit(const std::string& value) {
  const std::string what = "EPLB_LISTEN_ADDR=" + value;
  in6_addr v6;
  in_addr v4;
  const bool is_v4 = inet_pton(AF_INET, value.c_str(), &v4) == 1;
  const bool is_v6 = !is_v4 && inet_pton(AF_INET6, value.c_str(), &v6) == 1;
  if ((is_v4 && v4.s_addr == htonl(INADDR_ANY)) || (is_v6 && IN6_IS_ADDR_UNSPECIFIED(&v6)))
    throw InvalidArgument(what + " would listen on every interface; name one address or interface of this host");
  const std::vector<Interface> all = Interfaces();
  if (is_v4 || is_v6) {
    // Compare in one spelling: inet_ntop's.
    char canon[INET6_ADDRSTRLEN] = {};
    inet_ntop(is_v4 ? AF_INET : AF_INET6, is_v4 ? static_cast<const void*>(&v4) : &v6, canon, sizeof canon);
    for (const Interface& i : all)
      if (i.address == canon) return {canon, i.name, "EPLB_LISTEN_ADDR"};
    throw InvalidArgument(what + " is not an address of this host (its addresses: " + ListInterfaces(all) + ")");
  }
  // An interface name: its first IPv4 address, else its first global IPv6 one.
  for (int family : {AF_INET, AF_INET6})
    for (const Interface& i : all)
      if (i.name == value && i.family == family && !i.link_local)
        return {i.address, i.name, "EPLB_LISTEN_ADDR"};
  throw InvalidArgument(what + " is neither an address nor an interface of this host with an address (its "
                        "addresses: " + ListInterfaces(all) + ")");
}

bool IsLoopback(const sockaddr* sa) {
  if (sa->sa_family == AF_INET)
    return (ntohl(reinterpret_cast<const sockaddr_in*>(sa)->sin_addr.s_addr) >> 24) == 127;
  if (sa->sa_family == AF_INET6) return IN6_IS_ADDR_LOOPBACK(&reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr);
  return false;
}

// The local address the kernel would use to reach host:port: a UDP socket
// connected to it (connect on a datagram socket only picks the route).
ListenAddress Routed(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0)
    throw Error(kLayer, kOperation,
                "cannot resolve the store's host '" + host + "': " + gai_strerror(rc) +
                    "; set EPLB_LISTEN_ADDR to this host's address");
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> guard(found, freeaddrinfo);
  const std::string store = Numeric(found->ai_addr);
  const std::string named = store == host ? host : host + " (" + store + ")";
  if (IsLoopback(found->ai_addr)) return Loopback("the store's host " + named + " is this machine's loopback");
  const int fd = ::socket(found->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw Error(kLayer, kOperation, std::string("socket: ") + std::strerror(errno));
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  const bool routed = ::connect(fd, found->ai_addr, found->ai_addrlen) == 0 &&
                      ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0;
  const int err = errno;
  ::close(fd);
  if (!routed)
    throw Error(kLayer, kOperation,
                "no route to the store's host " + named + ": " + std::strerror(err) +
                    "; set EPLB_LISTEN_ADDR to this host's address");
  const std::string address = Numeric(reinterpret_cast<const sockaddr*>(&local));
  if (IsLoopback(reinterpret_cast<const sockaddr*>(&local)))
    return Loopback("the store's host " + named + " is reached over loopback");
  return {address, InterfaceOf(address), "the interface that routes to the store's host " + named};
}

}  // namespace

bool ListenAddress::loopback() const {
  return address.rfind("127.", 0) == 0 || address == "::1";
}

std::string ListenAddress::Describe() const {
  return address + " (" + (interface.empty() ? "" : interface + ": ") + reason + ")";
}

ListenAddress ChooseListenAddress(const EnvLookup& lookup) {
  if (auto v = lookup("EPLB_LISTEN_ADDR"); v && !v->empty()) return Explicit(*v);
  const LaunchEnv env = ParseLaunchEnv(lookup);
  std::string spec;
  try {
    spec = ResolveStoreSpec("", env);
  } catch (const InvalidArgument&) {
    return Loopback("no store in the environment: every rank on this machine");
  }
  const auto redis = bootstrap::ParseRedisSpec(spec);
  if (!redis) return Loopback("a file store: every rank on this machine");
  return Routed(redis->host, redis->port);
}

ListenAddress ChooseListenAddress() {
  ListenAddress chosen = ChooseListenAddress([](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  });
  // Logged once per process, and again only when the environment changed it.
  struct Logged {
    util::Mutex mu;
    std::string text GUARDED_BY(mu);
  };
  static Logged logged;
  const std::string text = chosen.Describe();
  util::MutexLock lock(&logged.mu);
  if (text != logged.text) {
    spdlog::info("eplb: listening on {}", text);
    logged.text = text;
  }
  return chosen;
}

}  // namespace eplb
