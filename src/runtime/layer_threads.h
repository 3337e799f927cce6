// Threads lent to a placement policy (PolicyInput::run_layers): the layers
// are split into contiguous ranges of a few layers, which the threads (the
// caller's among them) take in turn as they free up. The policy is pure and
// its layers independent, so the placement is the same bit for bit with any
// number of threads; the rebalance's policy step, which every rank runs
// before any weight moves, just ends sooner.
#pragma once

#include <atomic>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "eplb/policy.h"

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
  void Run(int n, const std::function<void(int begin, int end)>& body);
  // A LayerRunner calling Run (this object must outlive its use).
  LayerRunner runner();

 private:
  void StopAndJoin() noexcept;
  void Work();
  // Runs body_ on ranges taken from next_ until none is left.
  void Claim();

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_, done_;
  const std::function<void(int, int)>* body_ = nullptr;
  int n_ = 0;
  int chunk_ = 1;
  std::atomic<int> next_{0};
  std::exception_ptr error_;
  long generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

}  // namespace eplb::runtime
