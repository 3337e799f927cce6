#include "runtime/layer_threads.h"

#include <algorithm>
#include <utility>

namespace eplb::runtime {

LayerThreads::LayerThreads(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { Work(); });
}

LayerThreads::~LayerThreads() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void LayerThreads::Work() {
  long seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    Claim();
    {
      std::lock_guard<std::mutex> lock(mu_);
      --pending_;
    }
    done_.notify_one();
  }
}

void LayerThreads::Claim() {
  for (;;) {
    const int begin = next_.fetch_add(chunk_);
    if (begin >= n_) return;
    try {
      (*body_)(begin, std::min(n_, begin + chunk_));
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
      next_ = n_;  // nothing more is claimed
      return;
    }
  }
}

void LayerThreads::Run(int n, const std::function<void(int begin, int end)>& body) {
  if (n <= 0) return;
  if (workers_.empty() || n == 1) {
    body(0, n);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    body_ = &body;
    n_ = n;
    // Layers differ in cost (a repair takes more steps on some): small
    // ranges handed out as threads free up keep the threads busy to the end,
    // while each range still reuses its workspace over a few layers.
    chunk_ = std::max(1, n / (threads() * 4));
    next_ = 0;
    error_ = nullptr;
    pending_ = static_cast<int>(workers_.size());
    ++generation_;
  }
  wake_.notify_all();
  Claim();
  // The workers' ranges finish whatever happened here, since `body` must
  // outlive them: wait for them before passing on an exception.
  std::unique_lock<std::mutex> lock(mu_);
  done_.wait(lock, [&] { return pending_ == 0; });
  body_ = nullptr;
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

LayerRunner LayerThreads::runner() {
  return [this](int n, const std::function<void(int, int)>& body) { Run(n, body); };
}

}  // namespace eplb::runtime
