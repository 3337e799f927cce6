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
//   EPLB_STORE                store spec: "file:DIR" or
//                             "redis://[user[:password]@]HOST[:PORT]"
//   EPLB_RUN_ID               names the run (else TORCHELASTIC_RUN_ID, else
//                             "default"); keys live under "eplb/<run id>/"
//   EPLB_JOB_TOKEN            the run's secret (job token), shared by every
//                             rank and by no one else: keys then live under a
//                             prefix derived from it and every value carries
//                             its HMAC (MakeTokenStore). Unset: the run is
//                             open to anyone who can reach its store and ports
//                             (a warning says so once; README "Security")
//   EPLB_REDIS_USER, EPLB_REDIS_PASSWORD  Redis credentials when the store
//                             spec has none (OpenStore)
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
  std::string job_token;       // EPLB_JOB_TOKEN, empty when unset (checked by CheckJobToken)
};

// Bounds of a job token, in characters: at least 128 bits written in hex.
constexpr size_t kMinJobTokenChars = 32;
constexpr size_t kMaxJobTokenChars = 256;

// A fresh job token: 64 hexadecimal digits of 32 bytes from the kernel's
// random source (getrandom(2)). A launcher makes one per run and gives it to
// its ranks in EPLB_JOB_TOKEN (eplb demo does).
EPLB_EXPORT std::string GenerateJobToken();

// Throws InvalidArgument naming `source` (e.g. "EPLB_JOB_TOKEN") when `token`
// is shorter than kMinJobTokenChars, longer than kMaxJobTokenChars, or holds
// a character outside [A-Za-z0-9._~+/=-] (hex, base64 and base64url pass).
// The message names the length or the position of the bad character, never
// the token.
EPLB_EXPORT void CheckJobToken(std::string_view token, std::string_view source);

// Looks an environment variable up; nullopt when unset.
using EnvLookup = std::function<std::optional<std::string>(const char* name)>;

// Parses the variables above. Neither RANK nor WORLD_SIZE set: a single
// process (rank 0 of 1). Throws InvalidArgument naming the variable when one
// is set without the other, is not an integer, or is out of range (rank
// outside [0, WORLD_SIZE), port outside [1, 65535], MASTER_PORT without
// MASTER_ADDR, a run id with characters other than [A-Za-z0-9._-], a job
// token CheckJobToken refuses).
EPLB_EXPORT LaunchEnv ParseLaunchEnv(const EnvLookup& lookup);
// ParseLaunchEnv over this process's environment.
EPLB_EXPORT LaunchEnv ReadLaunchEnv();

// Gloo's FileStore in `dir` (created if missing). Write-once keys: setting a
// key twice throws Error (layer "store"). For one machine or a shared FS.
EPLB_EXPORT std::shared_ptr<Store> MakeFileStore(const std::string& dir);

// Credentials for a Redis server that requires them (requirepass, ACL).
struct EPLB_EXPORT RedisAuth {
  std::string user;      // an ACL user; empty: the default user ("AUTH password")
  std::string password;  // empty: no AUTH is sent
};

// Gloo's RedisStore on a running redis-server. Throws Error (layer "store",
// operation "connect") naming the address when it cannot connect within 2 s,
// (operation "auth") when the server refuses the credentials, and
// (operation "connect") when it requires credentials and none were given;
// messages never hold the password. Write-once keys like the file store; a
// command that gets no answer within 5 s fails instead of hanging.
EPLB_EXPORT std::shared_ptr<Store> MakeRedisStore(const std::string& host, int port, const RedisAuth& auth = {});

// Every key of `base` under `prefix`, so runs and groups sharing a store never
// see each other's keys.
EPLB_EXPORT std::shared_ptr<Store> MakePrefixStore(std::shared_ptr<Store> base, std::string prefix);

// The store spec to use: `spec` when given, else env.store_spec (EPLB_STORE),
// else "redis://MASTER_ADDR:MASTER_PORT" when the launcher set both. Note that
// torchrun's MASTER_PORT is PyTorch's own TCPStore, not Redis: under torchrun,
// run a redis-server on another port and name it in EPLB_STORE. Throws
// InvalidArgument saying how to name a store when there is none.
EPLB_EXPORT std::string ResolveStoreSpec(std::string_view spec, const LaunchEnv& env);

// Opens "file:DIR" or "redis://[user[:password]@]HOST[:PORT]" (port 6379 by
// default; IPv6 hosts in brackets; user and password %-escaped where they
// hold ':', '@' or '%'). Without credentials in the URL, EPLB_REDIS_USER and
// EPLB_REDIS_PASSWORD give them. "rediss://" (TLS) is refused, saying why
// (Debian 12's hiredis has no TLS). Throws InvalidArgument on a malformed
// spec, with the password shown as "***".
EPLB_EXPORT std::shared_ptr<Store> OpenStore(std::string_view spec);

// The run's store over `base`, for a run whose processes share `token`
// (CheckJobToken): every key under `prefix` + "t-<tag>/", the tag 128 bits
// of an HMAC of the token (nobody without the token can name, and so read or
// pre-write, a key of the run), and every value behind an HMAC-SHA256 tag of
// its key and bytes under a key derived from the token. A value without a
// valid tag (written by someone without the token) is foreign: it is never
// returned, a warning names its key once, and the key moves on to a next
// slot every rank of the run finds the same way, so a foreign value written
// first cannot stand in for a peer's (SetIfAbsent still gives every rank the
// same value). After 8 foreign values in a row at one key, the operation
// throws Error (layer "store") saying so. RunKey() gives keys derived from the
// token. Values stay readable to whoever can read the store: protect the
// store itself (file store folder 0700, Redis AUTH).
EPLB_EXPORT std::shared_ptr<Store> MakeTokenStore(std::shared_ptr<Store> base, std::string prefix,
                                                  std::string_view token);

// The store of one run: OpenStore(ResolveStoreSpec(spec, env)) with every key
// under "eplb/<env.run_id>/", and with env.job_token set, MakeTokenStore
// under that prefix. Without a token the first call logs a warning that the
// run's keys and Gloo connections are open to local processes. A run id
// reused on a Redis server that still holds the old run's keys makes the
// first Set fail, naming the key.
EPLB_EXPORT std::shared_ptr<Store> OpenRunStore(std::string_view spec, const LaunchEnv& env);

}  // namespace eplb
