#include "comm/gloo/mesh.h"

#include <gloo/rendezvous/context.h>
#include <gloo/transport/tcp/device.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>

#include "bootstrap/gloo_store.h"
#include "comm/gloo/gloo_errors.h"
#include "comm/gloo/pair_auth.h"
#include "eplb/error.h"
#include "eplb/listen_address.h"
#include "io/sigpipe.h"
#include "util/text.h"
#include "wire/codec.h"

namespace eplb::gloo_backend {
namespace {

using util::RankList;

// What every rank sends every peer at the start of a step: the step's
// number, operation code and check value, encoded by the wire codec into a
// buffer of fixed size (the receive is posted before the bytes arrive).
constexpr size_t kTokenBytes = wire::kHeaderBytes + sizeof(uint32_t) + 2 * sizeof(uint64_t);
using TokenBytes = std::array<uint8_t, kTokenBytes>;

TokenBytes EncodeToken(uint32_t op_code, uint64_t seq, uint64_t check) {
  auto bytes = wire::Writer(wire::Kind::kSyncToken).Put(op_code).Put(seq).Put(check).Take();
  TokenBytes out{};
  std::copy(bytes.begin(), bytes.end(), out.begin());
  return out;
}

constexpr size_t kMaxReasonBytes = 4096;

// Why a wait failed, before it becomes an eplb error.
struct Failure {
  bool timeout = false;
  int peer = -1;
  std::string op;      // "the receive of 4096 B from rank 1 (transfer #3)"
  std::string detail;  // Gloo's message
};

std::string Ms(Clock::duration d) {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) + " ms";
}


// "rank 2's process (pid 41) is gone": why waits on a dead peer end.
std::string GoneText(int peer, const comm::ProcessIdentity& process) {
  return "rank " + std::to_string(peer) + "'s process (pid " + std::to_string(process.pid) + ") is gone";
}

const char* Env(const char* name) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? v : nullptr;
}

}  // namespace


GlooOptions ResolveGlooOptions(const GlooOptions& options) {
  GlooOptions o = options;
  if (!o.store) throw InvalidArgument("gloo: no store to rendezvous through");
  if (o.world_size < 1) throw InvalidArgument("gloo: world size must be at least 1");
  if (o.rank < 0 || o.rank >= o.world_size) {
    throw InvalidArgument("gloo: rank " + std::to_string(o.rank) + " outside [0, " +
                          std::to_string(o.world_size) + ")");
  }
  if (o.name.empty()) throw InvalidArgument("gloo: empty group name");
  if (o.hostname.empty() && o.iface.empty()) {
    if (const char* v = Env("EPLB_GLOO_IFACE")) {
      o.iface = v;
    } else if (const char* v = Env("GLOO_SOCKET_IFNAME")) {
      o.iface = v;
    } else if (const char* v = Env("EPLB_GLOO_HOSTNAME")) {
      o.hostname = v;
    } else {
      // EPLB_LISTEN_ADDR, the interface that routes to a remote store, or loopback.
      o.hostname = ChooseListenAddress().address;
    }
  }
  return o;
}

// --- Ops --------------------------------------------------------------------

std::string Ops::Describe(const Op& op) const {
  std::string s = std::string(op.send ? "the send of " : "the receive of ") + std::to_string(op.bytes) +
                  " B " + (op.send ? "to" : "from") + " rank " + std::to_string(op.peer) + " (" +
                  op.label;
  if (op.index >= 0) s += " #" + std::to_string(op.index);
  return s + ")";
}

size_t Ops::Post(Op op, uint64_t slot) {
  Op* posted;
  size_t handle;
  {
    util::MutexLock lock(&mutex_);
    for (const auto& [peer, reason] : aborted_)
      if (peer == op.peer) throw Failure{false, op.peer, Describe(op), reason};
    handle = ops_.size();
    ops_.push_back(std::move(op));
    posted = &ops_.back();
  }
  try {
    if (posted->send) {
      posted->buffer->send(posted->peer, slot, 0, posted->bytes);
    } else {
      posted->buffer->recv(posted->peer, slot, 0, posted->bytes);
    }
  } catch (const std::exception& e) {
    util::MutexLock lock(&mutex_);
    posted->waited = true;  // never posted: nothing to wait for
    ++waited_;
    throw Failure{false, posted->peer, Describe(*posted), e.what()};
  }
  return handle;
}

size_t Ops::Send(int peer, uint64_t slot, const void* data, size_t bytes, const char* label,
                 int64_t index) {
  return Post(Op{context_.createUnboundBuffer(const_cast<void*>(data), bytes), peer, true, bytes, label, index},
              slot);
}

size_t Ops::Recv(int peer, uint64_t slot, void* data, size_t bytes, const char* label, int64_t index) {
  return Post(Op{context_.createUnboundBuffer(data, bytes), peer, false, bytes, label, index}, slot);
}

size_t Ops::pending() const {
  util::MutexLock lock(&mutex_);
  return ops_.size() - waited_;
}

void Ops::WaitOne(size_t handle, Deadline deadline) {
  Op* op;
  {
    util::MutexLock lock(&mutex_);
    op = &ops_.at(handle);
    if (op->waited) return;
  }
  bool done = false;
  try {
    // A zero timeout still checks once (a non-positive wait_for returns the
    // predicate); Gloo's timeout then closes every connection of the rank.
    auto left = TimeLeft(deadline);
    done = op->send ? op->buffer->waitSend(nullptr, left) : op->buffer->waitRecv(nullptr, left);
  } catch (const std::exception& e) {
    throw Failure{IsGlooTimeout(e), op->peer, Describe(*op), e.what()};
  }
  util::MutexLock lock(&mutex_);
  if (!done) {
    std::string reason = "wait aborted";
    for (const auto& [peer, why] : aborted_)
      if (peer == op->peer) reason = why;
    throw Failure{false, op->peer, Describe(*op), reason};
  }
  op->waited = true;
  ++waited_;
}

std::vector<int> Ops::PendingPeers() const {
  util::MutexLock lock(&mutex_);
  std::vector<int> peers;
  for (const Op& op : ops_)
    if (!op.waited && std::find(peers.begin(), peers.end(), op.peer) == peers.end()) peers.push_back(op.peer);
  return peers;
}

void Ops::AbortPeer(int peer, const std::string& reason) {
  util::MutexLock lock(&mutex_);
  aborted_.emplace_back(peer, reason);
  for (Op& op : ops_) {
    if (op.waited || op.peer != peer) continue;
    // Makes a wait in progress (or the next one) return false.
    if (op.send) {
      op.buffer->abortWaitSend();
    } else {
      op.buffer->abortWaitRecv();
    }
  }
}

void Ops::Wait(Deadline deadline) {
  for (size_t i = 0;; ++i) {
    {
      util::MutexLock lock(&mutex_);
      if (i >= ops_.size()) return;
    }
    WaitOne(i, deadline);
  }
}

// --- Mesh -------------------------------------------------------------------

Mesh::Mesh(const GlooOptions& options, Deadline deadline) {
  GlooOptions o = ResolveGlooOptions(options);
  store_ = o.store;
  rank_ = o.rank;
  size_ = o.world_size;
  name_ = o.name;
  name_lost_peers_ = o.name_lost_peers;
  gloo::transport::tcp::attr attr;
  if (!o.iface.empty()) {
    attr.iface = o.iface;
  } else {
    attr.hostname = o.hostname;
  }
  try {
    // The device's I/O thread starts here and inherits SIGPIPE blocked.
    io::SigpipeBlock no_sigpipe;
    device_ = gloo::transport::tcp::CreateDevice(attr);
  } catch (const std::exception& e) {
    throw Error("gloo", "open_device",
                "cannot listen on " + (o.iface.empty() ? "host " + o.hostname : "interface " + o.iface) +
                    ": " + e.what(),
                rank_);
  }
  peers_.resize(size_);
  // Before arriving: a peer that sees this rank arrive can read it.
  store_->Set(name_ + "/process/" + std::to_string(rank_), comm::ThisProcess().Encode());
  Connect(0, deadline, "rendezvous");
  watcher_ = std::thread([this] { Watch(); });
}

// Destroying the context closes its connections gracefully (data already
// written is delivered before the peer sees the end of the stream).
Mesh::~Mesh() {
  {
    util::MutexLock lock(&watch_mutex_);
    stopping_ = true;
  }
  watch_cv_.NotifyAll();
  if (watcher_.joinable()) watcher_.join();
}

const comm::ProcessIdentity* Mesh::PeerProcess(int peer, Deadline deadline) {
  {
    util::MutexLock lock(&watch_mutex_);
    if (peers_[peer]) return &*peers_[peer];
  }
  comm::ProcessIdentity process;
  try {
    process = comm::ProcessIdentity::Decode(store_->Get(name_ + "/process/" + std::to_string(peer), deadline),
                                            "gloo", "read a peer's process identity", rank_, peer);
  } catch (const TimeoutError&) {
    return nullptr;  // not published yet
  }
  util::MutexLock lock(&watch_mutex_);
  peers_[peer] = std::move(process);
  return &*peers_[peer];  // never reset: the pointer stays valid
}

std::optional<std::string> Mesh::Gone(int peer, Deadline deadline) {
  const comm::ProcessIdentity* process = PeerProcess(peer, deadline);
  if (process == nullptr || comm::CheckProcess(*process) != comm::Liveness::kGone) return std::nullopt;
  return GoneText(peer, *process);
}

// Runs while the mesh lives: every kWatchInterval, checks the processes of
// the peers the step in progress waits on, and aborts the waits on a dead one.
void Mesh::Watch() {
  util::MutexLock lock(&watch_mutex_);
  while (!stopping_) {
    watch_cv_.WaitUntil(&watch_mutex_, Clock::now() + kWatchInterval);
    if (stopping_ || watched_ == nullptr) continue;
    // The step thread clears watched_ under this lock before its ops are
    // destroyed, so they outlive this pass.
    for (int peer : watched_->PendingPeers()) {
      if (peer < 0 || peer >= size_ || !peers_[peer]) continue;
      if (comm::CheckProcess(*peers_[peer]) != comm::Liveness::kGone) continue;
      const std::string reason = GoneText(peer, *peers_[peer]);
      spdlog::info("gloo: rank {} stops waiting on rank {} in group '{}': {}", rank_, peer, name_, reason);
      watched_->AbortPeer(peer, reason);
    }
  }
}

std::string Mesh::Keys(uint64_t generation) const {
  return name_ + "/g" + std::to_string(generation) + "/";
}

void Mesh::Connect(uint64_t generation, Deadline deadline, const char* operation) {
  const std::string keys = Keys(generation);
  const auto start = Clock::now();
  // Arrival first, so a rank that never comes is named (Gloo's own rendezvous
  // would only report a missing key).
  store_->SetString(keys + "arrived/" + std::to_string(rank_), "1");
  // Waits in slices of kWatchInterval, so that a rank whose process is gone
  // fails the rendezvous at once instead of at the deadline.
  std::vector<int> missing;
  for (int r = 0; r < size_; ++r)
    if (r != rank_) missing.push_back(r);
  for (;;) {
    // One pass waits kWatchInterval in all, however many ranks are missing.
    const Deadline pass = std::min(deadline, Clock::now() + kWatchInterval);
    std::vector<int> still;
    for (int r : missing) {
      try {
        store_->Get(keys + "arrived/" + std::to_string(r), pass);
      } catch (const TimeoutError&) {
        still.push_back(r);
      }
    }
    missing = std::move(still);
    if (missing.empty()) break;
    std::optional<std::string> gone;
    for (int r : missing)
      if ((gone = Gone(r, std::min(deadline, Clock::now() + std::chrono::milliseconds(1))))) break;
    if (gone || Expired(deadline)) {
      auto [why, blamed] = ExplainMissing(missing, deadline);
      auto detail = "rendezvous: " + std::string(missing.size() == 1 ? "rank " : "ranks ") + RankList(missing) +
                    " did not arrive within " + Ms(Clock::now() - start) + " (group '" + name_ +
                    "', generation " + std::to_string(generation) + ", " + std::string(store_->kind()) +
                    " store)" + why;
      if (gone) throw Error("gloo", operation, detail, rank_, blamed);
      throw TimeoutError("gloo", operation, detail, rank_, blamed);
    }
  }
  for (int r = 0; r < size_; ++r) {
    if (r != rank_ && PeerProcess(r, deadline) == nullptr)
      throw TimeoutError("gloo", operation,
                         "rendezvous: rank " + std::to_string(r) + " arrived but its process identity is not in the store",
                         rank_, r);
  }
  auto context = std::make_shared<gloo::rendezvous::Context>(rank_, size_);
  // Gloo waits up to 5x this for each of the size-1 connections in turn.
  auto per_pair = TimeLeft(deadline) / (5 * std::max(1, size_ - 1));
  context->setTimeout(std::max(per_pair, std::chrono::milliseconds(1)));
  bootstrap::GlooStoreAdapter adapter(*store_, keys + "mesh/", deadline);
  try {
    context->connectFullMesh(adapter, device_);
  } catch (const TimeoutError& e) {
    NoteFailure(keys, e.what());
    throw TimeoutError("gloo", operation,
                       "rendezvous: connecting group '" + name_ + "' (generation " + std::to_string(generation) +
                           "): " + e.what(),
                       rank_);
  } catch (const std::exception& e) {
    const bool timeout = IsGlooTimeout(e);
    std::string detail = "rendezvous: connecting group '" + name_ + "' (generation " + std::to_string(generation) +
                         ") after " + Ms(Clock::now() - start) + ": " + e.what();
    NoteFailure(keys, detail);
    if (timeout) throw TimeoutError("gloo", operation, detail, rank_);
    throw Error("gloo", operation, detail, rank_);
  }
  // With a job token: the other end of every connection proves it holds
  // it before anything it sent is used (pair_auth.h).
  if (const auto key = store_->RunKey("gloo-pair")) {
    try {
      ProvePairs(*context, *key, name_, generation, deadline, operation,
                 [&](int peer) { return PeerFailure(keys, peer); });
    } catch (const std::exception& e) {
      NoteFailure(keys, e.what());
      throw;
    }
  }
  context_ = std::move(context);
  generation_ = generation;
  if (connected_once_) {
    ++rebuilds_;
    spdlog::info("gloo: rank {} rebuilt group '{}' at step {} (generation {}) in {}", rank_, name_,
                 generation, generation, Ms(Clock::now() - start));
  }
  connected_once_ = true;
}

void Mesh::NoteFailure(const std::string& keys, const std::string& why) {
  try {
    store_->SetString(keys + "failed/" + std::to_string(rank_), why.substr(0, kMaxReasonBytes));
  } catch (const std::exception& e) {
    spdlog::debug("gloo: rank {} could not note its failed rendezvous of group '{}': {}", rank_, name_, e.what());
  }
}

std::optional<std::string> Mesh::PeerFailure(const std::string& keys, int peer) {
  const Deadline now = Clock::now();
  try {
    return "rank " + std::to_string(peer) + "'s rendezvous failed: " +
           store_->GetString(keys + "failed/" + std::to_string(peer), now);
  } catch (const TimeoutError&) {
  } catch (const std::exception& e) {
    return "rank " + std::to_string(peer) + "'s failure note cannot be read: " + std::string(e.what());
  }
  return Gone(peer, now);
}

std::pair<std::string, int> Mesh::ExplainMissing(const std::vector<int>& missing, Deadline deadline) {
  // The store knows: a rank that left the last generation wrote a note (and
  // may have exited since); a rank whose process is gone without a note is
  // the one that died; one with neither is stalled (or gone on another host).
  std::vector<int> dead, silent;
  std::string notes;
  for (int r : missing) {
    const auto no_wait = std::min(deadline, Clock::now() + std::chrono::milliseconds(1));
    std::optional<Note> note = connected_once_ ? ReadNote(r, no_wait) : std::nullopt;
    const bool gone = Gone(r, no_wait).has_value();
    if (note) {
      notes += "; rank " + std::to_string(r) + " left generation " + std::to_string(generation_) +
               (gone ? " and exited: " : ": ") + note->reason;
    } else if (gone) {
      dead.push_back(r);
    } else {
      silent.push_back(r);
    }
  }
  std::string why;
  int blamed = -1;
  if (!dead.empty()) {
    why += std::string(dead.size() == 1 ? "; the process of rank " : "; the processes of ranks ") +
           RankList(dead) + (dead.size() == 1 ? " is gone" : " are gone");
    blamed = dead[0];
  }
  if (!silent.empty()) {
    why += std::string(silent.size() == 1 ? "; rank " : "; ranks ") + RankList(silent) +
           (silent.size() == 1 ? " is alive or on another host and left no note (stalled?)"
                               : " are alive or on other hosts and left no note (stalled?)");
    if (blamed < 0 && silent.size() == 1) blamed = silent[0];
  }
  if (blamed < 0 && missing.size() == 1) blamed = missing[0];
  return {why + notes, blamed};
}

bool Mesh::Leave(uint64_t rejoin_at, int blamed, const std::string& reason) {
  if (!context_) return false;
  // The note goes first: a peer that sees the closed connections reads it.
  bool noted = true;
  try {
    store_->Set(Keys(generation_) + "left/" + std::to_string(rank_),
                wire::Writer(wire::Kind::kLeaveNote)
                    .Put(rejoin_at)
                    .Put(int32_t{blamed})
                    .PutString(reason.substr(0, kMaxReasonBytes))
                    .Take());
  } catch (const std::exception& e) {
    spdlog::warn("gloo: rank {} could not record leaving group '{}': {}", rank_, name_, e.what());
    noted = false;
  }
  // Callers have destroyed their ops: nothing holds the transport context
  // but this, so the connections close here, gracefully.
  context_.reset();
  return noted;
}

std::optional<Mesh::Note> Mesh::ReadNote(int peer, Deadline deadline) {
  try {
    const auto bytes = store_->Get(Keys(generation_) + "left/" + std::to_string(peer), deadline);
    wire::Reader r(bytes, wire::Kind::kLeaveNote, {"gloo", "read why a peer left", rank_, peer});
    Note note;
    note.rejoin_at = r.Get<uint64_t>();
    note.blamed = r.Get<int32_t>();
    note.reason = r.GetString(kMaxReasonBytes);
    r.Finish();
    if (note.blamed < -1 || note.blamed >= size_) r.Fail("it blames rank " + std::to_string(note.blamed));
    return note;
  } catch (const TimeoutError&) {
    return std::nullopt;
  } catch (const std::exception& e) {
    spdlog::warn("gloo: rank {} could not read why rank {} left: {}", rank_, peer, e.what());
    return std::nullopt;
  }
}

void Mesh::Step(const char* operation, uint32_t op_code, uint64_t check, Deadline deadline,
                const std::function<void(Ops& ops, uint64_t seq)>& body) {
  const uint64_t seq = ++seq_;
  const auto start = Clock::now();
  bool retried = false;
  io::SigpipeBlock no_sigpipe;  // sends are written from this thread too
  for (;;) {
    if (!context_) Connect(seq, deadline, operation);
    std::optional<Failure> failure;
    std::optional<Note> note;
    std::exception_ptr other;
    bool in_flight = false;
    {
      // Declared before ops: posted buffers point into them.
      const TokenBytes mine = EncodeToken(op_code, seq, check);
      std::vector<TokenBytes> theirs(size_);
      Ops ops(*context_);
      // Destroyed before ops: the watcher lets go of them first.
      struct Watched {
        Mesh& mesh;
        Watched(Mesh& m, Ops& ops) : mesh(m) {
          util::MutexLock lock(&mesh.watch_mutex_);
          mesh.watched_ = &ops;
        }
        ~Watched() {
          util::MutexLock lock(&mesh.watch_mutex_);
          mesh.watched_ = nullptr;
        }
      } watched(*this, ops);
      try {
        for (int p = 0; p < size_; ++p) {
          if (p == rank_) continue;
          ops.Recv(p, kSyncSlot, theirs[p].data(), kTokenBytes, "sync token", -1);
          ops.Send(p, kSyncSlot, mine.data(), kTokenBytes, "sync token", -1);
        }
        ops.Wait(deadline);
        for (int p = 0; p < size_; ++p) {
          if (p == rank_) continue;
          // Every op posted so far has completed: a malformed token leaves
          // the connections usable.
          wire::Reader token(theirs[p], wire::Kind::kSyncToken, {"gloo", operation, rank_, p});
          struct {
            uint32_t op_code;
            uint64_t seq, check;
          } t{token.Get<uint32_t>(), token.Get<uint64_t>(), token.Get<uint64_t>()};
          token.Finish();
          if (t.seq != seq || t.op_code != op_code) {
            // Every op posted so far has completed: the connections stay usable.
            throw Error("gloo", operation,
                        "out of step with rank " + std::to_string(p) + ": it is at call #" +
                            std::to_string(t.seq) + " (operation code " + std::to_string(t.op_code) +
                            "), this rank at call #" + std::to_string(seq) + " (operation code " +
                            std::to_string(op_code) +
                            "); every rank must make the same calls in the same order",
                        rank_, p);
          }
          if (t.check != check) {
            throw Error("gloo", operation,
                        "rank " + std::to_string(p) +
                            " called with different arguments (its check value differs: another "
                            "transfer list or element count); every rank must pass the same",
                        rank_, p);
          }
        }
        body(ops, seq);
        ops.Wait(deadline);
        return;
      } catch (const Failure& f) {
        failure = f;
        // Did the peer leave on purpose? Its note says where it rejoins. A
        // little grace: it writes the note right after its sockets closed.
        // Read while ops live, so bytes still arriving on other connections
        // land where they belong.
        if (!f.timeout) {
          note = ReadNote(f.peer, std::min(deadline, Clock::now() + std::chrono::milliseconds(200)));
        }
      } catch (...) {
        other = std::current_exception();
        in_flight = ops.pending() > 0;
      }
    }  // ops destroyed: Gloo no longer touches their memory
    if (other) {
      // Thrown with ops in flight: the connections are out of step; leave.
      if (in_flight) Leave(seq + 1, -1, std::string("error in ") + operation);
      std::rethrow_exception(other);
    }
    const Failure& f = *failure;
    int blamed = f.peer;
    std::string detail;
    if (f.timeout) {
      detail = "timed out after " + Ms(Clock::now() - start) + " waiting for " + f.op +
               ": the peer is stalled or gone. Gloo closed this rank's connections; the group "
               "is rebuilt at the next call";
    } else {
      detail = "connection to rank " + std::to_string(f.peer) + " lost during " + f.op + ": " + f.detail;
      if (note && !retried && generation_ < seq && note->rejoin_at <= seq) {
        spdlog::info("gloo: rank {} rejoins group '{}' at step {}: rank {} left generation {} ({})", rank_,
                     name_, seq, f.peer, generation_, note->reason);
        Leave(seq, -1, "rejoining at step " + std::to_string(seq));
        retried = true;
        continue;
      }
      if (note) {
        if (note->blamed >= 0 && note->blamed != rank_) blamed = note->blamed;
        detail += "; rank " + std::to_string(f.peer) + " left the group: " + note->reason;
      } else {
        detail += " (the peer died or closed its connections)";
      }
    }
    std::string reason = f.timeout ? "timed out waiting for rank " + std::to_string(f.peer)
                                   : "lost its connection to rank " + std::to_string(blamed);
    reason += " in " + std::string(operation) + " (step " + std::to_string(seq) + ")";
    const bool noted = Leave(seq + 1, blamed, reason);
    if (f.timeout) {
      // Which ranks are lost: the others of this side time out too and
      // leave notes; the silent ones are stalled, cut off or gone.
      detail += noted ? SilentPeers() : "; the store cannot be reached either: this rank may be the one cut off";
      throw TimeoutError("gloo", operation, detail, rank_, blamed);
    }
    // A peer that died leaves no note; neither do others that died with it
    // (a host lost): name them all.
    if (noted && !note) detail += SilentPeers();
    throw Error("gloo", operation, detail, rank_, blamed);
  }
}

}  // namespace eplb::gloo_backend
