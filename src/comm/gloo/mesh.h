// A group of ranks connected by Gloo over TCP, with the lifecycle every Gloo
// group in eplb needs: rendezvous through an eplb::Store under a deadline,
// one collective step at a time, and a rebuild after failures that every rank
// agrees on without a coordinator.
//
// Steps. Each collective call is a Step with a sequence number (the same on
// every rank: the n-th call of the group). A step first swaps a sync token
// with every peer (the step's number, operation and a check value such as a
// hash of the transfer list), so ranks that are out of step, or call with
// different arguments, fail at once with an error instead of exchanging the
// wrong bytes. The token also touches every connection on every step, which is
// how a rank learns that a peer has left.
//
// Failures and rebuilds. When a wait times out Gloo closes every connection of
// the rank; when a connection breaks the peer is gone or has left. Either way
// the rank *leaves* its generation: it writes a leave note "left/<rank>"
// under the generation's keys (the step at which it will rendezvous again, the
// peer it blames, why), then closes its connections, and throws. Its
// peers see the closed connections: a peer still inside the same step fails
// too and leaves for the next step; a peer already in a later step (its part
// of the failed step had completed) reads the note, sees that the leaver is
// rendezvousing at this very step, and rebuilds in place, retrying the step.
// A rank without a context rendezvouses at the start of its next step under
// generation "g<step>". So after any failure every live rank meets again at
// the same step, and the group works again from there.
//
// Liveness. Gloo notices a peer that died when its connection closes, but not
// in a receive it is already filling: that wait would run to the deadline.
// So every rank publishes its process identity (process_liveness.h) when the
// mesh is made, and a watcher thread checks, every kWatchInterval while a
// step has ops in flight, the processes of the peers those ops wait on; the
// waits on a peer whose process is gone are aborted, and the step fails at
// once naming it. A rendezvous checks the same way for ranks that have not
// arrived, and when it times out names the rank that is gone, or else the
// one that left no note (the others left blaming someone).
#pragma once

#include <gloo/context.h>
#include <gloo/transport/device.h>
#include <gloo/transport/unbound_buffer.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "comm/process_liveness.h"
#include "eplb/deadline.h"
#include "eplb/gloo.h"
#include "eplb/store.h"
#include "util/mutex.h"

namespace eplb::gloo_backend {

// Slot of item `index` of step `seq`. Slot 0 carries sync tokens; a step has
// kMaxItems slots of its own.
constexpr uint64_t kSyncSlot = 0;
constexpr uint64_t kMaxItems = uint64_t{1} << 24;
inline uint64_t Slot(uint64_t seq, uint64_t index) { return (seq << 24) | index; }

// The sends and receives a step posts. Posting never blocks; Wait does.
// Thread-safe: a step may post and wait from two threads (device staging
// sends from a thread of its own while the step's thread receives).
class Ops {
 public:
  // Posts a send of `bytes` at `data` to `peer` into `slot` (the receiver
  // posts Recv with the same slot; several ops on one slot between the same
  // two ranks match in the order they were posted). `label`/`index` name the
  // item in errors ("transfer", 12). The memory must stay valid until the op
  // was waited for. Returns the op's handle for WaitOne.
  size_t Send(int peer, uint64_t slot, const void* data, size_t bytes, const char* label,
              int64_t index);
  size_t Recv(int peer, uint64_t slot, void* data, size_t bytes, const char* label, int64_t index);
  // Waits for one op (once; its memory may then be reused), bounded by `deadline`.
  void WaitOne(size_t handle, Deadline deadline) EXCLUDES(mutex_);
  // Waits for every op posted so far and not yet waited for.
  void Wait(Deadline deadline) EXCLUDES(mutex_);

  size_t pending() const EXCLUDES(mutex_);
  // Peers that ops not yet waited for wait on.
  std::vector<int> PendingPeers() const EXCLUDES(mutex_);
  // Fails every op with `peer` (a wait in progress returns at once, later
  // posts and waits fail) with `reason` ("rank 2's process (pid 41) is gone").
  void AbortPeer(int peer, const std::string& reason) EXCLUDES(mutex_);

 private:
  friend class Mesh;
  struct Op {
    std::unique_ptr<gloo::transport::UnboundBuffer> buffer;
    int peer;
    bool send;
    size_t bytes;
    const char* label;
    int64_t index;
    bool waited = false;
  };
  explicit Ops(gloo::Context& context) : context_(context) {}
  std::string Describe(const Op& op) const;
  size_t Post(Op op, uint64_t slot) EXCLUDES(mutex_);

  gloo::Context& context_;
  mutable util::Mutex mutex_;
  // A deque: references stay valid while others are added (an op's buffer
  // is posted and waited on outside the lock, through such a reference).
  std::deque<Op> ops_ GUARDED_BY(mutex_);
  size_t waited_ GUARDED_BY(mutex_) = 0;  // ops waited for
  std::vector<std::pair<int, std::string>> aborted_ GUARDED_BY(mutex_);  // (peer, reason)
};

// How often the watcher looks at the processes of peers a step waits on: a
// death is noticed within about this long.
constexpr std::chrono::milliseconds kWatchInterval{200};
// How long a rank whose step timed out waits for the other ranks' leave
// notes before naming the silent ones as lost.
constexpr std::chrono::milliseconds kSilentGrace{250};

class Mesh {
 public:
  // Rendezvous of generation 0 (collective). Throws TimeoutError naming the
  // ranks that did not arrive by `deadline`.
  Mesh(const GlooOptions& options, Deadline deadline);
  ~Mesh();
  Mesh(const Mesh&) = delete;
  Mesh& operator=(const Mesh&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& name() const { return name_; }
  // Generation of the current connections (the step that made them).
  uint64_t generation() const { return generation_; }
  // Rendezvous made after the first one.
  int rebuilds() const { return rebuilds_; }

  // Runs one collective step: rebuilds the connections first when they are
  // gone, swaps sync tokens carrying (operation code, check), then lets `body`
  // post (and optionally wait for) its ops, then waits for all of them.
  // `operation` names the step in errors ("execute", "barrier", ...). Throws
  // TimeoutError / Error (layer "gloo") naming this rank, the peer and the
  // operation. Not thread-safe: one step at a time.
  void Step(const char* operation, uint32_t op_code, uint64_t check, Deadline deadline,
            const std::function<void(Ops& ops, uint64_t seq)>& body);

 private:
  struct Note {
    uint64_t rejoin_at = 0;
    int blamed = -1;
    std::string reason;
  };
  std::string Keys(uint64_t generation) const;
  // The rendezvous of `generation`; errors name `operation` (the step that
  // rebuilds the group, or "rendezvous" for the first one).
  void Connect(uint64_t generation, Deadline deadline, const char* operation);
  // Notes in the store, under the generation's `keys`, that this rank's
  // rendezvous failed and why, so peers awaiting it stop at once.
  void NoteFailure(const std::string& keys, const std::string& why);
  // Why `peer` will not complete the rendezvous under `keys` (its note, or
  // its process gone); nullopt while it may. Called from another thread.
  std::optional<std::string> PeerFailure(const std::string& keys, int peer);
  // Why the ranks in `missing` did not arrive at generation `generation`'s
  // rendezvous, and the one to blame (-1: none stands out).
  std::pair<std::string, int> ExplainMissing(const std::vector<int>& missing, Deadline deadline);
  // The peer's published process identity (read from the store once).
  const comm::ProcessIdentity* PeerProcess(int peer, Deadline deadline) EXCLUDES(watch_mutex_);
  // "rank 2's process (pid 41) is gone" when the peer's process is gone.
  std::optional<std::string> Gone(int peer, Deadline deadline) EXCLUDES(watch_mutex_);
  void Watch() EXCLUDES(watch_mutex_);
  // Writes this rank's leave note and closes the connections; false when
  // the note could not be written (the store is unreachable).
  bool Leave(uint64_t rejoin_at, int blamed, const std::string& reason);
  // After a timeout: the other ranks that leave a note within kSilentGrace
  // (they gave up too) and those that do not (the ranks lost), as text for
  // the error.
  std::string SilentPeers();
  std::optional<Note> ReadNote(int peer, Deadline deadline);

  std::shared_ptr<Store> store_;
  int rank_;
  int size_;
  std::string name_;
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::Context> context_;  // null after a failure until the next step
  uint64_t generation_ = 0;
  uint64_t seq_ = 0;
  int rebuilds_ = 0;
  bool connected_once_ = false;
  bool name_lost_peers_ = false;  // GlooOptions::name_lost_peers

  util::Mutex watch_mutex_;
  util::CondVar watch_cv_;
  Ops* watched_ GUARDED_BY(watch_mutex_) = nullptr;  // the ops of the step in progress
  bool stopping_ GUARDED_BY(watch_mutex_) = false;
  // Per rank, once read; an entry once set is never reset, so a pointer to
  // it stays valid without the lock.
  std::vector<std::optional<comm::ProcessIdentity>> peers_ GUARDED_BY(watch_mutex_);
  std::thread watcher_;  // last: started when everything above exists
};

// Options with the environment defaults of GlooOptions applied; throws
// InvalidArgument on a missing store or a rank outside [0, world_size).
GlooOptions ResolveGlooOptions(const GlooOptions& options);

}  // namespace eplb::gloo_backend
