#include "cuda/runtime.h"

#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "util/backoff.h"
#include "eplb/error.h"

namespace eplb::cuda {

#if EPLB_HAVE_CUDA

namespace {

std::string Describe(cudaError_t status) {
  return std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
}

}  // namespace

Availability Probe() {
  static const Availability cached = [] {
    Availability a;
    int count = 0;
    cudaError_t status = cudaGetDeviceCount(&count);
    if (status == cudaSuccess && count > 0) {
      a.devices = count;
      return a;
    }
    cudaGetLastError();  // clear the error state so later calls start clean
    switch (status) {
      case cudaSuccess:
      case cudaErrorNoDevice:
        a.reason = "no CUDA-capable device";
        break;
      case cudaErrorInsufficientDriver:
        a.reason = "no usable CUDA driver (" + Describe(status) + ")";
        break;
      default:
        a.reason = "CUDA unavailable (" + Describe(status) + ")";
    }
    return a;
  }();
  return cached;
}

std::string DeviceName(int device) {
  if (device < 0 || device >= Probe().devices) return "";
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return "";
  return prop.name;
}

void Check(cudaError_t status, std::string_view operation) {
  if (status == cudaSuccess) return;
  cudaGetLastError();  // a non-sticky error must not resurface at the next launch check
  throw Error("cuda", std::string(operation), Describe(status));
}

DeviceGuard::DeviceGuard(int device) {
  Check(cudaGetDevice(&previous_), "cudaGetDevice");
  if (previous_ != device) Check(cudaSetDevice(device), "cudaSetDevice(" + std::to_string(device) + ")");
}

DeviceGuard::~DeviceGuard() {
  int current = -1;
  if (cudaGetDevice(&current) == cudaSuccess && current != previous_) cudaSetDevice(previous_);
}

Stream::Stream(int device) : device_(device) {
  DeviceGuard guard(device);
  Check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
}

Stream::~Stream() {
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

Stream::Stream(Stream&& other) noexcept
    : stream_(std::exchange(other.stream_, nullptr)), device_(other.device_) {}

Stream& Stream::operator=(Stream&& other) noexcept {
  std::swap(stream_, other.stream_);
  std::swap(device_, other.device_);
  return *this;
}

void Stream::Synchronize(Deadline deadline, std::string_view operation) const {
  cudaError_t last = cudaSuccess;
  bool done = util::PollUntil(
      [&] {
        last = cudaStreamQuery(stream_);
        return last != cudaErrorNotReady;
      },
      deadline);
  if (!done) throw TimeoutError("cuda", std::string(operation), "stream work did not finish before the deadline");
  Check(last, operation);
}

Event::Event(int device, bool timing) : device_(device) {
  DeviceGuard guard(device);
  Check(cudaEventCreateWithFlags(&event_, timing ? cudaEventDefault : cudaEventDisableTiming),
        "cudaEventCreateWithFlags");
}

Event::~Event() {
  if (event_ != nullptr) cudaEventDestroy(event_);
}

Event::Event(Event&& other) noexcept
    : event_(std::exchange(other.event_, nullptr)), device_(other.device_) {}

Event& Event::operator=(Event&& other) noexcept {
  std::swap(event_, other.event_);
  std::swap(device_, other.device_);
  return *this;
}

void Event::Record(cudaStream_t stream) { Check(cudaEventRecord(event_, stream), "cudaEventRecord"); }

bool Event::Query() const {
  cudaError_t status = cudaEventQuery(event_);
  if (status == cudaErrorNotReady) return false;
  Check(status, "cudaEventQuery");
  return true;
}

void Event::Wait(Deadline deadline, std::string_view layer, std::string_view operation, int rank,
                 int peer) const {
  cudaError_t last = cudaSuccess;
  bool done = util::PollUntil(
      [&] {
        last = cudaEventQuery(event_);
        return last != cudaErrorNotReady;
      },
      deadline);
  if (!done) {
    throw TimeoutError(std::string(layer), std::string(operation),
                       "device work did not finish before the deadline", rank, peer);
  }
  if (last != cudaSuccess) throw Error(std::string(layer), std::string(operation), Describe(last), rank, peer);
}

float Event::MillisecondsSince(const Event& start) const {
  float ms = 0;
  Check(cudaEventElapsedTime(&ms, start.event_, event_), "cudaEventElapsedTime");
  return ms;
}

DeviceBuffer::DeviceBuffer(int device, size_t bytes) : bytes_(bytes), device_(device) {
  DeviceGuard guard(device);
  if (bytes > 0) {
    Check(cudaMalloc(&data_, bytes),
          "cudaMalloc(" + std::to_string(bytes) + " bytes on device " + std::to_string(device) + ")");
  }
}

DeviceBuffer::~DeviceBuffer() { Release(); }

void DeviceBuffer::Release() noexcept {
  if (data_ != nullptr) {
    int previous = -1;
    cudaGetDevice(&previous);
    cudaSetDevice(device_);
    cudaFree(data_);
    if (previous >= 0) cudaSetDevice(previous);
    data_ = nullptr;
  }
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      device_(other.device_) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    Release();
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    device_ = other.device_;
  }
  return *this;
}

PinnedBuffer::PinnedBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes > 0) {
    Check(cudaHostAlloc(&data_, bytes, cudaHostAllocPortable),
          "cudaHostAlloc(" + std::to_string(bytes) + " bytes)");
  }
}

PinnedBuffer::~PinnedBuffer() { Release(); }

void PinnedBuffer::Release() noexcept {
  if (data_ != nullptr) {
    cudaFreeHost(data_);
    data_ = nullptr;
  }
}

PinnedBuffer::PinnedBuffer(PinnedBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& other) noexcept {
  if (this != &other) {
    Release();
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

int MultiprocessorCount(int device) {
  static std::mutex mutex;
  static std::vector<int> cache;
  std::lock_guard lock(mutex);
  if (device < 0) throw Error("cuda", "multiprocessor count", "bad device " + std::to_string(device));
  if (cache.size() <= static_cast<size_t>(device)) cache.resize(device + 1, 0);
  if (cache[device] == 0) {
    Check(cudaDeviceGetAttribute(&cache[device], cudaDevAttrMultiProcessorCount, device),
          "cudaDeviceGetAttribute(MultiProcessorCount)");
  }
  return cache[device];
}

#else  // !EPLB_HAVE_CUDA

Availability Probe() { return {0, "eplb was built without CUDA"}; }

std::string DeviceName(int) { return ""; }

#endif  // EPLB_HAVE_CUDA

}  // namespace eplb::cuda
