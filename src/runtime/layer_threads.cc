#include "runtime/layer_threads.h"

#include <algorithm>

namespace eplb::runtime {
namespace {

// The range of part `i` of `parts` over [0, n): sizes differ by at most one.
std::pair<int, int> Range(int n, int parts, int i) {
  const int base = n / parts, extra = n % parts;
  const int begin = i * base + std::min(i, extra);
  return {begin, begin + base + (i < extra ? 1 : 0)};
}

}  // namespace

LayerThreads::LayerThreads(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { Work(i); });
}

LayerThreads::~LayerThreads() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void LayerThreads::Work(int index) {
  long seen = 0;
  for (;;) {
    const std::function<void(int, int)>* body;
    int n;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      body = body_;
      n = n_;
    }
    const auto [begin, end] = Range(n, threads(), index);
    if (begin < end) (*body)(begin, end);
    {
      std::lock_guard<std::mutex> lock(mu_);
      --pending_;
    }
    done_.notify_one();
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
    pending_ = static_cast<int>(workers_.size());
    ++generation_;
  }
  wake_.notify_all();
  const auto [begin, end] = Range(n, threads(), 0);
  // The workers' parts finish whatever happens here, since `body` must
  // outlive them: wait for them before passing on an exception.
  std::exception_ptr error;
  try {
    body(begin, end);
  } catch (...) {
    error = std::current_exception();
  }
  std::unique_lock<std::mutex> lock(mu_);
  done_.wait(lock, [&] { return pending_ == 0; });
  body_ = nullptr;
  if (error) std::rethrow_exception(error);
}

LayerRunner LayerThreads::runner() {
  return [this](int n, const std::function<void(int, int)>& body) { Run(n, body); };
}

}  // namespace eplb::runtime
