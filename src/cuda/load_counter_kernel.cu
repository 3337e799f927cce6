#include "cuda/load_counter_kernel.h"

namespace eplb::cuda {
namespace {

constexpr int kThreads = 256;
constexpr size_t kMaxSharedBytes = 48 * 1024;  // no opt-in needed below this

// One thread per top-k choice (grid-stride). With `shared_histogram`, counts
// go to a per-block histogram in shared memory first ([E] then [R]) and are
// added to the device counters once per block, which keeps global atomics
// to one per (block, expert) instead of one per token.
template <typename Id>
__global__ void CountExpertLoadKernel(const Id* __restrict__ ids, int64_t num_choices,
                                      const int32_t* __restrict__ log2phy,
                                      const int32_t* __restrict__ logcnt, int num_experts,
                                      int max_replicas, int num_slots,
                                      unsigned long long* logical_counts,
                                      unsigned long long* physical_counts,
                                      int32_t* physical_ids, bool shared_histogram) {
  extern __shared__ unsigned int histogram[];
  unsigned int* logical_hist = histogram;
  unsigned int* physical_hist = histogram + num_experts;
  if (shared_histogram) {
    for (int i = threadIdx.x; i < num_experts + num_slots; i += blockDim.x) histogram[i] = 0;
    __syncthreads();
  }
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < num_choices;
       i += stride) {
    const int64_t expert = static_cast<int64_t>(ids[i]);
    int32_t slot = -1;
    if (expert >= 0 && expert < num_experts) {
      int replicas = logcnt[expert];
      if (replicas > max_replicas) replicas = max_replicas;
      if (replicas > 0) {
        slot = log2phy[expert * max_replicas + static_cast<int>(i % replicas)];
        if (slot >= num_slots) slot = -1;
        if (slot < 0) slot = -1;
      }
      if (logical_counts != nullptr) {
        if (shared_histogram) {
          atomicAdd(&logical_hist[expert], 1u);
        } else {
          atomicAdd(&logical_counts[expert], 1ull);
        }
      }
      if (slot >= 0 && physical_counts != nullptr) {
        if (shared_histogram) {
          atomicAdd(&physical_hist[slot], 1u);
        } else {
          atomicAdd(&physical_counts[slot], 1ull);
        }
      }
    }
    if (physical_ids != nullptr) physical_ids[i] = slot;
  }
  if (shared_histogram) {
    __syncthreads();
    for (int i = threadIdx.x; i < num_experts + num_slots; i += blockDim.x) {
      const unsigned int n = histogram[i];
      if (n == 0) continue;
      if (i < num_experts) {
        if (logical_counts != nullptr) atomicAdd(&logical_counts[i], static_cast<unsigned long long>(n));
      } else if (physical_counts != nullptr) {
        atomicAdd(&physical_counts[i - num_experts], static_cast<unsigned long long>(n));
      }
    }
  }
}

}  // namespace

cudaError_t LaunchCountExpertLoad(const void* ids, bool ids_are_64bit, int64_t num_choices,
                                  const int32_t* log2phy, const int32_t* logcnt, int num_experts,
                                  int max_replicas, int num_slots, int64_t* logical_counts,
                                  int64_t* physical_counts, int32_t* physical_ids,
                                  int multiprocessors, cudaStream_t stream) {
  if (num_choices <= 0) return cudaSuccess;
  const int64_t wanted = (num_choices + kThreads - 1) / kThreads;
  const int64_t cap = static_cast<int64_t>(multiprocessors) * 8;
  const int blocks = static_cast<int>(wanted < cap ? wanted : cap);
  const size_t shared = sizeof(unsigned int) * (static_cast<size_t>(num_experts) + num_slots);
  const bool use_shared = shared <= kMaxSharedBytes;
  auto* logical = reinterpret_cast<unsigned long long*>(logical_counts);
  auto* physical = reinterpret_cast<unsigned long long*>(physical_counts);
  if (ids_are_64bit) {
    CountExpertLoadKernel<int64_t><<<blocks, kThreads, use_shared ? shared : 0, stream>>>(
        static_cast<const int64_t*>(ids), num_choices, log2phy, logcnt, num_experts, max_replicas,
        num_slots, logical, physical, physical_ids, use_shared);
  } else {
    CountExpertLoadKernel<int32_t><<<blocks, kThreads, use_shared ? shared : 0, stream>>>(
        static_cast<const int32_t*>(ids), num_choices, log2phy, logcnt, num_experts, max_replicas,
        num_slots, logical, physical, physical_ids, use_shared);
  }
  return cudaGetLastError();
}

}  // namespace eplb::cuda
