// Threads lent to a placement policy (PolicyInput::run_layers): the layers
// are split into contiguous ranges of a few layers, which the threads (the
// caller's among them) take in turn as they free up. The policy is pure and
// its layers independent, so the placement is the same bit for bit with any
// number of threads; the rebalance's policy step, which every rank runs
// before any weight moves, just ends sooner.
#pragma once

#include <atomic>
#include <exception>
#include <functional>
#include <thread>
#include <vector>

#include "eplb/policy.h"
#include "util/mutex.h"

namespace eplb::runtime {

class LayerThreads {
 public:
  // More threads than this are a typo, not a machine: refused.
  static constexpr int kMaxThreads = 1024;

  // `threads` in all, the caller's included (0: one per core), at most
  // kMaxThreads (else InvalidArgument). 1: no threads are started and Run
  // calls body(0, n). When the system cannot start a thread, the ones
  // started are stopped and joined and Error("policy", "start threads")
  // says how many were asked for.
  explicit LayerThreads(int threads = 0);
  ~LayerThreads();
  LayerThreads(const LayerThreads&) = delete;
  LayerThreads& operator=(const LayerThreads&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }
  // body(begin, end) over [0, n) split into ranges; returns when all are done.
  // The first exception a range throws passes on (no range starts after it).
  // One Run at a time.
  void Run(int n, const std::function<void(int begin, int end)>& body) EXCLUDES(mu_);
  // A LayerRunner calling Run (this object must outlive its use).
  LayerRunner runner();

 private:
  // What one Run hands the threads (read under mu_ when a thread wakes).
  struct Job {
    const std::function<void(int, int)>* body = nullptr;
    int n = 0;
    int chunk = 1;
  };
  void StopAndJoin() noexcept EXCLUDES(mu_);
  void Work() EXCLUDES(mu_);
  // Runs job.body on ranges taken from next_ until none is left.
  void Claim(const Job& job) EXCLUDES(mu_);

  std::vector<std::thread> workers_;
  util::Mutex mu_;
  util::CondVar wake_, done_;
  Job job_ GUARDED_BY(mu_);
  std::atomic<int> next_{0};
  std::exception_ptr error_ GUARDED_BY(mu_);
  long generation_ GUARDED_BY(mu_) = 0;
  int pending_ GUARDED_BY(mu_) = 0;
  bool stop_ GUARDED_BY(mu_) = false;
};

}  // namespace eplb::runtime
