// MakeCudaCopier (eplb/migration.h): the migration executor's local copies
// on a CUDA stream, staging in device memory.
#include <fmt/format.h>

#include "cuda/runtime.h"
#include "eplb/error.h"
#include "eplb/migration.h"

namespace eplb {

#if EPLB_HAVE_CUDA

namespace {

class CudaCopier final : public LocalCopier {
 public:
  explicit CudaCopier(int device)
      : device_(device), stream_(device), done_(device), engine_ready_(device), copies_done_(device) {}

  MemoryKind kind() const override { return MemoryKind::kCuda; }

  MemoryRegion Allocate(size_t bytes) override {
    cuda::DeviceGuard guard(device_);
    void* p = nullptr;
    cuda::Check(cudaMalloc(&p, bytes > 0 ? bytes : 1),
                fmt::format("cudaMalloc ({} bytes of staging on device {})", bytes, device_));
    return MemoryRegion{p, bytes, MemoryKind::kCuda, device_};
  }

  void Free(const MemoryRegion& region) override {
    if (region.base == nullptr) return;
    cuda::DeviceGuard guard(device_);
    cuda::Check(cudaFree(region.base), "cudaFree (staging)");
  }

  void Copy(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    cuda::DeviceGuard guard(device_);
    cuda::Check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_.get()),
                "cudaMemcpyAsync (local copy)");
  }

  void Wait(Deadline deadline) override {
    cuda::DeviceGuard guard(device_);
    done_.Record(stream_.get());
    done_.Wait(deadline, "cuda", "wait for local copies");
  }

  void OrderAfter(void* stream) override {
    cuda::DeviceGuard guard(device_);
    engine_ready_.Record(static_cast<cudaStream_t>(stream));
    cuda::Check(cudaStreamWaitEvent(stream_.get(), engine_ready_.get(), 0),
                "cudaStreamWaitEvent (copies after the engine's queued work)");
  }

  void OrderBefore(void* stream) override {
    cuda::DeviceGuard guard(device_);
    copies_done_.Record(stream_.get());
    cuda::Check(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), copies_done_.get(), 0),
                "cudaStreamWaitEvent (the engine's next work after the copies)");
  }

 private:
  int device_;
  cuda::Stream stream_;
  cuda::Event done_;
  cuda::Event engine_ready_, copies_done_;
};

}  // namespace

std::unique_ptr<LocalCopier> MakeCudaCopier(int device) {
  const auto available = cuda::Probe();
  if (device < 0 || device >= available.devices) {
    throw Error("cuda", "create local copier",
                available.devices == 0 ? available.reason
                                       : fmt::format("device {} does not exist ({} visible)", device,
                                                     available.devices));
  }
  return std::make_unique<CudaCopier>(device);
}

#else  // !EPLB_HAVE_CUDA

std::unique_ptr<LocalCopier> MakeCudaCopier(int) {
  throw Error("cuda", "create local copier", "eplb was built without CUDA");
}

#endif  // EPLB_HAVE_CUDA

}  // namespace eplb
