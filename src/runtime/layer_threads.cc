#include "runtime/layer_threads.h"

#include <algorithm>
#include <string>
#include <system_error>

#include <fmt/format.h>

#include "eplb/error.h"
#include <utility>

namespace eplb::runtime {

LayerThreads::LayerThreads(int threads) {
  if (threads > kMaxThreads || threads < 0)
    throw InvalidArgument("threads: " + std::to_string(threads) + " asked for; 0 (one per core) to " +
                          std::to_string(kMaxThreads));
  if (threads == 0)
    threads = static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u,
                                          static_cast<unsigned>(kMaxThreads)));
  try {
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { Work(); });
  } catch (const std::system_error& e) {
    // The destructor does not run for a half-built object: stop and join
    // the threads started so far here (a joinable std::thread destroyed
    // would terminate the process).
    const size_t started = workers_.size();
    StopAndJoin();
    throw Error("policy", "start threads",
                fmt::format("could not start thread {} of {}: {}", started + 1, threads - 1, e.what()));
  }
}

LayerThreads::~LayerThreads() { StopAndJoin(); }

void LayerThreads::StopAndJoin() noexcept {
  {
    util::MutexLock lock(&mu_);
    stop_ = true;
  }
  wake_.NotifyAll();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

void LayerThreads::Work() {
  long seen = 0;
  for (;;) {
    Job job;
    {
      util::MutexLock lock(&mu_);
      while (!stop_ && generation_ == seen) wake_.Wait(&mu_);
      if (stop_) return;
      seen = generation_;
      job = job_;
    }
    Claim(job);
    {
      util::MutexLock lock(&mu_);
      --pending_;
    }
    done_.NotifyOne();
  }
}

void LayerThreads::Claim(const Job& job) {
  for (;;) {
    const int begin = next_.fetch_add(job.chunk);
    if (begin >= job.n) return;
    try {
      (*job.body)(begin, std::min(job.n, begin + job.chunk));
    } catch (...) {
      util::MutexLock lock(&mu_);
      if (!error_) error_ = std::current_exception();
      next_ = job.n;  // nothing more is claimed
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
  // Layers differ in cost (a repair takes more steps on some): small
  // ranges handed out as threads free up keep the threads busy to the end,
  // while each range still reuses its workspace over a few layers.
  const Job job{&body, n, std::max(1, n / (threads() * 4))};
  {
    util::MutexLock lock(&mu_);
    job_ = job;
    next_ = 0;
    error_ = nullptr;
    pending_ = static_cast<int>(workers_.size());
    ++generation_;
  }
  wake_.NotifyAll();
  Claim(job);
  // The workers' ranges finish whatever happened here, since `body` must
  // outlive them: wait for them before passing on an exception.
  util::MutexLock lock(&mu_);
  while (pending_ != 0) done_.Wait(&mu_);
  job_ = Job{};
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

LayerRunner LayerThreads::runner() {
  return [this](int n, const std::function<void(int, int)>& body) { Run(n, body); };
}

}  // namespace eplb::runtime
