// A small RAII layer over the CUDA runtime: device discovery that never fails,
// streams, events, device and pinned host buffers, and error checks that
// throw eplb::Error (layer "cuda") naming the operation.
//
// The CUDA runtime is linked statically, so every binary starts on a machine
// with no GPU or driver: Probe() then reports 0 devices and why. The classes
// below exist only when eplb is built with a CUDA toolkit (EPLB_HAVE_CUDA);
// code that must build without one calls Probe() and DeviceName() only.
// (comm/cuda_driver.h is the other way in: the driver API loaded at run time,
// for backends that must work in builds without a toolkit.)
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "eplb/deadline.h"

#if EPLB_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace eplb::cuda {

// What this process can use. `reason` says why `devices` is 0 ("eplb was
// built without CUDA", "no CUDA driver: ...", "no CUDA-capable device").
struct Availability {
  int devices = 0;
  std::string reason;
};

// Never throws; the answer is computed once and cached.
Availability Probe();

// "NVIDIA H100 80GB HBM3", or "" when the device does not exist.
std::string DeviceName(int device);

#if EPLB_HAVE_CUDA

// Throws Error("cuda", operation, "<error name>: <error string>") unless ok.
void Check(cudaError_t status, std::string_view operation);

// Makes `device` current for the scope, restoring the previous one after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

// A non-blocking stream (no implicit synchronization with the legacy default
// stream), so work on it never waits behind an engine's default-stream work.
class Stream {
 public:
  explicit Stream(int device);
  ~Stream();
  Stream(Stream&& other) noexcept;
  Stream& operator=(Stream&& other) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  cudaStream_t get() const { return stream_; }
  int device() const { return device_; }

  // Waits for all work queued so far, polling until `deadline`; throws
  // TimeoutError(layer "cuda", operation) when it passes.
  void Synchronize(Deadline deadline, std::string_view operation) const;

 private:
  cudaStream_t stream_ = nullptr;
  int device_ = -1;
};

// An event; timing is off unless asked for (cheaper to record and query).
class Event {
 public:
  explicit Event(int device, bool timing = false);
  ~Event();
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  cudaEvent_t get() const { return event_; }
  void Record(cudaStream_t stream);
  // True once the work before the last Record has finished; throws on a
  // device error.
  bool Query() const;
  // Polls Query() until true or `deadline`; on expiry throws
  // TimeoutError(layer, operation, ..., rank, peer).
  void Wait(Deadline deadline, std::string_view layer, std::string_view operation, int rank = -1,
            int peer = -1) const;
  // Milliseconds from `start` to this event (both recorded with timing).
  float MillisecondsSince(const Event& start) const;

 private:
  cudaEvent_t event_ = nullptr;
  int device_ = -1;
};

// cudaMalloc'd memory on one device, freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(int device, size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  size_t bytes() const { return bytes_; }
  int device() const { return device_; }

 private:
  void Release() noexcept;
  void* data_ = nullptr;
  size_t bytes_ = 0;
  int device_ = -1;
};

// Page-locked host memory (cudaHostAlloc): the staging area for fast
// device-to-host and host-to-device copies.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t bytes);
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& other) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  void* data() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void Release() noexcept;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Number of streaming multiprocessors of `device` (cached).
int MultiprocessorCount(int device);

#endif  // EPLB_HAVE_CUDA

}  // namespace eplb::cuda
