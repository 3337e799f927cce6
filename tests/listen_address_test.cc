// Where a rank listens (listen_address.h): loopback for a store on this
// machine, the interface that routes to a remote store, or the explicit
// EPLB_LISTEN_ADDR (an address or an interface of this host, never every
// interface); Gloo's options follow it. The routed case across hosts runs
// for real in the multi-host tests (tests/multihost, MultiHost.*).
#include "eplb/listen_address.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdlib.h>

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "comm/gloo/mesh.h"
#include "eplb/bootstrap.h"
#include "eplb/error.h"

namespace eplb {
namespace {

EnvLookup Env(std::map<std::string, std::string> vars) {
  return [vars](const char* name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

// The first IPv4 address of this machine outside loopback, with its interface.
std::optional<std::pair<std::string, std::string>> NonLoopbackAddress() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return std::nullopt;
  std::unique_ptr<ifaddrs, void (*)(ifaddrs*)> guard(list, freeifaddrs);
  for (const ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    const auto* in = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
    if ((ntohl(in->sin_addr.s_addr) >> 24) == 127) continue;
    char buf[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
    return std::make_pair(std::string(buf), std::string(i->ifa_name));
  }
  return std::nullopt;
}

TEST(ListenAddress, LoopbackWithoutAStoreAFileStoreOrALocalRedis) {
  for (const auto& vars : std::vector<std::map<std::string, std::string>>{
           {},
           {{"EPLB_STORE", "file:/tmp/somewhere"}},
           {{"EPLB_STORE", "redis://127.0.0.1:6379"}},
           {{"EPLB_STORE", "redis://[::1]:6379"}},
           {{"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "6379"}}}) {
    const ListenAddress a = ChooseListenAddress(Env(vars));
    EXPECT_EQ(a.address, "127.0.0.1") << a.Describe();
    EXPECT_TRUE(a.loopback());
    EXPECT_EQ(a.interface, "lo") << a.Describe();
    EXPECT_FALSE(a.reason.empty());
  }
}

TEST(ListenAddress, TheInterfaceThatRoutesToARemoteStore) {
  const auto own = NonLoopbackAddress();
  if (!own) GTEST_SKIP() << "this machine has no IPv4 address outside loopback";
  // The store at this machine's own address: the kernel routes to it from
  // that address, which other hosts reach too.
  for (const auto& vars : std::vector<std::map<std::string, std::string>>{
           {{"EPLB_STORE", "redis://" + own->first + ":6379"}},
           {{"MASTER_ADDR", own->first}, {"MASTER_PORT", "29500"}}}) {
    const ListenAddress a = ChooseListenAddress(Env(vars));
    EXPECT_EQ(a.address, own->first) << a.Describe();
    EXPECT_EQ(a.interface, own->second) << a.Describe();
    EXPECT_NE(a.reason.find("routes to the store's host " + own->first), std::string::npos) << a.reason;
    EXPECT_FALSE(a.loopback());
  }
}

TEST(ListenAddress, ExplicitAddressOrInterfaceComesFirst) {
  ListenAddress a = ChooseListenAddress(Env({{"EPLB_LISTEN_ADDR", "127.0.0.1"}, {"EPLB_STORE", "redis://10.1.2.3"}}));
  EXPECT_EQ(a.address, "127.0.0.1");
  EXPECT_EQ(a.reason, "EPLB_LISTEN_ADDR");
  a = ChooseListenAddress(Env({{"EPLB_LISTEN_ADDR", "lo"}}));
  EXPECT_EQ(a.address, "127.0.0.1");
  EXPECT_EQ(a.interface, "lo");
  if (const auto own = NonLoopbackAddress()) {
    a = ChooseListenAddress(Env({{"EPLB_LISTEN_ADDR", own->second}}));
    EXPECT_EQ(a.address, own->first) << a.Describe();
  }
}

TEST(ListenAddress, RefusesEveryInterfaceAndAddressesOfOtherHosts) {
  for (const char* any : {"0.0.0.0", "::", "0:0::0"}) {
    try {
      ChooseListenAddress(Env({{"EPLB_LISTEN_ADDR", any}}));
      ADD_FAILURE() << any << " was accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("every interface"), std::string::npos) << e.what();
    }
  }
  try {
    ChooseListenAddress(Env({{"EPLB_LISTEN_ADDR", "192.0.2.254"}}));  // TEST-NET-1
    ADD_FAILURE() << "an address of no interface here was accepted";
  } catch (const InvalidArgument& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("not an address of this host"), std::string::npos) << m;
    EXPECT_NE(m.find("lo 127.0.0.1"), std::string::npos) << "the message should list this host's addresses: " << m;
  }
  EXPECT_THROW(ChooseListenAddress(Env({{"EPLB_LISTEN_ADDR", "nosuchif0"}})), InvalidArgument);
  EXPECT_THROW(ChooseListenAddress(Env({{"EPLB_STORE", "redis://"}})), InvalidArgument);
}

// Gloo's own settings first, then the listen address (here: from the environment).
TEST(ListenAddress, GlooListensThere) {
  GlooOptions o;
  o.store = MakeFileStore(::testing::TempDir() + "/listen-address-store");
  o.rank = 0;
  o.world_size = 1;
  ::unsetenv("EPLB_GLOO_IFACE");
  ::unsetenv("GLOO_SOCKET_IFNAME");
  ::unsetenv("EPLB_GLOO_HOSTNAME");
  ::setenv("EPLB_LISTEN_ADDR", "lo", 1);
  EXPECT_EQ(gloo_backend::ResolveGlooOptions(o).hostname, "127.0.0.1");
  ::setenv("EPLB_LISTEN_ADDR", "0.0.0.0", 1);
  EXPECT_THROW(gloo_backend::ResolveGlooOptions(o), InvalidArgument);
  ::setenv("EPLB_GLOO_HOSTNAME", "127.0.0.1", 1);  // Gloo's own setting wins
  EXPECT_EQ(gloo_backend::ResolveGlooOptions(o).hostname, "127.0.0.1");
  ::unsetenv("EPLB_GLOO_HOSTNAME");
  ::unsetenv("EPLB_LISTEN_ADDR");
}

}  // namespace
}  // namespace eplb
