#include "support/in_process_group.h"

#include <fmt/format.h>

#include <cstring>
#include <optional>
#include <set>
#include <thread>

#include "eplb/error.h"

namespace eplb::test {

struct InProcessFabric::Round {
  std::vector<std::optional<std::vector<uint8_t>>> contributions;
  int gave_up = -1;  // the rank whose deadline passed first, once one did
};

std::vector<std::vector<uint8_t>> InProcessFabric::Collect(const std::string& group, int rank,
                                                          int64_t seq, std::vector<uint8_t> mine,
                                                          Deadline deadline, const std::string& op) {
  util::MutexLock lock(&mu_);
  if (cut_[rank]) throw Error("in_process", op, "this rank is cut off from its peers", rank);
  auto& round = rounds_[{group, seq}];
  if (!round) {
    round = std::make_shared<Round>();
    round->contributions.resize(world_);
  }
  std::shared_ptr<Round> r = round;
  if (r->gave_up >= 0)
    throw Error("in_process", op, fmt::format("rank {} gave up on this call before this rank joined", r->gave_up),
                rank, r->gave_up);
  r->contributions[rank] = std::move(mine);
  changed_.NotifyAll();
  for (;;) {
    int missing = -1;
    for (int q = 0; q < world_ && missing < 0; ++q)
      if (!r->contributions[q]) missing = q;
    if (missing < 0) break;
    if (r->gave_up >= 0)
      throw Error("in_process", op, fmt::format("rank {} gave up on this call", r->gave_up), rank,
                  r->gave_up);
    if (cut_[rank]) throw Error("in_process", op, "this rank is cut off from its peers", rank);
    if (Clock::now() >= deadline) {
      r->gave_up = rank;
      changed_.NotifyAll();
      throw TimeoutError("in_process", op, fmt::format("rank {} did not join within the deadline", missing),
                         rank, missing);
    }
    changed_.WaitUntil(&mu_, deadline);
  }
  std::vector<std::vector<uint8_t>> all(world_);
  for (int q = 0; q < world_; ++q) all[q] = *r->contributions[q];
  return all;
}

class InProcessFabric::Group final : public ControlGroup {
 public:
  Group(InProcessFabric* fabric, std::string group, int rank)
      : fabric_(fabric), group_(std::move(group)), rank_(rank) {}
  std::string_view name() const override { return "in_process"; }
  int rank() const override { return rank_; }
  int size() const override { return fabric_->world_; }

  void Barrier(Deadline deadline) override { Call({}, deadline, "barrier"); }
  void AllReduceSum(std::span<double> values, Deadline deadline) override { Sum(values, deadline); }
  void AllReduceSum(std::span<int64_t> values, Deadline deadline) override { Sum(values, deadline); }

  std::vector<std::vector<uint8_t>> AllGather(std::span<const uint8_t> blob, Deadline deadline) override {
    int64_t n;
    {
      util::MutexLock lock(&fabric_->mu_);
      n = ++fabric_->gathers_[rank_];
    }
    const GatherFault fault = fabric_->gather_fault_ ? fabric_->gather_fault_(rank_, n) : GatherFault::kNone;
    auto all = Call(std::vector<uint8_t>(blob.begin(), blob.end()), deadline, "all_gather");
    if (fault == GatherFault::kLate) {
      std::this_thread::sleep_until(deadline + fabric_->late_);
      closed_ = true;
      throw TimeoutError("in_process", "all_gather",
                         "injected: the result arrived after this rank's deadline", rank_, -1);
    }
    return all;
  }

 private:
  template <typename T>
  void Sum(std::span<T> values, Deadline deadline) {
    std::vector<uint8_t> mine(values.size_bytes());
    std::memcpy(mine.data(), values.data(), mine.size());
    auto all = Call(std::move(mine), deadline, "all_reduce_sum");
    for (auto& v : values) v = 0;
    for (int q = 0; q < size(); ++q) {  // in rank order: every rank gets the same bits
      if (all[q].size() != values.size_bytes())
        throw Error("in_process", "all_reduce_sum", "ranks passed different element counts", rank_, q);
      for (size_t i = 0; i < values.size(); ++i) {
        T x;
        std::memcpy(&x, all[q].data() + i * sizeof(T), sizeof(T));
        values[i] += x;
      }
    }
  }

  std::vector<std::vector<uint8_t>> Call(std::vector<uint8_t> mine, Deadline deadline, const std::string& op) {
    if (closed_) throw Error("in_process", op, "the group failed at an earlier call", rank_);
    try {
      return fabric_->Collect(group_, rank_, ++seq_, std::move(mine), deadline, op);
    } catch (...) {
      closed_ = true;
      throw;
    }
  }

  InProcessFabric* fabric_;
  const std::string group_;
  const int rank_;
  int64_t seq_ = 0;  // this rank's calls on the group: the rounds' keys
  bool closed_ = false;
};

// One-sided, with per-pair epochs: the sender's k-th Execute toward a peer
// publishes epoch k (its sources are ready); the receiver's k-th Execute
// from that peer copies once epoch k is published and marks it consumed;
// the sender returns once the receiver consumed it.
class InProcessFabric::Comm final : public Communicator {
 public:
  Comm(InProcessFabric* fabric, std::string group, int rank)
      : fabric_(fabric), group_(std::move(group)), rank_(rank), sent_(fabric->world_), received_(fabric->world_) {}
  std::string_view name() const override { return "in_process"; }
  CommunicatorCapabilities Capabilities() const override { return {true, false, true}; }
  int rank() const override { return rank_; }
  int size() const override { return fabric_->world_; }

  RegionId RegisterRegion(const MemoryRegion& region, Deadline) override {
    util::MutexLock lock(&fabric_->mu_);
    if (fabric_->cut_[rank_]) throw Error("in_process", "register", "this rank is cut off from its peers", rank_);
    auto& mine = Regions(rank_);
    mine.push_back({static_cast<uint8_t*>(region.base), region.bytes});
    return static_cast<RegionId>(mine.size() - 1);
  }

  void Execute(std::span<const Transfer> transfers, Deadline deadline) override {
    if (closed_) throw Error("in_process", "execute", "the communicator failed at an earlier call", rank_);
    try {
      Run(transfers, deadline);
    } catch (...) {
      closed_ = true;
      throw;
    }
  }

 private:
  std::vector<Region>& Regions(int rank) REQUIRES(fabric_->mu_) {
    auto& all = fabric_->regions_[group_];
    if (all.empty()) all.resize(fabric_->world_);
    return all[rank];
  }
  std::string Key(int src, int dst) const { return fmt::format("{}/{}->{}", group_, src, dst); }

  void Run(std::span<const Transfer> transfers, Deadline deadline) {
    std::set<int> to, from;
    for (const Transfer& t : transfers) {
      if (t.src_rank == rank_) to.insert(t.dst_rank);
      if (t.dst_rank == rank_) from.insert(t.src_rank);
    }
    util::MutexLock lock(&fabric_->mu_);
    auto check_cut = [&](const char* op) REQUIRES(fabric_->mu_) {
      if (fabric_->cut_[rank_]) throw Error("in_process", op, "this rank is cut off from its peers", rank_);
    };
    check_cut("execute");
    for (int dst : to) Epochs(rank_, dst)[0] = ++sent_[dst];
    fabric_->changed_.NotifyAll();
    for (int src : from) {
      const int64_t epoch = ++received_[src];
      while (Epoch(src, rank_, false) < epoch) {
        check_cut("receive");
        if (Clock::now() >= deadline)
          throw TimeoutError("in_process", "receive",
                             fmt::format("rank {} did not send within the deadline", src), rank_, src);
        fabric_->changed_.WaitUntil(&fabric_->mu_, deadline);
      }
      for (const Transfer& t : transfers) {
        if (t.src_rank != src || t.dst_rank != rank_) continue;
        auto& theirs = Regions(src);
        auto& mine = Regions(rank_);
        if (t.src_region < 0 || static_cast<size_t>(t.src_region) >= theirs.size() || t.dst_region < 0 ||
            static_cast<size_t>(t.dst_region) >= mine.size() ||
            t.src_offset + t.bytes > theirs[t.src_region].bytes || t.dst_offset + t.bytes > mine[t.dst_region].bytes)
          throw Error("in_process", "receive", "a transfer outside its registered regions", rank_, src);
        std::memcpy(mine[t.dst_region].data + t.dst_offset, theirs[t.src_region].data + t.src_offset, t.bytes);
      }
      Epochs(src, rank_)[1] = epoch;
      fabric_->changed_.NotifyAll();
    }
    for (int dst : to) {
      while (Epoch(rank_, dst, true) < sent_[dst]) {
        check_cut("send");
        if (Clock::now() >= deadline)
          throw TimeoutError("in_process", "send",
                             fmt::format("rank {} did not receive within the deadline", dst), rank_, dst);
        fabric_->changed_.WaitUntil(&fabric_->mu_, deadline);
      }
    }
  }

  std::array<int64_t, 2>& Epochs(int src, int dst) REQUIRES(fabric_->mu_) {
    return fabric_->epochs_[Key(src, dst)];
  }
  int64_t Epoch(int src, int dst, bool consumed) REQUIRES(fabric_->mu_) {
    return Epochs(src, dst)[consumed ? 1 : 0];
  }

  InProcessFabric* fabric_;
  const std::string group_;
  const int rank_;
  std::vector<int64_t> sent_, received_;
  bool closed_ = false;
};

InProcessFabric::InProcessFabric(int world_size)
    : world_(world_size), cut_(world_size, false), gathers_(world_size, 0) {}
InProcessFabric::~InProcessFabric() = default;

std::unique_ptr<ControlGroup> InProcessFabric::MakeControlGroup(const std::string& group, int rank) {
  {
    util::MutexLock lock(&mu_);
    if (cut_[rank]) throw Error("in_process", "connect " + group, "this rank is cut off from its peers", rank);
  }
  return std::make_unique<Group>(this, group, rank);
}

std::unique_ptr<Communicator> InProcessFabric::MakeCommunicator(const std::string& group, int rank) {
  {
    util::MutexLock lock(&mu_);
    if (cut_[rank]) throw Error("in_process", "connect " + group, "this rank is cut off from its peers", rank);
  }
  return std::make_unique<Comm>(this, group, rank);
}

void InProcessFabric::set_gather_fault(std::function<GatherFault(int, int64_t)> f,
                                       std::chrono::milliseconds late) {
  gather_fault_ = std::move(f);
  late_ = late;
}

void InProcessFabric::Cut(int rank, bool cut) {
  {
    util::MutexLock lock(&mu_);
    cut_[rank] = cut;
  }
  changed_.NotifyAll();
}

bool InProcessFabric::IsCut(int rank) {
  util::MutexLock lock(&mu_);
  return cut_[rank];
}

int64_t InProcessFabric::gathers(int rank) {
  util::MutexLock lock(&mu_);
  return gathers_[rank];
}

}  // namespace eplb::test
