// A mutex, its scoped lock and a condition variable, over std::mutex and
// std::condition_variable, annotated for clang's thread-safety analysis
// (thread_annotations.h), so members declared GUARDED_BY(mu_) are checked to
// be touched only with mu_ held. Also ThreadRole: a capability that a thread
// holds by being a particular thread (the engine's, the migration's), for
// members one thread owns and no lock guards.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "util/thread_annotations.h"

namespace eplb::util {

class CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ACQUIRE() { mu_.lock(); }
  void Unlock() RELEASE() { mu_.unlock(); }

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds `mu` for its scope.
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() RELEASE() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* mu_;
};

// Waits release `mu` while blocked and hold it again when they return. The
// predicate is the caller's loop (`while (!ready) cv.Wait(&mu);`), so the
// analysis sees every guarded read under the lock.
class CondVar {
 public:
  void Wait(Mutex* mu) REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    cv_.wait(lock);
    lock.release();
  }
  // False once `until` has passed (a spurious wake-up may return true early:
  // the caller's loop checks its condition and the time again).
  template <typename Clock, typename Duration>
  bool WaitUntil(Mutex* mu, std::chrono::time_point<Clock, Duration> until) REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    const bool in_time = cv_.wait_until(lock, until) == std::cv_status::no_timeout;
    lock.release();
    return in_time;
  }
  void NotifyOne() { cv_.notify_one(); }
  void NotifyAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

// A thread's role (the engine thread, the migration thread): members only
// that thread touches are GUARDED_BY its role, functions that run on it
// REQUIRES it, and the entry points where the thread starts running them say
// so with Assume(). Nothing happens at run time; the compiler checks that no
// function not declared to run on the thread touches what it owns.
class CAPABILITY("role") ThreadRole {
 public:
  // The calling thread is the one this role names (documented at the call).
  void Assume() const ASSERT_CAPABILITY(this) {}
};

}  // namespace eplb::util
