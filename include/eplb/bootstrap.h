// Bootstrap: how the ranks of one run find each other (DESIGN.md layer 6).
//
// A run's ranks share a key-value store (store.h): a file store in a
// directory every rank can reach (one machine or a shared file system), or a
// Redis server (many machines). Launchers describe the run with torchrun-style
// environment variables; ReadLaunchEnv turns them into a LaunchEnv and
// OpenRunStore into the store, every key under a prefix unique to the run.
//
// Environment variables read:
//   RANK, WORLD_SIZE          this process's rank and the number of ranks
//   LOCAL_RANK, LOCAL_WORLD_SIZE  rank on this node and ranks on this node
//   MASTER_ADDR, MASTER_PORT  where the run's store lives when no store spec
//                             is given: a Redis server at that address
//   EPLB_STORE                store spec: "file:DIR" or "redis://HOST[:PORT]"
//   EPLB_RUN_ID               names the run (else TORCHELASTIC_RUN_ID, else
//                             "default"); keys live under "eplb/<run id>/"
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "eplb/export.h"
#include "eplb/store.h"

namespace eplb {

struct EPLB_EXPORT LaunchEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;        // LOCAL_RANK, else rank (one node)
  int local_world_size = 1;  // LOCAL_WORLD_SIZE, else world_size (one node)
  bool from_launcher = false;  // RANK and WORLD_SIZE were set
  std::string master_addr;     // empty when unset
  int master_port = 0;         // 0 when unset
  std::string store_spec;      // EPLB_STORE, empty when unset
  std::string run_id = "default";
};

// Looks an environment variable up; nullopt when unset.
using EnvLookup = std::function<std::optional<std::string>(const char* name)>;

// Parses the variables above. Neither RANK nor WORLD_SIZE set: a single
// process (rank 0 of 1). Throws InvalidArgument naming the variable when one
// is set without the other, is not an integer, or is out of range (rank
// outside [0, WORLD_SIZE), port outside [1, 65535], MASTER_PORT without
// MASTER_ADDR, a run id with characters other than [A-Za-z0-9._-]).
EPLB_EXPORT LaunchEnv ParseLaunchEnv(const EnvLookup& lookup);
// ParseLaunchEnv over this process's environment.
EPLB_EXPORT LaunchEnv ReadLaunchEnv();

// Gloo's FileStore in `dir` (created if missing). Write-once keys: setting a
// key twice throws Error (layer "store"). For one machine or a shared FS.
EPLB_EXPORT std::shared_ptr<Store> MakeFileStore(const std::string& dir);

// Gloo's RedisStore on a running redis-server. Throws Error (layer "store",
// operation "connect") naming the address when it cannot connect within 2 s.
// Write-once keys like the file store; a command that gets no answer within
// 5 s fails instead of hanging.
EPLB_EXPORT std::shared_ptr<Store> MakeRedisStore(const std::string& host, int port);

// Every key of `base` under `prefix`, so runs and groups sharing a store never
// see each other's keys.
EPLB_EXPORT std::shared_ptr<Store> MakePrefixStore(std::shared_ptr<Store> base, std::string prefix);

// The store spec to use: `spec` when given, else env.store_spec (EPLB_STORE),
// else "redis://MASTER_ADDR:MASTER_PORT" when the launcher set both. Note that
// torchrun's MASTER_PORT is PyTorch's own TCPStore, not Redis: under torchrun,
// run a redis-server on another port and name it in EPLB_STORE. Throws
// InvalidArgument saying how to name a store when there is none.
EPLB_EXPORT std::string ResolveStoreSpec(std::string_view spec, const LaunchEnv& env);

// Opens "file:DIR" or "redis://HOST[:PORT]" (port 6379 by default; IPv6
// hosts in brackets). Throws InvalidArgument on a malformed spec.
EPLB_EXPORT std::shared_ptr<Store> OpenStore(std::string_view spec);

// The store of one run: OpenStore(ResolveStoreSpec(spec, env)) with every key
// under "eplb/<env.run_id>/". A run id reused on a Redis server that still
// holds the old run's keys makes the first Set fail, naming the key.
EPLB_EXPORT std::shared_ptr<Store> OpenRunStore(std::string_view spec, const LaunchEnv& env);

}  // namespace eplb
