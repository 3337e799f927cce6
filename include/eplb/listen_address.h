// Where a rank listens for its peers: one address of this host, never every
// interface. Gloo's TCP device binds to it, and NIXL's UCX TCP transport is
// given its interface (UCX_NET_DEVICES), so ranks on other hosts can reach
// this one and nothing listens on interfaces the run does not use.
//
// The address, first rule that applies:
//   1. EPLB_LISTEN_ADDR: an address of this host ("10.0.0.5", "fd00::5") or
//      the name of one of its interfaces ("eth0": its first IPv4 address,
//      else its first global IPv6 one). 0.0.0.0 and :: are refused.
//   2. The store named in the environment (EPLB_STORE, else MASTER_ADDR and
//      MASTER_PORT; bootstrap.h) is a Redis server on another host: the
//      address of the interface that routes to it (the kernel's choice for a
//      socket connected to it; no packet is sent). Ranks that reach one
//      store reach each other the same way.
//   3. Otherwise (a file store, a store on this host, no store named):
//      loopback, 127.0.0.1: every rank on this machine.
// Gloo's own settings (GlooOptions::hostname / iface, EPLB_GLOO_IFACE,
// GLOO_SOCKET_IFNAME, EPLB_GLOO_HOSTNAME) still come first for Gloo.
#pragma once

#include <string>

#include "eplb/bootstrap.h"
#include "eplb/export.h"

namespace eplb {

struct EPLB_EXPORT ListenAddress {
  std::string address;    // numeric: "10.231.7.1", "127.0.0.1", "fd00::5"
  std::string interface;  // the interface that holds it ("eth0", "lo"); empty if none does
  std::string reason;     // why this one: "EPLB_LISTEN_ADDR", "the interface that routes to ..."
  bool loopback() const;
  // "10.231.7.1 (eth0: the interface that routes to the store's host 10.231.7.250)"
  std::string Describe() const;
};

// The rules above over `lookup`. Throws InvalidArgument when EPLB_LISTEN_ADDR
// is not an address or interface of this host (the message lists this host's
// addresses) or names every interface, and Error (layer "bootstrap",
// operation "listen address") when the store's host cannot be resolved or
// no route leads to it.
EPLB_EXPORT ListenAddress ChooseListenAddress(const EnvLookup& lookup);

// The rules over this process's environment. Logs the choice (info level)
// the first time and whenever it changes.
EPLB_EXPORT ListenAddress ChooseListenAddress();

}  // namespace eplb
