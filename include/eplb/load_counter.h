// Counting expert load on the GPU, straight from the router's top-k choices.
//
// An engine's router picks, for each token, k logical experts (top-k ids,
// [tokens][k], int32 or int64, on the device). With redundant experts each
// logical expert has logcnt[e] replicas in slots log2phy[e][0..logcnt[e]);
// the replica a token's choice goes to is fixed by its flat position
// i = t * k + j:  slot = log2phy[e][i % logcnt[e]]  (the rule vLLM's EPLB
// uses), so every replica gets an equal share and counting needs no
// randomness. The kernel applies that rule, optionally writes the physical
// ids for the engine to dispatch with, and adds one per choice to per-expert
// and per-slot counters in device memory. Ids outside [0, E) (padding, -1)
// are skipped and map to -1.
//
// Without CUDA (or a GPU) these throw eplb::Error (layer "cuda").
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "eplb/export.h"
#include "eplb/deadline.h"

namespace eplb {

enum class IndexType { kInt32, kInt64 };

// One layer's maps, in device memory, laid out as in eplb::Placement:
// log2phy [num_experts][max_replicas] (-1 padded), logcnt [num_experts].
struct EPLB_EXPORT DeviceExpertMap {
  const int32_t* log2phy = nullptr;
  const int32_t* logcnt = nullptr;
  int num_experts = 0;   // E
  int max_replicas = 0;  // width of log2phy
  int num_slots = 0;     // R; slots outside [0, R) are not counted
};

// The router's choices for one step: `ids` points to [num_tokens][top_k]
// device values of type `type`.
struct EPLB_EXPORT TopkIds {
  const void* ids = nullptr;
  IndexType type = IndexType::kInt32;
  int64_t num_tokens = 0;
  int top_k = 0;
};

// Enqueues the counting kernel on `stream` (a cudaStream_t; nullptr is the
// default stream) of the current device. `logical_counts` [E] and
// `physical_counts` [R] are int64 device counters it adds to (either may be
// null); `physical_ids` [num_tokens][top_k] receives the chosen slots (may be
// null). Nothing is launched for zero tokens. Throws eplb::InvalidArgument on
// inconsistent sizes, eplb::Error on a launch failure.
EPLB_EXPORT void CountExpertLoad(const TopkIds& topk, const DeviceExpertMap& map, int64_t* logical_counts,
                     int64_t* physical_counts, int32_t* physical_ids, void* stream);

// Counters for every MoE layer of a model on one device: [L][E] per logical
// expert and [L][R] per physical slot, for the runtime to read every step
// interval.
class EPLB_EXPORT DeviceLoadCounter {
 public:
  // Allocates the counters and zeroes them, waiting for that until
  // `ready_by` (TimeoutError past it).
  DeviceLoadCounter(int device, int num_layers, int num_experts, int num_slots, Deadline ready_by);
  ~DeviceLoadCounter();
  DeviceLoadCounter(const DeviceLoadCounter&) = delete;
  DeviceLoadCounter& operator=(const DeviceLoadCounter&) = delete;

  int device() const;
  int num_layers() const;
  int num_experts() const;
  int num_slots() const;

  // Counts one layer's choices (see CountExpertLoad) on `stream`.
  void Record(int layer, const TopkIds& topk, const DeviceExpertMap& map, void* stream,
              int32_t* physical_ids = nullptr);

  // Copies all counters to `logical` [L*E] and `physical` [L*R] (either may be
  // empty to skip it) after the work queued on `stream`, then, when `reset`,
  // zeroes them on that stream. Waits for the copy until `deadline`
  // (TimeoutError otherwise).
  void Read(std::span<int64_t> logical, std::span<int64_t> physical, void* stream, bool reset,
            Deadline deadline);

  // Zeroes every counter, ordered on `stream`.
  void Reset(void* stream);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace eplb
