// The Gloo backend: a Communicator and a ControlGroup over Gloo's TCP
// transport (DESIGN.md: `gloo`, always available, the safe fallback).
//
// Ranks meet through a Store (bootstrap.h). Each group is a full mesh of TCP
// connections made by Gloo's rendezvous, with keys under
// "<name>/g<generation>/". A Gloo timeout closes every connection of the rank
// that timed out; the group then rebuilds itself under a new generation at
// the next call, on every rank, so one stalled call does not end the run. A
// peer that dies is detected by its closed connections and named in the error.
#pragma once

#include <memory>
#include <string>

#include "eplb/export.h"
#include "eplb/communicator.h"
#include "eplb/control_group.h"
#include "eplb/deadline.h"
#include "eplb/store.h"

namespace eplb {

struct EPLB_EXPORT GlooOptions {
  // The run's store (OpenRunStore); shared, kept for rebuilds.
  std::shared_ptr<Store> store;
  int rank = -1;
  int world_size = 0;
  // Key namespace of this group in the store. Groups sharing a store need
  // distinct names; every rank of a group uses the same one.
  std::string name = "gloo";
  // Where this rank listens: a host name or address, or a network interface.
  // Both empty: $EPLB_GLOO_IFACE / $GLOO_SOCKET_IFNAME, else
  // $EPLB_GLOO_HOSTNAME, else ChooseListenAddress() (listen_address.h:
  // $EPLB_LISTEN_ADDR, the interface that routes to a remote store, else
  // 127.0.0.1, loopback: every rank on this machine).
  std::string hostname;
  std::string iface;
  // After a step fails (a timeout, or a peer's connection lost with no note
  // of why), wait up to 250 ms for the other ranks' leave notes and name in
  // the error those that left none: the ranks lost, e.g. every rank of a host
  // cut off. For groups whose ranks all take part in every step (an engine's
  // per-step group); off, a failure is reported at once naming one peer.
  bool name_lost_peers = false;
};

// Connects the group (collective: every rank calls it with the same name and
// world_size) and returns the `gloo` communicator. Moves host memory
// directly and CUDA device memory through pinned host buffers
// (src/comm/gloo/device_staging.h); registering device memory throws
// InvalidArgument on every rank when any rank cannot stage it (built without
// CUDA, device not visible). Throws TimeoutError naming the ranks that did not
// arrive by `deadline`.
// A communicator is used by one thread at a time.
EPLB_EXPORT std::unique_ptr<Communicator> ConnectGlooCommunicator(const GlooOptions& options, Deadline deadline);

// Connects a control group (collective, like ConnectGlooCommunicator).
EPLB_EXPORT std::unique_ptr<ControlGroup> ConnectGlooControlGroup(const GlooOptions& options, Deadline deadline);

}  // namespace eplb
