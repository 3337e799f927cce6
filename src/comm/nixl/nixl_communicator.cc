// nixl communicator (DESIGN.md layer 3): one-sided READs through NIXL (UCX
// underneath), so the receiver pulls and the sender stays passive, and no
// GPU kernel or intermediate copy is involved.
//
// - Memory is registered with NIXL once, in RegisterRegion.
// - Metadata (NIXL's agent blob plus this rank's region table) goes through
//   the store, one key per rank and registration count; peers load it the
//   first time they need it (again only after new registrations).
// - Execute, per call and pair of ranks with transfers between them ("epoch"
//   e of the pair, counted by both at the start of every call that has
//   transfers between them, so ranks with nothing to move in a call skip it
//   and a failed call leaves both counters equal):
//     sender   -> each rank that reads from it: notification "e ready"
//     reader   waits for "e ready", posts the READs, polls them to
//              completion, then notifies the sender "e done"
//     sender   waits for "e done" from every reader before returning.
//   The two notifications are the fence: a reader never reads a slot its
//   owner has not finished writing, and a sender never returns (and lets its
//   caller overwrite a slot) while a peer may still be reading it. A late
//   notification of a failed call carries its old epoch and is dropped.
// - Every wait polls with the deadline and ends in TimeoutError naming the
//   peer and the step; a request still in flight is released (cancelled).
// - Liveness: each rank publishes its process identity; a wait checks the
//   processes it waits for every kLivenessInterval and fails at once, naming
//   the rank, when one is gone (UCX itself may notice a dead peer only at
//   its own timeouts), as the gloo communicator does.
// - Blame: a rank whose call fails leaves a note for each peer of the call
//   (keyed by the pair's epoch) naming the rank it blames. A peer that then
//   finds it gone (it exited after its failure) or silent passes the blame
//   on, so every survivor names the rank that died or stalled, not the
//   first survivor that gave up before it.
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <charconv>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "util/backoff.h"
#include "comm/local_transfers.h"
#include "comm/nixl/nixl_api.h"
#include "comm/nixl/ucx_transports.h"
#include "comm/process_liveness.h"
#include "eplb/communicator_factory.h"
#include "eplb/detect.h"
#include "select/detection.h"
#include "eplb/error.h"
#include "eplb/listen_address.h"
#include "wire/codec.h"

namespace eplb {
namespace {

// Agent names are "eplb-<key prefix>-r<rank>-p<pid>"; a longer one is malformed.
constexpr size_t kMaxAgentNameBytes = 4096;
// A failure note's reason is cut to this.
constexpr size_t kMaxReasonBytes = 2048;
// Our notifications are "eplb <epoch> ready|done"; anything longer is not ours.
constexpr size_t kMaxNotificationBytes = 64;
// How often a wait checks that the processes it waits for still exist.
constexpr auto kLivenessInterval = std::chrono::milliseconds(200);

using util::Backoff;

nixl::MemType TypeOf(MemoryKind k) { return k == MemoryKind::kCuda ? nixl::kVram : nixl::kDram; }
uint64_t DevOf(const MemoryRegion& r) { return r.kind == MemoryKind::kCuda ? static_cast<uint64_t>(r.device) : 0; }

struct PeerInfo {
  std::string agent;                 // NIXL agent name
  std::vector<MemoryRegion> regions;  // base = the peer's address
  size_t version = 0;                 // registration count the metadata covers
  uint64_t epoch = 0;                 // calls with transfers between us
  std::optional<comm::ProcessIdentity> process;
};

class NixlCommunicator final : public Communicator {
 public:
  NixlCommunicator(const CommunicatorOptions& o, const nixl::Api& api, std::string transports,
                   const std::vector<std::pair<std::string, std::string>>& ucx_params)
      : o_(o), api_(api), transports_(std::move(transports)), peers_(o.world_size) {
    name_ = fmt::format("eplb-{}-r{}-p{}", o.key_prefix, o.rank, ::getpid());
    Check(api_.CreateAgent(name_.c_str(), &agent_), "create agent");
    nixl::MemList mems = nullptr;
    nixl::Params params = nullptr;
    Check(api_.GetPluginParams(agent_, "UCX", &mems, &params), "query UCX plugin");
    nixl::Status s = nixl::kSuccess;
    std::string failed_step;
    for (const auto& [key, value] : ucx_params) {
      s = api_.ParamsAdd ? api_.ParamsAdd(params, key.c_str(), value.c_str()) : -1;
      if (s != nixl::kSuccess) {
        failed_step = "set UCX parameter " + key + (api_.ParamsAdd ? "" : " (this C API has no nixl_capi_params_add)");
        break;
      }
    }
    if (s == nixl::kSuccess) {
      failed_step = "create UCX backend";
      s = api_.CreateBackend(agent_, "UCX", params, &backend_);
    }
    api_.DestroyMemList(mems);
    api_.DestroyParams(params);
    if (s != nixl::kSuccess) {
      api_.DestroyAgent(agent_);
      agent_ = nullptr;
      Check(s, failed_step);
    }
    Check(api_.CreateOptArgs(&opt_), "create options");
    Check(api_.OptArgsAddBackend(opt_, backend_), "select UCX backend");
    Check(api_.CreateNotifMap(&notifs_), "create notification map");
    o_.store->Set(ProcessKey(o_.rank), comm::ThisProcess().Encode());
    spdlog::debug("eplb nixl: rank {} agent {} ({}); UCX transports: {}", o_.rank, name_, api_.path, transports_);
  }

  ~NixlCommunicator() override {
    for (auto& [dlist, _] : registered_) {
      api_.DeregisterMem(agent_, dlist, opt_);
      api_.DestroyRegDlist(dlist);
    }
    if (notifs_) api_.DestroyNotifMap(notifs_);
    if (opt_) api_.DestroyOptArgs(opt_);
    if (backend_) api_.DestroyBackend(backend_);
    if (agent_) api_.DestroyAgent(agent_);
  }

  std::string_view name() const override { return "nixl"; }
  int rank() const override { return o_.rank; }
  int size() const override { return o_.world_size; }

  RegionId RegisterRegion(const MemoryRegion& region, Deadline) override {
    if (region.base == nullptr || region.bytes == 0)
      throw InvalidArgument("nixl: cannot register an empty region (base null or 0 bytes)");
    if (region.kind == MemoryKind::kCuda && region.device < 0)
      throw InvalidArgument("nixl: a CUDA region needs its device ordinal (MemoryRegion::device)");
    nixl::RegDlist dlist = nullptr;
    Check(api_.CreateRegDlist(TypeOf(region.kind), &dlist), "register memory");
    nixl::Status s = api_.RegDlistAddDesc(dlist, reinterpret_cast<uintptr_t>(region.base), region.bytes,
                                          DevOf(region), nullptr, 0);
    if (s == nixl::kSuccess) s = api_.RegisterMem(agent_, dlist, opt_);
    if (s != nixl::kSuccess) {
      api_.DestroyRegDlist(dlist);
      Check(s, fmt::format("register {} bytes of {} memory", region.bytes, MemoryKindName(region.kind)));
    }
    registered_.emplace_back(dlist, region);
    regions_.push_back(region);
    return static_cast<RegionId>(regions_.size() - 1);
  }

  void Execute(std::span<const Transfer> transfers, Deadline deadline) override {
    auto ops = comm::SelectLocalOps("nixl", o_.rank, o_.world_size, regions_, transfers);
    if (ops.empty()) return;
    std::set<int> readers, sources;  // who reads from me, whom I read from
    for (const auto& op : ops) (op.send ? readers : sources).insert(op.peer);
    // First, before anything can fail: both ranks of a pair count this call.
    std::set<int> pairs(readers);
    pairs.insert(sources.begin(), sources.end());
    for (int p : pairs) ++peers_[p].epoch;
    try {
      ExecuteOps(ops, readers, sources, deadline);
    } catch (const Error& e) {
      LeaveFailureNotes(pairs, e.peer(), e.what());
      throw;
    }
  }

 private:
  void ExecuteOps(const std::vector<comm::LocalOp>& ops, const std::set<int>& readers,
                  const std::set<int>& sources, Deadline deadline) {
    DropStaleNotifications();
    Publish();
    for (int p : readers) Connect(p, deadline);
    for (int p : sources) Connect(p, deadline);
    for (const auto& op : ops) {
      if (op.send) continue;
      const auto& peer = peers_[op.peer];
      if (static_cast<size_t>(op.peer_region) >= peer.regions.size())
        throw InvalidArgument(fmt::format("nixl: transfer {}: rank {} has no region {} ({} registered)",
                                          op.index, op.peer, op.peer_region, peer.regions.size()));
      const MemoryRegion& r = peer.regions[op.peer_region];
      if (op.peer_offset > r.bytes || op.bytes > r.bytes - op.peer_offset)
        throw InvalidArgument(fmt::format("nixl: transfer {}: range past the end of region {} of rank {}",
                                          op.index, op.peer_region, op.peer));
    }

    auto ready = [&](int p) { return fmt::format("eplb {} ready", peers_[p].epoch); };
    auto done = [&](int p) { return fmt::format("eplb {} done", peers_[p].epoch); };
    for (int p : readers) Notify(p, ready(p), "announce ready");

    // Post the READs of each source as soon as it says its memory is ready.
    struct Pending {
      int peer;
      nixl::XferReq req;
    };
    std::vector<Pending> pending;
    auto release_all = [&] {
      for (auto& x : pending) {
        if (x.req && api_.ReleaseXferReq(agent_, x.req) == nixl::kSuccess) api_.DestroyXferReq(x.req);
        x.req = nullptr;  // a request that cannot be cancelled is leaked, never freed under NIXL
      }
    };
    try {
      for (int s : sources) {
        WaitFor(s, ready(s), deadline, "wait for sender ready");
        // One request per (local kind, remote kind): a NIXL list has one memory type.
        std::map<std::pair<int, int>, std::pair<nixl::XferDlist, nixl::XferDlist>> lists;
        for (const auto& op : ops) {
          if (op.send || op.peer != s) continue;
          const MemoryRegion& remote = peers_[s].regions[op.peer_region];
          const MemoryRegion& local = LocalRegionOf(op);
          auto key = std::make_pair(static_cast<int>(local.kind), static_cast<int>(remote.kind));
          auto& l = lists[key];
          if (!l.first) {
            Check(api_.CreateXferDlist(TypeOf(local.kind), &l.first), "build transfer list", s);
            Check(api_.CreateXferDlist(TypeOf(remote.kind), &l.second), "build transfer list", s);
          }
          Check(api_.XferDlistAddDesc(l.first, reinterpret_cast<uintptr_t>(op.local), op.bytes, DevOf(local)),
                "build transfer list", s);
          Check(api_.XferDlistAddDesc(l.second,
                                      reinterpret_cast<uintptr_t>(remote.base) + op.peer_offset, op.bytes,
                                      DevOf(remote)),
                "build transfer list", s);
        }
        for (auto& [_, l] : lists) {
          nixl::XferReq req = nullptr;
          nixl::Status st = api_.CreateXferReq(agent_, nixl::kRead, l.first, l.second, peers_[s].agent.c_str(),
                                               &req, opt_);
          api_.DestroyXferDlist(l.first);
          api_.DestroyXferDlist(l.second);
          Check(st, "create READ request", s);
          pending.push_back({s, req});
          st = api_.PostXferReq(agent_, req, opt_);
          if (st != nixl::kSuccess && st != nixl::kInProgress) Check(st, "post READ", s);
        }
      }
      // Poll every request; tell each source when all of its READs landed.
      std::map<int, int> open;
      for (const auto& x : pending) open[x.peer]++;
      // UCX moves a large READ in fragments, one step per progress call, and
      // GetXferStatus is what progresses it: this loop must not sleep
      // between polls (a backoff sleep per fragment cut host bandwidth by
      // more than half). It only yields, and the copying is this thread's
      // work anyway (CMA copies in the reader's process_vm_readv).
      // Peers on other hosts (TCP, RDMA: the kernel or the NIC moves the
      // bytes; UCX's progress only has to come round) are polled with short
      // sleeps once nothing completed for a moment: a peer cut off would
      // otherwise keep this thread spinning until the deadline, starving the
      // engine's own threads on a busy machine. READs from this host keep
      // the tight loop.
      bool any_local = false;
      for (const auto& [p, n] : open) any_local |= SameHost(p);
      Backoff idle = util::FastBackoff();
      Clock::time_point next_check = Clock::now() + kLivenessInterval;
      while (!open.empty()) {
        bool progressed = false;
        for (auto& x : pending) {
          if (!x.req) continue;
          nixl::Status st = api_.GetXferStatus(agent_, x.req);
          if (st == nixl::kInProgress) continue;
          if (st != nixl::kSuccess) FailIfGone(x.peer, "READ");
          Check(st, "READ", x.peer);
          Check(api_.ReleaseXferReq(agent_, x.req), "release READ", x.peer);
          api_.DestroyXferReq(x.req);
          x.req = nullptr;
          progressed = true;
          if (--open[x.peer] == 0) {
            open.erase(x.peer);
            Notify(x.peer, done(x.peer), "acknowledge READ");
          }
        }
        if (open.empty()) break;
        if (Expired(deadline)) {
          std::string who;
          for (const auto& [p, n] : open) who += (who.empty() ? "" : ", ") + std::to_string(p);
          throw TimeoutError("nixl", "READ",
                             fmt::format("READs from rank(s) {} not complete at the deadline", who), o_.rank,
                             open.begin()->first);
        }
        if (Clock::now() >= next_check) {
          for (const auto& [p, n] : open) FailIfGone(p, "READ");
          next_check = Clock::now() + kLivenessInterval;
        }
        if (progressed) {
          idle = util::FastBackoff();
        } else if (any_local) {
          std::this_thread::yield();
        } else {
          idle.Sleep();
        }
      }
    } catch (...) {
      release_all();
      throw;
    }
    // Fence: nobody may still be reading this rank's memory when we return.
    for (int r : readers) WaitFor(r, done(r), deadline, "wait for reader to finish");
  }

  void Check(nixl::Status s, const std::string& what, int peer = -1) const {
    if (s != nixl::kSuccess)
      throw Error("nixl", what, "NIXL returned " + nixl::StatusName(s) + " (" + api_.path + ")", o_.rank, peer);
  }

  const MemoryRegion& LocalRegionOf(const comm::LocalOp& op) const {
    for (const auto& r : regions_) {
      auto* b = static_cast<uint8_t*>(r.base);
      if (op.local >= b && op.local + op.bytes <= b + r.bytes) return r;
    }
    throw Error("nixl", "resolve local region", "no registered region holds the destination", o_.rank);
  }

  std::string MdKey(int rank, size_t version) const {
    return fmt::format("{}/nixl/r{}/v{}", o_.key_prefix, rank, version);
  }
  std::string ProcessKey(int rank) const { return fmt::format("{}/nixl/process/{}", o_.key_prefix, rank); }

  std::string NoteKey(int rank, int peer, uint64_t epoch) const {
    return fmt::format("{}/nixl/failed/{}/{}/{}", o_.key_prefix, rank, peer, epoch);
  }

  // Records, for each peer of a failed call, whom this rank blames (its
  // error's peer; -1 when none) and why. Best effort: the error stands.
  void LeaveFailureNotes(const std::set<int>& pairs, int blamed, const std::string& reason) {
    for (int p : pairs) {
      try {
        o_.store->Set(NoteKey(o_.rank, p, peers_[p].epoch), wire::Writer(wire::Kind::kFailureNote)
                                                                 .Put(int32_t{blamed})
                                                                 .PutString(reason.substr(0, kMaxReasonBytes))
                                                                 .Take());
      } catch (const std::exception& e) {
        spdlog::warn("eplb nixl: rank {} could not record why it gave up on rank {}: {}", o_.rank, p, e.what());
      }
    }
  }

  // Peer p's note on this call of our pair, if it left one.
  std::optional<std::pair<int, std::string>> ReadFailureNote(int p) {
    try {
      const auto bytes = o_.store->Get(NoteKey(p, o_.rank, peers_[p].epoch), Clock::now());
      wire::Reader r(bytes, wire::Kind::kFailureNote, {"nixl", "read why a peer gave up", o_.rank, p});
      const auto blamed = r.Get<int32_t>();
      std::string reason = r.GetString(kMaxReasonBytes);
      r.Finish();
      if (blamed < -1 || blamed >= o_.world_size) r.Fail("it blames rank " + std::to_string(blamed));
      return std::make_pair(static_cast<int>(blamed), std::move(reason));
    } catch (const TimeoutError&) {
      return std::nullopt;
    } catch (const std::exception& e) {
      spdlog::warn("eplb nixl: rank {} could not read why rank {} gave up: {}", o_.rank, p, e.what());
      return std::nullopt;
    }
  }

  // Throws when peer p gave up on this call (blaming the rank it names) or
  // its process is gone (blaming p). Checked every kLivenessInterval of a
  // wait: one store lookup and one /proc read per peer waited for.
  // Whether peer p runs on this host (host name and boot id), as far as
  // its published identity tells; unknown counts as this host.
  bool SameHost(int p) const {
    const auto& peer = peers_[p].process;
    if (!peer) return true;
    static const comm::ProcessIdentity me = comm::ThisProcess();
    return peer->host == me.host && peer->boot_id == me.boot_id;
  }

  void FailIfGone(int p, const std::string& step) {
    ThrowIfPeerGaveUp(p, step);
    PeerInfo& peer = peers_[p];
    if (!peer.process) return;
    if (comm::CheckProcess(*peer.process) != comm::Liveness::kGone) return;
    ThrowIfPeerGaveUp(p, step);  // it may have left its note and exited since
    throw Error("nixl", step,
                fmt::format("rank {}'s process (pid {} on {}) is gone", p, peer.process->pid, peer.process->host),
                o_.rank, p);
  }

  void ThrowIfPeerGaveUp(int p, const std::string& step) {
    auto note = ReadFailureNote(p);
    if (!note) return;
    const int blamed = note->first >= 0 && note->first != o_.rank ? note->first : p;
    throw Error("nixl", step, fmt::format("rank {} gave up on this call: {}", p, note->second), o_.rank, blamed);
  }

  // Notifications of calls that ended (a late "ready" or "done" of a failed
  // call) are never waited for again.
  void DropStaleNotifications() {
    for (auto it = received_.begin(); it != received_.end();) {
      auto owner = agent_rank_.find(it->first);
      uint64_t epoch = 0;
      const std::string& msg = it->second;  // "eplb <epoch> ready|done"
      const bool ours = msg.rfind("eplb ", 0) == 0 &&
                        std::from_chars(msg.data() + 5, msg.data() + msg.size(), epoch).ec == std::errc();
      if (owner != agent_rank_.end() && ours && epoch < peers_[owner->second].epoch)
        it = received_.erase(it);
      else
        ++it;
    }
  }

  // Publishes [8-byte length][JSON region table][NIXL metadata] once per
  // registration count.
  void Publish() {
    if (published_ == regions_.size()) return;
    void* md = nullptr;
    size_t md_len = 0;
    Check(api_.GetLocalMd(agent_, &md, &md_len), "export metadata");
    wire::Writer w(wire::Kind::kNixlMetadata);
    w.PutString(name_).Put(static_cast<uint32_t>(regions_.size()));
    for (const auto& r : regions_)
      w.Put(reinterpret_cast<uintptr_t>(r.base))
          .Put(static_cast<uint64_t>(r.bytes))
          .Put(uint8_t{r.kind == MemoryKind::kCuda})
          .Put(int32_t{r.device});
    w.PutBytes({static_cast<const uint8_t*>(md), md_len});
    std::free(md);
    std::vector<uint8_t> blob = w.Take();
    o_.store->Set(MdKey(o_.rank, regions_.size()), blob);
    published_ = regions_.size();
  }

  // Loads peer p's metadata for the current registration count (collective
  // registration makes it the same on every rank).
  void Connect(int p, Deadline deadline) {
    PeerInfo& peer = peers_[p];
    if (peer.version == regions_.size() && !peer.agent.empty()) return;
    std::vector<uint8_t> blob;
    try {
      blob = o_.store->Get(MdKey(p, regions_.size()), deadline);
    } catch (const TimeoutError& e) {
      throw TimeoutError("nixl", "fetch peer metadata",
                         fmt::format("no metadata for {} regions ({})", regions_.size(), e.what()), o_.rank, p);
    }
    wire::Reader r(blob, wire::Kind::kNixlMetadata, {"nixl", "read peer metadata", o_.rank, p});
    const std::string agent = r.GetString(kMaxAgentNameBytes);
    const auto count = r.Get<uint32_t>();
    if (count != regions_.size())
      r.Fail(fmt::format("{} regions, this rank registered {}", count, regions_.size()));
    std::vector<MemoryRegion> regions(count);
    for (MemoryRegion& m : regions) {
      m.base = reinterpret_cast<void*>(r.Get<uintptr_t>());
      m.bytes = r.Get<uint64_t>();
      const auto cuda = r.Get<uint8_t>();
      if (cuda > 1) r.Fail("a region of unknown memory kind");
      m.kind = cuda ? MemoryKind::kCuda : MemoryKind::kHost;
      m.device = r.Get<int32_t>();
    }
    const std::vector<uint8_t> md = r.GetBytes(wire::kMaxMessageBytes);
    r.Finish();
    if (!peer.agent.empty()) api_.InvalidateRemoteMd(agent_, peer.agent.c_str());
    char* loaded = nullptr;
    Check(api_.LoadRemoteMd(agent_, md.data(), md.size(), &loaded), "load peer metadata", p);
    peer.agent = loaded ? loaded : "";
    std::free(loaded);
    if (peer.agent != agent)
      throw Error("nixl", "read peer metadata",
                  fmt::format("the metadata names agent '{}', NIXL loaded it as '{}'", agent, peer.agent), o_.rank, p);
    peer.regions = std::move(regions);
    peer.version = regions_.size();
    agent_rank_[peer.agent] = p;
    if (!peer.process) {
      // Published at construction, before any metadata: present by now.
      peer.process = comm::ProcessIdentity::Decode(o_.store->Get(ProcessKey(p), deadline), "nixl",
                                                   "read peer process", o_.rank, p);
    }
  }

  void Notify(int p, const std::string& msg, const std::string& step) {
    Check(api_.GenNotif(agent_, peers_[p].agent.c_str(), msg.data(), msg.size(), opt_), step, p);
  }

  // Moves NIXL's new notifications into received_, keyed by agent name (a
  // notification may come from a peer this rank has not loaded yet).
  void Poll() {
    Check(api_.GetNotifs(agent_, notifs_, opt_), "read notifications");
    size_t agents = 0;
    api_.NotifMapSize(notifs_, &agents);
    for (size_t i = 0; i < agents; ++i) {
      const char* who = nullptr;
      size_t count = 0;
      if (api_.NotifMapGetAgentAt(notifs_, i, &who) != nixl::kSuccess || !who) continue;
      api_.NotifMapGetNotifsSize(notifs_, who, &count);
      for (size_t k = 0; k < count; ++k) {
        const void* data = nullptr;
        size_t len = 0;
        if (api_.NotifMapGetNotif(notifs_, who, k, &data, &len) != nixl::kSuccess) continue;
        if (len > kMaxNotificationBytes) continue;  // not one of ours: "eplb <epoch> ready|done"
        received_.insert({who, std::string(static_cast<const char*>(data), len)});
      }
    }
    api_.NotifMapClear(notifs_);
  }

  void WaitFor(int p, const std::string& msg, Deadline deadline, const std::string& step) {
    // Polling GetNotifs progresses UCX too: yield first, then short sleeps.
    Backoff backoff = util::FastBackoff();
    const std::pair<std::string, std::string> wanted{peers_[p].agent, msg};
    Clock::time_point next_check = Clock::now() + kLivenessInterval;
    for (;;) {
      auto it = received_.find(wanted);
      if (it != received_.end()) {
        received_.erase(it);
        return;
      }
      if (Clock::now() >= next_check) {
        FailIfGone(p, step);
        next_check = Clock::now() + kLivenessInterval;
      }
      if (Expired(deadline)) {
        FailIfGone(p, step);
        throw TimeoutError("nixl", step, fmt::format("no \"{}\" from the peer by the deadline", msg), o_.rank, p);
      }
      Poll();
      if (received_.count(wanted) == 0) backoff.Sleep();
    }
  }

  CommunicatorOptions o_;
  const nixl::Api& api_;
  const std::string transports_;  // the UCX transports, for the log
  std::string name_;
  nixl::Agent agent_ = nullptr;
  nixl::Backend backend_ = nullptr;
  nixl::OptArgs opt_ = nullptr;
  nixl::NotifMap notifs_ = nullptr;
  std::vector<std::pair<nixl::RegDlist, MemoryRegion>> registered_;
  std::vector<MemoryRegion> regions_;
  size_t published_ = 0;
  std::vector<PeerInfo> peers_;
  std::map<std::string, int> agent_rank_;  // peers' agent names
  std::multiset<std::pair<std::string, std::string>> received_;  // {agent, message}
};

}  // namespace

namespace {

// NIXL reads NIXL_PLUGIN_DIR, and UCX reads UCX_MODULE_DIR, when the first
// agent is created: set them for the process before that, to the folders
// detection found, never overriding what the user set.
void SetDefaultEnvironment(const char* name, const std::string& value) {
  if (!value.empty() && ::setenv(name, value.c_str(), /*overwrite=*/0) == 0 &&
      value == std::getenv(name))
    spdlog::debug("eplb nixl: {}={}", name, value);
}

}  // namespace

std::unique_ptr<Communicator> MakeNixlCommunicator(const CommunicatorOptions& options) {
  std::string capi = options.nixl_capi_library, core, plugin_dir, ucx_module_dir;
  if (capi.empty()) {
    NixlDetection d = DetectNixl(SearchEnvironment::FromProcess());
    if (!d.available) {
      std::string searched;
      for (const auto& s : d.searched) searched += (searched.empty() ? "" : ", ") + s;
      throw Error("nixl", "load NIXL", d.reason + " (searched: " + searched + ")", options.rank);
    }
    capi = d.capi_library;
    core = d.core_library;
    plugin_dir = d.plugin_dir;
    ucx_module_dir = d.ucx_module_dir;
  } else {
    const auto dir = std::filesystem::path(capi).parent_path();
    if (std::filesystem::exists(dir / "libnixl.so")) core = (dir / "libnixl.so").string();
    if (std::filesystem::exists(dir / "plugins")) plugin_dir = (dir / "plugins").string();
  }
  SetDefaultEnvironment("NIXL_PLUGIN_DIR", plugin_dir);
  SetDefaultEnvironment("UCX_MODULE_DIR", ucx_module_dir);
  std::string transports = comm::ChooseUcxTransports();
  transports += "; network devices " + comm::ChooseUcxNetDevices(ChooseListenAddress());
  std::vector<std::pair<std::string, std::string>> ucx_params;
  if (const char* text = std::getenv("EPLB_NIXL_UCX_PARAMS"); text != nullptr && *text != '\0')
    ucx_params = comm::ParseUcxParams(text);  // InvalidArgument before anything is loaded
  const std::string bundled =
      ucx_module_dir.empty() ? "" : std::filesystem::path(ucx_module_dir).parent_path().string();
  const nixl::Api& api = nixl::LoadApi(capi, core, bundled);
  return std::make_unique<NixlCommunicator>(options, api, std::move(transports), ucx_params);
}

}  // namespace eplb
