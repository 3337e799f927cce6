// LocalCopiers for host memory: memcpy when Copy is called, or in order on a
// thread of the copier's own (the host analogue of a CUDA stream).
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <new>
#include <thread>

#include "eplb/error.h"
#include "eplb/migration.h"

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

class ThreadedHostCopier final : public HostCopier {
 public:
  ThreadedHostCopier() : worker_([this] { Run(); }) {}

  ~ThreadedHostCopier() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    worker_.join();  // runs the copies still queued first
  }

  void Copy(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    {
      std::lock_guard lock(mu_);
      queue_.push_back({dst, src, bytes});
      ++issued_;
    }
    wake_.notify_all();
  }

  void Wait(Deadline deadline) override {
    std::unique_lock lock(mu_);
    const uint64_t target = issued_;
    if (!done_.wait_until(lock, deadline, [&] { return finished_ >= target; }))
      throw TimeoutError("copier", "wait",
                         std::to_string(target - finished_) + " host copies still running");
  }

 private:
  struct Job {
    void* dst;
    const void* src;
    size_t bytes;
  };

  void Run() {
    std::unique_lock lock(mu_);
    for (;;) {
      wake_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ and drained
      Job job = queue_.front();
      queue_.pop_front();
      lock.unlock();
      std::memcpy(job.dst, job.src, job.bytes);
      lock.lock();
      ++finished_;
      done_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable wake_, done_;
  std::deque<Job> queue_;
  uint64_t issued_ = 0, finished_ = 0;
  bool stop_ = false;
  std::thread worker_;  // last: starts once the members above exist
};

}  // namespace

std::unique_ptr<LocalCopier> MakeHostCopier() { return std::make_unique<HostCopier>(); }

std::unique_ptr<LocalCopier> MakeThreadedHostCopier() {
  return std::make_unique<ThreadedHostCopier>();
}

}  // namespace eplb
