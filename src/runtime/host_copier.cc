// LocalCopiers for host memory: memcpy when Copy is called, or in order on
// threads of the copier's own (the host analogue of a CUDA stream).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "eplb/error.h"
#include "eplb/migration.h"
#include "util/mutex.h"

namespace eplb {
namespace {

class HostCopier : public LocalCopier {
 public:
  MemoryKind kind() const override { return MemoryKind::kHost; }

  MemoryRegion Allocate(size_t bytes) override {
    // Page-aligned so a backend may pin or register it as it is.
    constexpr size_t kAlign = 4096;
    size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
    void* p = std::aligned_alloc(kAlign, rounded > 0 ? rounded : kAlign);
    if (p == nullptr) throw std::bad_alloc();
    return MemoryRegion{p, bytes, MemoryKind::kHost, -1};
  }

  void Free(const MemoryRegion& region) override { std::free(region.base); }

  void Copy(void* dst, const void* src, size_t bytes) override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
  }

  void Wait(Deadline) override {}
};

// Copies run on `threads` threads of the copier's own, as if one after the
// other in the order issued: a large copy is split into chunks that several
// threads copy at once, and a later copy starts before an earlier one is done
// only when their bytes do not overlap (no read of bytes an earlier copy still
// writes, no write of bytes an earlier copy still reads or writes). So a
// commit of many experts spreads over every thread, and a chain such as
// staging -> slot 3, slot 3 -> slot 5 still sees the first copy's result.
class ThreadedHostCopier final : public HostCopier {
 public:
  explicit ThreadedHostCopier(int threads) {
    workers_.reserve(threads);
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Run(); });
  }

  ~ThreadedHostCopier() override {
    {
      util::MutexLock lock(&mu_);
      stop_ = true;
    }
    wake_.NotifyAll();
    for (std::thread& w : workers_) w.join();  // the copies still queued run first
  }

  void Copy(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    {
      util::MutexLock lock(&mu_);
      Job job;
      job.seq = issued_++;
      job.dst = static_cast<uint8_t*>(dst);
      job.src = static_cast<const uint8_t*>(src);
      job.bytes = bytes;
      job.chunk = workers_.size() == 1 ? bytes : std::max(kChunkBytes, bytes / (4 * workers_.size()));
      job.chunks = (bytes + job.chunk - 1) / job.chunk;
      queue_.push_back(job);
    }
    wake_.NotifyAll();
  }

  void Wait(Deadline deadline) override {
    util::MutexLock lock(&mu_);
    const uint64_t target = issued_;
    // Copies finish out of order; those issued before this call are done
    // when the oldest copy not yet done was issued after it (or none is left).
    auto done = [&]() REQUIRES(mu_) { return queue_.empty() || queue_.front().seq >= target; };
    bool in_time = true;
    while (!done() && in_time) in_time = done_.WaitUntil(&mu_, deadline);
    if (!done()) {
      uint64_t left = 0;
      for (const Job& j : queue_) left += j.seq < target && j.done < j.chunks;
      throw TimeoutError("copier", "wait", std::to_string(left) + " host copies still running");
    }
  }

 private:
  // Chunks are at least this large (smaller copies run whole).
  static constexpr size_t kChunkBytes = size_t{1} << 20;
  // How many unfinished copies a thread looks through for work.
  static constexpr size_t kWindow = 64;

  struct Job {
    uint64_t seq = 0;
    uint8_t* dst = nullptr;
    const uint8_t* src = nullptr;
    size_t bytes = 0, chunk = 0;
    size_t chunks = 0, claimed = 0, done = 0;
  };

  static bool Overlap(const uint8_t* a, size_t an, const uint8_t* b, size_t bn) {
    return a < b + bn && b < a + an;
  }
  // May `later` run while `earlier` (issued before it) is not done?
  static bool Conflict(const Job& earlier, const Job& later) {
    return Overlap(earlier.dst, earlier.bytes, later.src, later.bytes) ||
           Overlap(earlier.dst, earlier.bytes, later.dst, later.bytes) ||
           Overlap(earlier.src, earlier.bytes, later.dst, later.bytes);
  }

  // The next chunk a thread may copy: of the oldest copy with chunks left
  // that conflicts with no earlier copy still running. Null if none.
  Job* NextJob() REQUIRES(mu_) {
    const size_t n = std::min(queue_.size(), kWindow);
    for (size_t k = 0; k < n; ++k) {
      Job& job = queue_[k];
      if (job.claimed == job.chunks) continue;
      bool blocked = false;
      for (size_t i = 0; i < k && !blocked; ++i)
        blocked = queue_[i].done < queue_[i].chunks && Conflict(queue_[i], job);
      if (!blocked) return &job;
    }
    return nullptr;
  }

  void Run() EXCLUDES(mu_) {
    mu_.Lock();
    for (;;) {
      Job* job = nullptr;
      while ((job = NextJob()) == nullptr && !(stop_ && queue_.empty())) wake_.Wait(&mu_);
      if (job == nullptr) break;  // stop_ and drained
      const size_t c = job->claimed++;
      const size_t offset = c * job->chunk, bytes = std::min(job->chunk, job->bytes - offset);
      // Another thread may take the next chunk of the same copy.
      if (job->claimed < job->chunks) wake_.NotifyOne();
      // The job stays in the queue (a deque entry) until its last chunk is
      // done, so it is copied from without the lock.
      mu_.Unlock();
      std::memcpy(job->dst + offset, job->src + offset, bytes);
      mu_.Lock();
      if (++job->done < job->chunks) continue;
      // Deque references stay valid while the front is popped: the jobs
      // behind it may be in the hands of other threads.
      while (!queue_.empty() && queue_.front().done == queue_.front().chunks) queue_.pop_front();
      done_.NotifyAll();
      wake_.NotifyAll();  // copies that waited for this one may start
    }
    mu_.Unlock();
  }

  util::Mutex mu_;
  util::CondVar wake_, done_;
  std::deque<Job> queue_ GUARDED_BY(mu_);  // in issue order; done copies leave from the front
  uint64_t issued_ GUARDED_BY(mu_) = 0;
  bool stop_ GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;  // last: start once the members above exist
};

}  // namespace

std::unique_ptr<LocalCopier> MakeHostCopier() { return std::make_unique<HostCopier>(); }

int DefaultHostCopierThreads() {
  const unsigned cores = std::thread::hardware_concurrency();
  return static_cast<int>(std::clamp(cores / 8, 1u, 4u));
}

std::unique_ptr<LocalCopier> MakeThreadedHostCopier(int threads) {
  if (threads < 0 || threads > 64)
    throw InvalidArgument("host copier: " + std::to_string(threads) + " threads; 1 to 64, or 0 for " +
                          std::to_string(DefaultHostCopierThreads()) + " on this machine");
  return std::make_unique<ThreadedHostCopier>(threads == 0 ? DefaultHostCopierThreads() : threads);
}

}  // namespace eplb
