// `eplb demo --gpu`: the demo's expert weights in GPU memory and its engine
// step as real GPU work on the engine's stream (cmd_demo.cc drives it).
//
// Each rank owns one GPU (LOCAL_RANK modulo the GPUs visible). Weights are
// filled with the expert fingerprints by a kernel; every check (the slots a
// step routes to, the slots of each committed layer, every byte at the end)
// is a kernel on the engine's stream, so it sees exactly what the engine's
// own kernels would: the commits the Balancer queued on that stream, in order.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "eplb/migration.h"
#include "eplb/placement.h"

namespace eplb::cli {

// What the GPU does for the step: "memory" (a streaming read-and-write
// kernel, like the weight reads of a decode step), "compute" (dependent
// FMAs, like GEMMs), or "mixed" (half of each).
struct GpuWorkOptions {
  std::string kind = "mixed";
  double step_ms = 20;  // calibrated on this GPU at start-up
  // The start-up's fills and calibration, and the checks at the end, finish
  // within `startup`; a step's work (with the checks and commits queued on
  // the stream) within `step`. Past them the stream wait throws TimeoutError.
  std::chrono::milliseconds startup{60000};
  std::chrono::milliseconds step{5000};
};

class GpuDemo {
 public:
  // Allocates and fills `layers` x tensor_bytes.size() tensors of
  // slots_per_rank experts each on `device` with the fingerprints of
  // `initial`'s experts for `rank`, creates the engine's stream and
  // calibrates the work. Throws Error when there is no GPU or not enough
  // memory (saying how much is needed).
  GpuDemo(int device, int rank, int layers, int slots_per_rank, std::vector<uint64_t> tensor_bytes,
          const Placement& initial, const GpuWorkOptions& work);
  ~GpuDemo();
  GpuDemo(const GpuDemo&) = delete;
  GpuDemo& operator=(const GpuDemo&) = delete;

  int device() const;
  std::string device_name() const;
  // The engine's CUDA stream (for Balancer::Step).
  void* stream() const;
  // The weights, for the Balancer (MemoryKind::kCuda).
  std::vector<LayerWeights> weights() const;
  // How the work was calibrated, for the report.
  std::string work_description() const;

  // Queues the step's work on the engine's stream.
  void LaunchWork();
  // Queues a check that each listed slot of `layer` holds the expert `p`
  // names: `full` checks every byte, otherwise the first and last 64 KiB of
  // each tensor. Returns the number of slots checked.
  int CheckSlots(const Placement& p, int layer, const std::vector<int>& local_slots, bool full);
  // Waits for the engine's stream (the end of the step).
  void Synchronize();
  // Wrong words found by every check so far (synchronizes), and the first
  // slot found wrong ((layer << 16) | local slot), or -1.
  uint64_t mismatches(int64_t* first_bad = nullptr);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace eplb::cli
