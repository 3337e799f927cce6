#include "demo_gpu.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>

#include "eplb/error.h"

#if EPLB_HAVE_CUDA
#include "demo/engine_kernels.h"
#include "cuda/runtime.h"
#endif

namespace eplb::cli {

#if EPLB_HAVE_CUDA

namespace {

constexpr uint64_t kSampleWords = 64 * 1024 / 8;  // a partial check: this much at each end
constexpr uint64_t kWorkBytes = uint64_t{256} << 20;  // the streaming kernel's buffers, each

}  // namespace

struct GpuDemo::Impl {
  int device, rank, layers, spr;
  std::vector<uint64_t> tensor_bytes;
  GpuWorkOptions work;
  cuda::Stream stream;
  std::vector<cuda::DeviceBuffer> tensors;  // [layer * T + t]
  cuda::DeviceBuffer work_src, work_dst, work_out;
  cuda::DeviceBuffer checks;  // FingerprintCheck table
  size_t checks_capacity = 0;
  cuda::DeviceBuffer counters;  // mismatches (u64), first bad tag (i32)
  int multiprocessors = 0;
  int stream_passes = 0, compute_blocks = 0, compute_iterations = 0;
  std::string description;

  Impl(int dev, int r, int l, int s, std::vector<uint64_t> tb, const GpuWorkOptions& w)
      : device(dev), rank(r), layers(l), spr(s), tensor_bytes(std::move(tb)), work(w), stream(dev) {}

  uint8_t* slot(int layer, int t, int local) const {
    return static_cast<uint8_t*>(tensors[static_cast<size_t>(layer) * tensor_bytes.size() + t].data()) +
           tensor_bytes[t] * local;
  }

  // Milliseconds the GPU takes for `launch`, measured with events after a warm-up.
  template <typename Launch>
  double Time(Launch launch) {
    cuda::Event start(device, true), stop(device, true);
    launch();
    start.Record(stream.get());
    launch();
    stop.Record(stream.get());
    stream.Synchronize(DeadlineAfter(std::chrono::seconds(60)), "calibrate the demo's GPU work");
    return stop.MillisecondsSince(start);
  }

  void Calibrate() {
    const double memory_ms = work.kind == "compute" ? 0 : work.kind == "memory" ? work.step_ms : work.step_ms / 2;
    const double compute_ms = work.step_ms - memory_ms;
    compute_blocks = multiprocessors * 8;
    if (memory_ms > 0) {
      const double pass = Time([&] {
        cuda::Check(cuda::LaunchStreamWork(work_src.data(), work_dst.data(), kWorkBytes, 1, multiprocessors,
                                           stream.get()),
                    "stream work");
      });
      stream_passes = std::max(1, static_cast<int>(memory_ms / pass + 0.5));
    }
    if (compute_ms > 0) {
      const int probe = 1 << 16;
      const double t = Time([&] {
        cuda::Check(cuda::LaunchComputeWork(work_out.as<float>(), compute_blocks, probe, stream.get()),
                    "compute work");
      });
      compute_iterations = std::max(1, static_cast<int>(probe * compute_ms / t));
    }
    const double measured = Time([&] { Launch(); });
    description = fmt::format(
        "{} work: {} streaming passes over {} MiB (read + write) and {} FMA iterations on {} blocks; "
        "{:.2f} ms on an idle GPU",
        work.kind, stream_passes, kWorkBytes >> 20, compute_iterations, compute_blocks, measured);
  }

  void Launch() {
    if (stream_passes > 0)
      cuda::Check(cuda::LaunchStreamWork(work_src.data(), work_dst.data(), kWorkBytes, stream_passes,
                                         multiprocessors, stream.get()),
                  "stream work");
    if (compute_iterations > 0)
      cuda::Check(cuda::LaunchComputeWork(work_out.as<float>(), compute_blocks, compute_iterations,
                                          stream.get()),
                  "compute work");
  }

  void Queue(const std::vector<cuda::FingerprintCheck>& list) {
    if (list.empty()) return;
    if (list.size() > checks_capacity) {
      // Stream order: earlier checks may still read the old table.
      stream.Synchronize(DeadlineAfter(std::chrono::seconds(60)), "grow the check table");
      checks_capacity = std::max(list.size(), 2 * checks_capacity);
      checks = cuda::DeviceBuffer(device, checks_capacity * sizeof(cuda::FingerprintCheck));
    }
    // From pageable memory the copy is staged before cudaMemcpyAsync
    // returns, so `list` may go; the kernel runs after it on the stream.
    cuda::Check(cudaMemcpyAsync(checks.data(), list.data(), list.size() * sizeof(cuda::FingerprintCheck),
                                cudaMemcpyHostToDevice, stream.get()),
                "upload fingerprint checks");
    cuda::Check(cuda::LaunchCheckFingerprints(checks.as<cuda::FingerprintCheck>(), static_cast<int>(list.size()),
                                              counters.as<unsigned long long>(),
                                              reinterpret_cast<int32_t*>(counters.as<uint8_t>() + 8), stream.get()),
                "check fingerprints");
  }
};

GpuDemo::GpuDemo(int device, int rank, int layers, int slots_per_rank, std::vector<uint64_t> tensor_bytes,
                 const Placement& initial, const GpuWorkOptions& work) {
  const cuda::Availability available = cuda::Probe();
  if (available.devices == 0) throw Error("demo", "--gpu", "no CUDA GPU: " + available.reason, rank);
  if (device < 0 || device >= available.devices)
    throw Error("demo", "--gpu", fmt::format("GPU {} does not exist ({} visible)", device, available.devices), rank);
  for (uint64_t b : tensor_bytes)
    if (b % 8 != 0) throw InvalidArgument("demo --gpu: every tensor must be a whole number of 8-byte words");
  cuda::DeviceGuard guard(device);
  uint64_t need = 0;
  for (uint64_t b : tensor_bytes) need += b * slots_per_rank;
  need *= layers;
  size_t free_bytes = 0, total = 0;
  cuda::Check(cudaMemGetInfo(&free_bytes, &total), "cudaMemGetInfo");
  // Weights, two staging layers, the work buffers, and room for the runtime.
  const uint64_t staging = 2 * need / std::max(layers, 1);
  const uint64_t want = need + staging + 2 * kWorkBytes + (uint64_t{1} << 30);
  if (want > free_bytes)
    throw Error("demo", "--gpu",
                fmt::format("the weights need {:.1f} GiB of GPU {} ({:.1f} GiB with staging and work "
                            "buffers) but {:.1f} GiB are free; lower --layers or --expert-bytes",
                            need / double(1 << 30), device, want / double(1 << 30),
                            free_bytes / double(1 << 30)),
                rank);
  impl_ = std::make_unique<Impl>(device, rank, layers, slots_per_rank, std::move(tensor_bytes), work);
  Impl& s = *impl_;
  cuda::Check(cudaDeviceGetAttribute(&s.multiprocessors, cudaDevAttrMultiProcessorCount, device),
              "cudaDeviceGetAttribute");
  for (int l = 0; l < layers; ++l)
    for (size_t t = 0; t < s.tensor_bytes.size(); ++t) {
      s.tensors.emplace_back(device, s.tensor_bytes[t] * slots_per_rank);
      for (int i = 0; i < slots_per_rank; ++i)
        cuda::Check(cuda::LaunchFillFingerprint(s.slot(l, static_cast<int>(t), i), s.tensor_bytes[t], l,
                                                initial.expert_at(l, rank * slots_per_rank + i),
                                                static_cast<int>(t), s.stream.get()),
                    "fill expert fingerprints");
    }
  s.work_src = cuda::DeviceBuffer(device, kWorkBytes);
  s.work_dst = cuda::DeviceBuffer(device, kWorkBytes);
  s.work_out = cuda::DeviceBuffer(device, static_cast<size_t>(s.multiprocessors) * 8 * 256 * sizeof(float));
  cuda::Check(cudaMemsetAsync(s.work_src.data(), 1, kWorkBytes, s.stream.get()), "cudaMemsetAsync");
  s.counters = cuda::DeviceBuffer(device, 16);
  const int32_t none = INT32_MAX;
  cuda::Check(cudaMemsetAsync(s.counters.data(), 0, 8, s.stream.get()), "cudaMemsetAsync");
  cuda::Check(cudaMemcpyAsync(s.counters.as<uint8_t>() + 8, &none, sizeof(none), cudaMemcpyHostToDevice,
                              s.stream.get()),
              "cudaMemcpyAsync");
  s.stream.Synchronize(DeadlineAfter(std::chrono::seconds(120)), "fill the expert weights");
  s.Calibrate();
}

GpuDemo::~GpuDemo() = default;

int GpuDemo::device() const { return impl_->device; }
std::string GpuDemo::device_name() const { return cuda::DeviceName(impl_->device); }
void* GpuDemo::stream() const { return impl_->stream.get(); }
std::string GpuDemo::work_description() const { return impl_->description; }

std::vector<LayerWeights> GpuDemo::weights() const {
  const Impl& s = *impl_;
  std::vector<LayerWeights> w(s.layers);
  for (int l = 0; l < s.layers; ++l)
    for (size_t t = 0; t < s.tensor_bytes.size(); ++t) {
      const cuda::DeviceBuffer& b = s.tensors[static_cast<size_t>(l) * s.tensor_bytes.size() + t];
      w[l].tensors.push_back({MemoryRegion{b.data(), b.bytes(), MemoryKind::kCuda, s.device}, s.tensor_bytes[t], 0});
    }
  return w;
}

void GpuDemo::LaunchWork() {
  cuda::DeviceGuard guard(impl_->device);
  impl_->Launch();
}

int GpuDemo::CheckSlots(const Placement& p, int layer, const std::vector<int>& local_slots, bool full) {
  Impl& s = *impl_;
  cuda::DeviceGuard guard(s.device);
  std::vector<cuda::FingerprintCheck> list;
  for (int i : local_slots) {
    const int e = p.expert_at(layer, s.rank * s.spr + i);
    for (size_t t = 0; t < s.tensor_bytes.size(); ++t) {
      const uint64_t words = s.tensor_bytes[t] / 8;
      const auto* data = reinterpret_cast<const uint64_t*>(s.slot(layer, static_cast<int>(t), i));
      const int32_t tag = (layer << 16) | i;
      if (full || words <= 2 * kSampleWords) {
        list.push_back({data, 0, words, layer, e, static_cast<int32_t>(t), tag});
      } else {
        list.push_back({data, 0, kSampleWords, layer, e, static_cast<int32_t>(t), tag});
        list.push_back({data, words - kSampleWords, kSampleWords, layer, e, static_cast<int32_t>(t), tag});
      }
    }
  }
  s.Queue(list);
  return static_cast<int>(local_slots.size());
}

void GpuDemo::Synchronize() {
  impl_->stream.Synchronize(DeadlineAfter(std::chrono::seconds(60)), "the demo's engine step");
}

uint64_t GpuDemo::mismatches(int64_t* first_bad) {
  Impl& s = *impl_;
  cuda::DeviceGuard guard(s.device);
  uint8_t host[16] = {};
  cuda::Check(cudaMemcpyAsync(host, s.counters.data(), 12, cudaMemcpyDeviceToHost, s.stream.get()),
              "read the mismatch counters");
  Synchronize();
  uint64_t n;
  int32_t tag;
  std::memcpy(&n, host, 8);
  std::memcpy(&tag, host + 8, 4);
  if (first_bad != nullptr) *first_bad = tag == INT32_MAX ? -1 : tag;
  return n;
}

#else  // !EPLB_HAVE_CUDA

struct GpuDemo::Impl {};

GpuDemo::GpuDemo(int, int rank, int, int, std::vector<uint64_t>, const Placement&, const GpuWorkOptions&) {
  throw Error("demo", "--gpu", "eplb was built without CUDA", rank);
}
GpuDemo::~GpuDemo() = default;
int GpuDemo::device() const { return -1; }
std::string GpuDemo::device_name() const { return ""; }
void* GpuDemo::stream() const { return nullptr; }
std::vector<LayerWeights> GpuDemo::weights() const { return {}; }
std::string GpuDemo::work_description() const { return ""; }
void GpuDemo::LaunchWork() {}
int GpuDemo::CheckSlots(const Placement&, int, const std::vector<int>&, bool) { return 0; }
void GpuDemo::Synchronize() {}
uint64_t GpuDemo::mismatches(int64_t*) { return 0; }

#endif  // EPLB_HAVE_CUDA

}  // namespace eplb::cli
