// nccl and nccl_stateless communicators (DESIGN.md layer 3).
//
// Both issue the transfers that concern this rank as one NCCL group of
// send/recv on a stream of their own, in global-list order, so the k-th send
// from A to B meets the k-th receive on B from A. Nothing waits without a
// deadline: the group is launched on a helper thread (a blocking
// communicator can stall inside ncclGroupEnd while connecting to a peer that
// never comes), then the communicator's state and a CUDA event are polled.
// When the deadline passes the communicator is aborted (ncclCommAbort makes
// NCCL's kernels and proxy threads give up) and TimeoutError names the
// peers and the operation.
//
//  - nccl: the engine's communicator, shared. After an abort it is unusable
//    and the engine has to make a new one; eplb says so.
//  - nccl_stateless: its own non-blocking communicator, built from a unique
//    id that rank 0 publishes in the store. Rebuilt after an abort (next
//    Execute) and on membership change (Rebuild with a new generation).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>

#include "comm/cuda_driver.h"
#include "util/backoff.h"
#include "comm/host_identity.h"
#include "comm/local_transfers.h"
#include "comm/nccl/nccl_api.h"
#include "eplb/communicator_factory.h"
#include "eplb/error.h"
#include "wire/codec.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;

constexpr unsigned kStreamNonBlocking = 1;  // CU_STREAM_NON_BLOCKING
constexpr unsigned kEventDisableTiming = 2;  // CU_EVENT_DISABLE_TIMING

using util::Backoff;

std::string Ms(std::chrono::milliseconds d) { return std::to_string(d.count()) + " ms"; }

// The machinery both communicators share: device, stream, event, regions,
// and the deadline-bound group launch.
class NcclCore {
 public:
  NcclCore(std::string layer, const CommunicatorOptions& o, int device)
      : layer_(std::move(layer)),
        rank_(o.rank),
        size_(o.world_size),
        api_(nccl::GetApi(o.nccl_library)),
        ctx_(device, layer_, o.rank) {
    cuda::ScopedCurrent current(ctx_);
    const auto& d = cuda::GetDriver();
    cuda::Check(d.StreamCreate(&stream_, kStreamNonBlocking), "cuStreamCreate", layer_, "create stream", rank_);
    cuda::Check(d.EventCreate(&event_, kEventDisableTiming), "cuEventCreate", layer_, "create event", rank_);
  }

  ~NcclCore() {
    const auto& d = cuda::GetDriver();
    cuda::ScopedCurrent current(ctx_);
    if (event_) d.EventDestroy(event_);
    if (stream_) d.StreamDestroy(stream_);
  }

  const nccl::Api& api() const { return api_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& layer() const { return layer_; }
  int device() const { return ctx_.device(); }
  const cuda::DeviceContext& context() const { return ctx_; }
  void SetMembership(int rank, int size) {
    rank_ = rank;
    size_ = size;
  }

  RegionId Register(const MemoryRegion& region) {
    if (region.kind != MemoryKind::kCuda)
      throw InvalidArgument(layer_ + ": registers device memory only (MemoryKind::kCuda); got " +
                            MemoryKindName(region.kind) + " memory (use gloo or nixl for host memory)");
    if (region.base == nullptr && region.bytes > 0)
      throw InvalidArgument(layer_ + ": region has a null base and " + std::to_string(region.bytes) + " bytes");
    if (region.device >= 0 && region.device != device())
      throw InvalidArgument(fmt::format("{}: region on CUDA device {} but this communicator uses device {}",
                                        layer_, region.device, device()));
    if (region.bytes > 0) {
      cuda::ScopedCurrent current(ctx_);
      int actual = cuda::PointerDevice(region.base);
      if (actual != device())
        throw InvalidArgument(fmt::format("{}: region at {} is not memory of CUDA device {} (driver says {})",
                                          layer_, region.base, device(),
                                          actual < 0 ? std::string("not device memory") : "device " + std::to_string(actual)));
    }
    regions_.push_back(region);
    return static_cast<RegionId>(regions_.size() - 1);
  }

  std::vector<comm::LocalOp> Select(std::span<const Transfer> transfers) const {
    return comm::SelectLocalOps(layer_, rank_, size_, regions_, transfers);
  }

  // Runs `ops` as one group on `comm` and waits for it with `deadline`. On a
  // missed deadline or an NCCL error, aborts `comm` and throws; the caller
  // must then drop it.
  void Run(nccl::Comm comm, const std::vector<comm::LocalOp>& ops, Deadline deadline) {
    cuda::ScopedCurrent current(ctx_);  // for the event calls on this thread
    const std::string what = comm::DescribeOps(ops);
    std::set<int> peers;
    for (const auto& op : ops) peers.insert(op.peer);
    const int peer = peers.size() == 1 ? *peers.begin() : -1;
    const auto started = Clock::now();
    auto elapsed = [&] {
      return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
    };
    auto abort_and = [&](const std::string& operation, const std::string& detail, bool timeout) {
      api_.CommAbort(comm);
      std::string msg = detail + "; communicator aborted";
      if (timeout) throw TimeoutError(layer_, operation, msg, rank_, peer);
      throw Error(layer_, operation, msg, rank_, peer);
    };

    // 1. Launch on a helper thread so a launch that blocks (connection
    //    set-up with a peer that never posts) cannot outlive the deadline.
    struct Launch {
      std::mutex mu;
      std::condition_variable cv;
      bool done = false;
      nccl::Result result = nccl::kSuccess;
      std::string failed_call;
    };
    auto launch = std::make_shared<Launch>();
    // The thread owns copies of everything it touches, so that if NCCL never
    // returns it control even after an abort, it can be left behind safely.
    std::thread launcher([api = &api_, comm, ops, launch, stream = stream_, context = ctx_.context()] {
      nccl::Result r = nccl::kSuccess;
      std::string call;
      if (cuda::GetDriver().CtxSetCurrent(context) != cuda::kSuccess) {
        r = -1;
        call = "cuCtxSetCurrent";
      }
      if (r == nccl::kSuccess) {
        r = api->GroupStart();
        call = "ncclGroupStart";
        if (r == nccl::kSuccess) {
          for (const auto& op : ops) {
            nccl::Result x = op.send ? api->Send(op.local, op.bytes, nccl::kUint8, op.peer, comm, stream)
                                     : api->Recv(op.local, op.bytes, nccl::kUint8, op.peer, comm, stream);
            if (x != nccl::kSuccess && x != nccl::kInProgress) {
              r = x;
              call = op.send ? "ncclSend" : "ncclRecv";
              break;
            }
          }
          nccl::Result end = api->GroupEnd();  // always close the group
          if (r == nccl::kSuccess) {
            r = end;
            call = "ncclGroupEnd";
          }
        }
      }
      std::lock_guard<std::mutex> lock(launch->mu);
      launch->done = true;
      launch->result = r;
      launch->failed_call = call;
      launch->cv.notify_all();
    });
    bool launched;
    {
      std::unique_lock<std::mutex> lock(launch->mu);
      launched = launch->cv.wait_until(lock, deadline, [&] { return launch->done; });
    }
    if (!launched) {
      api_.CommAbort(comm);  // makes a launch blocked in NCCL return
      // As long again as the call had (at least 1 s) for the abort to take.
      const auto grace = std::max<std::chrono::milliseconds>(elapsed(), std::chrono::seconds(1));
      bool returned;
      {
        std::unique_lock<std::mutex> lock(launch->mu);
        returned = launch->cv.wait_for(lock, grace, [&] { return launch->done; });
      }
      if (returned) {
        launcher.join();  // it has returned: the join is immediate
      } else {
        launcher.detach();
      }
      throw TimeoutError(layer_, "launch send/recv",
                         fmt::format("{} not launched after {} (a peer never posted its side?); communicator "
                                     "aborted{}",
                                     what, Ms(elapsed()),
                                     returned ? "" : "; the launching thread did not return from NCCL after the "
                                                     "abort and was left behind"),
                         rank_, peer);
    }
    launcher.join();  // done: the join is immediate
    if (launch->result != nccl::kSuccess && launch->result != nccl::kInProgress) {
      std::string why = launch->result == -1 ? "could not make the CUDA context current"
                                             : api_.Describe(launch->result, comm);
      abort_and("launch send/recv", fmt::format("{} failed for {}: {}", launch->failed_call, what, why), false);
    }

    // 2. A non-blocking communicator finishes enqueueing asynchronously.
    Backoff backoff;
    if (launch->result == nccl::kInProgress) {
      for (;;) {
        nccl::Result state = nccl::kSuccess;
        nccl::Result r = api_.CommGetAsyncError(comm, &state);
        if (r != nccl::kSuccess) state = r;
        if (state == nccl::kSuccess) break;
        if (state != nccl::kInProgress)
          abort_and("launch send/recv", fmt::format("{}: {}", what, api_.Describe(state, comm)), false);
        if (Expired(deadline))
          abort_and("launch send/recv",
                    fmt::format("{} still being enqueued after {} (a peer never posted its side?)", what,
                                Ms(elapsed())),
                    true);
        backoff.Sleep();
      }
    }

    // 3. Wait for the kernels through an event, watching for peer errors.
    const auto& d = cuda::GetDriver();
    cuda::Check(d.EventRecord(event_, stream_), "cuEventRecord", layer_, "send/recv", rank_);
    for (;;) {
      cuda::CuResult q = d.EventQuery(event_);
      if (q == cuda::kSuccess) return;
      if (q != cuda::kErrorNotReady)
        abort_and("send/recv", fmt::format("{}: waiting for the transfer failed: {}", what, cuda::ErrorString(q)),
                  false);
      nccl::Result state = nccl::kSuccess;
      nccl::Result r = api_.CommGetAsyncError(comm, &state);
      if (r != nccl::kSuccess) state = r;
      if (state != nccl::kSuccess && state != nccl::kInProgress)
        abort_and("send/recv", fmt::format("{}: {}", what, api_.Describe(state, comm)), false);
      if (Expired(deadline))
        abort_and("send/recv",
                  fmt::format("{} not finished after {} (a peer never posted its side, or stalled)", what,
                              Ms(elapsed())),
                  true);
      backoff.Sleep();
    }
  }

 private:
  std::string layer_;
  int rank_, size_;
  const nccl::Api& api_;
  cuda::DeviceContext ctx_;
  cuda::CuStream stream_ = nullptr;
  cuda::CuEvent event_ = nullptr;
  std::vector<MemoryRegion> regions_;
};

// --- nccl: the engine's communicator ----------------------------------------

int EngineCommDevice(const CommunicatorOptions& o) {
  const nccl::Api& api = nccl::GetApi(o.nccl_library);
  auto comm = static_cast<nccl::Comm>(o.nccl_comm);
  int count = 0, rank = 0, device = -1;
  if (api.CommCount(comm, &count) != nccl::kSuccess || api.CommUserRank(comm, &rank) != nccl::kSuccess ||
      api.CommCuDevice(comm, &device) != nccl::kSuccess)
    throw Error("nccl", "adopt engine communicator", "the handle is not a usable NCCL communicator", o.rank);
  if (count != o.world_size || rank != o.rank)
    throw InvalidArgument(fmt::format(
        "nccl: the engine's communicator is rank {} of {}, but eplb was told rank {} of {}", rank, count,
        o.rank, o.world_size));
  if (o.device >= 0 && o.device != device)
    throw InvalidArgument(fmt::format("nccl: the engine's communicator uses CUDA device {}, not device {}",
                                      device, o.device));
  return device;
}

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(const CommunicatorOptions& o)
      : comm_(static_cast<nccl::Comm>(o.nccl_comm)), core_("nccl", o, EngineCommDevice(o)) {}

  std::string_view name() const override { return "nccl"; }
  int rank() const override { return core_.rank(); }
  int size() const override { return core_.size(); }
  RegionId RegisterRegion(const MemoryRegion& region, Deadline) override { return core_.Register(region); }

  void Execute(std::span<const Transfer> transfers, Deadline deadline) override {
    auto ops = core_.Select(transfers);
    if (ops.empty()) return;
    if (comm_ == nullptr)
      throw Error("nccl", "send/recv",
                  "the engine's communicator was aborted after an earlier failure; the engine must make a "
                  "new one and hand it to a new eplb communicator",
                  core_.rank());
    nccl::Comm comm = comm_;
    try {
      core_.Run(comm, ops, deadline);
    } catch (...) {
      comm_ = nullptr;  // aborted by Run
      throw;
    }
  }

 private:
  nccl::Comm comm_;  // not owned
  NcclCore core_;
};

// --- nccl_stateless: a communicator of its own, from the store ---------------

class NcclStatelessCommunicator final : public ElasticCommunicator {
 public:
  explicit NcclStatelessCommunicator(const CommunicatorOptions& o)
      : options_(o), core_("nccl_stateless", o, o.device), generation_(o.generation) {
    Connect(DeadlineAfter(o.connect_timeout));
  }

  ~NcclStatelessCommunicator() override {
    // Abort rather than destroy: it frees the same resources without waiting
    // for peers, so tearing down can never hang on a dead rank.
    if (comm_) core_.api().CommAbort(comm_);
  }

  std::string_view name() const override { return "nccl_stateless"; }
  int rank() const override { return core_.rank(); }
  int size() const override { return core_.size(); }
  uint64_t generation() const override { return generation_; }
  RegionId RegisterRegion(const MemoryRegion& region, Deadline) override { return core_.Register(region); }

  void Execute(std::span<const Transfer> transfers, Deadline deadline) override {
    auto ops = core_.Select(transfers);
    if (ops.empty()) return;
    if (comm_ == nullptr) {  // aborted by an earlier failure: every rank involved rebuilds
      ++attempt_;
      Connect(deadline);
    }
    try {
      core_.Run(comm_, ops, deadline);
    } catch (...) {
      comm_ = nullptr;  // aborted by Run
      throw;
    }
  }

  void Rebuild(int rank, int world_size, uint64_t generation, Deadline deadline) override {
    if (world_size < 1 || rank < 0 || rank >= world_size)
      throw InvalidArgument(fmt::format("nccl_stateless: rebuild as rank {} of {}", rank, world_size));
    if (comm_) core_.api().CommAbort(comm_);
    comm_ = nullptr;
    core_.SetMembership(rank, world_size);
    generation_ = generation;
    attempt_ = 0;
    Connect(deadline);
  }

 private:
  void Connect(Deadline deadline) {
    const nccl::Api& api = core_.api();
    const int rank = core_.rank(), size = core_.size();
    const std::string key =
        fmt::format("{}/nccl_stateless/g{}/a{}/unique_id", options_.key_prefix, generation_, attempt_);
    nccl::UniqueId id{};
    if (rank == 0) {
      nccl::Result r = api.GetUniqueId(&id);
      if (r != nccl::kSuccess)
        throw Error("nccl_stateless", "create unique id", api.Describe(r), rank);
      options_.store->Set(key, wire::Writer(wire::Kind::kNcclUniqueId).PutFixed(&id, sizeof id).Take());
    } else {
      std::vector<uint8_t> bytes;
      try {
        bytes = options_.store->Get(key, deadline);
      } catch (const TimeoutError& e) {
        throw TimeoutError("nccl_stateless", "wait for unique id",
                           fmt::format("generation {}: rank 0 never published it ({})", generation_, e.what()),
                           rank, 0);
      }
      wire::Reader r(bytes, wire::Kind::kNcclUniqueId, {"nccl_stateless", "read unique id", rank, 0});
      r.GetFixed(&id, sizeof id);
      r.Finish();
    }
    RequireOneGpuPerRank(deadline);
    cuda::ScopedCurrent current(core_.context());  // NCCL binds to the current device
    nccl::Config config;
    config.blocking = 0;  // every wait below is ours, with the deadline
    nccl::Comm comm = nullptr;
    nccl::Result r = api.CommInitRankConfig(&comm, size, id, rank, &config);
    Backoff backoff;
    for (;;) {
      if (r != nccl::kSuccess && r != nccl::kInProgress) {
        if (comm) api.CommAbort(comm);
        throw Error("nccl_stateless", "init communicator",
                    fmt::format("generation {}, {} ranks: {}", generation_, size, api.Describe(r, comm)), rank);
      }
      if (r == nccl::kSuccess) break;
      if (Expired(deadline)) {
        api.CommAbort(comm);
        throw TimeoutError("nccl_stateless", "init communicator",
                           fmt::format("generation {}: not all {} ranks joined before the deadline; aborted",
                                       generation_, size),
                           rank);
      }
      backoff.Sleep();
      nccl::Result state = nccl::kSuccess;
      nccl::Result q = api.CommGetAsyncError(comm, &state);
      r = q != nccl::kSuccess ? q : state;
    }
    comm_ = comm;
    spdlog::debug("eplb nccl_stateless: rank {} of {} connected (generation {}, attempt {}, {})", rank, size,
                  generation_, attempt_, api.path);
  }

  // NCCL cannot run two ranks of one communicator on one GPU: its init fails
  // with "invalid usage" or, worse, hangs. Every rank publishes which GPU of
  // which host it uses and all refuse, naming the ranks, before NCCL starts.
  void RequireOneGpuPerRank(Deadline deadline) {
    const int rank = core_.rank(), size = core_.size();
    const std::string prefix =
        fmt::format("{}/nccl_stateless/g{}/a{}/gpu", options_.key_prefix, generation_, attempt_);
    const std::string host = comm::HostName();
    const std::string gpu = cuda::PciBusId(core_.device(), "nccl_stateless", rank);
    const std::string boot_id = comm::BootId();
    options_.store->Set(fmt::format("{}/{}", prefix, rank),
                        wire::Writer(wire::Kind::kGpuIdentity).PutString(host).PutString(boot_id).PutString(gpu).Take());
    for (int peer = 0; peer < size; ++peer) {
      if (peer == rank) continue;
      std::vector<uint8_t> theirs;
      try {
        theirs = options_.store->Get(fmt::format("{}/{}", prefix, peer), deadline);
      } catch (const TimeoutError& e) {
        throw TimeoutError("nccl_stateless", "compare GPUs",
                           fmt::format("generation {}: the peer never said which GPU it uses ({})",
                                       generation_, e.what()),
                           rank, peer);
      }
      wire::Reader r(theirs, wire::Kind::kGpuIdentity, {"nccl_stateless", "compare GPUs", rank, peer});
      const std::string their_host = r.GetString(wire::kMaxNameBytes), their_boot = r.GetString(wire::kMaxNameBytes),
                        their_gpu = r.GetString(wire::kMaxNameBytes);
      r.Finish();
      if (their_host == host && their_boot == boot_id && their_gpu == gpu) {
        throw InvalidArgument(fmt::format(
            "nccl_stateless: rank {} and rank {} both use GPU {} of host {}: NCCL needs a GPU of "
            "its own for every rank (ranks that share a GPU can move weights with cuda_ipc or gloo)",
            std::min(rank, peer), std::max(rank, peer), gpu, host));
      }
    }
  }

  CommunicatorOptions options_;
  NcclCore core_;
  uint64_t generation_;
  uint64_t attempt_ = 0;
  nccl::Comm comm_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> MakeNcclCommunicator(const CommunicatorOptions& options) {
  if (options.nccl_comm == nullptr)
    throw InvalidArgument(
        "communicator nccl uses the engine's NCCL communicator, but none was given (options.nccl_comm); "
        "use nccl_stateless for a communicator of eplb's own");
  return std::make_unique<NcclCommunicator>(options);
}

std::unique_ptr<Communicator> MakeNcclStatelessCommunicator(const CommunicatorOptions& options) {
  if (options.device < 0)
    throw InvalidArgument("communicator nccl_stateless needs this rank's CUDA device (options.device)");
  return std::make_unique<NcclStatelessCommunicator>(options);
}

}  // namespace eplb
